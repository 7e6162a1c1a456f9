"""Typed records of a benchmark report: :class:`Timing` (latency summary), :class:`MemoryProbe`
(memory of one row), :class:`Row` (one backend x precision x device) and :class:`StreamRow` (one
end-to-end streaming run).

Every record has ``to_dict`` (its part of ``bench.json``, schema ``unet-edge-bench/1``: the field
names and their order are those the reports have always had, so ``bench.json`` and ``bench.csv``
do not change) and ``from_dict`` (reads those dicts, including the reports committed under
``benchmarks/reports/``). Keys a record does not know are kept in ``extra`` and written back after
its own, so ``from_dict(d).to_dict() == d`` for every report this schema wrote.

Units: latencies in ms, memory and sizes in MB (1e6 bytes), mIoU / agreement as fractions.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Summary of per-call latencies, all in ms except ``n``.

    Attributes:
        n: timed calls.
        mean, std: mean and population standard deviation.
        min, p10, p50, p90, p99, max: extremes and percentiles (linear interpolation, so
            ``p10 <= p50 <= p90 <= p99``). Every value but ``n`` is None when ``n == 0``.
    """

    n: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    p10: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> "Timing":
        """The summary of ``samples_ms`` (one value per timed call, ms); empty input gives ``n = 0``."""
        if len(samples_ms) == 0:
            return cls(n=0)
        a = np.asarray(samples_ms, dtype=np.float64)
        p10, p50, p90, p99 = np.percentile(a, [10, 50, 90, 99])
        return cls(n=int(a.size), mean=float(a.mean()), std=float(a.std()), min=float(a.min()), p10=float(p10),
                   p50=float(p50), p90=float(p90), p99=float(p99), max=float(a.max()))

    def to_dict(self) -> dict:
        """``{"n", "mean", "std", "min", "p10", "p50", "p90", "p99", "max"}``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Timing":
        """The inverse of :meth:`to_dict`; a missing key reads as None (``n``: 0)."""
        return cls(**{f.name: d.get(f.name) for f in fields(cls)} | {"n": d.get("n") or 0})


def _timing(d: dict | None) -> Timing | None:
    return None if d is None else Timing.from_dict(d)


#: MemoryProbe keys written only when set, and where: ``batch_error`` before ``mode``, ``error`` after it.
_MEMORY_KEYS = ("rss_load_mb", "rss_peak_b1_mb", "rss_peak_batch_mb", "gpu_peak_mb", "gpu_kind", "batch_error",
                "mode", "error")


@dataclass(frozen=True)
class MemoryProbe:
    """Memory of one row, MB (1e6 bytes) above the process's RSS just before its backend was loaded
    (:func:`benchmarks.timing.memory_pass`).

    Attributes:
        rss_load_mb: after loading.
        rss_peak_b1_mb: peak while loading and running batch 1.
        rss_peak_batch_mb: peak while running the larger batch (None when it could not run).
        gpu_peak_mb: CUDA rows only; ``gpu_kind`` says how it was measured
            (``torch_max_memory_allocated`` or ``device_used_delta``).
        batch_error: why the larger batch could not run (e.g. a static-batch graph), else None.
        mode: ``subprocess``, ``inprocess`` or ``off`` (None inside the probe, before the caller sets it).
        error: why the probe failed (then every number is None), else None.
        extra: keys of a report that this record does not know.
    """

    rss_load_mb: float | None = None
    rss_peak_b1_mb: float | None = None
    rss_peak_batch_mb: float | None = None
    gpu_peak_mb: float | None = None
    gpu_kind: str | None = None
    batch_error: str | None = None
    mode: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def peak_b1_mb(self) -> float | None:
        """The report's Peak MB: RSS peak at batch 1 plus the GPU peak on CUDA rows (None without an RSS peak)."""
        if self.rss_peak_b1_mb is None:
            return None
        return self.rss_peak_b1_mb + (self.gpu_peak_mb or 0.0)

    def to_dict(self) -> dict:
        """The ``memory`` dict of a row; ``batch_error`` and ``error`` only when set."""
        d = {k: getattr(self, k) for k in _MEMORY_KEYS
             if k not in ("batch_error", "error") or getattr(self, k) is not None}
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryProbe":
        """The inverse of :meth:`to_dict`."""
        return cls(**{k: d.get(k) for k in _MEMORY_KEYS}, extra={k: v for k, v in d.items() if k not in _MEMORY_KEYS})


#: Row keys written for every row, in this order.
ROW_KEYS = ("id", "label", "backend", "precision", "device", "variant", "status", "reason", "artifact", "size_mb",
            "static_batch", "baseline", "best", "notes", "latency_ms", "batch_latency_ms", "fps_b1", "fps_batch",
            "speedup", "speedup_batch", "miou", "delta_miou", "agreement", "per_class_iou", "memory")
#: Keys written after them once a row was loaded / measured, each only when set.
ROW_MEASURED_KEYS = ("load_s", "timer", "samples_ms", "batch", "batch_samples_ms")
#: Keys of the accuracy pass on a dataset, written together (after :data:`ROW_MEASURED_KEYS`) when it ran.
ROW_ACCURACY_KEYS = ("pixel_accuracy", "dice", "eval_images")
#: The last key, written when the row's argmax agreement with the baseline was measured.
ROW_LAST_KEYS = ("agreement_pixels",)
_ROW_ALL = ROW_KEYS + ROW_MEASURED_KEYS + ROW_ACCURACY_KEYS + ROW_LAST_KEYS


@dataclass
class Row:
    """One benchmark row (one backend x precision x device[/variant]) as ``bench.json`` records it.

    Attributes:
        id, label: ``backend/precision/device[/variant]`` and the human label (see
            :class:`benchmarks.plan.RowSpec`).
        backend, precision, device, variant: what ran.
        status: ``ok``, ``skipped`` or ``failed``; ``reason`` says why it is not ``ok``.
        artifact: the file benchmarked (None for a row without one); ``size_mb``: its size (MB).
        static_batch: batch of a static-batch ONNX graph (None: dynamic or not ONNX).
        baseline, best: the row is the baseline / the best row.
        notes: short remarks (the Notes column).
        latency_ms, batch_latency_ms: batch-1 and batch-``batch`` latency (ms).
        fps_b1, fps_batch: images per second from the p50s.
        speedup, speedup_batch: baseline p50 / row p50 at batch 1; row FPS / baseline FPS at batch ``batch``.
        miou, delta_miou: mIoU on the split and its difference to the baseline's (fractions).
        agreement: fraction of pixels whose predicted class equals the baseline's.
        per_class_iou: ``{class name: IoU or None}``.
        memory: the memory probe (None when not measured).
        load_s: seconds to load the backend; timer: ``perf_counter`` or ``cuda_event``.
        samples_ms, batch_samples_ms: the timed calls (ms, call order).
        batch: the larger batch.
        pixel_accuracy, dice, eval_images: the rest of the accuracy pass (images scored).
        agreement_pixels: pixels compared for ``agreement``.
        extra: keys of a report that this record does not know.
    """

    id: str
    label: str
    backend: str
    precision: str
    device: str
    variant: str = ""
    status: str = "planned"
    reason: str = ""
    artifact: str | None = None
    size_mb: float | None = None
    static_batch: int | None = None
    baseline: bool = False
    best: bool = False
    notes: list[str] = field(default_factory=list)
    latency_ms: Timing | None = None
    batch_latency_ms: Timing | None = None
    fps_b1: float | None = None
    fps_batch: float | None = None
    speedup: float | None = None
    speedup_batch: float | None = None
    miou: float | None = None
    delta_miou: float | None = None
    agreement: float | None = None
    per_class_iou: dict[str, float | None] | None = None
    memory: MemoryProbe | None = None
    load_s: float | None = None
    timer: str | None = None
    samples_ms: list[float] | None = None
    batch: int | None = None
    batch_samples_ms: list[float] | None = None
    pixel_accuracy: float | None = None
    dice: float | None = None
    eval_images: int | None = None
    agreement_pixels: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The row ran (``status == "ok"``)."""
        return self.status == "ok"

    def to_dict(self) -> dict:
        """The row as ``bench.json`` writes it (:data:`ROW_KEYS`, then the measured keys that are set)."""
        d = {k: getattr(self, k) for k in ROW_KEYS}
        for k in ("latency_ms", "batch_latency_ms", "memory"):
            d[k] = d[k].to_dict() if d[k] is not None else None
        d.update({k: getattr(self, k) for k in ROW_MEASURED_KEYS if getattr(self, k) is not None})
        if self.eval_images is not None:
            d.update({k: getattr(self, k) for k in ROW_ACCURACY_KEYS})
        if self.agreement_pixels is not None:
            d["agreement_pixels"] = self.agreement_pixels
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        """The inverse of :meth:`to_dict`.

        Raises:
            KeyError: ``d`` lacks ``id``, ``label``, ``backend``, ``precision`` or ``device``.
            TypeError: a latency or memory value is not a dict.
        """
        missing = [k for k in ("id", "label", "backend", "precision", "device") if k not in d]
        if missing:
            raise KeyError(f"row without {', '.join(missing)}")
        kw = {k: d[k] for k in _ROW_ALL if k in d}
        kw.update(latency_ms=_timing(d.get("latency_ms")), batch_latency_ms=_timing(d.get("batch_latency_ms")),
                  memory=MemoryProbe.from_dict(d["memory"]) if d.get("memory") is not None else None,
                  notes=list(d.get("notes") or []))
        return cls(**kw, extra={k: v for k, v in d.items() if k not in _ROW_ALL})


_STREAM_KEYS = ("id", "label", "role", "status", "reason")


@dataclass
class StreamRow:
    """One end-to-end streaming run of the benchmark (the baseline's or the best row's).

    Attributes:
        id, label: of the row that streamed.
        role: ``baseline``, ``best`` or ``baseline+best``.
        status: ``ok`` or ``failed``; ``reason``: why it failed (None when ok).
        stats: :meth:`unet_edge.runtime.stream.StreamStats.to_dict` without ``out`` (``frames``,
            ``wall_s``, ``fps``, ``infer_fps``, ``stages``: ``{stage: {"mean_ms", "p50_ms", ...}}``, ...).
    """

    id: str
    label: str
    role: str
    status: str
    reason: str | None = None
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The run finished (``status == "ok"``)."""
        return self.status == "ok"

    @property
    def fps(self) -> float | None:
        """End-to-end frames per second."""
        return self.stats.get("fps")

    @property
    def infer_fps(self) -> float | None:
        """Frames per second of the infer stage alone."""
        return self.stats.get("infer_fps")

    @property
    def frames(self) -> int | None:
        """Frames written."""
        return self.stats.get("frames")

    @property
    def stages(self) -> dict:
        """``{stage: {"mean_ms", "p50_ms", ...}}`` (ms per frame); empty for a failed run."""
        return self.stats.get("stages") or {}

    def to_dict(self) -> dict:
        """``{"id", "label", "role", "status"}`` then ``reason`` (failed) or the stream's stats (ok)."""
        d = {"id": self.id, "label": self.label, "role": self.role, "status": self.status}
        if self.reason is not None:
            d["reason"] = self.reason
        return {**d, **self.stats}

    @classmethod
    def from_dict(cls, d: dict) -> "StreamRow":
        """The inverse of :meth:`to_dict`.

        Raises:
            KeyError: ``d`` lacks ``id``, ``label``, ``role`` or ``status``.
        """
        return cls(d["id"], d["label"], d["role"], d["status"], d.get("reason"),
                   {k: v for k, v in d.items() if k not in _STREAM_KEYS})


def rows_of(result: dict) -> list[Row]:
    """The rows of a report dict (``bench.json``) as :class:`Row` records."""
    return [Row.from_dict(r) for r in result.get("rows") or []]


def streams_of(result: dict) -> list[StreamRow]:
    """The streaming rows of a report dict as :class:`StreamRow` records."""
    return [StreamRow.from_dict(s) for s in result.get("streaming") or []]
