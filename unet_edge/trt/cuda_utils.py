"""CUDA through pycuda for the TensorRT code: import, GPU identity, and the device's primary context.

TensorRT uses the CUDA runtime, which runs on each device's *primary* context; pycuda's
``Device.retain_primary_context()`` gives the same context, so pycuda allocations and TensorRT
kernels share it. Contexts are current per thread: code that runs CUDA work pushes the context on
entry and pops it on exit (:func:`primary_context`), so a backend built in one thread can infer
from another (the threaded video pipeline).
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from ..errors import BackendUnavailableError

UNKNOWN = "unknown"


def import_pycuda():
    """Import ``pycuda.driver``, call ``cuda.init()`` and return it.

    Raises:
        BackendUnavailableError: pycuda is not installed, or no CUDA driver/GPU is present.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise BackendUnavailableError(
            f"pycuda is not installed ({e}); the TensorRT backend uses it for device memory and streams: "
            "`pip install pycuda` (needs the CUDA toolkit; on Jetson it is in JetPack)") from e
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as e:  # pycuda.driver.Error / RuntimeError when the driver is missing
        raise BackendUnavailableError(f"no usable CUDA driver ({type(e).__name__}: {e}); TensorRT needs an NVIDIA GPU") from e
    if count == 0:
        raise BackendUnavailableError("no CUDA GPU found; TensorRT engines need an NVIDIA GPU")
    return cuda


def device_index(device: str) -> int:
    """``cuda`` -> 0, ``cuda:1`` -> 1.

    Raises:
        BackendUnavailableError: not a CUDA device string (TensorRT has no CPU execution).
    """
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise BackendUnavailableError(f"TensorRT runs on CUDA GPUs only; got device {device!r} (use cuda or cuda:N)")


def gpu_info(index: int = 0) -> dict:
    """{"name": ..., "compute_capability": "major.minor"} of GPU ``index``; fields this host cannot
    tell are ``"unknown"``. Tries pycuda (:func:`import_pycuda`), then ``nvidia-smi``, then the
    Jetson device-tree model."""
    try:
        cuda = import_pycuda()
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        return {"name": dev.name(), "compute_capability": f"{major}.{minor}"}
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", str(index)],
                                 capture_output=True, text=True, timeout=20, check=True).stdout.strip()
            name, _, cc = out.partition(",")
            if name:
                return {"name": name.strip(), "compute_capability": cc.strip() or UNKNOWN}
        except (subprocess.SubprocessError, OSError):
            pass
    model = Path("/proc/device-tree/model")
    if model.is_file():
        return {"name": model.read_bytes().rstrip(b"\0").decode(errors="replace").strip(), "compute_capability": UNKNOWN}
    return {"name": UNKNOWN, "compute_capability": UNKNOWN}


@contextlib.contextmanager
def primary_context(cuda, ctx) -> Iterator[None]:
    """Make ``ctx`` (a retained primary context) current for the block, then pop it."""
    ctx.push()
    try:
        yield
    finally:
        cuda.Context.pop()
