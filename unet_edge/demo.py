"""``unet-edge demo``: the whole pipeline on built-in synthetic scenes, nothing downloaded.

synth (CARLA-style scenes) -> train the edge preset -> export TorchScript + ONNX FP32/FP16/INT8
-> stream a synthetic drive through the INT8 model into an overlay video -> bench table.
About 6-8 minutes on 2 CPU cores.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .data.synth import generate_dataset, render_drive
from .export.pipeline import FILES, ExportOptions, export_all
from .io_utils import write_json_atomic
from .runtime.loader import load_backend
from .runtime.stream import stream
from .train import TrainConfig, train

DEMO_SIZE = (240, 320)


def run_demo(out: str | Path = "runs/demo", epochs: int = 12, threads: int = 0, n_train: int = 160, n_val: int = 32,
             drive_frames: int = 90, bench_iters: int = 30, log: Callable[[str], None] = print) -> dict:
    """Run every stage into ``out`` and return a summary dict (also ``out/demo_summary.json``).

    Layout: ``data/`` scenes, ``train/`` checkpoints + curves, ``export/`` artifacts,
    ``drive.mp4`` and ``drive_int8_overlay.mp4``, ``bench/`` report.
    """
    import torch

    from benchmarks.runner import BenchOptions, run_bench

    out = Path(out)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    log(f"[1/5] generating {n_train}+{n_val} CARLA-style scenes ({DEMO_SIZE[0]}x{DEMO_SIZE[1]})")
    data = generate_dataset(out / "data", n_train=n_train, n_val=n_val, size=DEMO_SIZE, seed=0)
    log(f"[2/5] training the edge U-Net for {epochs} epochs (bf16 autocast on CPU)")
    summary = train(TrainConfig(data=str(data), out=str(out / "train"), preset="edge", epochs=epochs, batch_size=8,
                                crop=DEMO_SIZE, lr=3e-3, threads=threads, command=f"unet-edge demo --epochs {epochs}"),
                    log=log)
    log("[3/5] exporting TorchScript + ONNX FP32/FP16/INT8 (calibrated on the training scenes)")
    export_dir = out / "export"
    report = export_all(summary["best"], export_dir, ExportOptions(
        fp16=True, int8=True, calib_data=str(data), calib_images=32, eval_data=str(data), threads=threads), log=log)
    log(f"[4/5] streaming a {drive_frames}-frame synthetic drive through the INT8 (ONNX Runtime CPU) model")
    video = render_drive(out / "drive.mp4", frames=drive_frames, size=DEMO_SIZE, seed=7)
    overlay = out / "drive_int8_overlay.mp4"
    with load_backend(export_dir / FILES["int8_cpu"], device="cpu", threads=threads) as backend:
        stats = stream(backend, video, out=overlay)
    log(f"      {stats.frames} frames, {stats.fps:.1f} FPS end to end, {stats.infer_fps:.1f} FPS inference only")
    log("[5/5] benchmarking every backend/precision")
    bench = run_bench([summary["best"], str(export_dir)], out / "bench",
                      BenchOptions(data=str(data), split="val", iters=bench_iters, warmup=5, threads=threads or 2,
                                   video=str(video)), log=log)
    result = {
        "seconds": round(time.time() - t0, 1), "dataset": str(data), "checkpoint": summary["best"],
        "val_miou": summary["best_miou"], "export": str(export_dir), "export_eval": report.get("eval", {}),
        "drive_video": str(video), "overlay_video": str(overlay), "stream": stats.to_dict(),
        "bench_report": str(out / "bench"),
    }
    write_json_atomic(out / "demo_summary.json", result)
    log(f"done in {result['seconds'] / 60:.1f} min. Everything is under {out}/:")
    for k in ("dataset", "checkpoint", "export", "overlay_video", "bench_report"):
        log(f"  {k:<14} {result[k]}")
    return result
