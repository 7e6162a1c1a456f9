"""PyTorch eager (checkpoint) and TorchScript backends."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import ArtifactError, BackendUnavailableError
from ..metadata import ModelMeta
from ..precision import choose_precision
from .base import Backend, Capabilities, canonical_device, check_device


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

    The U-Net pads H and W internally (:attr:`unet_edge.model.UNet.multiple`), so any batch and
    any H, W >= 1 are accepted (:meth:`capabilities`: input (None, C, None, None)).

    Raises:
        BackendUnavailableError: fp16 on CPU, or CUDA asked for and absent. UsageError: unknown precision.
    """

    name = "pytorch"

    def __init__(self, module: torch.nn.Module, meta: ModelMeta, path: str = "", device: str = "cpu", precision: str = "fp32"):
        super().__init__(meta, path)
        device = canonical_device(resolve_device(device))
        #: the :class:`~unet_edge.precision.PrecisionChoice` (precision, reason, emulated)
        self.precision_choice = choose_precision(device, precision)
        self._torch_device = torch.device(device)
        self.module = module.to(self._torch_device).eval()
        self._caps = Capabilities(
            kind=self.name, device=device, precision=self.precision_choice.precision,
            input_name=meta.input_name, input_shape=(None, int(meta.arch.get("in_channels", 3)), None, None),
            output_name=meta.output_name, output_shape=(None, meta.num_classes, None, None),
            threads=torch.get_num_threads() if device == "cpu" else None, artifact=self.path,
            details={"torch": torch.__version__, "precision_reason": self.precision_choice.reason})

    def capabilities(self) -> Capabilities:
        """Any batch and H/W; ``threads``: ``torch.get_num_threads()`` on the CPU; ``details``:
        ``torch`` version and ``precision_reason`` (why this precision)."""
        return self._caps

    def _autocast(self):
        precision = self._caps.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self._caps.device_type, dtype=dtype)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits float32 (N, K, H, W) for a float32 (N, 3, H, W) batch.

        Raises:
            DataError, UsageError: an input :meth:`Capabilities.check_input` refuses.
            ArtifactError: the backend is closed.
        """
        if self.module is None:
            raise ArtifactError(f"{self.label} for {self.path or 'an in-memory model'} is closed")
        x = torch.from_numpy(self._caps.check_input(batch)).to(self._torch_device)
        with self._autocast():
            y = self.module(x)
        return y.float().cpu().numpy()

    def close(self) -> None:
        self.module = None
        if self._caps.device_type == "cuda":
            torch.cuda.empty_cache()


class TorchScriptBackend(TorchBackend):
    """A frozen TorchScript module (``torch.jit.load``)."""

    name = "torchscript"
