"""Open the right backend for an artifact, recognised by its content and metadata."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import artifact_kind, model_from_checkpoint, read_meta
from ..errors import BackendUnavailableError
from ..host import resolve_threads
from .base import Backend


def load_backend(path: str | Path, device: str = "cpu", precision: str | None = None, threads: int = 0) -> Backend:
    """Backend for a checkpoint (PyTorch eager), TorchScript, ONNX (ONNX Runtime) or TensorRT engine.

    Args:
        path: the artifact.
        device: ``cpu``, ``cuda`` or ``auto``. A device that is not available raises; there is no
            silent fallback.
        precision: PyTorch only: ``fp32`` (default), ``bf16`` (CPU autocast) or ``fp16`` (CUDA
            autocast). ONNX and engine precision is fixed by the artifact; asking for another raises.
        threads: CPU threads for PyTorch (``torch.set_num_threads``) / ONNX Runtime intra-op;
            0: the physical cores (:func:`unet_edge.host.resolve_threads`). ``backend.threads`` says
            the count used.

    Raises:
        ArtifactError: unknown or corrupt artifact. BackendUnavailableError: device/precision not
        available for this artifact on this host.
    """
    kind = artifact_kind(path)
    if kind in ("checkpoint", "torchscript"):
        import torch

        torch.set_num_threads(resolve_threads(threads))
    if kind == "checkpoint":
        from .torch_backend import TorchBackend

        model, meta, _ = model_from_checkpoint(path)
        return TorchBackend(model, meta, str(path), device=device, precision=precision or "fp32")
    if kind == "torchscript":
        from ..export.torchscript import load_torchscript
        from .torch_backend import TorchScriptBackend

        return TorchScriptBackend(load_torchscript(path), read_meta(path), str(path), device=device,
                                  precision=precision or "fp32")
    meta = read_meta(path)
    if precision and precision != meta.precision:
        raise BackendUnavailableError(
            f"{path} is a {meta.precision} artifact; --precision {precision} applies to checkpoints and "
            f"TorchScript only (export a {precision} artifact instead)")
    if kind == "onnx":
        from .ort_backend import OrtBackend

        return OrtBackend(str(path), meta, device=device, threads=threads)
    if device == "cpu":
        raise BackendUnavailableError(f"{path} is a TensorRT engine: it runs on a CUDA GPU only; use --device cuda or auto")
    from ..trt.backend import TensorRTBackend

    return TensorRTBackend(str(path), meta=meta, device="cuda" if device == "auto" else device)
