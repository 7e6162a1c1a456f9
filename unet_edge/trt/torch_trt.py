"""Optional Torch-TensorRT: compile the exported TorchScript module (``model.ts``) into a TorchScript
module with embedded TensorRT engines.

Uses ``torch_tensorrt.compile(module, ir="ts", inputs=[torch_tensorrt.Input(...)],
enabled_precisions=...)`` and ``torch.jit.save`` (Torch-TensorRT "Using Torch-TensorRT in Python";
the TorchScript frontend is the one that takes a ``torch.jit.ScriptModule``). Precisions: ``fp32``,
``fp16`` (INT8 goes through the ONNX Q/DQ path and :mod:`unet_edge.trt.builder`).

The result obeys the engine rules: it embeds TensorRT plans, so it only runs with the same
Torch-TensorRT/TensorRT versions and GPU; its ``<out>.json`` sidecar holds the model metadata plus
the ``engine`` object (:mod:`unet_edge.trt.sidecar`), and the metadata is also stored in the file
(``extra/unet_edge.json``) so :func:`unet_edge.artifacts.read_meta` reads it. Loading it needs
``import torch_tensorrt`` before ``torch.jit.load``.
"""
from __future__ import annotations

from pathlib import Path

from ..artifacts import read_meta
from ..errors import BackendUnavailableError, ExportError
from ..io_utils import atomic_path, sha256
from .sidecar import make_sidecar, write_sidecar

PRECISIONS = ("fp32", "fp16")


def import_torch_tensorrt():
    """Import ``torch_tensorrt``.

    Raises:
        BackendUnavailableError: not installed, or no CUDA device for it.
    """
    try:
        import torch
        import torch_tensorrt
    except (ImportError, OSError) as e:
        raise BackendUnavailableError(
            f"Torch-TensorRT is not available ({type(e).__name__}: {e}); install torch-tensorrt matching your "
            "PyTorch and CUDA, or build a TensorRT engine from the ONNX with `unet-edge build`") from e
    if not torch.cuda.is_available():
        raise BackendUnavailableError("Torch-TensorRT needs a CUDA GPU; this PyTorch sees none")
    return torch_tensorrt


def compile_torchscript(ts_path: str | Path, out_path: str | Path, precision: str = "fp16",
                        batch: int = 1, workspace_mib: int = 1024) -> Path:
    """Compile ``ts_path`` (exported TorchScript) with Torch-TensorRT for input (batch, 3, H, W).

    Args:
        ts_path: TorchScript file written by ``unet-edge export`` (carries the metadata).
        out_path: output TorchScript file (e.g. ``model_trt_fp16.ts``); ``<out>.json`` beside it.
        precision: ``fp32`` or ``fp16``.
        batch: static batch size N of the compiled input.
        workspace_mib: TensorRT workspace limit in MiB.

    Returns:
        ``out_path``.

    Raises:
        BackendUnavailableError: Torch-TensorRT or CUDA missing. ExportError: bad precision or the
            compilation failed. ArtifactError: ``ts_path`` is not a unet-edge TorchScript.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"Torch-TensorRT precision must be one of {PRECISIONS}; INT8 uses `unet-edge build --precision int8`")
    torch_tensorrt = import_torch_tensorrt()
    import torch

    from ..artifacts import TORCHSCRIPT_EXTRA
    from .cuda_utils import gpu_info

    meta = read_meta(ts_path)  # ArtifactError when it is not a unet-edge TorchScript
    h, w = meta.input_size
    module = torch.jit.load(str(ts_path), map_location="cuda").eval()
    dtypes = {torch.float32} if precision == "fp32" else {torch.float32, torch.float16}
    try:
        compiled = torch_tensorrt.compile(
            module, ir="ts", inputs=[torch_tensorrt.Input((batch, 3, h, w), dtype=torch.float32)],
            enabled_precisions=dtypes, workspace_size=int(workspace_mib) << 20)
    except Exception as e:
        raise ExportError(f"Torch-TensorRT could not compile {ts_path}: {type(e).__name__}: {e}") from e
    out_meta = meta.with_(precision=precision)
    with atomic_path(out_path) as tmp:
        torch.jit.save(compiled, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: out_meta.to_json()})
    version = getattr(torch_tensorrt, "__version__", "unknown")
    trt_version = "unknown"
    try:
        import tensorrt as trt  # Torch-TensorRT depends on it

        trt_version = trt.__version__
    except ImportError:
        pass
    io = [{"name": meta.input_name, "mode": "input", "shape": [batch, 3, h, w], "dtype": "float32"},
          {"name": meta.output_name, "mode": "output", "shape": [batch, meta.num_classes, h, w], "dtype": "float32"}]
    sidecar = make_sidecar(
        meta, precision=precision, mode="torch-tensorrt", trt_version=trt_version, gpu=gpu_info(0), io=io,
        onnx_path=str(ts_path), onnx_sha256=sha256(ts_path), strongly_typed=False,
        build_options={"precision": precision, "batch": batch, "workspace_mib": workspace_mib,
                       "torch_tensorrt_version": version},
        build_command=f"python -c \"from unet_edge.trt.torch_trt import compile_torchscript; "
                      f"compile_torchscript('{ts_path}', '{out_path}', '{precision}', {batch})\"",
        built_by=f"torch-tensorrt {version}")
    write_sidecar(out_path, sidecar)
    return Path(out_path)
