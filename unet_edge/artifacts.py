"""Recognise an artifact by its content and read the model metadata stored with it.

Kinds: ``checkpoint`` (``torch.save`` dict with ``model`` and ``meta``), ``torchscript``
(zip with ``extra/unet_edge.json``), ``onnx`` (``metadata_props['unet_edge']``), ``engine``
(TensorRT plan with a ``<plan>.json`` sidecar).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from .errors import ArtifactError
from .metadata import METADATA_KEY, ModelMeta, sidecar_path
from .model import UNet, UNetConfig

TORCHSCRIPT_EXTRA = f"{METADATA_KEY}.json"


def artifact_kind(path: str | Path) -> str:
    """Return ``checkpoint``, ``torchscript``, ``onnx`` or ``engine``.

    Raises:
        ArtifactError: the file is missing or is none of these.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    if path.suffix.lower() in (".engine", ".plan", ".trt"):
        return "engine"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith(f"extra/{TORCHSCRIPT_EXTRA}") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names) and not any("/code/" in n for n in names):
            return "checkpoint"
        if any("/code/" in n for n in names):
            raise ArtifactError(f"{path} is a TorchScript file without unet-edge metadata; export it with `unet-edge export`")
    raise ArtifactError(f"{path} is not a unet-edge checkpoint, TorchScript, ONNX or engine file")


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Load a training checkpoint dict (keys ``model``, ``meta``, ``epoch``, ...).

    Raises:
        ArtifactError: missing, corrupt, or not a unet-edge checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for corrupt files
        raise ArtifactError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); it may be truncated") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise ArtifactError(f"{path} is not a unet-edge checkpoint (no 'model'/'meta' keys)")
    return ckpt


def model_from_checkpoint(path: str | Path) -> tuple[UNet, ModelMeta, dict]:
    """Rebuild the U-Net of a checkpoint: returns (model in eval mode on CPU, metadata, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt["meta"])
    model = UNet(UNetConfig.from_dict(meta.arch))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ArtifactError(f"weights in {path} do not match its architecture metadata: {e}") from e
    return model.eval(), meta, ckpt


def read_meta(path: str | Path) -> ModelMeta:
    """Read the :class:`ModelMeta` stored with any artifact.

    Raises:
        ArtifactError: the artifact is unknown or carries no metadata.
    """
    path = Path(path)
    kind = artifact_kind(path)
    if kind == "checkpoint":
        return ModelMeta.from_dict(load_checkpoint(path)["meta"])
    if kind == "torchscript":
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith(f"extra/{TORCHSCRIPT_EXTRA}"))
            return ModelMeta.from_json(z.read(name).decode())
    if kind == "onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise ArtifactError(f"cannot parse ONNX file {path}: {e}") from e
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY in props:
            return ModelMeta.from_json(props[METADATA_KEY])
    side = sidecar_path(path)
    if side.is_file():
        return ModelMeta.from_json(side.read_text())
    raise ArtifactError(f"{path} carries no unet-edge metadata (no embedded metadata, no sidecar {side.name}); re-export it")
