"""FP16 ONNX: weights and activations in float16, FP32 graph I/O kept (Cast nodes at the edges).

TensorRT 11's strongly typed builder takes tensor types from the graph, so this file *is* the FP16
engine's precision (TensorRT docs, "Strongly Typed Networks"). The conversion is onnxconverter-common's
``onnxconverter_common.float16.convert_float_to_float16`` with ``keep_io_types=True``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from ..errors import ExportError
from ..metadata import ModelMeta
from .onnx_export import save_onnx


def export_fp16(fp32_path: str | Path, meta: ModelMeta, path: str | Path) -> Path:
    """Convert the FP32 ONNX at ``fp32_path`` to FP16 with FP32 inputs/outputs and save it.

    Raises:
        ExportError: the conversion fails.
    """
    from onnxconverter_common.float16 import convert_float_to_float16

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "number truncated to 1e-07": tiny weights, expected
            model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    except Exception as e:
        raise ExportError(f"FP16 conversion of {fp32_path} failed: {e}") from e
    return save_onnx(model, meta.with_(precision="fp16"), path)
