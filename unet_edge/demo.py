"""``unet-edge demo``: the whole pipeline on built-in synthetic scenes, nothing downloaded.

synth (CARLA-style scenes) -> train the edge preset -> export TorchScript + ONNX FP32/FP16/INT8
-> stream a synthetic drive through the INT8 model into an overlay video -> bench table.

Time: the run has a total budget (:data:`unet_edge.formats.DEMO_TOTAL_BUDGET_S`, 8 min) so it ends within 10
minutes on 2 CPU cores, AVX2-only or AVX-512 alike. Training gets a time budget
(:data:`unet_edge.formats.DEMO_TRAIN_BUDGET_S`, 4 min, less when scene generation ran long) and trains as many
epochs as fit in it, ``epochs`` being the upper bound; it runs in ``--precision auto`` (bf16
autocast only where the CPU computes bf16 natively, FP32 otherwise). The benchmark's timed calls
and measurements are cut when the time left before the total budget is short (:func:`_bench_plan`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .data.synth import generate_dataset, render_drive
from .export.pipeline import ExportOptions, export_all
from .formats import (DEMO_BENCH_ITERS, DEMO_DRIVE_FRAMES, DEMO_EPOCHS, DEMO_MIN_TRAIN_S, DEMO_SCENES, DEMO_SIZE,
                      DEMO_TOTAL_BUDGET_S, DEMO_TRAIN_BUDGET_S, artifact)
from .host import probe_host, resolve_threads
from .io_utils import write_json_atomic
from .precision import choose_precision
from .runtime.loader import load_backend
from .runtime.stream import stream
from .runtime.torch_backend import resolve_device
from .time_budget import format_duration
from .train import TrainConfig, precision_label, train

#: kept free after training when the training budget is capped (seconds): export + stream took
#: ~85 s at the default sizes on 2 cores, the rest is for a bench cut to fit (:func:`_bench_plan`)
DEMO_AFTER_TRAIN_S = 180.0
#: bench cost model, in units of one INT8 streaming frame ``f`` (``1 / stream FPS``), measured on
#: a 2-core x86 host (AVX-512 kernels; ``--precision`` decisions as on AVX2): a batch-1 call of
#: every CPU row together is ~40 f (PyTorch eager and TorchScript FP32 ~17 f each, the ONNX rows
#: 1-2 f), an image of a batched run (throughput, accuracy, memory) a third of that, a frame of
#: the two streaming rows (PyTorch FP32 baseline + INT8) ~20 f; plus a fixed ~10 s (loading,
#: reports) and ~5 s per memory-probe subprocess (7 rows).
_BENCH_CALL_F, _BENCH_STREAM_F = 40.0, 20.0
_BENCH_FIXED_S, _BENCH_ROWS, _MEMORY_PROBE_S = 10.0, 7, 5.0
#: the bench levels, from every measurement to the floor (BenchOptions fields; None: the default)
_BENCH_LEVELS = (
    dict(iters=None, batch_iters=None, rounds=5, warmup=5, memory="subprocess", stream=True, stream_frames=100, limit=None),
    dict(iters=10, batch_iters=3, rounds=5, warmup=5, memory="inprocess", stream=True, stream_frames=45, limit=None),
    dict(iters=5, batch_iters=2, rounds=2, warmup=5, memory="off", stream=True, stream_frames=20, limit=8),
    dict(iters=5, batch_iters=1, rounds=1, warmup=2, memory="off", stream=False, stream_frames=0, limit=4),
)


def _bench_estimate(opts: dict, frame_s: float, n_val: int, drive_frames: int) -> float:
    """Seconds :func:`benchmarks.runner.run_bench` takes with ``opts`` (one of :data:`_BENCH_LEVELS`,
    ``iters`` filled in), from the cost model above."""
    call = max(frame_s, 1e-3) * _BENCH_CALL_F
    image = call / 3
    rounds = max(1, min(opts["rounds"], opts["iters"]))
    b1 = opts["warmup"] + 2 * (rounds - 1) + opts["iters"]              # the bench's warm-up calls per round
    batched = 8 * ((opts["batch_iters"] or max(5, opts["iters"] // 8)) + 2)  # + its 2 warm-up batches
    scored = min(n_val, opts["limit"] or n_val)
    memory = {"subprocess": _BENCH_ROWS * _MEMORY_PROBE_S + 8 * image, "inprocess": 8 * image, "off": 0.0}[opts["memory"]]
    stream = min(drive_frames, opts["stream_frames"]) * _BENCH_STREAM_F * frame_s if opts["stream"] else 0.0
    return _BENCH_FIXED_S + b1 * call + (batched + scored) * image + memory + stream


def _bench_plan(seconds_left: float, frame_s: float, iters: int, n_val: int, drive_frames: int) -> dict:
    """The first of :data:`_BENCH_LEVELS` whose estimate (:func:`_bench_estimate`, from the INT8
    stream's seconds per frame ``frame_s``) fits in ``seconds_left``: every measurement with the
    requested ``iters`` (level 0); 10 calls, 3 batch runs, in-process memory, 45 streamed frames
    (1); 5 calls, no memory probe, 20 streamed frames, 8 scored images (2); 5 calls in one round,
    no streaming rows, 4 scored images (3, the floor, taken even when it does not fit).

    Returns:
        ``level``, ``estimate_s`` and the BenchOptions fields ``iters``, ``batch_iters``,
        ``rounds``, ``warmup``, ``memory``, ``stream``, ``stream_frames``, ``limit``.
    """
    for level, template in enumerate(_BENCH_LEVELS):
        opts = {**template, "iters": min(iters, template["iters"] or iters)}
        estimate = _bench_estimate(opts, frame_s, n_val, drive_frames)
        if estimate <= seconds_left or level == len(_BENCH_LEVELS) - 1:
            return {"level": level, "estimate_s": round(estimate, 1), **opts}
    raise AssertionError("unreachable")


def run_demo(out: str | Path = "runs/demo", epochs: int = DEMO_EPOCHS, threads: int = 0, n_train: int = DEMO_SCENES,
             n_val: int = DEMO_SCENES // 5, drive_frames: int = DEMO_DRIVE_FRAMES, bench_iters: int = DEMO_BENCH_ITERS,
             time_budget_s: float | None = DEMO_TRAIN_BUDGET_S,
             total_budget_s: float | None = DEMO_TOTAL_BUDGET_S, size: tuple[int, int] = DEMO_SIZE,
             bench: Callable[[list[str], Path, dict], dict] | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Run every stage into ``out`` and return a summary dict (also ``out/demo_summary.json``).

    Args:
        epochs: upper bound of the training epochs (the training time budget decides).
        size: (H, W) pixels of the scenes, the drive video and the model input.
        threads: CPU threads for every stage, 0 = the physical cores.
        time_budget_s: training time budget in seconds (None: train exactly ``epochs`` epochs).
        total_budget_s: budget of the whole demo in seconds; caps the training budget (keeping
            :data:`DEMO_AFTER_TRAIN_S` for the later stages, never below :data:`unet_edge.formats.DEMO_MIN_TRAIN_S`) and
            cuts the benchmark's calls and measurements (:func:`_bench_plan`) to the time left. None:
            no cap.
        bench: the benchmark stage, ``bench(artifacts, report_dir, options) -> report dict`` with
            ``options`` the ``benchmarks.runner.BenchOptions`` fields to set (``cli.py`` passes
            ``run_bench``: the library does not import ``benchmarks``). None: the stage is skipped,
            with a log line.

    Layout: ``data/`` scenes, ``train/`` checkpoints + curves, ``export/`` artifacts,
    ``drive.mp4`` and ``drive_int8_overlay.mp4``, ``bench/`` report. The summary records the
    host (:meth:`unet_edge.host.HostInfo.to_dict`), the training precision, epochs and budget, and
    seconds per stage.
    """
    t0 = time.time()
    import torch

    out = Path(out)
    threads = resolve_threads(threads)
    torch.set_num_threads(threads)
    host = probe_host()
    stages: dict[str, float] = {}

    def left() -> float:
        return float("inf") if total_budget_s is None else total_budget_s - (time.time() - t0)

    log(f"host: {host.summary()}; {threads} threads"
        + (f"; demo budget {format_duration(total_budget_s)}" if total_budget_s else ""))
    size = tuple(size)
    log(f"[1/5] generating {n_train}+{n_val} CARLA-style scenes ({size[0]}x{size[1]})")
    data = generate_dataset(out / "data", n_train=n_train, n_val=n_val, size=size, seed=0)
    stages["synth"] = round(time.time() - t0, 1)  # (with the imports and the host probe)

    budget = time_budget_s
    if budget is not None and total_budget_s is not None:
        budget = max(DEMO_MIN_TRAIN_S, min(budget, left() - DEMO_AFTER_TRAIN_S))
    device = resolve_device("auto")  # what train() picks
    choice = choose_precision(device, "auto", host=host)
    within = f"as many epochs as fit in {format_duration(budget)} (at most {epochs})" if budget else f"{epochs} epochs"
    log(f"[2/5] training the edge U-Net for {within} ({precision_label(choice, device)} on {device}: {choice.reason})")
    t = time.time()
    command = f"unet-edge demo --epochs {epochs}" + (f" --time-budget {format_duration(budget)}" if budget else "")
    summary = train(TrainConfig(data=str(data), out=str(out / "train"), exist_ok=True, preset="edge", epochs=epochs, batch_size=8,
                                crop=size, lr=3e-3, threads=threads, precision="auto", time_budget_s=budget,
                                command=command), log=log)
    stages["train"] = round(time.time() - t, 1)

    log("[3/5] exporting TorchScript + ONNX FP32/FP16/INT8 (calibrated on the training scenes)")
    t = time.time()
    export_dir = out / "export"
    report = export_all(summary["best"], export_dir, ExportOptions(
        fp16=True, int8=True, calib_data=str(data), calib_images=32, eval_data=str(data), threads=threads,
        # a demo shows the INT8 check's verdict (logged, in the report) instead of stopping on it
        allow_int8_drop=True), log=log)
    stages["export"] = round(time.time() - t, 1)

    log(f"[4/5] streaming a {drive_frames}-frame synthetic drive through the INT8 (ONNX Runtime CPU) model")
    t = time.time()
    video = render_drive(out / "drive.mp4", frames=drive_frames, size=size, seed=7)
    overlay = out / "drive_int8_overlay.mp4"
    with load_backend(export_dir / artifact("onnx_int8_cpu").file, device="cpu", threads=threads) as backend:
        stats = stream(backend, video, out=overlay)
    stages["stream"] = round(time.time() - t, 1)
    log(f"      {stats.frames} frames, {stats.fps:.1f} FPS end to end, {stats.infer_fps:.1f} FPS inference only")

    plan, bench_result = None, {}
    if bench is None:
        log("[5/5] benchmark skipped (no bench stage given)")
    else:
        plan = _bench_plan(left() - 10.0, 1.0 / max(stats.fps, 1e-3), bench_iters, n_val, drive_frames)
        cut = {0: "", 1: "; in-process memory, 45 streamed frames", 2: "; no memory probe, 20 streamed frames",
               3: "; no memory probe, no streaming rows"}[plan["level"]]
        log(f"[5/5] benchmarking every backend/precision ({plan['iters']} timed calls per row"
            + (f"; level-{plan['level']} cuts to fit the {format_duration(total_budget_s)} demo budget{cut}, "
               f"~{plan['estimate_s']:.0f} s" if plan["level"] else "") + ")")
        t = time.time()
        bench_opts = {k: plan[k] for k in ("iters", "batch_iters", "rounds", "warmup", "memory", "stream", "limit")}
        bench_result = bench([summary["best"], str(export_dir)], out / "bench",
                             dict(data=str(data), split="val", threads=threads, video=str(video),
                                  stream_frames=max(1, plan["stream_frames"]), **bench_opts))
        stages["bench"] = round(time.time() - t, 1)
    result = {
        "seconds": round(time.time() - t0, 1), "total_budget_s": total_budget_s, "stage_seconds": stages,
        "dataset": str(data), "checkpoint": summary["best"], "val_miou": summary["best_miou"],
        "train": {k: summary[k] for k in ("epochs", "epochs_max", "epochs_planned", "time_budget_s", "epoch_estimate_s",
                                          "precision", "threads", "device")},
        "export": str(export_dir), "export_eval": report.get("eval", {}),
        "drive_video": str(video), "overlay_video": str(overlay), "stream": stats.to_dict(),
        "bench_report": str(out / "bench"), "bench_plan": plan, "bench_seconds": bench_result.get("seconds"),
        "host": host.to_dict(),
    }
    write_json_atomic(out / "demo_summary.json", result)
    log(f"done in {result['seconds'] / 60:.1f} min. Everything is under {out}/:")
    for k in ("dataset", "checkpoint", "export", "overlay_video", "bench_report"):
        log(f"  {k:<14} {result[k]}")
    return result
