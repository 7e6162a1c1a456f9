"""Recognise an artifact by its content and read the model metadata stored with it.

Kinds: ``checkpoint`` (``torch.save`` dict with ``model`` and ``meta``), ``torchscript``
(zip with ``extra/unet_edge.json``), ``onnx`` (``metadata_props['unet_edge']``), ``engine``
(TensorRT plan with a ``<plan>.json`` sidecar), ``openvino`` (IR ``.xml`` + ``.bin``, metadata in a
``<xml>.json`` sidecar and the IR's ``<rt_info>``), ``exported_program`` and ``aoti`` (``.pt2``
archives of torch.export and AOTInductor, metadata inside; :mod:`unet_edge.pt2_archive`).

Files come from other people: checkpoints load with ``torch.load(weights_only=True)``, so no
code runs from a file, and all metadata is validated (:meth:`ModelMeta.from_dict`) before use.
PyTorch is imported only to read checkpoints, so ONNX, engine and OpenVINO users do not need it (a
``.pt2`` is recognised and its metadata read from the zip alone, too).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ArtifactError
from .formats import ENGINE_SUFFIXES
from .metadata import METADATA_KEY, ModelMeta, sidecar_path
from .openvino_ir import IR_SUFFIX, read_ir_meta
from .pt2_archive import pt2_kind, read_pt2_meta
from .zoo import resolve_artifact

if TYPE_CHECKING:
    from .model import UNet

TORCHSCRIPT_EXTRA = f"{METADATA_KEY}.json"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".ts")


def _first_line(e: BaseException) -> str:
    """An exception as one line (torch and onnx errors span many), for one-line CLI messages."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _check_readable(path: Path) -> None:
    """Raise ArtifactError when ``path`` is not a readable regular file (missing, a folder, no permission)."""
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory, not an artifact file; give a checkpoint, TorchScript, ONNX, "
                            "OpenVINO IR (.xml), .pt2 or engine file")
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise ArtifactError(f"cannot read {path}: {e.strerror or e}; check its permissions") from e


def artifact_kind(path: str | Path) -> str:
    """Return ``checkpoint``, ``torchscript``, ``onnx``, ``engine``, ``openvino`` (an IR's ``.xml``),
    ``exported_program`` or ``aoti`` (``.pt2`` archives, told apart by their zip directory).

    Raises:
        ArtifactError: the file is missing, unreadable or is none of these.
    """
    path = resolve_artifact(path)
    _check_readable(path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return "engine"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() == IR_SUFFIX:
        return "openvino"
    if zipfile.is_zipfile(path):
        pt2 = pt2_kind(path)  # the zip directory only: nothing from the file runs, no torch
        if pt2 is not None:
            return pt2
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ArtifactError(f"cannot read {path} as a zip archive ({_first_line(e)}); it may be truncated") from e
        if any(n.endswith(f"extra/{TORCHSCRIPT_EXTRA}") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names) and not any("/code/" in n for n in names):
            return "checkpoint"
        if any("/code/" in n for n in names):
            raise ArtifactError(f"{path} is a TorchScript file without unet-edge metadata; export it with `unet-edge export`")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise ArtifactError(f"{path} is not a readable checkpoint or TorchScript file (not a complete torch.save "
                            "zip archive: truncated or made by another program); re-save or re-export it")
    raise ArtifactError(f"{path} is not a unet-edge checkpoint, TorchScript, ONNX, OpenVINO IR (.xml), .pt2 or "
                        "engine file")


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict:
    """Load a training checkpoint dict (keys ``model``, ``meta``, ``epoch``, ...) with
    ``torch.load(weights_only=True)``: tensors and plain Python data only, no code from the file.

    The ``meta`` dict is returned as stored; :func:`model_from_checkpoint` and :func:`read_meta`
    validate it.

    Raises:
        ArtifactError: missing, unreadable, corrupt, holding Python objects other than tensors and
        plain data, or not a unet-edge checkpoint.
    """
    import torch

    path = resolve_artifact(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise ArtifactError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ArtifactError(
            f"{path} contains Python objects other than tensors and plain data; unet-edge loads checkpoints with "
            "weights_only=True and will not run code from a file; re-save it from a trusted source") from e
    except OSError as e:
        raise ArtifactError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    except Exception as e:  # torch raises many types for corrupt files
        raise ArtifactError(f"cannot read checkpoint {path} ({_first_line(e)}); it may be truncated") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "meta" not in ckpt:
        raise ArtifactError(f"{path} is not a unet-edge checkpoint (no 'model'/'meta' keys)")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise ArtifactError(f"{path}: 'model' is not a state dict of tensors; re-save it with model.state_dict()")
    return ckpt


def model_from_checkpoint(path: str | Path) -> tuple["UNet", ModelMeta, dict]:
    """Rebuild the U-Net of a checkpoint.

    Returns:
        (model: :class:`unet_edge.model.UNet` in eval mode on CPU, metadata: :class:`ModelMeta`,
        checkpoint dict).

    Raises:
        ArtifactError: see :func:`load_checkpoint`; invalid metadata; weights that do not fit the
        architecture in the metadata.
    """
    from .model import UNet, UNetConfig

    ckpt = load_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt["meta"], source=path)
    model = UNet(UNetConfig.from_dict(meta.arch))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ArtifactError(f"weights in {path} do not match its architecture metadata: {e}") from e
    return model.eval(), meta, ckpt


def read_meta(path: str | Path) -> ModelMeta:
    """Read and validate the :class:`ModelMeta` stored with any artifact.

    Raises:
        ArtifactError: the artifact is unknown, unreadable, or carries no or invalid metadata (the
        message names the file and the field).
    """
    path = resolve_artifact(path)
    kind = artifact_kind(path)
    if kind in ("exported_program", "aoti"):
        return read_pt2_meta(path)
    if kind == "openvino":
        return read_ir_meta(path)  # sidecar, else the IR's rt_info
    if kind == "checkpoint":
        return ModelMeta.from_dict(load_checkpoint(path)["meta"], source=path)
    if kind == "torchscript":
        try:
            with zipfile.ZipFile(path) as z:
                name = next(n for n in z.namelist() if n.endswith(f"extra/{TORCHSCRIPT_EXTRA}"))
                text = z.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ArtifactError(f"cannot read the metadata of TorchScript file {path} ({_first_line(e)}); it may be truncated") from e
        return ModelMeta.from_json(text, source=path)
    if kind == "onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:
            raise ArtifactError(f"cannot parse ONNX file {path} ({_first_line(e)}); it may be truncated or not ONNX") from e
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY in props:
            return ModelMeta.from_json(props[METADATA_KEY], source=path)
    side = sidecar_path(path)
    if side.is_file():
        try:
            text = side.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot read metadata sidecar {side}: {e.strerror or e}") from e
        return ModelMeta.from_json(text, source=side)
    raise ArtifactError(f"{path} carries no unet-edge metadata (no embedded metadata, no sidecar {side.name}); re-export it")
