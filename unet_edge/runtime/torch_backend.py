"""PyTorch eager (checkpoint) and TorchScript backends."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import BackendUnavailableError
from ..metadata import ModelMeta
from ..precision import choose_precision
from .base import Backend, check_device


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without CUDA raises.

    Raises:
        UsageError: not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        BackendUnavailableError: CUDA was asked for and is not available.
    """
    check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but this PyTorch build has no CUDA device; use --device cpu")
    return device


class TorchBackend(Backend):
    """Eager ``torch.nn.Module`` inference (the FP32 baseline).

    ``precision``: ``fp32``; ``bf16`` or ``fp16`` autocast on request; ``auto``: the host's
    choice (:func:`unet_edge.precision.choose_precision`: never an emulated one). An explicit
    emulated request (bf16 on a CPU without bf16 arithmetic) runs with an EmulatedPrecisionWarning.

    Raises:
        BackendUnavailableError: fp16 on CPU, or CUDA asked for and absent. UsageError: unknown precision.
    """

    name = "pytorch"

    def __init__(self, module: torch.nn.Module, meta: ModelMeta, path: str = "", device: str = "cpu", precision: str = "fp32"):
        super().__init__(meta, path)
        self.device = resolve_device(device)
        #: the :class:`~unet_edge.precision.PrecisionChoice` (precision, reason, emulated)
        self.precision_choice = choose_precision(self.device, precision)
        self.precision = self.precision_choice.precision
        self.threads = torch.get_num_threads() if self.device == "cpu" else None
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
