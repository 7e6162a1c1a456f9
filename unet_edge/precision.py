"""Which floating-point precision a PyTorch stage runs in, decided once from the host.

``auto`` never picks a precision the hardware only emulates:

* CPU: bf16 autocast where the CPU has bf16 arithmetic (x86 AVX512_BF16 / AMX-BF16, Arm BF16),
  FP32 otherwise. Emulated bf16 costs 4-5x per training step and ~25x per inference on an
  AVX2-only CPU (measured, unet-edge issue 8).
* CUDA: bf16 autocast from compute capability 8.0 (Ampere: bf16 tensor cores, no loss scaling
  needed), fp16 AMP with a GradScaler on 7.x (Volta/Turing tensor cores), FP32 below (PyTorch AMP
  docs, "CUDA Ops that can autocast"; NVIDIA mixed-precision training guide).

An explicit request for an emulated precision runs, with an :class:`EmulatedPrecisionWarning` that
names the cost; a precision the device cannot run at all raises.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

from .errors import BackendUnavailableError, EmulatedPrecisionWarning, UsageError
from .host import HostInfo, probe_host

TORCH_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EMULATED_BF16_COST = ("this CPU has no bf16 arithmetic (no AVX512_BF16/AMX-BF16 or Arm BF16), so bf16 autocast is "
                      "emulated: about 4-5x slower training steps and ~25x slower inference than FP32")


@dataclass(frozen=True)
class PrecisionChoice:
    """The decision: ``precision`` (``fp32``, ``bf16`` or ``fp16``), why, and whether it is emulated."""

    precision: str
    reason: str
    emulated: bool = False

    @property
    def autocast(self) -> bool:
        return self.precision != "fp32"

    @property
    def dtype(self):
        """The autocast dtype (``torch.bfloat16`` / ``torch.float16``), None for FP32."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "reason": self.reason, "emulated": self.emulated}


#: First CUDA compute capability with bf16 tensor cores (Ampere).
CUDA_BF16_CAPABILITY = (8, 0)


def cuda_native_bf16(capability: tuple[int, int] | None) -> bool:
    """True when a GPU of this compute capability has bf16 tensor cores (8.0, Ampere, and later)."""
    return bool(capability and tuple(capability) >= CUDA_BF16_CAPABILITY)


def choose_precision(device: str, requested: str = "auto", host: HostInfo | None = None, warn: bool = True) -> PrecisionChoice:
    """The autocast precision for PyTorch training or inference on ``device``.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N`` (already resolved, not ``auto``).
        requested: ``auto`` or one of ``fp32``, ``bf16``, ``fp16``.
        host: the probe (default :func:`unet_edge.host.probe_host`).
        warn: emit an :class:`EmulatedPrecisionWarning` for an explicit emulated request.

    Raises:
        UsageError: an unknown precision. BackendUnavailableError: fp16 on CPU (PyTorch's CPU
        autocast has no useful fp16 path).
    """
    host = host or probe_host()
    if requested not in TORCH_PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}; choose one of {', '.join(TORCH_PRECISIONS)}")
    if device.startswith("cuda"):
        cc = host.cuda_capability(device)
        name = f"compute capability {cc[0]}.{cc[1]}" if cc else "unknown compute capability"
        if requested == "auto":
            if cuda_native_bf16(cc):
                return PrecisionChoice("bf16", f"CUDA {name}: bf16 tensor cores (no loss scaling)")
            if cc and cc >= (7, 0):
                return PrecisionChoice("fp16", f"CUDA {name}: fp16 tensor cores, AMP with loss scaling")
            return PrecisionChoice("fp32", f"CUDA {name}: no tensor cores, FP32")
        if requested == "bf16" and not cuda_native_bf16(cc):
            choice = PrecisionChoice("bf16", f"requested; CUDA {name} has no bf16 tensor cores (emulated, slow)", True)
        else:
            choice = PrecisionChoice(requested, f"requested (--precision {requested})")
    else:
        if requested == "fp16":
            raise BackendUnavailableError("fp16 autocast needs CUDA; on CPU use --precision auto, bf16 or fp32")
        if requested == "auto":
            if host.native_bf16:
                return PrecisionChoice("bf16", f"CPU {host.cpu_class} computes bf16 natively")
            return PrecisionChoice("fp32", f"CPU {host.cpu_class} has no bf16 arithmetic (bf16 would be emulated)")
        if requested == "bf16" and not host.native_bf16:
            choice = PrecisionChoice("bf16", f"requested; {EMULATED_BF16_COST}", True)
        else:
            choice = PrecisionChoice(requested, f"requested (--precision {requested})")
    if choice.emulated and warn:
        warnings.warn(f"--precision {requested} on {device}: {choice.reason}", EmulatedPrecisionWarning, stacklevel=2)
    return choice
