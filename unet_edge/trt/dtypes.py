"""TensorRT ``DataType`` <-> numpy, without ``tensorrt.nptype`` (a pure-Python helper of the
``tensorrt`` package, not part of the compiled bindings the API tests check)."""
from __future__ import annotations

import numpy as np

from ..errors import ArtifactError


def numpy_dtypes(trt) -> dict:
    """{trt.DataType member: numpy dtype} for the types with a numpy equivalent."""
    return {
        trt.DataType.FLOAT: np.dtype(np.float32),
        trt.DataType.HALF: np.dtype(np.float16),
        trt.DataType.INT8: np.dtype(np.int8),
        trt.DataType.INT32: np.dtype(np.int32),
        trt.DataType.INT64: np.dtype(np.int64),
        trt.DataType.BOOL: np.dtype(np.bool_),
        trt.DataType.UINT8: np.dtype(np.uint8),
    }


def to_numpy(trt, data_type) -> np.dtype:
    """numpy dtype of a ``trt.DataType``.

    Raises:
        ArtifactError: a type without numpy equivalent (BF16, FP8, INT4, ...).
    """
    table = numpy_dtypes(trt)
    if data_type not in table:
        raise ArtifactError(f"TensorRT tensor type {data_type} has no numpy equivalent; unet-edge engines use float32 I/O")
    return table[data_type]


def dtype_name(trt, data_type) -> str:
    """``"float32"`` etc., or the TensorRT name (e.g. ``"DataType.BF16"``) when numpy has none."""
    table = numpy_dtypes(trt)
    return table[data_type].name if data_type in table else str(data_type)
