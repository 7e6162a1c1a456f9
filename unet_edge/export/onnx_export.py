"""ONNX export (opset 17, named I/O, static or dynamic batch/H/W), onnxsim simplification,
``onnx.checker``, metadata in ``metadata_props`` and a JSON sidecar; plus helpers shared by the
FP16 and INT8 steps."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from ..errors import ExportError
from ..io_utils import atomic_path, write_json_atomic
from ..metadata import METADATA_KEY, ModelMeta, sidecar_path
from ..metrics import label_agreement
from ..preprocess import labels_from_logits

OPSET = 17


def set_metadata(model: onnx.ModelProto, meta: ModelMeta) -> None:
    """Store ``meta`` in ``model.metadata_props['unet_edge']`` (replacing an old entry)."""
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    model.producer_name = "unet-edge"


def save_onnx(model: onnx.ModelProto, meta: ModelMeta, path: str | Path) -> Path:
    """Embed metadata, run ``onnx.checker``, save atomically and write the ``<path>.json`` sidecar.

    Raises:
        ExportError: the model fails ``onnx.checker.check_model``.
    """
    set_metadata(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"ONNX model for {path} fails onnx.checker: {e}") from e
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    write_json_atomic(sidecar_path(path), meta.to_dict())
    return Path(path)


def simplify_onnx(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """``model`` simplified by onnxsim (constant folding, BatchNorm folded into Conv, no-op removal).

    Raises:
        ExportError: onnxsim fails or cannot validate the result; the message names ``what``.
    """
    import onnxsim

    try:
        model, ok = onnxsim.simplify(model)
    except Exception as e:
        raise ExportError(f"onnxsim failed to simplify {what}: {e}") from e
    if not ok:
        raise ExportError(f"onnxsim could not validate its simplification of {what}")
    return model


def export_onnx(model: torch.nn.Module, meta: ModelMeta, path: str | Path, dynamic: bool = False,
                simplify: bool = True) -> Path:
    """Export ``model`` to ONNX: input ``meta.input_name`` float32 (N, 3, H, W), output
    ``meta.output_name`` float32 (N, K, H, W).

    Static shape (1, 3, *input_size) by default (best for TensorRT and INT8); ``dynamic`` makes
    batch, H and W dynamic. The graph is simplified with onnxsim (BatchNorm folded into Conv) and
    checked with ``onnx.checker``.

    Raises:
        ExportError: tracing, simplification or the checker fails.
    """
    model = model.eval()
    example = torch.zeros(1, 3, *meta.input_size)
    axes = {meta.input_name: {0: "batch", 2: "height", 3: "width"},
            meta.output_name: {0: "batch", 2: "height", 3: "width"}} if dynamic else None
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic (traced as graph ops)
                torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                                  input_names=[meta.input_name], output_names=[meta.output_name],
                                  dynamic_axes=axes, do_constant_folding=True)
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed: {e}") from e
        proto = onnx.load(str(tmp))
    if simplify:
        proto = simplify_onnx(proto, "the exported graph")
    return save_onnx(proto, meta.with_(precision="fp32", extra={"onnx": {"opset": OPSET, "dynamic": dynamic}}), path)


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Compare two logit arrays (N, K, H, W): ``max_abs_error``, ``mean_abs_error`` and
    ``argmax_agreement`` (fraction of pixels with the same predicted class,
    :func:`unet_edge.metrics.label_agreement`).

    Raises:
        ValueError: the shapes differ or the arrays are empty.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"logits of shapes {reference.shape} and {candidate.shape}: need one shape")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree, _ = label_agreement(labels_from_logits(reference), labels_from_logits(candidate))
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()), "argmax_agreement": agree}
