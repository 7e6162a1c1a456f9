"""What machine a benchmark ran on, for the report: the project's host probe
(:func:`unet_edge.host.probe_host`: CPU model, class, instruction-set flags, cores, CUDA devices,
ONNX Runtime providers) plus what only a report needs: date, hostname, OS, memory, load average,
CPU governor, GPU driver / CUDA runtime / cuDNN / L4T, more library versions and the git commit.

Everything here is best effort: a missing tool or file gives None, never an exception. Reports
written before the probe existed (no ``cpu_class`` in their host record) are still read:
:func:`cpu_class_of` derives the class from their ``cpu.all_speed_flags`` with the probe's rules.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
from pathlib import Path

from unet_edge.host import KNOWN_FLAGS, HostInfo, probe_host

#: The ISA flags that are Arm's; the others in :data:`unet_edge.host.KNOWN_FLAGS` are x86's.
ARM_FLAGS = frozenset({"asimd", "asimdhp", "fphp", "asimddp", "i8mm", "bf16", "sve", "sve2"})


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


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


def _gpu(probe: HostInfo) -> dict | None:
    """The first CUDA device of the probe, with what only a report needs (driver, CUDA runtime,
    cuDNN, L4T release on Jetson)."""
    if not probe.cuda:
        return None
    d = probe.cuda[0]
    info = {"name": d.name, "capability": f"{d.capability[0]}.{d.capability[1]}", "memory_gb": d.memory_gb,
            "count": len(probe.cuda), "cuda_runtime": None, "cudnn": None, "driver": None}
    try:
        import torch

        info.update(cuda_runtime=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    except Exception:  # noqa: BLE001
        pass
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


def _cpu(probe: HostInfo, p: dict) -> dict:
    """The report's ``cpu`` record: the probe's, with this architecture's flags as booleans and the governor."""
    gov = None
    try:
        gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        pass
    arm = probe.is_arm64
    return {"model": p["cpu_model"],
            "flags": {f: (f in probe.flags) for f in KNOWN_FLAGS if f in probe.flags or (f in ARM_FLAGS) == arm},
            "all_speed_flags": p["flags"], "cores_physical": p["cores_physical"], "cores_logical": p["cores_logical"],
            "affinity": p["affinity"], "default_threads": p["default_threads"], "governor": gov}


def _versions(p: dict) -> dict:
    """Library versions (None: not installed)."""
    versions = {"python": p["versions"].get("python") or platform.python_version(), "torch": p["versions"].get("torch"),
                "onnxruntime": p["versions"].get("onnxruntime")}
    for key, mod in (("onnx", "onnx"), ("opencv", "cv2"), ("numpy", "numpy"), ("matplotlib", "matplotlib")):
        versions[key] = _version(mod)
    versions["tensorrt"] = p["tensorrt"]
    return versions


def _torch_info(p: dict) -> dict:
    """PyTorch's CPU kernel level, oneDNN and thread count."""
    torch_info: dict = {"cpu_capability": p["torch_cpu_capability"]}
    try:
        import torch

        torch_info.update(mkldnn=torch.backends.mkldnn.is_available(), num_threads=torch.get_num_threads())
    except Exception:  # noqa: BLE001
        pass
    return torch_info


def host_info(repo: str | Path | None = None, probe: HostInfo | None = None) -> dict:
    """Describe this host for a benchmark report.

    Args:
        repo: the repository whose commit is recorded (default: this one).
        probe: the host probe (default :func:`unet_edge.host.probe_host`).

    Returns:
        ``{"date" (ISO 8601 UTC), "hostname", "os", "arch", "cpu_class", "int8_family",
        "native_bf16", "cpu": {"model", "flags": {flag: bool} (this architecture's
        flags), "all_speed_flags", "cores_physical", "cores_logical", "affinity",
        "default_threads", "governor"}, "memory_gb", "load_avg" (1/5/15 min), "gpu" (None
        without CUDA: name, capability, memory_gb, count, cuda_runtime, cudnn, driver, l4t on
        Jetson), "versions": {python, torch, onnxruntime, onnx, opencv, numpy, matplotlib,
        tensorrt}, "torch": {cpu_capability, mkldnn, num_threads}, "onnxruntime_providers",
        "git": {"commit", "dirty"}, "probe": unet_edge.host.HostInfo.to_dict()}``.
    """
    import psutil

    probe = probe or probe_host()
    p = probe.to_dict()
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": platform.platform(),
        "arch": p["arch"],
        "cpu_class": p["cpu_class"],
        "int8_family": p["int8_family"],
        "native_bf16": p["native_bf16"],
        "cpu": _cpu(probe, p),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 2),
        "load_avg": load_avg(),
        "gpu": _gpu(probe),
        "versions": _versions(p),
        "torch": _torch_info(p),
        "onnxruntime_providers": p["ort_providers"] or None,
        "git": _git(repo),
        "probe": p,
    }


def load_avg() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_class_of(h: dict) -> str | None:
    """The CPU class of a report's host record: ``cpu_class`` when recorded, else derived from an
    old record's flags (``cpu.all_speed_flags``, or the ``cpu.flags`` that are true) with the
    probe's rules (:attr:`unet_edge.host.HostInfo.cpu_class`); None when neither is there."""
    if h.get("cpu_class"):
        return h["cpu_class"]
    cpu = h.get("cpu") or {}
    flags = cpu.get("all_speed_flags")
    if flags is None and isinstance(cpu.get("flags"), dict):
        flags = [f for f, on in cpu["flags"].items() if on]
    arch = h.get("arch")
    if flags is None or not arch:
        return None
    return HostInfo(cpu_model=str(cpu.get("model") or "?"), arch=str(arch), cores_physical=None, cores_logical=None,
                    affinity=None, flags=frozenset(flags)).cpu_class


def host_summary(h: dict) -> str:
    """One line for tables: ``Intel Xeon, 2 cores, x86-amx, no GPU`` (``unknown class`` when an old
    record has neither a class nor flags)."""
    cpu = h.get("cpu") or {}
    gpu = h.get("gpu")
    g = f"{gpu['name']} (driver {gpu.get('driver') or '?'})" if gpu else "no GPU"
    cores = cpu.get("default_threads") or cpu.get("affinity") or cpu.get("cores_logical") or "?"
    return f"{cpu.get('model', '?')}, {cores} cores, {cpu_class_of(h) or 'unknown class'}, {g}"
