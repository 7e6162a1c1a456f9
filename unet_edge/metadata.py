"""Model metadata: the one source of truth every stage reads.

Class names, palette, ignore index, normalization, input size, tensor I/O names and the
architecture are defined once, when training starts, from the dataset. They are stored in every
checkpoint (``meta`` key), TorchScript file (``_extra_files['unet_edge.json']``), ONNX model
(``metadata_props['unet_edge']``) and as a JSON sidecar ``<artifact>.json`` beside exported files.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import ArtifactError

METADATA_KEY = "unet_edge"
FORMAT_VERSION = 1

#: ImageNet mean/std on RGB in [0, 1]; the usual normalization for segmentation backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelMeta:
    """Everything needed to run, evaluate and deploy a model without re-typing anything.

    Attributes:
        arch: :class:`unet_edge.model.UNetConfig` as a dict (num_classes, base_channels, depth, ...).
        class_names: names of the K classes (void excluded); K == 1 for a binary head with the
            foreground class named.
        palette: RGB colour (0-255) per class, same order as ``class_names``.
        ignore_index: label value excluded from loss and metrics (void).
        input_size: (H, W) pixels the model is fed; frames are resized to it.
        mean, std: per-channel RGB normalization applied to pixels scaled to [0, 1].
        input_name, output_name: tensor names in exported graphs (``images`` NCHW float32 ->
            ``logits`` NCHW float32).
        dataset: where the classes came from (name, format, path).
        train_command: the command line that trained the model.
        precision: ``fp32``, ``fp16`` or ``int8`` for exported artifacts.
        extra: free-form provenance (metrics, export parity, calibration settings).
    """

    arch: dict
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int = 255
    input_size: tuple[int, int] = (360, 480)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_name: str = "images"
    output_name: str = "logits"
    dataset: dict = field(default_factory=dict)
    train_command: str = ""
    precision: str = "fp32"
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        """K, the number of logit channels."""
        return int(self.arch["num_classes"])

    @property
    def binary(self) -> bool:
        """True for a single-channel sigmoid head."""
        return self.num_classes == 1

    def with_(self, **changes) -> "ModelMeta":
        """A copy with some fields replaced (``extra`` is merged, not replaced)."""
        if "extra" in changes:
            changes["extra"] = {**self.extra, **changes["extra"]}
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        """Parse a dict written by :meth:`to_dict`.

        Raises:
            ArtifactError: required keys are missing or the format version is newer than this code.
        """
        try:
            if int(d.get("format_version", 1)) > FORMAT_VERSION:
                raise ArtifactError(
                    f"model metadata format {d['format_version']} is newer than this unet-edge "
                    f"understands ({FORMAT_VERSION}); upgrade unet-edge"
                )
            known = {f for f in cls.__dataclass_fields__}
            kw = {k: v for k, v in d.items() if k in known}
            kw["input_size"] = tuple(int(v) for v in kw.get("input_size", (360, 480)))
            for k in ("mean", "std"):
                if k in kw:
                    kw[k] = tuple(float(v) for v in kw[k])
            return cls(**kw)
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"model metadata is incomplete or malformed ({e}); re-export the artifact") from e

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"model metadata is not valid JSON ({e})") from e


def sidecar_path(artifact: str | Path) -> Path:
    """The JSON sidecar beside an artifact: ``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")
