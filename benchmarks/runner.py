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

from unet_edge.errors import BackendUnavailableError, DataError, UnetEdgeError
from unet_edge.host import resolve_threads

from .hostinfo import host_info, load_avg
from .plan import Plan, RowSpec, plan_rows
from .timing import MB, Timer, fps_from_ms, latency_stats, measure_memory, time_calls

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
                                           Timer(backend.device))
            except Exception as e:  # noqa: BLE001 - reported in this row only
                out[spec.id] = e
    return out


def _measure(spec: RowSpec, backend, samples_ms: list[float], ctx: _Ctx) -> dict:
    """Given the row's batch-1 samples, the rest of one row: batch-N latency and accuracy.
    Raises what the backend raises."""
    from unet_edge.preprocess import labels_from_logits

    opts = ctx.opts
    out: dict = {}
    timer = Timer(backend.device)
    out["timer"] = timer.kind
    b1 = [ctx.pool[i : i + 1] for i in range(len(ctx.pool))]
    out["samples_ms"] = [round(v, 4) for v in samples_ms]
    out["latency_ms"] = latency_stats(samples_ms)
    bn = opts.batch
    b_iters = opts.batch_iters or max(5, opts.iters // bn)
    b_warm = max(2, math.ceil(opts.warmup / bn))
    out["batch"] = bn
    if bn > 1:
        if spec.static_batch and bn % spec.static_batch:
            out["batch_latency_ms"] = None
            spec.notes.append(f"static batch {spec.static_batch}: batch {bn} not a multiple, not timed")
        else:
            sn = time_calls(backend.infer, _batches(ctx.pool, bn), b_iters, b_warm, timer)
            out["batch_samples_ms"] = [round(v, 4) for v in sn]
            out["batch_latency_ms"] = latency_stats(sn)
            if spec.static_batch and spec.static_batch < bn:
                spec.notes.append(f"static batch {spec.static_batch}: batch {bn} runs as "
                                  f"{bn // spec.static_batch} chunks")
    else:
        out["batch_latency_ms"] = out["latency_ms"]
    # accuracy pass
    preds: list[np.ndarray] = []

    def recording_infer(x: np.ndarray) -> np.ndarray:
        y = backend.infer(x)
        preds.append(labels_from_logits(y))
        return y

    if ctx.dataset is not None:
        from unet_edge.evaluate import evaluate

        meta = backend.meta.with_(input_size=ctx.size)
        m = evaluate(recording_infer, ctx.dataset, meta, batch_size=spec.static_batch or opts.eval_batch, limit=opts.limit,
                     progress=opts.progress, description=f"mIoU {spec.id}")
        out.update(miou=m["miou"], pixel_accuracy=m["pixel_accuracy"], dice=m.get("dice"),
                   per_class_iou=m["per_class_iou"], eval_images=m["images"])
    else:
        for x in b1:
            recording_infer(x)
    labels = np.concatenate(preds) if preds else None
    if ctx.base_id is None and spec.precision == "fp32":
        ctx.base_labels, ctx.base_id = labels, spec.id  # the first FP32 row measured (see _measure_order)
    if ctx.base_labels is not None and labels is not None and labels.shape == ctx.base_labels.shape:
        out["agreement"] = float((labels == ctx.base_labels).mean())
        out["agreement_pixels"] = int(labels.size)
    return out


def _row_dict(spec: RowSpec) -> dict:
    size = Path(spec.path).stat().st_size / MB if spec.path and Path(spec.path).is_file() else None
    return {"id": spec.id, "label": spec.label, "backend": spec.backend, "precision": spec.precision,
            "device": spec.device, "variant": spec.variant, "status": spec.status, "reason": spec.reason,
            "artifact": spec.path, "size_mb": round(size, 3) if size is not None else None,
            "static_batch": spec.static_batch, "baseline": False, "best": False, "notes": spec.notes,
            "latency_ms": None, "batch_latency_ms": None, "fps_b1": None, "fps_batch": None, "speedup": None,
            "speedup_batch": None, "miou": None, "delta_miou": None, "agreement": None, "per_class_iou": None,
            "memory": None}


def _measure_order(spec: RowSpec) -> int:
    """Measurement order: PyTorch FP32 (cpu, then cuda) first, other FP32 rows next, the rest last.
    The first FP32 row that runs is the baseline, so every later row can be compared with it."""
    if spec.backend == "pytorch" and spec.precision == "fp32":
        return 0 if spec.device == "cpu" else 1
    return 2 if spec.precision == "fp32" else 3


def _finish_rows(rows: list[dict], base_id: str | None, opts: BenchOptions, notes: list[str]) -> tuple[dict | None, dict | None]:
    base = next((r for r in rows if r["id"] == base_id and r["status"] == "ok"), None)
    if base is None:
        notes.append("no FP32 row ran: no baseline, no speedup")
        return None, None
    base["baseline"] = True
    if not (base["backend"] == "pytorch"):
        notes.append(f"PyTorch eager FP32 could not run; speedups and agreement are relative to {base['label']}")
    b50 = base["latency_ms"]["p50"]
    for r in rows:
        if r["status"] != "ok":
            continue
        r["fps_b1"] = fps_from_ms(r["latency_ms"]["p50"], 1)
        bl = r.get("batch_latency_ms")
        r["fps_batch"] = fps_from_ms(bl["p50"], r["batch"]) if bl else None
        r["speedup"] = b50 / r["latency_ms"]["p50"] if r["latency_ms"]["p50"] else None
        if r["fps_batch"] and base.get("fps_batch"):
            r["speedup_batch"] = r["fps_batch"] / base["fps_batch"]
        if r.get("miou") is not None and base.get("miou") is not None:
            r["delta_miou"] = r["miou"] - base["miou"]
    base["speedup"] = 1.0
    # best: fastest p50 among rows whose accuracy is within tolerance of the baseline
    tol = opts.miou_tolerance / 100.0

    def accurate(r: dict) -> bool:
        if r.get("miou") is not None and base.get("miou") is not None:
            return r["miou"] >= base["miou"] - tol
        return r.get("agreement") is not None and r["agreement"] >= 0.99

    if base.get("miou") is None:
        notes.append("no dataset: the best row is the fastest with >= 99% argmax agreement with the baseline")
    cands = [r for r in rows if r["status"] == "ok" and accurate(r)]
    best = min(cands, key=lambda r: r["latency_ms"]["p50"]) if cands else None
    if best is not None:
        best["best"] = True
    return base, best


# ---------------------------------------------------------------------------------------- streaming


def build_video(ds, path: Path, max_frames: int, fps: float = 30.0) -> Path:
    """Write the split's images, in file-name order (CamVid: ``<sequence>_<frame>.png`` is time
    order), as an mp4 video of at most ``max_frames`` frames at the first image's size."""
    from unet_edge.runtime.video import frames_to_video

    return frames_to_video(sorted(ds.image_paths(), key=lambda p: p.name)[:max_frames], path, fps)


def _stream_rows(targets: list[tuple[str, dict, RowSpec]], ctx: _Ctx, tmp: Path) -> tuple[list[dict], str | None]:
    from unet_edge.runtime.loader import load_backend
    from unet_edge.runtime.stream import stream

    opts = ctx.opts
    if opts.video:
        video, vdesc = opts.video, opts.video
    elif ctx.dataset is not None:
        video = str(build_video(ctx.dataset, tmp / "bench_input.mp4", opts.stream_frames))
        n = min(len(ctx.dataset), opts.stream_frames)
        vdesc = f"{n} {ctx.dataset.split} images of {ctx.dataset.info.name} in file-name order, encoded as mp4v"
    else:
        ctx.notes.append("streaming rows skipped: no --video and no --data to build a video from")
        return [], None
    out = []
    for role, row, spec in targets:
        ctx.log(f"stream {row['label']} ({role}) on {Path(video).name}")
        try:
            with load_backend(spec.path, device=spec.device, precision=spec.load_precision,
                              threads=opts.threads) as backend:
                backend.meta = backend.meta.with_(input_size=ctx.size)  # stream at the benchmark's input size
                for i in range(max(1, opts.warmup)):
                    backend.infer(ctx.pool[i % len(ctx.pool)][None])
                st = stream(backend, video, out=tmp / f"stream_{len(out)}.mp4", max_frames=opts.stream_frames,
                            progress=opts.progress)
            d = st.to_dict()
            d.pop("out", None)
            out.append({"id": row["id"], "label": row["label"], "role": role, "status": "ok", **d})
        except UnetEdgeError as e:
            out.append({"id": row["id"], "label": row["label"], "role": role, "status": "failed", "reason": str(e)})
    return out, vdesc


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
        ``model``, ``settings``, ``rows`` (one per backend x precision x device, ``status`` ok /
        skipped / failed; latencies in ms, FPS in images/s, sizes and memory in MB),
        ``streaming`` (end-to-end FPS and per-stage ms per frame), ``baseline``, ``best``,
        ``notes`` and ``files``.

    Raises:
        ArtifactError, DataError, BackendUnavailableError: bad artifacts, dataset, or an explicit
        ``device="cuda"`` without CUDA. Failures of single rows are reported in the row instead.
    """
    from . import plots, report

    opts = opts or BenchOptions()
    if opts.iters < 1 or opts.batch < 1 or opts.warmup < 0 or opts.pool < 1:
        raise UnetEdgeError("bench needs iters >= 1, batch >= 1, warmup >= 0 and pool >= 1")
    threads_requested = opts.threads
    opts = replace(opts, threads=resolve_threads(opts.threads))  # 0 -> the physical cores, as recorded
    report_dir = Path(report_dir)
    t_start = time.perf_counter()
    host = host_info()
    notes: list[str] = []
    cores = host["cpu"].get("affinity") or host["cpu"].get("cores_logical") or 1
    if host.get("load_avg") and host["load_avg"][0] > 0.5 * cores:
        notes.append(f"host busy at start: 1-min load average {host['load_avg'][0]} on {cores} cores; "
                     "other processes compete for the CPU and latencies may be inflated")
    if opts.threads > cores:
        notes.append(f"--threads {opts.threads} is more than the {cores} cores available")

    plan = plan_rows(artifacts, device=opts.device, input_size=opts.input_size, emulated=opts.emulated)
    notes += plan.notes
    size = plan.input_size
    ds = _load_split(opts, plan.meta)
    pool, inputs_desc = _input_pool(ds, plan.meta, size, opts.pool, opts.seed)
    ctx = _Ctx(opts=opts, plan=plan, size=size, pool=pool, inputs_desc=inputs_desc, dataset=ds, log=log, notes=notes)
    log(f"bench: {len(plan.rows)} rows ({sum(r.status == 'planned' for r in plan.rows)} runnable), input "
        f"{size[0]}x{size[1]}, {opts.threads} threads, {opts.iters} iters after {opts.warmup} warmup; inputs: {inputs_desc}")

    rows: list[dict] = []
    specs: dict[str, RowSpec] = {}
    runnable = sorted((r for r in plan.rows if r.status == "planned"), key=_measure_order)

    def fail(i: int, spec: RowSpec, row: dict, e: Exception) -> None:
        if isinstance(e, BackendUnavailableError):
            row["status"], row["reason"] = "skipped", str(e)
        else:  # any backend error fails this row only, reported in it
            row["status"], row["reason"] = "failed", f"{type(e).__name__}: {e}"
        log(f"({i + 1}/{len(runnable)}) {spec.label}: {row['status']}: {row['reason']}")

    loaded: list[tuple[int, RowSpec, dict, object]] = []
    for i, spec in enumerate(runnable):
        row = _row_dict(spec)
        rows.append(row)
        specs[row["id"]] = spec
        try:
            backend, row["load_s"] = _load(spec, ctx)
            loaded.append((i, spec, row, backend))
        except Exception as e:  # noqa: BLE001
            fail(i, spec, row, e)
    try:
        log(f"batch-1 latency: {len(loaded)} rows x {opts.iters} calls in {max(1, min(opts.rounds, opts.iters))} interleaved rounds")
        samples = _interleaved_latency([(spec, backend) for _, spec, _, backend in loaded], ctx)
        for i, spec, row, backend in loaded:
            try:
                if isinstance(samples[spec.id], Exception):
                    raise samples[spec.id]
                row.update(_measure(spec, backend, samples[spec.id], ctx))
                row["status"] = "ok"
                lat = row["latency_ms"]
                acc = f", mIoU {row['miou']:.4f}" if row.get("miou") is not None else ""
                log(f"({i + 1}/{len(runnable)}) {spec.label}: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms{acc}")
            except Exception as e:  # noqa: BLE001
                fail(i, spec, row, e)
            finally:
                backend.close()
    finally:
        for *_, backend in loaded:
            backend.close()
    for row in rows:
        row["notes"] = specs[row["id"]].notes
    for spec in plan.rows:
        if spec.status == "skipped":
            rows.append(_row_dict(spec))
    order = {s.id: k for k, s in enumerate(plan.rows)}
    rows.sort(key=lambda r: order.get(r["id"], 1 << 30))

    # memory: a separate pass, after all latency runs
    if opts.memory != "off":
        for row in rows:
            if row["status"] != "ok":
                continue
            spec = specs[row["id"]]
            log(f"memory {row['label']} ({opts.memory})")
            row["memory"] = measure_memory({"path": spec.path, "device": spec.device, "precision": spec.load_precision,
                                            "threads": opts.threads, "input_size": list(size), "batch": opts.batch},
                                           mode=opts.memory)

    base, best = _finish_rows(rows, ctx.base_id, opts, notes)

    streaming: list[dict] = []
    video_desc = None
    if opts.stream and base is not None:
        targets = [("baseline", base, specs[base["id"]])]
        if best is not None and best["id"] != base["id"]:
            targets.append(("best", best, specs[best["id"]]))
        elif best is not None:
            targets[0] = ("baseline+best", base, specs[base["id"]])
        with tempfile.TemporaryDirectory(prefix="unet-edge-bench-") as tmp:
            streaming, video_desc = _stream_rows(targets, ctx, Path(tmp))

    settings = {k: v for k, v in asdict(opts).items() if k not in ("progress",)}
    settings.update(threads_requested=threads_requested, input_size=list(size), batch_iters=opts.batch_iters or max(5, opts.iters // opts.batch),
                    batch_warmup=max(2, math.ceil(opts.warmup / opts.batch)), inputs=inputs_desc,
                    stream_video=video_desc, eval_split=opts.split if ds is not None else None,
                    eval_images=next((r.get("eval_images") for r in rows if r.get("eval_images")), None),
                    timers=sorted({r["timer"] for r in rows if r.get("timer")}),
                    fps_definition="images per second from the median latency: 1000 * batch / p50_ms",
                    mb_definition="1 MB = 1e6 bytes")
    result = {
        "schema": SCHEMA,
        "label": opts.label or report_dir.name,
        "host": host,
        "load_avg_end": load_avg(),
        "model": _model_info(plan, size),
        "settings": settings,
        "baseline": base["id"] if base else None,
        "best": best["id"] if best else None,
        "rows": rows,
        "streaming": streaming,
        "notes": notes,
        "seconds": None,
        "files": {},
    }
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    files = {}
    if opts.plots:
        files.update(plots.write_plots(result, report_dir))
    result["files"] = {**files, **report.planned_files(report_dir)}
    report.write_reports(result, report_dir)
    report.emit_table(result, log)
    return result
