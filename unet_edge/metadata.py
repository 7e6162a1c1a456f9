"""Model metadata: the one source of truth every stage reads.

Class names, palette, ignore index, normalization, input size, tensor I/O names and the
architecture are defined once, when training starts, from the dataset. They are stored in every
checkpoint (``meta`` key), TorchScript file (``_extra_files['unet_edge.json']``), ONNX model
(``metadata_props['unet_edge']``) and as a JSON sidecar ``<artifact>.json`` beside exported files.
"""
from __future__ import annotations

import json
import math
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
        """Plain JSON types only (str subclasses such as ``torch.__version__`` become str, tuples
        lists), so a checkpoint's ``meta`` loads with ``torch.load(weights_only=True)``."""
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return json.loads(json.dumps(d))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "") -> "ModelMeta":
        """Parse and validate a dict written by :meth:`to_dict`.

        Checks: ``arch`` (a dict with an int ``num_classes`` >= 1 and, where present, positive int
        ``in_channels``/``base_channels``/``depth``, ``dropout`` in [0, 1)), ``class_names`` (non-empty
        strings; as many as ``num_classes``, or two for a binary head), ``palette`` (one [R, G, B] of
        ints 0-255 per class), ``ignore_index`` (int), ``input_size`` (two positive ints), ``mean`` /
        ``std`` (three numbers; std > 0), ``input_name`` / ``output_name`` (non-empty strings),
        ``precision`` (fp32, fp16, bf16, int8), ``dataset`` / ``extra`` (dicts), ``train_command``
        (str), ``format_version`` (int, not newer than this code's).

        Args:
            d: the metadata dict.
            source: the file it came from, named in error messages.

        Raises:
            ArtifactError: a required key is missing or a field has the wrong type or value; the
            message names ``source`` and the field.
        """
        return cls(**_validated(d, str(source) if source else "model metadata"))

    @classmethod
    def from_json(cls, text: str | bytes, source: str | Path = "") -> "ModelMeta":
        """Parse and validate metadata JSON (see :meth:`from_dict`).

        Raises:
            ArtifactError: not valid JSON, or invalid metadata; names ``source``.
        """
        where = str(source) if source else "model metadata"
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{where}: unet-edge metadata is not valid JSON ({e}); re-export the artifact "
                                "or restore the original metadata") from e
        return cls.from_dict(d, source)


PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_REQUIRED = ("arch", "class_names", "palette")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validated(d, where: str) -> dict:
    """The dataclass keyword arguments of a metadata dict, every field checked (see ``from_dict``)."""

    def bad(key: str, what: str, value) -> ArtifactError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return ArtifactError(f"{where}: metadata field {key!r} {what}, got {shown}; re-export the artifact "
                             "or fix the hand-edited metadata")

    if not isinstance(d, dict):
        raise ArtifactError(f"{where}: unet-edge metadata must be a JSON object, got {type(d).__name__}; re-export the artifact")
    version = d.get("format_version", FORMAT_VERSION)
    if not _is_int(version):
        raise bad("format_version", "must be an integer", version)
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{where}: model metadata format {version} is newer than this unet-edge understands "
                            f"({FORMAT_VERSION}); upgrade unet-edge")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ArtifactError(f"{where}: metadata lacks the required field(s) {', '.join(map(repr, missing))}; "
                            "re-export the artifact or restore the original metadata")

    arch = d["arch"]
    if not isinstance(arch, dict):
        raise bad("arch", "must be an object", arch)
    k = arch.get("num_classes")
    if not _is_int(k) or k < 1:
        raise bad("arch.num_classes", "must be an integer >= 1", k)
    for key in ("in_channels", "base_channels", "depth"):
        if key in arch and (not _is_int(arch[key]) or arch[key] < 1):
            raise bad(f"arch.{key}", "must be an integer >= 1", arch[key])
    if "dropout" in arch and (not _is_number(arch["dropout"]) or not 0 <= arch["dropout"] < 1):
        raise bad("arch.dropout", "must be a number in [0, 1)", arch["dropout"])

    names = d["class_names"]
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise bad("class_names", "must be a non-empty list of non-empty strings", names)
    if len(names) != k and not (k == 1 and len(names) == 2):
        raise bad("class_names", f"must have arch.num_classes = {k} entries"
                  + (" (or 2 for a binary head)" if k == 1 else ""), names)
    palette = d["palette"]
    if not isinstance(palette, (list, tuple)) or not all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c) for c in palette):
        raise bad("palette", "must be a list of [R, G, B] colours with ints 0-255", palette)
    if len(palette) != len(names):
        raise bad("palette", f"must have one colour per class ({len(names)} class_names), has {len(palette)}", palette)

    kw = {"arch": arch, "class_names": list(names), "palette": [list(c) for c in palette], "format_version": version}
    if "ignore_index" in d:
        if not _is_int(d["ignore_index"]):
            raise bad("ignore_index", "must be an integer", d["ignore_index"])
        kw["ignore_index"] = d["ignore_index"]
    if "input_size" in d:
        size = d["input_size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(v) and v > 0 for v in size):
            raise bad("input_size", "must be [H, W], two positive integers", size)
        kw["input_size"] = (size[0], size[1])
    for key in ("mean", "std"):
        if key in d:
            v = d[key]
            if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_number(x) for x in v):
                raise bad(key, "must be a list of 3 numbers (R, G, B)", v)
            if key == "std" and not all(x > 0 for x in v):
                raise bad(key, "must be positive", v)
            kw[key] = tuple(float(x) for x in v)
    for key in ("input_name", "output_name"):
        if key in d:
            if not isinstance(d[key], str) or not d[key]:
                raise bad(key, "must be a non-empty string", d[key])
            kw[key] = d[key]
    if "precision" in d:
        if d["precision"] not in PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(PRECISIONS)}", d["precision"])
        kw["precision"] = d["precision"]
    for key in ("dataset", "extra"):
        if key in d:
            if not isinstance(d[key], dict):
                raise bad(key, "must be an object", d[key])
            kw[key] = d[key]
    if "train_command" in d:
        if not isinstance(d["train_command"], str):
            raise bad("train_command", "must be a string", d["train_command"])
        kw["train_command"] = d["train_command"]
    return kw


def sidecar_path(artifact: str | Path) -> Path:
    """The JSON sidecar beside an artifact: ``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")
