"""What machine a benchmark ran on: CPU and the instruction-set flags that change inference speed,
cores, memory, GPU and driver, library versions, the repository commit, date and load.

Everything here is best effort: a missing tool or file gives None, never an exception.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

#: CPU flags that matter for CNN inference speed, as spelled in /proc/cpuinfo.
#: x86: AVX2/FMA (FP32 GEMM), AVX-512, VNNI (INT8 dot products), AVX512-BF16 and AMX (BF16/INT8
#: matrix tiles). ARM (Jetson, Graviton): asimd (NEON), asimdhp/fphp (FP16 arithmetic),
#: asimddp (INT8 dot product), i8mm (INT8 matrix multiply), bf16, sve.
SPEED_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimdhp", "fphp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def _cpuinfo() -> dict:
    model, flags = None, set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = val.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(val.split())
    if not model:
        lscpu = _run(["lscpu"]) or ""
        m = re.search(r"Model name:\s*(.+)", lscpu)
        model = m.group(1).strip() if m else (platform.processor() or platform.machine())
    return {"model": model, "flags": {f: (f in flags) for f in SPEED_FLAGS if f in flags or _relevant(f)},
            "all_speed_flags": sorted(f for f in SPEED_FLAGS if f in flags)}


def _relevant(flag: str) -> bool:
    """Show absent flags only for the machine's own architecture (no ARM flags on x86 and back)."""
    arm = platform.machine().lower() in ("aarch64", "arm64")
    arm_flags = {"asimd", "asimdhp", "fphp", "asimddp", "i8mm", "bf16", "sve", "sve2"}
    return (flag in arm_flags) == arm


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - absent or broken: reported as None
        return None
    return str(getattr(mod, "__version__", "?"))


def _git(repo: Path) -> dict:
    # read-only: --no-optional-locks keeps `git status` from refreshing the index
    commit = _run(["git", "--no-optional-locks", "-C", str(repo), "rev-parse", "HEAD"])
    if not commit:
        return {"commit": None, "dirty": None}
    status = _run(["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _gpu() -> dict | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    i = torch.cuda.current_device()
    p = torch.cuda.get_device_properties(i)
    info = {"name": torch.cuda.get_device_name(i), "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
            "memory_gb": round(p.total_memory / 1e9, 2), "count": torch.cuda.device_count(),
            "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "driver": None}
    smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if smi:
        info["driver"] = smi.splitlines()[0].strip()
    tegra = Path("/etc/nv_tegra_release")
    if tegra.is_file():
        try:
            info["l4t"] = tegra.read_text().splitlines()[0].strip()
        except OSError:
            pass
    return info


def host_info(repo: str | Path | None = None) -> dict:
    """Describe this host for a benchmark report.

    Returns:
        ``{"date" (ISO 8601 UTC), "hostname", "os", "arch", "cpu": {"model", "flags": {flag: bool},
        "all_speed_flags", "cores_physical", "cores_logical", "affinity", "governor"},
        "memory_gb", "load_avg" (1/5/15 min), "gpu" (None without CUDA: name, capability,
        memory_gb, cuda_runtime, cudnn, driver, l4t on Jetson), "versions": {python, torch,
        onnxruntime, onnx, opencv, numpy, matplotlib, tensorrt}, "torch": {cpu_capability,
        mkldnn, num_threads}, "onnxruntime_providers", "git": {"commit", "dirty"}}``.
    """
    import psutil

    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    cpu = _cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    gov = None
    try:
        gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        pass
    cpu.update(cores_physical=psutil.cpu_count(logical=False), cores_logical=psutil.cpu_count(logical=True),
               affinity=affinity, governor=gov)
    versions = {"python": platform.python_version()}
    for key, mod in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("opencv", "cv2"),
                     ("numpy", "numpy"), ("matplotlib", "matplotlib")):
        versions[key] = _version(mod)
    try:
        import tensorrt  # noqa: F401

        versions["tensorrt"] = str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - ImportError, OSError (libnvinfer missing)
        versions["tensorrt"] = None
    torch_info: dict = {}
    try:
        import torch

        torch_info = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "mkldnn": torch.backends.mkldnn.is_available(), "num_threads": torch.get_num_threads()}
    except Exception:  # noqa: BLE001
        pass
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except Exception:  # noqa: BLE001
        providers = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": platform.platform(),
        "arch": platform.machine(),
        "cpu": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 2),
        "load_avg": load,
        "gpu": _gpu(),
        "versions": versions,
        "torch": torch_info,
        "onnxruntime_providers": providers,
        "git": _git(repo),
    }


def load_avg() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def host_summary(h: dict) -> str:
    """One line for tables: ``AMD EPYC, 2 cores, avx512_vnni avx512_bf16, no GPU``."""
    cpu = h.get("cpu", {})
    flags = " ".join(f for f in cpu.get("all_speed_flags", []) if f in ("avx512_vnni", "avx512_bf16", "amx_bf16",
                                                                         "amx_int8", "avx_vnni", "asimddp", "i8mm", "bf16"))
    gpu = h.get("gpu")
    g = f"{gpu['name']} (driver {gpu.get('driver') or '?'})" if gpu else "no GPU"
    cores = cpu.get("affinity") or cpu.get("cores_logical")
    return f"{cpu.get('model', '?')}, {cores} cores" + (f", {flags}" if flags else "") + f", {g}"
