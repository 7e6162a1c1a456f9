"""TensorRT's text INT8 calibration cache: write it from per-tensor scales, read it back.

Format (the file ``IInt8EntropyCalibrator2.write_calibration_cache`` receives from TensorRT 8.x/10.x
and ``trtexec --calib=<file>`` reads)::

    TRT-100300-EntropyCalibration2
    images: 3c010a14
    /enc0/conv/Conv_output_0: 3d8f5c29
    ...

* line 1: ``TRT-<version int>-<algorithm>``; the version int is ``NV_TENSORRT_VERSION``:
  ``major*10000 + minor*100 + patch`` since TensorRT 10 (``NvInferRuntimeBase.h``:
  ``NV_TENSORRT_VERSION_INT``; 10.3.0 -> ``100300``) and ``major*1000 + minor*100 + patch`` before
  (8.6.1 -> ``8601``). The algorithm is ``EntropyCalibration2`` for ``IInt8EntropyCalibrator2``.
* then one ``<tensor name>: <hex>`` line per activation tensor, ``<hex>`` being the IEEE-754
  float32 bits of the tensor's *scale* (``amax / 127``, symmetric int8) as 8 big-endian hex digits,
  i.e. ``struct.pack('>f', scale).hex()``.

Sources: the layout is the one NVIDIA's own tools write by hand for QAT models (TAO Toolkit
``nvidia_tao_tf1`` exporter ``_calibration_cache_from_dict``: ``"TRT-{}-EntropyCalibration2\\n"``
then ``tensor + ": " + hex(struct.unpack("i", struct.pack("f", amax / 127.0))[0])[2:]``) and
NVIDIA-AI-IOT's Q/DQ-to-cache translators (``struct.pack('>f', scale).hex()``). Tensor names are the
ONNX tensor names, which the ONNX parser keeps for the network's tensors.

Writers elsewhere drop leading zeros (``hex()[2:]``); the reader accepts 1 to 8 hex digits. The
writer always emits 8. The round trip is exact to float32: ``read(write(s)) == float(np.float32(s))``.
"""
from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Mapping

from unet_edge.errors import ArtifactError, ExportError
from unet_edge.io_utils import write_text_atomic

#: Algorithm names TensorRT writes in the header (``CalibrationAlgoType``).
ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")

_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,8}$")


def trt_version_int(version: str) -> int:
    """``NV_TENSORRT_VERSION`` of a version string: ``"10.3"`` / ``"10.3.0.30"`` -> 100300,
    ``"8.6.1"`` -> 8601.

    Raises:
        ValueError: not a ``major.minor[.patch[.build]]`` string.
    """
    parts = str(version).strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3]):
        raise ValueError(f"not a TensorRT version: {version!r} (expected e.g. 10.3 or 10.3.0)")
    major, minor = int(parts[0]), int(parts[1])
    patch = int(parts[2]) if len(parts) > 2 else 0
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def version_from_int(value: int) -> str:
    """Inverse of :func:`trt_version_int`: 100300 -> ``"10.3.0"``, 8601 -> ``"8.6.1"``."""
    if value >= 100000:
        return f"{value // 10000}.{value // 100 % 100}.{value % 100}"
    return f"{value // 1000}.{value // 100 % 10}.{value % 100}"


def encode_scale(scale: float) -> str:
    """float -> 8 hex digits of its float32 bits, big-endian (``0.0078125`` -> ``3c000000``)."""
    return struct.pack(">f", scale).hex()


def decode_scale(text: str) -> float:
    """Inverse of :func:`encode_scale`; accepts 1-8 hex digits (leading zeros dropped)."""
    return struct.unpack(">f", int(text, 16).to_bytes(4, "big"))[0]


def format_calibration_cache(scales: Mapping[str, float], trt_version: str = "10.3",
                             algorithm: str = "EntropyCalibration2") -> str:
    """The cache text for ``scales`` ({tensor name: scale = amax / 127}), in the given order.

    Raises:
        ExportError: a scale is not finite or negative, a name is empty or holds a newline, or the
            algorithm is unknown.
    """
    if algorithm not in ALGORITHMS:
        raise ExportError(f"unknown calibration algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    try:
        version = trt_version_int(trt_version)
    except ValueError as e:
        raise ExportError(str(e)) from e
    lines = [f"TRT-{version}-{algorithm}"]
    for name, scale in scales.items():
        scale = float(scale)
        if not name or "\n" in name or "\r" in name:
            raise ExportError(f"calibration cache: invalid tensor name {name!r}")
        if not math.isfinite(scale) or scale < 0:
            raise ExportError(f"calibration cache: scale of {name!r} is {scale}; scales must be finite and >= 0")
        lines.append(f"{name}: {encode_scale(scale)}")
    return "\n".join(lines) + "\n"


def write_calibration_cache(path: str | Path, scales: Mapping[str, float], trt_version: str = "10.3",
                            algorithm: str = "EntropyCalibration2") -> Path:
    """Write a TensorRT calibration cache atomically.

    Args:
        path: destination (e.g. ``export/calib.cache``).
        scales: {activation tensor name: per-tensor scale}, scale = amax / 127 (float, unitless).
        trt_version: TensorRT version the header claims (default ``10.3``, JetPack 6). TensorRT reads
            the per-tensor entries; use the target's version so the header matches what it writes.
        algorithm: ``EntropyCalibration2`` (``IInt8EntropyCalibrator2``, what ``trtexec --calib`` and
            :mod:`unet_edge.trt.calibrator` use).

    Returns:
        ``path``.

    Raises:
        ExportError: invalid scales, names, version or algorithm.
    """
    return write_text_atomic(path, format_calibration_cache(scales, trt_version, algorithm))


def parse_calibration_cache(text: str | bytes, source: str = "calibration cache") -> tuple[str, dict[str, float]]:
    """Parse cache text (or the bytes TensorRT hands to ``write_calibration_cache``).

    Returns:
        (header line e.g. ``"TRT-100300-EntropyCalibration2"``, {tensor name: float32 scale}).

    Raises:
        ArtifactError: not a TensorRT calibration cache (bad header or entry), naming the line.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ArtifactError(f"{source} is not a text TensorRT calibration cache ({e}); delete it and recalibrate") from e
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not _HEADER.match(lines[0]):
        first = lines[0][:60] if lines else "<empty>"
        raise ArtifactError(f"{source}: first line {first!r} is not a TRT-<version>-<algorithm> header; "
                            "delete the file and recalibrate")
    scales: dict[str, float] = {}
    for i, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not name or not _HEX.match(value):
            raise ArtifactError(f"{source}: line {i} {line[:80]!r} is not '<tensor>: <hex scale>'; "
                                "delete the file and recalibrate")
        scales[name.strip()] = decode_scale(value)
    return lines[0], scales


def parse_header(header: str) -> tuple[int, str]:
    """``"TRT-100300-EntropyCalibration2"`` -> (100300, ``"EntropyCalibration2"``).

    Raises:
        ArtifactError: malformed header.
    """
    m = _HEADER.match(header.strip())
    if not m:
        raise ArtifactError(f"{header!r} is not a TRT-<version>-<algorithm> calibration cache header")
    return int(m.group(1)), m.group(2)


def read_calibration_cache(path: str | Path) -> tuple[str, dict[str, float]]:
    """Read a TensorRT calibration cache.

    Returns:
        (header line, {tensor name: scale}); scales are the float32 values, as Python floats.

    Raises:
        ArtifactError: the file is missing or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"calibration cache not found: {path}")
    return parse_calibration_cache(path.read_bytes(), source=str(path))
