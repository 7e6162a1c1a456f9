"""Run a benchmark: plan the rows, measure each one, pick the best, stream, write the reports.

Every runnable row's backend is loaded once, then:

1. latency at batch 1, interleaved: ``rounds`` rounds, and in each round every row in turn makes
   its share of the ``iters`` timed calls (after ``warmup`` untimed calls in the first round, 2 in
   later ones) on a rotating pool of real preprocessed images of the split (seeded random only
   without ``--data``). On a shared or throttling machine the load drifts over minutes; timed in
   rounds, every row sees the same drift, so speedups compare like with like (the idea of Google
   Benchmark's ``--benchmark_enable_random_interleaving``). ``rounds=1`` times the rows one after
   the other.

Then per row, one row at a time:

2. latency at batch ``batch`` (``batch_iters`` timed calls after ``ceil(warmup / batch)``, at
   least 2, untimed ones); a static-batch ONNX graph runs the batch in chunks (noted in the row);
3. accuracy: mIoU / per-class IoU / pixel accuracy on the split (``limit`` images) and the
   argmax agreement of its predictions with the baseline's over the same images.

Then, in a separate pass, memory per row (:func:`benchmarks.timing.measure_memory`), and the
end-to-end streaming rows (baseline and best backend) with per-stage times.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from unet_edge.errors import BackendUnavailableError, DataError, UnetEdgeError, UsageError
from unet_edge.host import resolve_threads
from unet_edge.metrics import label_agreement

from .hostinfo import host_info, load_avg
from .plan import Plan, RowSpec, plan_rows
from .records import Row, StreamRow, Timing
from .timing import MB, MemorySpec, Timer, fps_from_ms, measure_memory, time_calls

SCHEMA = "unet-edge-bench/1"


@dataclass
class BenchOptions:
    """Options of :func:`run_bench` (``unet-edge bench --help`` documents the same).

    Attributes:
        data: dataset folder for mIoU and the real input frames (None: seeded random inputs, no mIoU).
        split, data_format: which split / layout of ``data``.
        video: video for the streaming rows (None: built from the split's images in name order).
        input_size: (H, W) benchmark input (None: the model metadata's).
        warmup: untimed calls before the batch-1 timing (2 more before each later round).
        iters: timed batch-1 calls per row.
        rounds: the batch-1 timing is split into this many rounds, interleaved across rows.
        batch: the larger batch for throughput (FPS at batch ``batch``).
        batch_iters: timed calls at ``batch`` (None: ``max(5, iters // batch)``).
        threads: CPU threads for every backend (torch.set_num_threads and ONNX Runtime intra-op);
            0: the physical cores (:func:`unet_edge.host.resolve_threads`). The report records the
            resolved count as ``settings.threads`` (and what was asked as ``threads_requested``).
        limit: score mIoU on the first ``limit`` images of the split (None: all).
        eval_batch: batch size of the accuracy pass.
        pool: distinct images rotated through the timed calls.
        device: ``cpu``, ``cuda`` or ``auto`` (CPU rows, plus GPU rows when CUDA is available).
        emulated: also time precisions this host only emulates (PyTorch bf16 without bf16
            arithmetic: slow); by default those rows are skipped with the cost as the reason.
        memory: ``subprocess`` (fresh process per row), ``inprocess`` or ``off``.
        stream: run the end-to-end streaming rows.
        stream_frames: at most this many frames per streaming row.
        miou_tolerance: a row can be "best" when its mIoU is within this many points (1 point =
            0.01 mIoU) of the baseline's.
        seed: seed of the random inputs used without ``data``.
        plots: write the PNG charts.
        label: report name (default: the report folder name); used by ``--compare``.
        command: the command line that produced the report (recorded for reproduction).
        progress: show progress bars.
    """

    data: str | None = None
    split: str = "val"
    data_format: str | None = None
    video: str | None = None
    input_size: tuple[int, int] | None = None
    warmup: int = 10
    iters: int = 50
    rounds: int = 5
    batch: int = 8
    batch_iters: int | None = None
    threads: int = 0
    limit: int | None = None
    eval_batch: int = 4
    pool: int = 16
    device: str = "auto"
    emulated: bool = False
    memory: str = "subprocess"
    stream: bool = True
    stream_frames: int = 100
    miou_tolerance: float = 1.0
    seed: int = 0
    plots: bool = True
    label: str | None = None
    command: str | None = None
    progress: bool = True


@dataclass
class _Ctx:
    """State shared by the steps of one :func:`run_bench`: the options, the plan, the input pool
    and split, the baseline's labels once measured, the report notes and the specs by row id."""

    opts: BenchOptions
    plan: Plan
    size: tuple[int, int]
    pool: np.ndarray                     # float32 (P, 3, H, W)
    inputs_desc: str
    dataset: object | None
    log: Callable
    base_labels: np.ndarray | None = None
    base_id: str | None = None
    notes: list[str] = field(default_factory=list)
    specs: dict[str, RowSpec] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ inputs


def _load_split(opts: BenchOptions, meta):
    if not opts.data:
        return None
    from unet_edge.data.layouts import load_dataset

    ds = load_dataset(opts.data, opts.split, opts.data_format)
    k_ds = len(ds.info.class_names)
    if k_ds != len(meta.class_names):
        raise DataError(f"{opts.data} ({ds.info.format}, split {opts.split}) has {k_ds} classes but the model has "
                        f"{len(meta.class_names)} ({', '.join(meta.class_names)}); bench the model on the dataset "
                        "it was trained for")
    return ds


def _input_pool(ds, meta, size: tuple[int, int], n: int, seed: int) -> tuple[np.ndarray, str]:
    """(float32 (P, 3, H, W) preprocessed inputs, description). Real images spread evenly over the
    split when ``ds`` is given, else seeded standard-normal tensors."""
    from unet_edge.preprocess import preprocess

    if ds is not None and len(ds):
        p = min(n, len(ds))
        idx = sorted(set(np.linspace(0, len(ds) - 1, p).round().astype(int).tolist()))
        pool = np.stack([preprocess(ds[i][0], meta, size) for i in idx])
        return pool, f"{len(idx)} real {ds.split} images of {ds.info.name}, preprocessed, rotated"
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((max(1, n), 3, *size)).astype(np.float32)
    return pool, (f"{len(pool)} seeded random tensors (seed {seed}): no --data given, so no real images "
                  "and no mIoU; agreement is measured on these tensors")


def _batches(pool: np.ndarray, batch: int) -> list[np.ndarray]:
    """Batches of ``batch`` images rotating through the pool (at least 2 distinct batches)."""
    p = len(pool)
    k = max(2, p // batch)
    return [np.ascontiguousarray(pool[[(i * batch + j) % p for j in range(batch)]]) for i in range(k)]


# -------------------------------------------------------------------------------------- measurement


def _load(spec: RowSpec, ctx: _Ctx):
    """Load the row's backend; returns (backend, load seconds). Raises what the loader raises."""
    from unet_edge.runtime.loader import load_backend

    t0 = time.perf_counter()
    backend = load_backend(spec.path, device=spec.device, precision=spec.load_precision, threads=ctx.opts.threads)
    return backend, round(time.perf_counter() - t0, 3)


def _interleaved_latency(loaded: list[tuple[RowSpec, object]], ctx: _Ctx) -> dict[str, list[float] | Exception]:
    """Batch-1 latency samples (ms, call order within each round) per row id, timed in
    ``opts.rounds`` rounds that visit every row in turn; a row whose backend raises gets the
    exception instead and drops out of later rounds."""
    opts = ctx.opts
    b1 = [ctx.pool[i : i + 1] for i in range(len(ctx.pool))]
    rounds = max(1, min(opts.rounds, opts.iters))
    share = [opts.iters // rounds + (r < opts.iters % rounds) for r in range(rounds)]
    out: dict[str, list[float] | Exception] = {spec.id: [] for spec, _ in loaded}
    for r in range(rounds):
        for spec, backend in loaded:
            if isinstance(out[spec.id], Exception):
                continue
            start = sum(share[:r]) % len(b1)
            inputs = b1[start:] + b1[:start]
            try:
                out[spec.id] += time_calls(backend.infer, inputs, share[r], opts.warmup if r == 0 else min(2, opts.warmup),
                                           Timer(backend.capabilities().device))
            except Exception as e:  # noqa: BLE001 - reported in this row only
                out[spec.id] = e
    return out


def _batch_iters(opts: BenchOptions) -> int:
    """Timed calls at the larger batch."""
    return opts.batch_iters or max(5, opts.iters // opts.batch)


def _batch_warmup(opts: BenchOptions) -> int:
    """Untimed calls before the larger-batch timing."""
    return max(2, math.ceil(opts.warmup / opts.batch))


def _batch_latency(spec: RowSpec, backend, timer: Timer, ctx: _Ctx,
                   notes: list[str]) -> tuple[Timing | None, list[float] | None]:
    """(latency, samples in ms) of ``opts.batch``-image calls; (None, None) at batch 1 (the caller
    reuses the batch-1 latency) or when the backend cannot run that batch (its
    :meth:`~unet_edge.runtime.base.Capabilities.check_shape` refuses it: not a multiple of a static
    batch, over a maximum batch). Static-batch chunking and refusals are noted in ``notes``. Raises
    what the backend raises."""
    bn = ctx.opts.batch
    if bn == 1:
        return None, None
    caps = backend.capabilities()
    static = caps.static_batch
    if static and bn % static:
        notes.append(f"static batch {static}: batch {bn} not a multiple, not timed")
        return None, None
    try:
        caps.check_shape((bn, *ctx.pool.shape[1:]))
    except (UsageError, DataError) as e:
        notes.append(f"batch {bn} not timed: {e}")
        return None, None
    samples = time_calls(backend.infer, _batches(ctx.pool, bn), _batch_iters(ctx.opts), _batch_warmup(ctx.opts), timer)
    if static and static < bn:
        notes.append(f"static batch {static}: batch {bn} runs as {bn // static} chunks")
    return Timing.of(samples), [round(v, 4) for v in samples]


def _accuracy_pass(spec: RowSpec, backend, ctx: _Ctx) -> tuple[dict | None, np.ndarray | None]:
    """(metrics of :func:`unet_edge.evaluate.evaluate` on the split, or None without a dataset;
    the predicted labels, uint8 (N, H, W), of every image seen: the split's, else the pool's)."""
    from unet_edge.preprocess import labels_from_logits

    preds: list[np.ndarray] = []

    def recording_infer(x: np.ndarray) -> np.ndarray:
        y = backend.infer(x)
        preds.append(labels_from_logits(y))
        return y

    metrics = None
    if ctx.dataset is not None:
        from unet_edge.evaluate import evaluate

        meta = backend.meta.with_(input_size=ctx.size)
        metrics = evaluate(recording_infer, ctx.dataset, meta,
                           batch_size=backend.capabilities().static_batch or ctx.opts.eval_batch,
                           limit=ctx.opts.limit, progress=ctx.opts.progress, description=f"mIoU {spec.id}")
    else:
        for i in range(len(ctx.pool)):
            recording_infer(ctx.pool[i : i + 1])
    return metrics, (np.concatenate(preds) if preds else None)


def _measure(spec: RowSpec, backend, samples_ms: list[float], row: Row, ctx: _Ctx) -> None:
    """Given the row's batch-1 samples, measure the rest of one row (batch-N latency, accuracy,
    agreement with the baseline) and fill ``row`` in, status ``ok``. The first FP32 row measured
    becomes the baseline of the agreement (see :func:`_measure_order`). Raises what the backend
    raises, leaving ``row``'s measurements empty."""
    timer = Timer(backend.capabilities().device)
    latency = Timing.of(samples_ms)
    notes = list(row.notes)
    batch_latency, batch_samples = _batch_latency(spec, backend, timer, ctx, notes)
    metrics, labels = _accuracy_pass(spec, backend, ctx)
    if ctx.base_id is None and spec.precision == "fp32":
        ctx.base_labels, ctx.base_id = labels, spec.id
    agreement = None
    if ctx.base_labels is not None and labels is not None and labels.shape == ctx.base_labels.shape:
        agreement = label_agreement(ctx.base_labels, labels)
    row.notes, row.timer, row.samples_ms, row.latency_ms = notes, timer.kind, [round(v, 4) for v in samples_ms], latency
    row.batch = ctx.opts.batch
    row.batch_latency_ms = latency if ctx.opts.batch == 1 else batch_latency
    row.batch_samples_ms = batch_samples
    if metrics is not None:
        row.miou, row.pixel_accuracy, row.dice = metrics["miou"], metrics["pixel_accuracy"], metrics.get("dice")
        row.per_class_iou, row.eval_images = metrics["per_class_iou"], metrics["images"]
    if agreement is not None:
        row.agreement, row.agreement_pixels = agreement
    row.status = "ok"


def _row_of(spec: RowSpec) -> Row:
    """The row of a planned spec, before measurement (size of its artifact in MB)."""
    size = Path(spec.path).stat().st_size / MB if spec.path and Path(spec.path).is_file() else None
    return Row(id=spec.id, label=spec.label, backend=spec.backend, precision=spec.precision, device=spec.device,
               variant=spec.variant, status=spec.status, reason=spec.reason, artifact=spec.path,
               size_mb=round(size, 3) if size is not None else None, static_batch=spec.static_batch,
               notes=list(spec.notes))


def _measure_order(spec: RowSpec) -> int:
    """Measurement order: PyTorch FP32 (cpu, then cuda) first, other FP32 rows next, the rest last.
    The first FP32 row that runs is the baseline, so every later row can be compared with it."""
    if spec.backend == "pytorch" and spec.precision == "fp32":
        return 0 if spec.device == "cpu" else 1
    return 2 if spec.precision == "fp32" else 3


def _fail(row: Row, e: Exception, step: str, ctx: _Ctx) -> None:
    """Mark a row that raised: ``skipped`` for a backend this host lacks, else ``failed``; logs it."""
    if isinstance(e, BackendUnavailableError):
        row.status, row.reason = "skipped", str(e)
    else:  # any backend error fails this row only, reported in it
        row.status, row.reason = "failed", f"{type(e).__name__}: {e}"
    ctx.log(f"{step} {row.label}: {row.status}: {row.reason}")


@dataclass
class _Loaded:
    """A runnable row whose backend is loaded; ``step`` is its ``(i/n)`` progress prefix."""

    step: str
    spec: RowSpec
    row: Row
    backend: object


def _load_rows(runnable: list[RowSpec], ctx: _Ctx) -> tuple[list[Row], list[_Loaded]]:
    """Rows of the runnable specs (in measurement order) and those whose backend loaded."""
    rows, loaded = [], []
    for i, spec in enumerate(runnable):
        row = _row_of(spec)
        rows.append(row)
        step = f"({i + 1}/{len(runnable)})"
        try:
            backend, row.load_s = _load(spec, ctx)
            loaded.append(_Loaded(step, spec, row, backend))
        except Exception as e:  # noqa: BLE001
            _fail(row, e, step, ctx)
    return rows, loaded


def _time_rows(loaded: list[_Loaded], ctx: _Ctx) -> None:
    """Batch-1 latency of every loaded row in interleaved rounds, then the rest of each row, one at
    a time; every backend is closed after its row (and, whatever happens, at the end)."""
    opts = ctx.opts
    try:
        ctx.log(f"batch-1 latency: {len(loaded)} rows x {opts.iters} calls in "
                f"{max(1, min(opts.rounds, opts.iters))} interleaved rounds")
        samples = _interleaved_latency([(x.spec, x.backend) for x in loaded], ctx)
        for x in loaded:
            try:
                if isinstance(samples[x.spec.id], Exception):
                    raise samples[x.spec.id]
                _measure(x.spec, x.backend, samples[x.spec.id], x.row, ctx)
                lat = x.row.latency_ms
                acc = f", mIoU {x.row.miou:.4f}" if x.row.miou is not None else ""
                ctx.log(f"{x.step} {x.spec.label}: p50 {lat.p50:.2f} ms, p90 {lat.p90:.2f} ms{acc}")
            except Exception as e:  # noqa: BLE001
                _fail(x.row, e, x.step, ctx)
            finally:
                x.backend.close()
    finally:
        for x in loaded:
            x.backend.close()


def _measure_rows(plan: Plan, ctx: _Ctx) -> list[Row]:
    """Every row of the plan, in plan order: the runnable ones measured (FP32 first, see
    :func:`_measure_order`), the skipped ones with their reasons."""
    runnable = sorted((r for r in plan.rows if r.status == "planned"), key=_measure_order)
    rows, loaded = _load_rows(runnable, ctx)
    _time_rows(loaded, ctx)
    rows += [_row_of(spec) for spec in plan.rows if spec.status == "skipped"]
    order = {s.id: k for k, s in enumerate(plan.rows)}
    rows.sort(key=lambda r: order.get(r.id, 1 << 30))
    return rows


def _memory_rows(rows: list[Row], ctx: _Ctx) -> None:
    """The memory pass, after all latency runs: one probe per row that ran (``opts.memory``)."""
    opts = ctx.opts
    if opts.memory == "off":
        return
    for row in rows:
        if not row.ok:
            continue
        spec = ctx.specs[row.id]
        ctx.log(f"memory {row.label} ({opts.memory})")
        row.memory = measure_memory(MemorySpec(path=spec.path, device=spec.device, precision=spec.load_precision,
                                               threads=opts.threads, input_size=tuple(ctx.size), batch=opts.batch),
                                    mode=opts.memory)


def _finish_rows(rows: list[Row], base_id: str | None, opts: BenchOptions, notes: list[str]) -> tuple[Row | None, Row | None]:
    """Mark the baseline, give every row that ran its FPS, speedups and ΔmIoU against it, and mark
    the best row; returns (baseline, best), None where there is none (reasons go to ``notes``)."""
    base = next((r for r in rows if r.id == base_id and r.ok), None)
    if base is None:
        notes.append("no FP32 row ran: no baseline, no speedup")
        return None, None
    base.baseline = True
    if base.backend != "pytorch":
        notes.append(f"PyTorch eager FP32 could not run; speedups and agreement are relative to {base.label}")
    ran = [r for r in rows if r.ok]
    for r in ran:
        r.fps_b1 = fps_from_ms(r.latency_ms.p50, 1)
        r.fps_batch = fps_from_ms(r.batch_latency_ms.p50, r.batch) if r.batch_latency_ms else None
    for r in ran:
        r.speedup = base.latency_ms.p50 / r.latency_ms.p50 if r.latency_ms.p50 else None
        if r.fps_batch and base.fps_batch:
            r.speedup_batch = r.fps_batch / base.fps_batch
        if r.miou is not None and base.miou is not None:
            r.delta_miou = r.miou - base.miou
    base.speedup = 1.0
    best = _best_row(ran, base, opts.miou_tolerance, notes)
    if best is not None:
        best.best = True
    return base, best


def _best_row(ran: list[Row], base: Row, miou_tolerance: float, notes: list[str]) -> Row | None:
    """The fastest p50 among the rows whose mIoU is within ``miou_tolerance`` points of the
    baseline's (without a dataset: whose argmax agreement with it is >= 99%)."""
    tol = miou_tolerance / 100.0

    def accurate(r: Row) -> bool:
        if r.miou is not None and base.miou is not None:
            return r.miou >= base.miou - tol
        return r.agreement is not None and r.agreement >= 0.99

    if base.miou is None:
        notes.append("no dataset: the best row is the fastest with >= 99% argmax agreement with the baseline")
    cands = [r for r in ran if accurate(r)]
    return min(cands, key=lambda r: r.latency_ms.p50) if cands else None


# ---------------------------------------------------------------------------------------- streaming


def build_video(ds, path: Path, max_frames: int, fps: float = 30.0) -> Path:
    """Write the split's images, in file-name order (CamVid: ``<sequence>_<frame>.png`` is time
    order), as an mp4 video of at most ``max_frames`` frames at the first image's size."""
    from unet_edge.runtime.video import frames_to_video

    return frames_to_video(sorted(ds.image_paths(), key=lambda p: p.name)[:max_frames], path, fps)


def _stream_video(ctx: _Ctx, tmp: Path) -> tuple[str | None, str | None]:
    """(video to stream, its description): ``--video``, else one built from the split's images;
    (None, None) with a note when there is neither."""
    opts = ctx.opts
    if opts.video:
        return opts.video, opts.video
    if ctx.dataset is not None:
        video = str(build_video(ctx.dataset, tmp / "bench_input.mp4", opts.stream_frames))
        n = min(len(ctx.dataset), opts.stream_frames)
        return video, f"{n} {ctx.dataset.split} images of {ctx.dataset.info.name} in file-name order, encoded as mp4v"
    ctx.notes.append("streaming rows skipped: no --video and no --data to build a video from")
    return None, None


def _stream_one(role: str, row: Row, video: str, out: Path, ctx: _Ctx) -> StreamRow:
    """Stream ``video`` through the row's backend (after warmup calls) at the benchmark's input size."""
    from unet_edge.runtime.loader import load_backend
    from unet_edge.runtime.stream import stream

    opts, spec = ctx.opts, ctx.specs[row.id]
    ctx.log(f"stream {row.label} ({role}) on {Path(video).name}")
    try:
        with load_backend(spec.path, device=spec.device, precision=spec.load_precision,
                          threads=opts.threads) as backend:
            backend.meta = backend.meta.with_(input_size=ctx.size)  # stream at the benchmark's input size
            for i in range(max(1, opts.warmup)):
                backend.infer(ctx.pool[i % len(ctx.pool)][None])
            st = stream(backend, video, out=out, max_frames=opts.stream_frames, progress=opts.progress)
    except UnetEdgeError as e:
        return StreamRow(row.id, row.label, role, "failed", reason=str(e))
    stats = st.to_dict()
    stats.pop("out", None)
    return StreamRow(row.id, row.label, role, "ok", stats=stats)


def _streaming(base: Row | None, best: Row | None, ctx: _Ctx) -> tuple[list[StreamRow], str | None]:
    """The end-to-end streaming rows (the baseline and, when another row, the best) and the
    description of the video; none without ``opts.stream`` or a baseline."""
    if not ctx.opts.stream or base is None:
        return [], None
    targets = [("baseline", base)]
    if best is not None and best.id != base.id:
        targets.append(("best", best))
    elif best is not None:
        targets[0] = ("baseline+best", base)
    with tempfile.TemporaryDirectory(prefix="unet-edge-bench-") as tmp:
        video, desc = _stream_video(ctx, Path(tmp))
        if video is None:
            return [], None
        return [_stream_one(role, row, video, Path(tmp) / f"stream_{i}.mp4", ctx)
                for i, (role, row) in enumerate(targets)], desc


# ------------------------------------------------------------------------------------------- entry


def _model_info(plan: Plan, size: tuple[int, int]) -> dict:
    meta = plan.meta
    info = {"arch": meta.arch, "classes": list(meta.class_names), "num_classes": meta.num_classes,
            "input_size": list(size), "metadata_input_size": list(meta.input_size), "dataset": meta.dataset,
            "checkpoint": plan.checkpoint, "artifacts": plan.artifacts, "params": None, "gmacs": None}
    if plan.checkpoint:
        try:
            info.update(_count_macs(plan.checkpoint, size))
        except Exception as e:  # noqa: BLE001 - informative only
            info["params_error"] = str(e)
    return info


def _count_macs(checkpoint: str, size: tuple[int, int]) -> dict:
    """Parameters and multiply-accumulates (GMACs, convolutions only) per image at ``size``."""
    import torch

    from unet_edge.artifacts import model_from_checkpoint

    model, _, _ = model_from_checkpoint(checkpoint)
    macs = [0]

    def hook(mod, inp, outp):
        k = mod.kernel_size[0] * mod.kernel_size[1]
        cin = mod.in_channels // mod.groups
        if isinstance(mod, torch.nn.ConvTranspose2d):
            macs[0] += inp[0][0].numel() * (mod.out_channels // mod.groups) * k
        else:
            macs[0] += outp[0].numel() * cin * k

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.inference_mode():
        model(torch.zeros(1, 3, *size))
    for h in hs:
        h.remove()
    return {"params": int(sum(p.numel() for p in model.parameters())), "gmacs": round(macs[0] / 1e9, 3)}


def _checked_options(opts: BenchOptions | None) -> tuple[BenchOptions, int]:
    """(the options with ``threads`` resolved, the thread count asked for).

    Raises:
        UsageError: ``iters`` or ``batch`` or ``pool`` below 1, or ``warmup`` below 0.
    """
    opts = opts or BenchOptions()
    if opts.iters < 1 or opts.batch < 1 or opts.warmup < 0 or opts.pool < 1:
        raise UsageError(f"bench needs iters >= 1, batch >= 1, warmup >= 0 and pool >= 1; got iters {opts.iters}, "
                         f"batch {opts.batch}, warmup {opts.warmup}, pool {opts.pool}")
    return replace(opts, threads=resolve_threads(opts.threads)), opts.threads  # 0 -> the physical cores, as recorded


def _host_notes(host: dict, threads: int) -> list[str]:
    """Notes on a host busy at the start and on more threads than cores."""
    notes: list[str] = []
    cores = host["cpu"].get("affinity") or host["cpu"].get("cores_logical") or 1
    if host.get("load_avg") and host["load_avg"][0] > 0.5 * cores:
        notes.append(f"host busy at start: 1-min load average {host['load_avg'][0]} on {cores} cores; "
                     "other processes compete for the CPU and latencies may be inflated")
    if threads > cores:
        notes.append(f"--threads {threads} is more than the {cores} cores available")
    return notes


def _context(opts: BenchOptions, plan: Plan, notes: list[str], log: Callable) -> _Ctx:
    """Load the split (when ``opts.data``) and the input pool; logs what will be measured."""
    size = plan.input_size
    ds = _load_split(opts, plan.meta)
    pool, inputs_desc = _input_pool(ds, plan.meta, size, opts.pool, opts.seed)
    log(f"bench: {len(plan.rows)} rows ({sum(r.status == 'planned' for r in plan.rows)} runnable), input "
        f"{size[0]}x{size[1]}, {opts.threads} threads, {opts.iters} iters after {opts.warmup} warmup; inputs: {inputs_desc}")
    return _Ctx(opts=opts, plan=plan, size=size, pool=pool, inputs_desc=inputs_desc, dataset=ds, log=log, notes=notes,
                specs={s.id: s for s in plan.rows})


def _settings(ctx: _Ctx, threads_requested: int, rows: list[Row], video_desc: str | None) -> dict:
    """The report's ``settings``: the options (less ``progress``) and what they resolved to."""
    opts = ctx.opts
    settings = {k: v for k, v in asdict(opts).items() if k not in ("progress",)}
    settings.update(threads_requested=threads_requested, input_size=list(ctx.size), batch_iters=_batch_iters(opts),
                    batch_warmup=_batch_warmup(opts), inputs=ctx.inputs_desc,
                    stream_video=video_desc, eval_split=opts.split if ctx.dataset is not None else None,
                    eval_images=next((r.eval_images for r in rows if r.eval_images), None),
                    timers=sorted({r.timer for r in rows if r.timer}),
                    fps_definition="images per second from the median latency: 1000 * batch / p50_ms",
                    mb_definition="1 MB = 1e6 bytes")
    return settings


def run_bench(artifacts: list[str], report_dir: str | Path, opts: BenchOptions | None = None,
              log: Callable = print) -> dict:
    """Benchmark every backend x precision of one trained model and write the reports.

    Args:
        artifacts: checkpoint (the PyTorch eager FP32 baseline), TorchScript, ONNX, TensorRT
            engines and/or export folders (expanded to their artifacts).
        report_dir: folder for ``bench.md``, ``bench.json``, ``bench.csv``, ``bench_stream.csv``
            and the PNG charts (created).
        opts: :class:`BenchOptions`.
        log: receives progress lines (str) and the result table (a ``rich`` Table when ``log`` is a
            rich ``Console.print``, plain text otherwise).

    Returns:
        the report dict (schema ``unet-edge-bench/1``, also written to ``bench.json``): ``host``
        (:func:`benchmarks.hostinfo.host_info`: ``cpu_class``, ``int8_family``, ``native_bf16``...),
        ``model``, ``settings``, ``rows`` (:meth:`benchmarks.records.Row.to_dict`, one per backend x
        precision x device, ``status`` ok / skipped / failed; latencies in ms, FPS in images/s,
        sizes and memory in MB), ``streaming`` (:meth:`benchmarks.records.StreamRow.to_dict`:
        end-to-end FPS and per-stage ms per frame), ``baseline``, ``best``, ``notes`` and ``files``.

    Raises:
        UsageError: impossible counts in ``opts``.
        ArtifactError, DataError, BackendUnavailableError: bad artifacts, dataset, or an explicit
        ``device="cuda"`` without CUDA. Failures of single rows are reported in the row instead.
    """
    opts, threads_requested = _checked_options(opts)
    report_dir = Path(report_dir)
    t_start = time.perf_counter()
    host = host_info()
    notes = _host_notes(host, opts.threads)

    from unet_edge.provenance import check_sources

    check_sources(artifacts)  # artifacts of different checkpoints (e.g. a mixed export folder) are refused, named
    plan = plan_rows(artifacts, device=opts.device, input_size=opts.input_size, emulated=opts.emulated)
    notes += plan.notes
    ctx = _context(opts, plan, notes, log)
    rows = _measure_rows(plan, ctx)
    _memory_rows(rows, ctx)
    base, best = _finish_rows(rows, ctx.base_id, opts, notes)
    streaming, video_desc = _streaming(base, best, ctx)
    result = {"schema": SCHEMA, "label": opts.label or report_dir.name, "host": host, "load_avg_end": load_avg(),
              "model": _model_info(plan, ctx.size), "settings": _settings(ctx, threads_requested, rows, video_desc),
              "baseline": base.id if base else None, "best": best.id if best else None,
              "rows": [r.to_dict() for r in rows], "streaming": [s.to_dict() for s in streaming], "notes": notes,
              "seconds": round(time.perf_counter() - t_start, 1), "files": {}}
    _write_reports(result, report_dir, opts, log)
    return result


def _write_reports(result: dict, report_dir: Path, opts: BenchOptions, log: Callable) -> None:
    """Charts (when ``opts.plots``), then bench.json/.md/.csv (``result["files"]`` lists them all), then the table to ``log``."""
    from . import plots, report

    files = plots.write_plots(result, report_dir) if opts.plots else {}
    result["files"] = {**files, **report.planned_files(report_dir)}
    report.write_reports(result, report_dir)
    report.emit_table(result, log)
