"""ONNX Runtime backend for FP32, FP16 and INT8 (Q/DQ) ONNX artifacts."""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError, HostMismatchWarning
from ..host import probe_cpu, resolve_threads
from ..metadata import ModelMeta
from .base import Backend, check_device


def int8_target(meta: ModelMeta) -> str | None:
    """The INT8 kernel family a CPU INT8 file was quantized for (``quantization.target``); files
    of the ``cpu`` scheme written before targets were recorded were made for ``x86-vnni``. None for
    other files."""
    q = meta.extra.get("quantization") or {}
    if q.get("scheme") != "cpu":
        return None
    return q.get("target") or "x86-vnni"


def check_int8_host(meta: ModelMeta, path: str, host=None) -> str | None:
    """Warn (:class:`HostMismatchWarning`) and return the message when a CPU INT8 file made for
    one INT8 kernel family runs on a CPU of another; None when they match or it is no such file."""
    target = int8_target(meta)
    if target is None:
        return None
    host = host or probe_cpu()
    if target == host.int8_family:
        return None
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
        device: ``cpu`` (CPUExecutionProvider) or ``cuda`` (CUDAExecutionProvider; raises if absent —
            never a silent CPU fallback).
        threads: intra-op threads (0: the physical cores, :func:`unet_edge.host.resolve_threads`).
        optimize: ``False`` disables ONNX Runtime's graph optimizations: a Q/DQ graph then runs
            QuantizeLinear/DequantizeLinear as float ops around float convolutions (fake
            quantization), which shows the accuracy of the scales apart from the integer kernels.

    Warns:
        HostMismatchWarning: a CPU INT8 file made for another INT8 kernel family (:func:`check_int8_host`).

    Raises:
        UsageError: an unknown device.
        BackendUnavailableError: CUDA requested but the CUDA provider is not available.
        ArtifactError: ONNX Runtime cannot load the model.
    """

    name = "onnxruntime"

    def __init__(self, path: str, meta: ModelMeta, device: str = "cpu", threads: int = 0, optimize: bool = True):
        import onnxruntime as ort

        super().__init__(meta, path)
        check_device(device)
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "ONNX Runtime's CUDA provider is not available (install onnxruntime-gpu); use --device cpu")
            providers = ["CUDAExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        self.precision = meta.precision
        #: e.g. ``tensorrt-qdq`` / ``cpu-u8s8`` for the two INT8 schemes; empty otherwise
        self.variant = meta.extra.get("quantization", {}).get("variant", "")
        #: the INT8 kernel family the file was made for (CPU INT8 files only)
        self.int8_target = int8_target(meta)
        self.host_warning = check_int8_host(meta, path) if self.device == "cpu" else None
        self.threads = resolve_threads(threads)
        self.optimize = optimize
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ArtifactError(f"ONNX Runtime cannot load {path}: {first}; re-export it") from e
        inp = self.session.get_inputs()[0]
        self._input, self._output = inp.name, self.session.get_outputs()[0].name
        #: the exported batch size when the graph is static (None when dynamic)
        self.static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    @property
    def label(self) -> str:
        v = f" {self.variant}" if self.variant else ""
        fq = " fake-quant" if not self.optimize and self.precision == "int8" else ""
        return f"{self.name} {self.precision}{v}{fq} ({self.device})"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for ``batch``; a static-batch graph is run in chunks of its batch size."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.static_batch or len(batch)
        if step == len(batch):
            return self.session.run([self._output], {self._input: batch})[0].astype(np.float32, copy=False)
        if len(batch) % step:
            raise ArtifactError(f"{self.path} was exported with static batch {step}; feed multiples of it or export with --dynamic")
        return np.concatenate([self.infer(batch[i : i + step]) for i in range(0, len(batch), step)])

    def close(self) -> None:
        self.session = None
