"""INT8 post-training static quantization into Q/DQ ONNX models, plus the TensorRT calibration cache.

Two schemes from the same calibration images (drawn from the training split through the runtime's
preprocessing, :mod:`calibration.images`), both ``onnxruntime.quantization.quantize_static`` in
QDQ format with per-channel symmetric int8 weights on the output-channel axis:

``tensorrt`` -> ``model_int8.onnx``
    Symmetric int8 activations (zero point 0) and float biases: the scheme TensorRT requires of
    explicitly quantized networks (TensorRT developer guide, "Working with Quantized Types /
    Explicit Quantization"), and what TensorRT 11 needs since implicit calibration is gone. Its
    activation scales are also written as a TensorRT calibration cache for implicit 10.x builds.
``cpu`` -> ``model_int8_cpu.onnx``
    Asymmetric uint8 activations (U8S8). ONNX Runtime's x86 int8 kernels multiply u8 x s8, and
    with a uint8 zero point at the bottom of the range a ReLU folds into the quantization (ORT's
    ReluQuantFusion needs the zero point at the type's minimum; with symmetric int8 every ReLU
    stays an FP32 op between Dequantize/Quantize nodes, see onnxruntime PR #11696). TensorRT does
    not accept non-zero zero points: this file is for CPUs. How the integer kernels add products
    depends on the CPU, so the file is made for one INT8 kernel family (:data:`CPU_TARGETS`,
    :attr:`unet_edge.host.HostInfo.int8_family`) and records it as ``quantization.target``.
    :data:`CPU_SCHEMES`, :data:`CPU_TARGETS` and :data:`CALIB_METHODS` live in :mod:`unet_edge.formats`
    (re-exported here), so ``doctor`` reads them without importing the export stack.

In the ``tensorrt`` file the 1x1 head (last Conv and what follows it) stays FP32, so the logits
keep full precision and the calibration cache names only tensors of the FP32 graph. The ``cpu``
file quantizes the head too: its logits are 8-bit, which leaves the argmax intact (CamVid val
mIoU 0.5103 vs 0.5104 FP32) and spares ONNX Runtime an FP32 layer with two layout conversions
(about 5 ms of 45 at 360x480 on 2 cores). The ``cpu`` file also writes its DepthToSpace upsampling
as NHWC transposes/reshapes (:func:`~unet_edge.export.rewrite.interleave_depth_to_space`), so the
whole int8 decoder stays in ONNX Runtime's NHWC layout; TensorRT runs DepthToSpace natively, so the
``tensorrt`` file keeps it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from calibration.images import OrtCalibrationReader, calibration_images

from ..errors import ExportError
from ..formats import CALIB_METHODS, CPU_SCHEMES, CPU_TARGETS, DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_METHOD
from ..host import INT8_FAMILIES, probe_host
from ..io_utils import write_json_atomic
from ..metadata import ModelMeta, sidecar_path
from .onnx_export import save_onnx, simplify_onnx
from .rewrite import interleave_depth_to_space

SCHEMES = {
    "tensorrt": {"variant": "tensorrt-qdq", "activations": "int8 symmetric (zero point 0)", "bias": "float",
                 "head": "fp32"},
    "cpu": {"variant": "cpu-u8s8", "activations": "uint8 asymmetric", "bias": "int32", "head": "int8",
            "upsampling": "NHWC interleave (no DepthToSpace)"},
}
__all__ = ["CALIB_METHODS", "CPU_SCHEMES", "CPU_TARGETS", "SCHEMES", "activation_scales", "check_qdq", "cpu_target",
           "export_int8", "head_nodes"]


def cpu_target(target: str | None) -> str:
    """``target`` (a key of :data:`~unet_edge.formats.CPU_TARGETS`), or this host's INT8 family when None.

    Raises:
        ExportError: an unknown target.
    """
    target = target or probe_host().int8_family
    if target not in CPU_TARGETS:
        raise ExportError(f"unknown --int8-target {target!r}; choose one of {', '.join(INT8_FAMILIES)}")
    return target


def export_int8(fp32_path: str | Path, meta: ModelMeta, path: str | Path, calib_data: str | Path,
                calib_images: int = DEFAULT_CALIB_IMAGES, calib_method: str = DEFAULT_CALIB_METHOD,
                data_format: str | None = None, cache_path: str | Path | None = None, seed: int = 0,
                scheme: str = "tensorrt", target: str | None = None, cpu_scheme: str | None = None) -> Path:
    """Quantize the FP32 ONNX at ``fp32_path`` into a Q/DQ INT8 ONNX at ``path``.

    Args:
        calib_data: dataset folder (its ``train`` split is used) or a plain folder of images.
        calib_images: number of calibration images.
        calib_method: ``entropy`` (KL divergence, as TensorRT's IInt8EntropyCalibrator2),
            ``minmax`` or ``percentile`` (99.999th).
        cache_path: ``tensorrt`` scheme only: where to write the TensorRT calibration cache (plus
            ``<cache_path>.json``: the INT8 file's metadata, with its provenance).
        scheme: ``tensorrt`` or ``cpu`` (see the module docstring).
        target: ``cpu`` scheme only: the INT8 kernel family the file is for (a key of
            :data:`CPU_TARGETS`); None: this host's (:func:`unet_edge.host.probe_host`).
        cpu_scheme: ``cpu`` scheme only: a key of :data:`CPU_SCHEMES`; None: the target's first.

    Raises:
        ExportError: unknown method/scheme/target or quantization failure. DataError: bad
        calibration data.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    if calib_method not in methods:
        raise ExportError(f"unknown --calib-method {calib_method!r}; choose one of {', '.join(CALIB_METHODS)}")
    if scheme not in SCHEMES:
        raise ExportError(f"unknown INT8 scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    trt = scheme == "tensorrt"
    host = probe_host()
    target = None if trt else cpu_target(target)
    cpu_scheme = None if trt else (cpu_scheme or CPU_TARGETS[target]["schemes"][0])
    if cpu_scheme is not None and cpu_scheme not in CPU_SCHEMES:
        raise ExportError(f"unknown CPU INT8 scheme {cpu_scheme!r}; choose one of {', '.join(CPU_SCHEMES)}")
    cs = CPU_SCHEMES.get(cpu_scheme, {})
    reduce_range = bool(cs.get("reduce_range"))
    weight_type = QuantType.QUInt8 if cs.get("weight_type") == "uint8" else QuantType.QInt8
    head = head_nodes(onnx.load(str(fp32_path)), meta.output_name) if scheme == "tensorrt" else []
    paths = calibration_images(calib_data, calib_images, data_format, seed)
    reader = OrtCalibrationReader(paths, meta)
    # ORT's calibrators keep every activation of every image they are fed (tens of GB for 64 images
    # at 360x480); calibrating in chunks of at most 8 images bounds that.
    extra = {"WeightSymmetric": True, "CalibStridedMinMax": _chunk(len(paths))}
    if trt:
        extra.update(ActivationSymmetric=True, QuantizeBias=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        source = Path(fp32_path) if trt else _cpu_layout(fp32_path, Path(tmp) / "fp32_nhwc.onnx")
        try:
            # ORT's calibrators print progress to stdout (kept for results, e.g. --json) and log a
            # "consider pre-processing" warning; the FP32 graph is already simplified (onnxsim).
            with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
                quantize_static(
                    str(source), str(out), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if trt else QuantType.QUInt8, weight_type=weight_type,
                    per_channel=True, reduce_range=reduce_range, calibrate_method=methods[calib_method],
                    nodes_to_exclude=head if trt else [],
                    extra_options=extra,
                )
        except Exception as e:
            raise ExportError(f"INT8 quantization of {fp32_path} failed: {e}") from e
        model = onnx.load(str(out))
    scales = activation_scales(model)
    info = {"scheme": scheme, **SCHEMES[scheme], "method": calib_method, "images": len(paths),
            "data": str(calib_data), "activation_tensors": len(scales)}
    if not trt:
        info.update(target=target, cpu_scheme=cpu_scheme, variant=cs["variant"], reduce_range=reduce_range,
                    weights=cs["weights"], target_why=CPU_TARGETS[target]["why"], built_on=host.cpu_class)
    if trt:
        info["qdq"] = check_qdq(model)
    int8_meta = meta.with_(precision="int8", extra={"quantization": info})
    save_onnx(model, int8_meta, path)
    if trt and cache_path is not None:
        from calibration.cache import write_calibration_cache

        write_calibration_cache(cache_path, scales)
        # the cache format has no room for metadata: its provenance travels in <cache>.json
        write_json_atomic(sidecar_path(cache_path),
                          int8_meta.with_(extra={"calibration_cache": {"onnx": Path(path).name}}).to_dict())
    return Path(path)


def _chunk(n: int, most: int = 8) -> int:
    """The largest divisor of ``n`` that is at most ``most`` (ORT needs chunks that divide the set)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def _cpu_layout(fp32_path: str | Path, path: Path) -> Path:
    """The FP32 graph with its upsampling written for ONNX Runtime's NHWC int8 chain
    (:func:`~unet_edge.export.rewrite.interleave_depth_to_space`), simplified, saved at ``path``."""
    model = interleave_depth_to_space(onnx.load(str(fp32_path)))
    onnx.save(simplify_onnx(model, f"NHWC-friendly graph of {fp32_path}"), str(path))
    return path


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def head_nodes(model: onnx.ModelProto, output_name: str) -> list[str]:
    """Names of the nodes from the last Conv (the 1x1 head) to the graph output ``output_name``.

    They stay FP32 so the logits keep their resolution and the output tensor keeps its name.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    names, node = [], producers.get(output_name)
    while node is not None:
        names.append(node.name)
        if node.op_type == "Conv":
            break
        node = producers.get(node.input[0])
    return names


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    """Per-tensor activation scales of a Q/DQ model: {FP32 tensor name feeding a QuantizeLinear:
    scale}. These names are the FP32 graph's tensor names, as a TensorRT calibration cache needs."""
    inits = _initializers(model)
    scales = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits:
            scales[node.input[0]] = float(np.asarray(inits[node.input[1]]).reshape(-1)[0])
    return scales


def check_qdq(model: onnx.ModelProto) -> dict:
    """Check the TensorRT explicit-quantization contract and return a summary.

    Every QuantizeLinear/DequantizeLinear has int8 zero points equal to 0; activation scales are
    scalars; weight scales of Conv/ConvTranspose are per-channel vectors (axis 0 for Conv, axis 1
    for ConvTranspose, whose weight layout is (C_in, C_out/groups, kH, kW)).

    Raises:
        ExportError: a violation, naming the node.
    """
    inits = _initializers(model)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    n_q = n_w = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        n_q += 1
        if len(node.input) < 3 or node.input[2] not in inits:
            raise ExportError(f"{node.op_type} {node.name!r} has no constant zero point (TensorRT needs 0)")
        zp = inits[node.input[2]]
        if zp.dtype != np.int8 or np.any(zp != 0):
            raise ExportError(f"{node.op_type} {node.name!r} zero point is {zp.dtype} {zp.reshape(-1)[:4]}, TensorRT needs int8 0")
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight
            scale = inits[node.input[1]]
            users = consumers.get(node.output[0], [])
            if any(u.op_type in ("Conv", "ConvTranspose") and u.input[1] == node.output[0] for u in users):
                n_w += 1
                w = inits[node.input[0]]
                axis = {a.name: a.i for a in node.attribute}.get("axis", 1)
                if scale.ndim != 1 or scale.size != w.shape[axis] or scale.size == 1 and w.shape[axis] != 1:
                    raise ExportError(f"weight {node.input[0]} is not quantized per channel on its output-channel axis")
    if n_q == 0:
        raise ExportError("quantized model holds no QuantizeLinear/DequantizeLinear nodes")
    return {"qdq_nodes": n_q, "quantized_weights": n_w}
