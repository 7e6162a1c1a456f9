"""PyTorch eager (checkpoint) and TorchScript backends."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import BackendUnavailableError
from ..metadata import ModelMeta
from .base import Backend


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without CUDA raises.

    Raises:
        BackendUnavailableError: CUDA was asked for and is not available.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but this PyTorch build has no CUDA device; use --device cpu")
    return device


class TorchBackend(Backend):
    """Eager ``torch.nn.Module`` inference (the FP32 baseline).

    ``precision``: ``fp32``; ``bf16`` (CPU autocast) or ``fp16`` (CUDA autocast) on request.
    """

    name = "pytorch"

    def __init__(self, module: torch.nn.Module, meta: ModelMeta, path: str = "", device: str = "cpu", precision: str = "fp32"):
        super().__init__(meta, path)
        self.device = resolve_device(device)
        if precision == "fp16" and self.device == "cpu":
            raise BackendUnavailableError("PyTorch FP16 inference needs CUDA; on CPU use --precision bf16 or fp32")
        if precision not in ("fp32", "fp16", "bf16"):
            raise BackendUnavailableError(f"PyTorch backend has no {precision!r} precision; use fp32, bf16 (CPU) or fp16 (CUDA)")
        self.precision = precision
        self.module = module.to(self.device).eval()

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with self._autocast():
            y = self.module(x)
        return y.float().cpu().numpy()

    def close(self) -> None:
        self.module = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


class TorchScriptBackend(TorchBackend):
    """A frozen TorchScript module (``torch.jit.load``)."""

    name = "torchscript"
