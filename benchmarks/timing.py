"""Latency measurement and memory probes.

Timing hygiene, applied by :func:`time_calls`:

* warmup calls run first and are discarded;
* each timed call gets the next input of a rotating pool of real preprocessed images (no single
  repeated tensor whose caches stay hot);
* the Python garbage collector is paused during the timed loop so a collection does not land in
  one sample;
* CPU: wall clock with :func:`time.perf_counter`; CUDA: ``torch.cuda.Event`` pairs (elapsed GPU
  time between the two events, the host waits for the end event), guarded by
  ``torch.cuda.is_available()``.

Memory is measured in a *separate pass* (:func:`measure_memory`), by default in a fresh child
process per row so rows do not inherit each other's allocator state: RSS delta (psutil, sampled
every 1 ms plus ``ru_maxrss``) from just before loading the backend, and on CUDA
``torch.cuda.max_memory_allocated`` (PyTorch rows) or the device-wide used-memory delta
(``torch.cuda.mem_get_info``; TensorRT / ONNX Runtime CUDA rows).
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .records import MemoryProbe, Timing

MB = 1e6  #: bytes per MB in every report (SI megabytes)

#: Keys of :func:`latency_stats`, all in milliseconds except ``n``.
STAT_KEYS = tuple(f.name for f in fields(Timing))


def latency_stats(samples_ms: Sequence[float]) -> dict:
    """Summary of per-call latencies as a dict (:meth:`benchmarks.records.Timing.of`).

    Args:
        samples_ms: one value per timed call, in milliseconds.

    Returns:
        ``{"n", "mean", "std", "min", "p10", "p50", "p90", "p99", "max"}``; every value except
        ``n`` in ms (``std`` is the population standard deviation). Percentiles use linear
        interpolation, so ``p10 <= p50 <= p90 <= p99`` always holds. Empty input gives ``n = 0``
        and None elsewhere.
    """
    return Timing.of(samples_ms).to_dict()


def fps_from_ms(batch_ms: float | None, batch: int = 1) -> float | None:
    """Images per second for a batch of ``batch`` images taking ``batch_ms`` milliseconds."""
    if not batch_ms or batch_ms <= 0:
        return None
    return 1000.0 * batch / batch_ms


class Timer:
    """Measures one call in milliseconds.

    ``Timer("cpu")`` uses :func:`time.perf_counter`; ``Timer("cuda")`` records CUDA events on the
    current stream around the call and waits for the end event (the backends return host arrays,
    so this includes the host<->device copies, as an application sees it).
    """

    def __init__(self, device: str = "cpu"):
        self.device = "cuda" if str(device).startswith("cuda") else "cpu"
        self.kind = "perf_counter"
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("CUDA timer requested but torch.cuda.is_available() is False")
            self.kind = "cuda_event"
            self._torch = torch

    def __call__(self, fn: Callable[[], object]) -> float:
        """Run ``fn()`` once; return its duration in ms."""
        if self.device == "cuda":
            torch = self._torch
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def time_calls(infer: Callable[[np.ndarray], object], inputs: Sequence[np.ndarray], iters: int, warmup: int,
               timer: Timer | None = None) -> list[float]:
    """Time ``iters`` calls of ``infer`` after ``warmup`` untimed ones.

    Args:
        infer: the function under test, e.g. ``Backend.infer``.
        inputs: a pool of inputs (float32 (B, 3, H, W) each), used in turn: call ``i`` gets
            ``inputs[i % len(inputs)]``; warmup calls continue the rotation.
        iters: timed calls.
        warmup: untimed calls before them.
        timer: :class:`Timer` (default: CPU wall clock).

    Returns:
        per-call latencies in ms, in call order.
    """
    timer = timer or Timer("cpu")
    if not inputs:
        raise ValueError("time_calls needs at least one input")
    n = len(inputs)
    for i in range(warmup):
        infer(inputs[i % n])
    samples: list[float] = []
    was_enabled = gc.isenabled()
    # the young generations only: the timed calls run with gc off anyway, and a full collection of
    # a large heap (a pytest or notebook process) took ~140 ms a call, more than the calls it precedes
    gc.collect(1)
    gc.disable()
    try:
        for i in range(iters):
            x = inputs[(warmup + i) % n]
            samples.append(timer(lambda: infer(x)))
    finally:
        if was_enabled:
            gc.enable()
    return samples


# ----------------------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Resident set size of this process in bytes (psutil)."""
    import psutil

    return psutil.Process().memory_info().rss


def _maxrss_bytes() -> int:
    try:
        import resource

        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(v) * (1 if sys.platform == "darwin" else 1024)
    except (ImportError, OSError):
        return 0


class PeakRSS:
    """Samples this process's RSS every ``interval_s`` in a thread; ``peak`` is the maximum seen (bytes)."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="bench-rss")

    def _run(self) -> None:
        import psutil

        p = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, p.memory_info().rss)
            time.sleep(self.interval_s)

    def mark(self) -> int:
        """Current peak in bytes, including the RSS right now."""
        self.peak = max(self.peak, rss_bytes())
        return self.peak

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.mark()
        return False


@dataclass(frozen=True)
class MemorySpec:
    """What :func:`memory_pass` loads and runs (JSON-able: it is sent to the child process).

    Attributes:
        path: the artifact.
        device: ``cpu`` or ``cuda``.
        precision: passed to ``load_backend`` (None for artifacts with a fixed precision).
        threads: CPU threads (0: the loader's default).
        input_size: (H, W) of the seeded random inputs (memory does not depend on pixel values).
        batch: the larger batch.
    """

    path: str
    device: str
    precision: str | None
    threads: int
    input_size: tuple[int, int]
    batch: int

    def to_dict(self) -> dict:
        """JSON-ready dict (``input_size`` as a list)."""
        return {**asdict(self), "input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, d: dict) -> "MemorySpec":
        """The inverse of :meth:`to_dict`."""
        return cls(**{**d, "input_size": tuple(d["input_size"])})


#: backend kinds whose device memory comes from PyTorch's caching allocator (AOTInductor packages
#: and ExportedPrograms allocate through it too)
TORCH_ALLOCATOR_KINDS = ("pytorch", "torchscript", "torch.export", "aotinductor")


class _GpuMemory:
    """Device memory while a CUDA row runs: free bytes before loading and the lowest seen since."""

    def __init__(self, torch, cuda: bool):
        self._torch = torch
        self.free0 = None
        if cuda and torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.free0 = torch.cuda.mem_get_info()[0]
        self.min_free = self.free0

    def sample(self) -> None:
        if self.free0 is not None:
            self._torch.cuda.synchronize()
            self.min_free = min(self.min_free, self._torch.cuda.mem_get_info()[0])

    def peak(self, backend_kind: str) -> tuple[float | None, str | None]:
        """(peak MB, how) for a row of ``backend_kind`` (:attr:`Capabilities.kind`): PyTorch's
        allocator peak for :data:`TORCH_ALLOCATOR_KINDS` rows, else the drop of the device's free memory;
        (None, None) on CPU rows."""
        if self.free0 is None:
            return None, None
        if backend_kind in TORCH_ALLOCATOR_KINDS:
            return self._torch.cuda.max_memory_allocated() / MB, "torch_max_memory_allocated"
        return (self.free0 - self.min_free) / MB, "device_used_delta"


def _probe_inputs(spec: MemorySpec) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random float32 inputs (1, 3, H, W) and (batch, 3, H, W)."""
    h, w = spec.input_size
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    return x1, rng.standard_normal((int(spec.batch), 3, h, w)).astype(np.float32)


def memory_pass(spec: MemorySpec) -> MemoryProbe:
    """Measure the memory of one row in the current process.

    Args:
        spec: what to load and run; inputs are seeded random.

    Returns:
        a :class:`~benchmarks.records.MemoryProbe` (``mode`` None): MB (1e6 bytes) above the RSS
        measured just before the backend was loaded: after loading, peak while running batch 1
        (load included), peak while running ``batch`` (None, with ``batch_error``, when the batch
        could not run); ``gpu_peak_mb`` on CUDA rows.

    Raises:
        what loading the backend or running batch 1 raises.
    """
    from unet_edge.runtime.loader import load_backend

    import torch  # imported before the baseline so import cost is not counted

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    x1, xb = _probe_inputs(spec)
    gc.collect()
    gpu = _GpuMemory(torch, str(spec.device).startswith("cuda"))
    base = rss_bytes()
    maxrss0 = _maxrss_bytes()
    with PeakRSS() as peak:
        backend = load_backend(spec.path, device=spec.device, precision=spec.precision, threads=int(spec.threads or 0))
        rss_load = (rss_bytes() - base) / MB

        def peak_mb_after(x: np.ndarray, calls: int) -> float:
            """Peak RSS (MB above ``base``) after ``calls`` inferences of ``x``."""
            for _ in range(calls):
                backend.infer(x)
                gpu.sample()
            p = peak.mark()
            if _maxrss_bytes() > maxrss0:
                p = max(p, _maxrss_bytes())
            return (p - base) / MB

        batch_mb = batch_error = None
        try:
            b1_mb = peak_mb_after(x1, 3)
            try:
                batch_mb = peak_mb_after(xb, 2)
            except Exception as e:  # noqa: BLE001 - a static graph may refuse the batch
                batch_error = f"{type(e).__name__}: {e}"
        finally:
            gpu_mb, gpu_kind = gpu.peak(backend.capabilities().kind)
            backend.close()
    return MemoryProbe(rss_load, b1_mb, batch_mb, gpu_mb, gpu_kind, batch_error=batch_error)


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def measure_memory(spec: MemorySpec, mode: str = "subprocess", timeout_s: float = 600.0) -> MemoryProbe:
    """Run :func:`memory_pass` for one row, isolated in a child process by default.

    Args:
        spec: what to load and run.
        mode: ``subprocess`` (fresh Python per row: no allocator state left over from other rows;
            adds interpreter start-up time), ``inprocess`` (faster; a row may reuse memory freed
            by an earlier one, so deltas can read low) or ``off``.
        timeout_s: child process time limit in seconds.

    Returns:
        the :class:`~benchmarks.records.MemoryProbe` of :func:`memory_pass` with ``mode`` set; on
        failure only ``mode`` and ``error`` are set. Never raises for a failing row.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode == "off":
        return MemoryProbe(mode=mode)
    if mode == "inprocess":
        try:
            return replace(memory_pass(spec), mode=mode)
        except Exception as e:  # noqa: BLE001 - reported in the row, never fatal
            return MemoryProbe(mode=mode, error=f"{type(e).__name__}: {e}")
    if mode != "subprocess":
        raise ValueError(f"memory mode must be subprocess, inprocess or off; got {mode!r}")
    return _memory_subprocess(spec, timeout_s)


def _memory_subprocess(spec: MemorySpec, timeout_s: float) -> MemoryProbe:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_repo_root())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    code = ("import json, sys; from benchmarks.timing import MemorySpec, memory_pass; "
            "r = memory_pass(MemorySpec.from_dict(json.loads(sys.stdin.read()))); print('@@MEM@@' + json.dumps(r.to_dict()))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec.to_dict()), capture_output=True,
                              text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return MemoryProbe(mode="subprocess", error=f"memory probe timed out after {timeout_s:.0f} s")
    for line in proc.stdout.splitlines():
        if line.startswith("@@MEM@@"):
            return replace(MemoryProbe.from_dict(json.loads(line[len("@@MEM@@"):])), mode="subprocess")
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return MemoryProbe(mode="subprocess", error=f"memory probe exited {proc.returncode}: {tail[0][:300]}")
