"""Open the right backend for an artifact, recognised by its content and metadata."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..artifacts import artifact_kind, model_from_checkpoint, read_meta
from ..errors import ArtifactError, BackendUnavailableError, UsageError
from ..host import resolve_threads
from ..zoo import resolve_artifact
from .base import Backend, check_device

#: values of ``precision``: the PyTorch autocast choices, plus ``int8`` (an INT8 artifact's own).
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def load_backend(path: str | Path, device: str = "cpu", precision: str | None = None, threads: int = 0) -> Backend:
    """Backend for a checkpoint (PyTorch eager), TorchScript, ONNX (ONNX Runtime), OpenVINO IR
    (``.xml``), ``.pt2`` (torch.export program or AOTInductor package) or TensorRT engine.

    Args:
        path: the artifact.
        device: ``cpu``, ``cuda`` or ``auto``. A device that is not available raises; there is no
            silent fallback.
        precision: PyTorch only: ``fp32`` (default), ``auto``, ``bf16`` (CPU autocast) or ``fp16`` (CUDA
            autocast). ONNX, ``.pt2`` and engine precision is fixed by the artifact (``auto`` or None
            take it); asking for another raises. An OpenVINO IR also takes ``bf16`` (the bf16
            inference-precision hint, on CPUs with native bf16 only).
        threads: CPU threads for PyTorch (``torch.set_num_threads``) / ONNX Runtime intra-op / OpenVINO;
            0: the physical cores (:func:`unet_edge.host.resolve_threads`).
            ``backend.capabilities().threads`` says the count used.

    Returns:
        the loaded :class:`Backend`; ask it what it runs with :meth:`Backend.capabilities`.

    Raises:
        UsageError: an unknown device or precision.
        ArtifactError: unknown or corrupt artifact, or invalid metadata. BackendUnavailableError:
        device/precision not available for this artifact on this host, a checkpoint/TorchScript/``.pt2``
        file where PyTorch is not installed (a runtime-only install runs ONNX and engines), or an
        OpenVINO IR where openvino is not installed.
    """
    check_device(device)
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    path = resolve_artifact(path)
    kind = artifact_kind(path)
    if kind in ("checkpoint", "torchscript"):
        torch = _require_torch(path, kind)
        torch.set_num_threads(resolve_threads(threads))
    if kind == "checkpoint":
        from .torch_backend import TorchBackend

        model, meta, _ = model_from_checkpoint(path)
        return TorchBackend(model, meta, str(path), device=device, precision=precision or "fp32")
    if kind == "torchscript":
        from .torch_backend import TorchScriptBackend

        meta = read_meta(path)  # validated before torch.jit.load touches the file
        try:
            # TorchScript's own unpickler builds tensors and TorchScript classes only: no Python code runs
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            raise ArtifactError(f"torch.jit.load cannot load TorchScript file {path}: {str(e).splitlines()[0]}; "
                                "it may be truncated; re-export it") from e
        return TorchScriptBackend(module, meta, str(path), device=device, precision=precision or "fp32")
    meta = read_meta(path)
    if kind == "openvino":  # before the generic check: an FP32 IR also runs with the bf16 hint
        if importlib.util.find_spec("openvino") is None:
            raise BackendUnavailableError(f"{path} is an OpenVINO IR: running it needs openvino, which this install "
                                          "does not have: pip install 'unet-edge[openvino]'")
        from .openvino_backend import OpenVinoBackend

        return OpenVinoBackend(str(path), meta, device=device, threads=threads, precision=precision)
    if precision and precision not in ("auto", meta.precision):
        raise BackendUnavailableError(
            f"{path} is a {meta.precision} artifact; --precision {precision} applies to checkpoints and "
            f"TorchScript only (export a {precision} artifact instead)")
    if kind in ("exported_program", "aoti"):
        _require_torch(path, "ExportedProgram (.pt2)" if kind == "exported_program" else "AOTInductor package (.pt2)")
        from .pt2_backend import AotiBackend, ExportedProgramBackend

        cls = AotiBackend if kind == "aoti" else ExportedProgramBackend
        return cls(str(path), meta, device=device, threads=threads)
    if kind == "onnx":
        from .ort_backend import OrtBackend

        return OrtBackend(str(path), meta, device=device, threads=threads)
    if device == "cpu":
        raise BackendUnavailableError(f"{path} is a TensorRT engine: it runs on a CUDA GPU only; use --device cuda or auto")
    from .trt_backend import TensorRTBackend

    return TensorRTBackend(str(path), meta=meta, device="cuda" if device == "auto" else device)


def _require_torch(path, kind: str):
    """The ``torch`` module, or a clear error on a runtime-only install (no PyTorch)."""
    try:
        import torch
    except ImportError as e:
        raise BackendUnavailableError(
            f"{path} is a PyTorch {kind}: running it needs PyTorch, which this install does not have. "
            "Install it (pip install torch==2.13.0 && pip install 'unet-edge[train]'), or run the model's ONNX export "
            "(`unet-edge export` on a machine with PyTorch)") from e
    return torch
