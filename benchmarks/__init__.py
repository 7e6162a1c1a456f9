"""Benchmarks of unet-edge artifacts: every backend x precision of one trained model, side by side.

Accuracy (mIoU, per-class IoU, argmax agreement with the PyTorch FP32 baseline) and speed
(latency p50/p90/p99 in ms, FPS at batch 1 and a larger batch, peak memory in MB, end-to-end
streaming FPS with per-stage ms) on the same real images, with host information, written as
Markdown, JSON, CSV and PNG charts.

Modules: :mod:`.runner` (:class:`BenchOptions`, :func:`run_bench`, in named steps), :mod:`.plan`
(the rows: :class:`~.plan.RowSpec`), :mod:`.records` (the typed records of a report: ``Row``,
``Timing``, ``MemoryProbe``, ``StreamRow``, each with ``to_dict``/``from_dict``), :mod:`.timing`
(latency statistics, memory probes), :mod:`.hostinfo`, :mod:`.report` (Markdown, JSON, CSV,
console tables), :mod:`.plots` (PNG charts), :mod:`.compare` (reports of two hosts/runs).
"""
from __future__ import annotations

__all__ = ["BenchOptions", "run_bench", "run_compare"]


def __getattr__(name):  # lazy: importing the package does not import torch
    if name in ("BenchOptions", "run_bench"):
        from . import runner

        return getattr(runner, name)
    if name == "run_compare":
        from .compare import run_compare

        return run_compare
    raise AttributeError(name)
