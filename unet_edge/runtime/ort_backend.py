"""ONNX Runtime backend for FP32, FP16 and INT8 (Q/DQ) ONNX artifacts."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError, HostMismatchWarning
from ..formats import artifact
from ..host import probe_cpu, resolve_threads
from ..metadata import ModelMeta
from .base import Backend, Capabilities, canonical_device, check_device, device_label, dims


def int8_target(meta: ModelMeta) -> str | None:
    """The INT8 kernel family a CPU INT8 file was quantized for (``quantization.target``); files
    of the ``cpu`` scheme written before targets were recorded were made for ``x86-vnni``. None for
    other files."""
    q = meta.extra.get("quantization") or {}
    if q.get("scheme") != "cpu":
        return None
    return q.get("target") or "x86-vnni"


def is_tensorrt_qdq(meta: ModelMeta) -> bool:
    """True for the TensorRT Q/DQ file (``quantization.scheme`` ``tensorrt``: full-range symmetric int8)."""
    return (meta.extra.get("quantization") or {}).get("scheme") == "tensorrt"


#: INT8 kernel families whose ONNX Runtime CPU kernels saturate on full-range int8 weights (u8 x s8
#: pair sums in int16, :data:`unet_edge.formats.CPU_TARGETS`): there the TensorRT Q/DQ file, which
#: TensorRT needs with full-range weights, loses accuracy (camvid-edge v4 on an AVX2-only EPYC:
#: val mIoU 0.6450 -> 0.5450, benchmarks/reports/camvid-x86-avx2).
SATURATING_FAMILIES = ("x86-avx2",)


def tensorrt_file_saturates(meta: ModelMeta, host) -> bool:
    """True for the TensorRT Q/DQ file (``quantization.scheme`` ``tensorrt``) on a CPU of
    :data:`SATURATING_FAMILIES`, whose ONNX Runtime int8 kernels lose accuracy on it."""
    return is_tensorrt_qdq(meta) and host.int8_family in SATURATING_FAMILIES


def check_int8_host(meta: ModelMeta, path: str, host=None) -> str | None:
    """Warn (:class:`HostMismatchWarning`) and return the message when an INT8 file runs on ONNX
    Runtime's CPU kernels that do not compute it as its export measured: a CPU INT8 file made for
    another INT8 kernel family, or the TensorRT Q/DQ file on a family of :data:`SATURATING_FAMILIES`.
    None otherwise (and for files that are not INT8)."""
    target = int8_target(meta)
    if target is None and not is_tensorrt_qdq(meta):
        return None
    host = host or probe_cpu()
    if target is None:
        if not tensorrt_file_saturates(meta, host):
            return None
        msg = (f"{path} is the TensorRT Q/DQ file (full-range int8 weights, for TensorRT): ONNX Runtime's int8 "
               f"kernels on this {host.cpu_class} CPU (no VNNI) saturate on it and lose accuracy (camvid-edge: "
               f"-10 mIoU points); on this CPU run {artifact('onnx_int8_cpu').file}, made for {host.int8_family} "
               "by `unet-edge export ... --int8` on this host")
    elif target == host.int8_family:
        return None
    else:
        msg = (f"{path} was quantized for {target} CPUs but this host is {host.cpu_class} ({host.int8_family} int8 "
               f"kernels): its accuracy and speed here are not what its export measured; re-export on this host "
               f"(`unet-edge export ... --int8`) or with --int8-target {host.int8_family}")
    warnings.warn(msg, HostMismatchWarning, stacklevel=3)
    return msg


class OrtBackend(Backend):
    """``onnxruntime.InferenceSession`` on an exported ONNX file.

    Args:
        path: ONNX file with unet-edge metadata.
        meta: its :class:`ModelMeta` (``meta.precision`` names the row).
        device: ``cpu`` (CPUExecutionProvider), ``cuda`` / ``cuda:N`` (CUDAExecutionProvider on GPU N;
            raises if absent — never a silent CPU fallback) or ``auto``.
        threads: intra-op threads (0: the physical cores, :func:`unet_edge.host.resolve_threads`).
        optimize: ``False`` disables ONNX Runtime's graph optimizations: a Q/DQ graph then runs
            QuantizeLinear/DequantizeLinear as float ops around float convolutions (fake
            quantization), which shows the accuracy of the scales apart from the integer kernels.

    Warns:
        HostMismatchWarning: a CPU INT8 file made for another INT8 kernel family, or the TensorRT Q/DQ
            file on CPU kernels that saturate on it (:func:`check_int8_host`).

    Raises:
        UsageError: an unknown device.
        BackendUnavailableError: CUDA requested but the CUDA provider is not available.
        ArtifactError: ONNX Runtime cannot load the model, or its I/O is not float32 (N, C, H, W).

    What it runs (names, shapes and static batch from the session, providers, ORT version, INT8
    variant) is :meth:`capabilities`.
    """

    name = "onnxruntime"

    def __init__(self, path: str, meta: ModelMeta, device: str = "cpu", threads: int = 0, optimize: bool = True):
        import onnxruntime as ort

        super().__init__(meta, path)
        check_device(device)
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        device = canonical_device(device)
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "ONNX Runtime's CUDA provider is not available (install onnxruntime-gpu); use --device cpu")
            providers = [("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])})]
        else:
            providers = ["CPUExecutionProvider"]
        #: the HostMismatchWarning message of a CPU INT8 file made for another INT8 kernel family, else None
        self.host_warning = check_int8_host(meta, path) if device == "cpu" else None
        n_threads = resolve_threads(threads)
        so = ort.SessionOptions()
        so.intra_op_num_threads = n_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ArtifactError(f"ONNX Runtime cannot load {path}: {first}; re-export it") from e
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        in_shape, out_shape = dims(inp.shape), dims(out.shape)
        if len(in_shape) != 4 or len(out_shape) != 4:
            raise ArtifactError(f"{path}: input {inp.name!r} {inp.shape} / output {out.name!r} {out.shape} are not "
                                "(N, C, H, W); not a unet-edge export")
        if inp.type != "tensor(float)":
            raise ArtifactError(f"{path}: input {inp.name!r} is {inp.type}, expected tensor(float) (FP32 I/O); "
                                "re-export it")
        static = in_shape[0]
        self._caps = Capabilities(
            kind=self.name, device=device, precision=meta.precision, input_name=inp.name, input_shape=in_shape,
            output_name=out.name, output_shape=out_shape, static_batch=static,
            batch_range=(static or 1, None), threads=n_threads if device == "cpu" else None,
            providers=tuple(self.session.get_providers()), artifact=str(path),
            details={"onnxruntime": ort.__version__, "graph_optimization": "all" if optimize else "disabled",
                     # e.g. ``tensorrt-qdq`` / ``cpu-u8s8`` for the two INT8 schemes; empty otherwise
                     "variant": meta.extra.get("quantization", {}).get("variant", ""),
                     "int8_target": int8_target(meta)})

    def capabilities(self) -> Capabilities:
        """Names, shapes and static batch from the session; ``providers``: the session's;
        ``details``: ``onnxruntime`` version, ``graph_optimization`` (``all``/``disabled``),
        INT8 ``variant`` and ``int8_target`` (CPU INT8 files; else None)."""
        return self._caps

    @property
    def int8_target(self) -> str | None:
        """``capabilities().details["int8_target"]``: the INT8 kernel family a CPU INT8 file was made for."""
        return self._caps.details["int8_target"]

    @property
    def label(self) -> str:
        caps = self._caps
        v = f" {caps.details['variant']}" if caps.details["variant"] else ""
        fq = " fake-quant" if caps.details["graph_optimization"] == "disabled" and caps.precision == "int8" else ""
        return f"{caps.kind} {caps.precision}{v}{fq} ({device_label(caps.device)})"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits float32 (N, K, H, W) for a float32 (N, 3, H, W) batch; a static-batch graph runs
        it in chunks of its batch size.

        Raises:
            DataError, UsageError: an input :meth:`Capabilities.check_input` refuses.
            ArtifactError: the backend is closed.
        """
        if self.session is None:
            raise ArtifactError(f"{self.label} for {self.path} is closed")
        caps = self._caps
        batch = caps.check_input(batch)
        step = caps.static_batch or len(batch)
        feed = [caps.output_name]
        outs = [self.session.run(feed, {caps.input_name: batch[i : i + step]})[0].astype(np.float32, copy=False)
                for i in range(0, len(batch), step)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def close(self) -> None:
        self.session = None
