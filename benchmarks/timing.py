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
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

MB = 1e6  #: bytes per MB in every report (SI megabytes)

#: Keys of :func:`latency_stats`, all in milliseconds except ``n``.
STAT_KEYS = ("n", "mean", "std", "min", "p10", "p50", "p90", "p99", "max")


def latency_stats(samples_ms: Sequence[float]) -> dict:
    """Summary of per-call latencies.

    Args:
        samples_ms: one value per timed call, in milliseconds.

    Returns:
        ``{"n", "mean", "std", "min", "p10", "p50", "p90", "p99", "max"}``; every value except
        ``n`` in ms (``std`` is the population standard deviation). Percentiles use linear
        interpolation, so ``p10 <= p50 <= p90 <= p99`` always holds. Empty input gives ``n = 0``
        and None elsewhere.
    """
    if len(samples_ms) == 0:
        return {k: (0 if k == "n" else None) for k in STAT_KEYS}
    a = np.asarray(samples_ms, dtype=np.float64)
    p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "p10": float(p10), "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(a.max())}


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
    gc.collect()
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


def memory_pass(spec: dict) -> dict:
    """Measure the memory of one row in the current process.

    Args:
        spec: ``{"path", "device", "precision" (None for artifacts with a fixed precision),
            "threads", "input_size": [H, W], "batch"}``; inputs are seeded random (memory does not
            depend on pixel values).

    Returns:
        ``{"rss_load_mb", "rss_peak_b1_mb", "rss_peak_batch_mb", "gpu_peak_mb", "gpu_kind"}``, MB
        (1e6 bytes) above the RSS measured just before the backend was loaded: after loading,
        peak while running batch 1 (load included), peak while running ``batch``. ``gpu_peak_mb``:
        CUDA rows only; ``gpu_kind`` says how (``torch_max_memory_allocated`` or
        ``device_used_delta``). ``batch`` values are None when the batch could not run.
    """
    from unet_edge.runtime.loader import load_backend

    import torch  # imported before the baseline so import cost is not counted

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    h, w = spec["input_size"]
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    xb = rng.standard_normal((int(spec["batch"]), 3, h, w)).astype(np.float32)
    cuda = str(spec["device"]).startswith("cuda")
    out: dict = {"rss_load_mb": None, "rss_peak_b1_mb": None, "rss_peak_batch_mb": None, "gpu_peak_mb": None,
                 "gpu_kind": None}
    gc.collect()
    gpu_free0 = None
    if cuda and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_free0 = torch.cuda.mem_get_info()[0]
    base = rss_bytes()
    maxrss0 = _maxrss_bytes()
    gpu_min_free = [gpu_free0]

    def gpu_sample() -> None:
        if gpu_free0 is not None:
            torch.cuda.synchronize()
            gpu_min_free[0] = min(gpu_min_free[0], torch.cuda.mem_get_info()[0])

    with PeakRSS() as peak:
        backend = load_backend(spec["path"], device=spec["device"], precision=spec.get("precision"),
                               threads=int(spec.get("threads") or 0))
        out["rss_load_mb"] = (rss_bytes() - base) / MB
        def peak_mb_after(x: np.ndarray, calls: int) -> float:
            """Peak RSS (MB above ``base``) after ``calls`` inferences of ``x``."""
            for _ in range(calls):
                backend.infer(x)
                gpu_sample()
            p = peak.mark()
            if _maxrss_bytes() > maxrss0:
                p = max(p, _maxrss_bytes())
            return (p - base) / MB

        try:
            out["rss_peak_b1_mb"] = peak_mb_after(x1, 3)
            try:
                out["rss_peak_batch_mb"] = peak_mb_after(xb, 2)
            except Exception as e:  # noqa: BLE001 - a static graph may refuse the batch
                out["batch_error"] = f"{type(e).__name__}: {e}"
        finally:
            if gpu_free0 is not None:
                if getattr(backend, "name", "") in ("pytorch", "torchscript"):
                    out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / MB
                    out["gpu_kind"] = "torch_max_memory_allocated"
                else:
                    out["gpu_peak_mb"] = (gpu_free0 - gpu_min_free[0]) / MB
                    out["gpu_kind"] = "device_used_delta"
            backend.close()
    return out


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def measure_memory(spec: dict, mode: str = "subprocess", timeout_s: float = 600.0) -> dict:
    """Run :func:`memory_pass` for one row, isolated in a child process by default.

    Args:
        spec: see :func:`memory_pass`.
        mode: ``subprocess`` (fresh Python per row: no allocator state left over from other rows;
            adds interpreter start-up time), ``inprocess`` (faster; a row may reuse memory freed
            by an earlier one, so deltas can read low) or ``off``.
        timeout_s: child process time limit in seconds.

    Returns:
        the dict of :func:`memory_pass` plus ``mode``; on failure ``{"mode", "error"}`` and None values.
    """
    empty = {"rss_load_mb": None, "rss_peak_b1_mb": None, "rss_peak_batch_mb": None, "gpu_peak_mb": None,
             "gpu_kind": None, "mode": mode}
    if mode == "off":
        return empty
    if mode == "inprocess":
        try:
            return {**memory_pass(spec), "mode": mode}
        except Exception as e:  # noqa: BLE001 - reported in the row, never fatal
            return {**empty, "error": f"{type(e).__name__}: {e}"}
    if mode != "subprocess":
        raise ValueError(f"memory mode must be subprocess, inprocess or off; got {mode!r}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_repo_root())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    code = ("import json, sys; from benchmarks.timing import memory_pass; "
            "r = memory_pass(json.loads(sys.stdin.read())); print('@@MEM@@' + json.dumps(r))")
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec), capture_output=True, text=True,
                              env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**empty, "error": f"memory probe timed out after {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("@@MEM@@"):
            return {**json.loads(line[len("@@MEM@@"):]), "mode": mode}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {**empty, "error": f"memory probe exited {proc.returncode}: {tail[0][:300]}"}
