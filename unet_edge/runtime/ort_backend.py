"""ONNX Runtime backend for FP32, FP16 and INT8 (Q/DQ) ONNX artifacts."""
from __future__ import annotations

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError
from ..metadata import ModelMeta
from .base import Backend


class OrtBackend(Backend):
    """``onnxruntime.InferenceSession`` on an exported ONNX file.

    Args:
        path: ONNX file with unet-edge metadata.
        meta: its :class:`ModelMeta` (``meta.precision`` names the row).
        device: ``cpu`` (CPUExecutionProvider) or ``cuda`` (CUDAExecutionProvider; raises if absent —
            never a silent CPU fallback).
        threads: intra-op threads (0: ONNX Runtime's default, one per physical core).

    Raises:
        BackendUnavailableError: CUDA requested but the CUDA provider is not available.
        ArtifactError: ONNX Runtime cannot load the model.
    """

    name = "onnxruntime"

    def __init__(self, path: str, meta: ModelMeta, device: str = "cpu", threads: int = 0):
        import onnxruntime as ort

        super().__init__(meta, path)
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
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:
            raise ArtifactError(f"ONNX Runtime cannot load {path}: {e}") from e
        inp = self.session.get_inputs()[0]
        self._input, self._output = inp.name, self.session.get_outputs()[0].name
        #: the exported batch size when the graph is static (None when dynamic)
        self.static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    @property
    def label(self) -> str:
        v = f" {self.variant}" if self.variant else ""
        return f"{self.name} {self.precision}{v} ({self.device})"

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
