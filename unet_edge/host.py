"""The one host probe: CPU model, cores and instruction-set flags, CUDA devices, ONNX Runtime
providers and TensorRT, and the CPU class that every stage's choice of precision and kernels
depends on.

CPU flags come from /proc/cpuinfo on Linux and from py-cpuinfo (``cpuinfo.get_cpu_info()``, CPUID)
elsewhere, with PyTorch's own dispatch level (``torch.backends.cpu.get_cpu_capability()``) beside
them; CUDA devices from ``torch.cuda``. Everything is best effort: a missing library gives an empty
field, never an exception. :func:`probe_host` is cached per process.

``UNET_EDGE_CPU_FLAGS`` (comma-separated, e.g. ``avx2,fma``) replaces the detected ISA flags: it
makes every choice as on another CPU class, to reproduce that class's behaviour here (with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` PyTorch's kernels follow; ONNX Runtime's
cannot be limited).

CPU classes (:attr:`HostInfo.cpu_class`), from the best INT8/BF16 feature down:

========================  =====================================================================
``x86-amx``               AMX tiles (Sapphire Rapids and later): INT8 and BF16 matrix units
``x86-avx512-vnni``       AVX-512 VNNI (``VPDPBUSD``): INT8 dot products without saturation
``x86-avx-vnni``          AVX-VNNI on 256-bit registers (Alder Lake, Zen 5 client)
``x86-avx512``            AVX-512 without VNNI (Skylake-SP): INT8 through ``VPMADDUBSW``
``x86-avx2``              AVX2/FMA only (most laptops, many cloud VMs): INT8 through ``VPMADDUBSW``
``x86``                   older x86
``arm64-i8mm``            Armv8.6 int8 matrix multiply (Graviton 3, Orin's Cortex-A78AE has dotprod)
``arm64-dotprod``         Armv8.2 ``SDOT``/``UDOT`` (Jetson Orin/Xavier CPUs, Graviton 2)
``arm64``                 other 64-bit Arm
========================  =====================================================================

The INT8 kernel family (:func:`int8_family`) folds these into the classes whose integer kernels
give different numbers: ``x86-vnni`` (AMX, AVX512-VNNI, AVX-VNNI), ``x86-avx2`` (``VPMADDUBSW``,
whose u8 x s8 pair sums saturate at int16: ONNX Runtime's quantization docs, "When and why do I need
to try U8U8?"), ``arm64`` and ``generic``.
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass, field

#: ISA flags that change which kernels run, spelled as in /proc/cpuinfo. py-cpuinfo spells a few
#: without the underscore (``avx512vnni``); :func:`_normalize_flags` maps them back.
KNOWN_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
    "asimd", "asimdhp", "fphp", "asimddp", "i8mm", "bf16", "sve", "sve2",
)
_ALIASES = {"avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
            "avxvnni": "avx_vnni", "amxbf16": "amx_bf16", "amxint8": "amx_int8", "amxtile": "amx_tile",
            "dotprod": "asimddp", "svebf16": "bf16", "svei8mm": "i8mm"}

CPU_CLASSES = ("x86-amx", "x86-avx512-vnni", "x86-avx-vnni", "x86-avx512", "x86-avx2", "x86",
               "arm64-i8mm", "arm64-dotprod", "arm64", "other")
INT8_FAMILIES = ("x86-vnni", "x86-avx2", "arm64", "generic")


@dataclass(frozen=True)
class CudaDevice:
    """One CUDA device: ``capability`` is (major, minor), ``memory_gb`` in GB (1e9 bytes)."""

    index: int
    name: str
    capability: tuple[int, int]
    memory_gb: float


@dataclass(frozen=True)
class HostInfo:
    """What this process runs on.

    Attributes:
        cpu_model: brand string, e.g. ``AMD EPYC 9R14``.
        arch: ``x86_64``, ``aarch64``, ...
        cores_physical, cores_logical: as psutil counts them (None where unknown).
        affinity: CPUs this process may run on (``os.sched_getaffinity``), None where unknown.
        flags: the :data:`KNOWN_FLAGS` this CPU has.
        torch_cpu_capability: PyTorch's CPU dispatch level (``AVX2``, ``AVX512``, ``DEFAULT``...).
        cuda: CUDA devices visible to PyTorch.
        ort_providers: ONNX Runtime execution providers (empty without onnxruntime).
        tensorrt: TensorRT Python bindings version, None when they cannot be imported.
        versions: python, torch, onnxruntime.
    """

    cpu_model: str
    arch: str
    cores_physical: int | None
    cores_logical: int | None
    affinity: int | None
    flags: frozenset[str]
    torch_cpu_capability: str | None = None
    cuda: tuple[CudaDevice, ...] = ()
    ort_providers: tuple[str, ...] = ()
    tensorrt: str | None = None
    versions: dict = field(default_factory=dict)

    def has(self, *flags: str) -> bool:
        """True when the CPU has any of ``flags``."""
        return any(f in self.flags for f in flags)

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "x86")

    @property
    def is_arm64(self) -> bool:
        return self.arch.lower() in ("aarch64", "arm64")

    @property
    def cpu_class(self) -> str:
        """One of :data:`CPU_CLASSES` (see the module docstring)."""
        if self.is_x86:
            if self.has("amx_int8", "amx_bf16"):
                return "x86-amx"
            if self.has("avx512_vnni"):
                return "x86-avx512-vnni"
            if self.has("avx_vnni"):
                return "x86-avx-vnni"
            if self.has("avx512bw"):
                return "x86-avx512"
            if self.has("avx2"):
                return "x86-avx2"
            return "x86"
        if self.is_arm64:
            if self.has("i8mm"):
                return "arm64-i8mm"
            if self.has("asimddp"):
                return "arm64-dotprod"
            return "arm64"
        return "other"

    @property
    def native_bf16(self) -> bool:
        """The CPU computes bf16 in hardware (x86 AVX512_BF16 or AMX-BF16, Arm BF16). Without it
        PyTorch's bf16 autocast is emulated: 4-5x slower training, ~25x slower inference than FP32
        (measured on a 2-core AVX2-only EPYC, unet-edge issue 8)."""
        return self.has("avx512_bf16", "amx_bf16") if self.is_x86 else self.has("bf16")

    @property
    def int8_family(self) -> str:
        """The INT8 kernel family of this CPU, one of :data:`INT8_FAMILIES`."""
        return int8_family(self.cpu_class)

    @property
    def default_threads(self) -> int:
        """Physical cores this process may use: the default thread count for PyTorch and ONNX
        Runtime (hyper-threads share one core's vector units and slow convolutions down)."""
        phys = self.cores_physical or self.cores_logical or 1
        if self.affinity and self.cores_logical and self.affinity < self.cores_logical:
            # a cgroup/taskset limit: count the allowed CPUs, halved where SMT doubles them
            smt = max(1, (self.cores_logical or 1) // max(1, phys))
            return max(1, self.affinity // smt)
        return max(1, phys)

    @property
    def cuda_available(self) -> bool:
        return bool(self.cuda)

    def cuda_capability(self, device: str | int = 0) -> tuple[int, int] | None:
        """(major, minor) compute capability of CUDA device ``device`` (an index, ``cuda`` or
        ``cuda:N``); None when there is no such device."""
        if isinstance(device, str):
            device = int(device.split(":")[1]) if ":" in device else 0
        return next((tuple(d.capability) for d in self.cuda if d.index == device), None)

    def summary(self) -> str:
        """One line, e.g. ``Intel Xeon, 2 cores (2 threads), x86-amx, no GPU``."""
        gpu = ", ".join(f"{d.name} (sm {d.capability[0]}.{d.capability[1]})" for d in self.cuda) or "no GPU"
        return f"{self.cpu_model}, {self.default_threads} cores, {self.cpu_class}, {gpu}"

    def to_dict(self) -> dict:
        """JSON-ready record for reports, sidecars and ``export_report.json``."""
        d = asdict(self)
        d["flags"] = sorted(self.flags)
        d["cuda"] = [{**asdict(c), "capability": f"{c.capability[0]}.{c.capability[1]}"} for c in self.cuda]
        d["ort_providers"] = list(self.ort_providers)
        d.update(cpu_class=self.cpu_class, int8_family=self.int8_family, native_bf16=self.native_bf16,
                 default_threads=self.default_threads)
        return d


def int8_family(cpu_class: str) -> str:
    """Fold a :data:`CPU_CLASSES` entry into its INT8 kernel family (:data:`INT8_FAMILIES`).

    Raises:
        ValueError: an unknown class.
    """
    if cpu_class in ("x86-amx", "x86-avx512-vnni", "x86-avx-vnni"):
        return "x86-vnni"
    if cpu_class in ("x86-avx512", "x86-avx2"):
        return "x86-avx2"
    if cpu_class.startswith("arm64"):
        return "arm64"
    if cpu_class in ("x86", "other"):
        return "generic"
    raise ValueError(f"unknown CPU class {cpu_class!r}; one of {', '.join(CPU_CLASSES)}")


def _normalize_flags(raw) -> frozenset[str]:
    names = {_ALIASES.get(f.lower(), f.lower()) for f in raw}
    return frozenset(f for f in KNOWN_FLAGS if f in names)


def _cpu_fields() -> dict:
    model, raw, arch = "", [], platform.machine()
    # Linux: /proc/cpuinfo holds the kernel's flags and costs microseconds; py-cpuinfo (2-3 s per
    # call: it spawns helpers) only where there is none (macOS, Windows) or it lists no flags
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = val.strip()
                elif key in ("flags", "features") and not raw:
                    raw = val.split()
    except OSError:
        pass
    if not raw:
        try:
            import cpuinfo

            info = cpuinfo.get_cpu_info()
            model, raw = model or info.get("brand_raw") or "", info.get("flags") or []
        except Exception:  # noqa: BLE001 - py-cpuinfo absent or failing: no flags known
            pass
    try:
        import psutil

        phys, logical = psutil.cpu_count(logical=False), psutil.cpu_count(logical=True)
    except Exception:  # noqa: BLE001
        phys, logical = None, os.cpu_count()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    forced = os.environ.get("UNET_EDGE_CPU_FLAGS")
    if forced is not None:
        raw = [f.strip() for f in forced.split(",") if f.strip()]
    return {"cpu_model": model or platform.processor() or arch, "arch": arch, "cores_physical": phys,
            "cores_logical": logical, "affinity": affinity, "flags": _normalize_flags(raw)}


def _torch_fields() -> dict:
    try:
        import torch
    except ImportError:
        return {}
    out: dict = {"versions": {"torch": str(torch.__version__)}}
    try:
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        pass
    try:
        if torch.cuda.is_available():
            out["cuda"] = tuple(
                CudaDevice(i, torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)),
                           round(torch.cuda.get_device_properties(i).total_memory / 1e9, 2))
                for i in range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - a broken driver reads as no GPU
        pass
    return out


def _runtime_fields() -> dict:
    out: dict = {"versions": {}}
    try:
        import onnxruntime as ort

        out["ort_providers"] = tuple(ort.get_available_providers())
        out["versions"]["onnxruntime"] = ort.__version__
    except Exception:  # noqa: BLE001
        pass
    try:
        import tensorrt

        out["tensorrt"] = str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - ImportError, or OSError when libnvinfer is missing
        pass
    return out


@functools.lru_cache(maxsize=1)
def probe_host() -> HostInfo:
    """Probe this host once per process (cached). Never raises."""
    fields = _cpu_fields()
    t, r = _torch_fields(), _runtime_fields()
    versions = {"python": platform.python_version(), **t.pop("versions", {}), **r.pop("versions", {})}
    return HostInfo(**fields, **t, **r, versions=versions)


@functools.lru_cache(maxsize=1)
def probe_cpu() -> HostInfo:
    """The CPU part of the probe only (model, flags, cores; cached): enough for the CPU class, the
    INT8 family and the thread count, and it imports neither PyTorch nor ONNX Runtime, so the
    ONNX/engine runtime path stays free of PyTorch. Never raises."""
    return HostInfo(**_cpu_fields(), versions={"python": platform.python_version()})


def resolve_threads(threads: int | None) -> int:
    """``threads`` when positive, else :attr:`HostInfo.default_threads` (the physical cores)."""
    return int(threads) if threads and threads > 0 else probe_cpu().default_threads
