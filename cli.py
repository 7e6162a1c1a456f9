"""unet-edge command line: synth, train, eval, export, run, bench, demo.

Library errors (``unet_edge.errors.UnetEdgeError``) become a red message and the error's exit code.
"""
from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from unet_edge.errors import UnetEdgeError, UnetEdgeWarning
from unet_edge.formats import (CALIB_METHODS, DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_METHOD, DEMO_BENCH_ITERS,
                               DEMO_DRIVE_FRAMES, DEMO_EPOCHS, DEMO_MIN_TRAIN_S, DEMO_SCENES, DEMO_SIZE,
                               DEMO_TOTAL_BUDGET_S, DEMO_TRAIN_BUDGET_S, MAX_INT8_CLASS_DROP, MAX_INT8_MIOU_DROP)
from unet_edge.time_budget import format_duration

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="U-Net semantic segmentation from training to edge deployment (ONNX, INT8, TensorRT).")
console = Console(stderr=True, soft_wrap=True)  # no hard wraps in logs and CI output


def log(message) -> None:
    """Library log lines to stderr, printed literally (no rich markup in file names or labels)."""
    console.print(escape(str(message)))


@app.callback()
def _root() -> None:
    """U-Net semantic segmentation from training to edge deployment (ONNX, INT8, TensorRT)."""


def _size(text: str, what: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h <= 0 or w <= 0:
            raise ValueError
        return h, w
    except ValueError:
        raise typer.BadParameter(f"{what} must look like HxW, e.g. 360x480; got {text!r}")


def _range(text: str, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split("-"))
        return lo, hi
    except ValueError:
        raise typer.BadParameter(f"{what} must look like MIN-MAX, e.g. 0.5-2.0; got {text!r}")


def _out_folder(path: Path, what: str) -> Path:
    """An output folder given by the user, created when missing (:func:`unet_edge.io_utils.ensure_folder`)."""
    from unet_edge.io_utils import ensure_folder

    return ensure_folder(path, what)


def _out_file(path: Path, what: str) -> Path:
    """An output file given by the user; its folder is created when missing.

    Raises:
        UsageError: ``path`` is a directory, or its folder is a file or cannot be created.
    """
    from unet_edge.errors import UsageError

    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give a file path, e.g. {path / 'out.mp4'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {path} lies under {parent}, which is a file; give a path in a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot create its folder ({e.strerror or e}); give a writable path") from e
    return path


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """unet-edge warnings as one yellow ``warning:`` line; others as Python prints them."""
    if issubclass(category, UnetEdgeWarning):
        console.print(f"[yellow]warning:[/] {escape(str(message))}")
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def handle_errors(fn):
    """Turn library errors into a clear message and the error's exit code; print library warnings.

    Only :class:`UnetEdgeError` (its ``exit_code``) and KeyboardInterrupt (130) are caught: the library
    turns predictable failures on user input into typed errors, and anything else is a bug whose
    traceback should be seen."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _show_warning
        try:
            return fn(*args, **kwargs)
        except UnetEdgeError as e:
            # one ``error:`` line for scripts to grep; details that other libraries put on more lines follow indented
            first, *rest = str(e).strip().splitlines() or [type(e).__name__]
            console.print(f"[bold red]error:[/] {escape(first)}")
            for line in rest:
                if line.strip():
                    console.print(f"  {escape(line.rstrip())}")
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130)

    return wrapper


@app.command()
@handle_errors
def train(
    data: Path = typer.Option(..., help="Dataset folder (carla, camvid or folder layout)."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder: best.pt, last.pt, log.csv, curves.png."),
    data_format: Optional[str] = typer.Option(None, help="Force the layout: carla, camvid, folder."),
    preset: str = typer.Option("edge", help="Model preset: edge (16 base ch), edge-wide (32), unet (64, the paper's), tiny."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Training epochs [default: 30]; with --time-budget the "
                                         "upper bound [default: 1000, so the budget sets the length]."),
    time_budget: Optional[str] = typer.Option(
        None, "--time-budget", help="Wall-clock budget for the whole training, e.g. 90s, 20m, 1.5h or plain minutes "
        "(Ultralytics' time). Times the first steps and a validation pass, then trains as many epochs as end inside "
        "it (at most --epochs) with the LR schedule built for that count; shortens and compresses the schedule if "
        "epochs get slower. Counts resumed sessions too."),
    batch_size: int = typer.Option(8, min=1, help="Global batch: under torchrun each of the N processes takes "
                                   "batch/N images per step (a multiple of N)."),
    crop: str = typer.Option("256x320", help="Training crop HxW (after random scaling)."),
    input_size: Optional[str] = typer.Option(None, help="Model input HxW; default: the dataset's image size."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(1e-4),
    schedule: str = typer.Option("cosine", help="cosine (linear warmup + cosine) or onecycle."),
    warmup_epochs: float = typer.Option(1.0),
    class_weights: str = typer.Option("enet", help="enet (1/ln(1.02+p)), median (median frequency balancing, SegNet's) or none."),
    dice_weight: float = typer.Option(0.0, help="Weight of the soft Dice loss added to cross-entropy."),
    lovasz_weight: float = typer.Option(0.0, help="Weight of the Lovasz-Softmax loss (Berman et al. 2018, a "
                                        "surrogate of per-class IoU) added to cross-entropy, on 65536 random "
                                        "labelled pixels per batch."),
    scale: str = typer.Option("0.75-1.5", help="Random-scale range MIN-MAX before the crop (0.5-2.0 is the wide "
                              "range of CGNet/DABNet/PIDNet recipes)."),
    ema: float = typer.Option(0.0, help="Decay of an exponential moving average of the weights, validated and saved "
                              "as best.pt (0: off; e.g. 0.995)."),
    ohem: float = typer.Option(0.0, help="Online hard example mining: the share of labelled pixels with the highest "
                               "loss that cross-entropy keeps (0: all; e.g. 0.25)."),
    rare_crop: float = typer.Option(0.0, help="Probability that a crop is centred on a rare class (< 2% of the "
                                    "training pixels: poles, signs, cyclists...); 0: uniform crops."),
    low_res: float = typer.Option(0.0, help="Progressive resizing: the share of the LR schedule trained at half "
                                  "resolution (images, labels, scale range and crop halved: ~4x fewer pixels a step; "
                                  "those epochs are not validated), then full resolution. 0: off; e.g. 0.5."),
    low_res_mode: str = typer.Option("scale", help="How the --low-res epochs save pixels: scale (half the scale "
                                     "range and crop: the same field of view at half resolution) or crop (half the "
                                     "crop at the full scale range: a quarter of the field of view, thin objects such "
                                     "as poles as wide as at full resolution; 2.9 points under scale on x86-avx2)."),
    dropout: float = typer.Option(0.0),
    precision: str = typer.Option(
        "auto", help="auto, fp32, bf16 or fp16 (CUDA). auto: bf16 autocast where the CPU computes bf16 natively "
        "(AVX512_BF16/AMX-BF16, Arm BF16) or on CUDA >= 8.0, fp16 AMP with loss scaling on CUDA 7.x, else FP32; "
        "never an emulated precision (bf16 on an AVX2-only CPU is 4-5x slower)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    threads: int = typer.Option(0, help="torch CPU threads (0: the physical cores)."),
    seed: int = typer.Option(0),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images of each split."),
    val_every: int = typer.Option(1, min=1, help="Validate every N epochs."),
    resume: bool = typer.Option(False, help="Continue the run in OUT from its last.pt (same options; the rest of the "
                                "run is the one an uninterrupted run would have trained)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace a run already in OUT (its best.pt, last.pt, "
                                  "log.csv, ... are deleted once the new run is set up). Without it, or --resume, "
                                  "a folder holding a run is refused."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="Train in the NHWC memory "
                                       "format (on CPU 1.47x faster steps than NCHW, measured on x86-amx; always on CUDA)."),
    compile_steps: bool = typer.Option(False, "--compile/--no-compile", help="Run the training steps through "
                                       "torch.compile (Inductor; a C++ compiler on CPU; 20-35 s of compiling, "
                                       "counted in --time-budget): 1.12x faster steps than channels_last eager on "
                                       "x86-amx. Single process only."),
    sync_bn: str = typer.Option("auto", "--sync-bn", help="Under torchrun: auto (SyncBatchNorm on CUDA ranks, per-rank "
                                "BatchNorm on CPU ranks, where PyTorch has no SyncBatchNorm), on or off."),
    logit_offsets: bool = typer.Option(True, "--logit-offsets/--no-logit-offsets", help="After the last epoch, fit "
                                       "per-class logit offsets for mIoU on training pixels and fold them into "
                                       "best.pt's head when they raise val mIoU (undoes the class weights' bias "
                                       "towards rare classes; +3.9 points on the CamVid reference)."),
):
    """Train a U-Net; validation mIoU each epoch, best/last checkpoints with the model metadata.

    On several processes: torchrun --standalone --nproc_per_node N cli.py train ... (DDP: gloo on
    CPU, NCCL on CUDA; rank 0 logs and writes the run folder)."""
    from unet_edge.time_budget import BUDGET_EPOCHS_BOUND, parse_time_budget
    from unet_edge.train import TrainConfig, train as run_train

    if epochs is None:
        epochs = BUDGET_EPOCHS_BOUND if time_budget is not None else TrainConfig.epochs
    cfg = TrainConfig(
        data=str(data), out=str(out), data_format=data_format, preset=preset, dropout=dropout, epochs=epochs,
        batch_size=batch_size, crop=_size(crop, "--crop"), input_size=_size(input_size, "--input-size") if input_size else None,
        lr=lr, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs, class_weights=class_weights,
        dice_weight=dice_weight, lovasz_weight=lovasz_weight, precision=precision, device=device, seed=seed,
        threads=threads, limit=limit,
        val_every=val_every, resume=resume, exist_ok=exist_ok, time_budget_s=parse_time_budget(time_budget) if time_budget is not None else None,
        sync_bn=sync_bn, scale=_range(scale, "--scale"), ema=ema, ohem=ohem, rare_crop=rare_crop, low_res=low_res,
        low_res_mode=low_res_mode,
        channels_last=channels_last, compile=compile_steps, logit_offsets=logit_offsets,
    )
    summary = run_train(cfg, log=log)
    if summary["rank"] == 0:
        log(f"best val mIoU {summary['best_miou']:.4f} at epoch {summary['best_epoch']} of {summary['epochs']} "
            f"({summary['seconds'] / 60:.1f} min) -> {summary['best']}")


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2))


@app.command()
@handle_errors
def synth(
    out: Path = typer.Argument(..., help="Output folder (CARLA layout: train/ and val/ with CameraRGB/ + CameraSeg/)."),
    train_images: int = typer.Option(200, "--train", min=1, help="Training scenes."),
    val_images: int = typer.Option(40, "--val", min=1, help="Validation scenes."),
    size: str = typer.Option("240x320", help="Frame size HxW."),
    seed: int = typer.Option(0),
    frames: int = typer.Option(0, min=0, help="Also render a forward drive of N frames (needs --video)."),
    video: Optional[Path] = typer.Option(None, help="Drive video file (.mp4) for --frames."),
    fps: float = typer.Option(15.0),
):
    """Generate procedural CARLA-style road scenes (seeded, reproducible) and optionally a drive video."""
    from unet_edge.data.synth import generate_dataset, render_drive

    hw = _size(size, "--size")
    if frames and video is None:
        raise typer.BadParameter("--frames needs --video FILE.mp4")
    _out_folder(out, "output folder")
    if video is not None:
        _out_file(video, "--video")
    root = generate_dataset(out, n_train=train_images, n_val=val_images, size=hw, seed=seed)
    log(f"dataset: {root} ({train_images} train / {val_images} val, {hw[0]}x{hw[1]})")
    if frames:
        log(f"drive video: {render_drive(video, frames=frames, size=hw, seed=seed, fps=fps)} ({frames} frames)")


@app.command(name="eval")
@handle_errors
def eval_(
    artifact: Path = typer.Argument(..., help="Checkpoint, TorchScript, ONNX, OpenVINO IR (.xml), .pt2 (torch.export "
                                              "or AOTInductor), TensorRT engine, or a shipped reference model's name "
                                              "(camvid-edge)."),
    data: Path = typer.Option(..., help="Dataset folder."),
    split: str = typer.Option("val", help="train, val or test."),
    data_format: Optional[str] = typer.Option(None, help="Force the layout: carla, camvid, folder."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: Optional[str] = typer.Option(None, help="Checkpoint/TorchScript only: fp32 (default), auto (the host's native autocast, see `doctor`), bf16, fp16 (CUDA); an emulated one runs with a warning. "
                                                       "OpenVINO IR: bf16 sets the bf16 inference hint (native-bf16 CPUs only; default f32)."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0: the physical cores)."),
    batch_size: int = typer.Option(4, min=1),
    limit: Optional[int] = typer.Option(None, min=1, help="Score only the first N images."),
    save_images: Optional[Path] = typer.Option(None, help="Write input | ground truth | prediction PNGs here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (miou, per_class_iou, pixel_accuracy, dice, ...)."),
):
    """Score an artifact on a dataset split: mIoU, per-class IoU, Dice, pixel accuracy (void excluded)."""
    from unet_edge.data.layouts import load_dataset
    from unet_edge.evaluate import evaluate
    from unet_edge.runtime.loader import load_backend

    with load_backend(artifact, device=device, precision=precision, threads=threads) as backend:
        ds = load_dataset(data, split, data_format)
        m = evaluate(backend.infer, ds, backend.meta, batch_size=batch_size, limit=limit, save_dir=save_images,
                     progress=not as_json, description=f"eval {backend.label}")
        m.update(artifact=str(artifact), backend=backend.label, split=split, dataset=str(data))
    if as_json:
        _print_json(m)
        return
    from rich.table import Table

    t = Table(title=f"{artifact.name} on {data.name}/{split} ({m['images']} images, {m['backend']})")
    t.add_column("class"), t.add_column("IoU", justify="right"), t.add_column("Dice", justify="right")
    for name, iou in m["per_class_iou"].items():
        d = m["per_class_dice"][name]
        t.add_row(name, "-" if iou is None else f"{iou:.4f}", "-" if d is None else f"{d:.4f}")
    t.add_row("[bold]mean", f"[bold]{m['miou']:.4f}", f"[bold]{m['dice']:.4f}")
    Console().print(t)
    Console().print(f"pixel accuracy {m['pixel_accuracy']:.4f} over {m['pixels']} labelled pixels "
                    f"({m['ignored_pixels']} void pixels excluded)")


@app.command()
@handle_errors
def export(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (best.pt / last.pt)."),
    out: Path = typer.Option(..., help="Export folder: model.ts, model_fp32.onnx [, model_fp16.onnx, model_int8.onnx, model_int8_cpu.onnx, "
                                         "calib.cache] [, model_openvino_fp32/int8.xml + .bin] [, model_exported.pt2, model_aoti_cpu.pt2]. "
                                         "Built beside it and swapped in whole; a failed export leaves it unchanged "
                                         "and is kept in OUT.failed/."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write an FP16 ONNX (FP32 I/O)."),
    int8: bool = typer.Option(False, "--int8", help="Also write an INT8 Q/DQ ONNX and a TensorRT calibration cache."),
    calib_data: Optional[Path] = typer.Option(None, help="Calibration images: a dataset (train split) or image folder."),
    calib_images: int = typer.Option(DEFAULT_CALIB_IMAGES, min=1, help="Number of calibration images."),
    calib_method: str = typer.Option(DEFAULT_CALIB_METHOD, help=", ".join(CALIB_METHODS) + "."),
    data_format: Optional[str] = typer.Option(None, help="Force the dataset layout: carla, camvid, folder."),
    dynamic: bool = typer.Option(False, help="Dynamic batch/H/W ONNX (default: static 1x3xHxW, best for TensorRT/INT8)."),
    eval_data: Optional[Path] = typer.Option(None, help="Dataset to score every precision on (default: --calib-data)."),
    eval_split: str = typer.Option("val"),
    eval_limit: Optional[int] = typer.Option(None, min=1, help="Score only the first N images."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the per-precision mIoU report."),
    jetson: Optional[Path] = typer.Option(None, help="Also write a self-contained Jetson bundle (ONNX, cache, build_engine.sh) here."),
    int8_target: Optional[str] = typer.Option(None, help="CPU INT8 file for this INT8 kernel family: x86-vnni (AVX512-VNNI, AVX-VNNI, AMX), "
                                                         "x86-avx2 (no VNNI: 7-bit weights, U8U8 when those fail the INT8 check), arm64, generic "
                                                         "(default: this host's; see `doctor`)."),
    int8_cpu_scheme: Optional[str] = typer.Option(None, help="Force one CPU INT8 scheme: u8s8, u8s8-w7 (7-bit weights) or u8u8 "
                                                             "(default: the target's, fastest first)."),
    allow_int8_drop: bool = typer.Option(False, "--allow-int8-drop", help="Keep INT8 files that fail the accuracy check (exit 0)."),
    max_int8_drop: float = typer.Option(MAX_INT8_MIOU_DROP, min=0.0, help="INT8 check: most mIoU points an INT8 file may lose against FP32."),
    max_int8_class_drop: float = typer.Option(MAX_INT8_CLASS_DROP, min=0.0, help="INT8 check: most IoU points any class may lose."),
    openvino: bool = typer.Option(False, "--openvino", help="Also write OpenVINO IRs for x86 CPUs: FP32 (model_openvino_fp32.xml/.bin) and NNCF INT8 "
                                                            "(model_openvino_int8.xml/.bin, calibrated on --calib-data like the ONNX INT8 files, "
                                                            "checked against the FP32 IR). Needs pip install 'unet-edge\\[openvino]'."),
    openvino_preset: str = typer.Option("performance", help="NNCF preset of the OpenVINO INT8 IR: performance (symmetric activations) or mixed (asymmetric)."),
    pt2: bool = typer.Option(False, "--pt2", help="Also write model_exported.pt2 (torch.export, dynamic batch/H/W) and model_aoti_cpu.pt2 "
                                                  "(AOTInductor, compiled here: needs a C++ compiler, about a minute)."),
    pt2_march: str = typer.Option("native", help="AOTInductor CPU target: native (this CPU), or x86-64-v3/x86-64-v4 for a package that runs "
                                                 "on other CPUs of that level."),
    triton: Optional[Path] = typer.Option(None, "--triton", help="Also write a Triton Inference Server model repository here: "
                                          "DIR/<name>/config.pbtxt + 1/model.onnx (batch dim made variable, checked at batch 2)."),
    triton_name: Optional[str] = typer.Option(None, help="Triton model name (default unet_edge; unet_edge_mask with --triton-argmax)."),
    triton_max_batch: int = typer.Option(8, min=0, help="Triton max_batch_size (0: no batching, dims include the batch)."),
    triton_instance: str = typer.Option("cpu", help="Triton instance_group kind: cpu or gpu."),
    triton_count: int = typer.Option(1, min=1, help="Triton model instances per device."),
    triton_argmax: bool = typer.Option(False, "--triton-argmax", help="Argmax inside the graph: clients receive a uint8 mask "
                                                                      "(N, H, W), 173 KB a 360x480 frame instead of 7.6 MB of logits."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0: the physical cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
):
    """Export TorchScript + ONNX (FP32, optional FP16 and INT8 Q/DQ) with parity and mIoU per precision.

    With --int8 and evaluation data, every INT8 file is checked against FP32 per class (and as a fake-quant
    run that separates calibration scales from integer-kernel effects); a file losing more than
    --max-int8-drop mIoU points or --max-int8-class-drop on a class fails the export (exit 7) unless
    --allow-int8-drop. --openvino and --pt2 add OpenVINO IRs and torch.export/AOTInductor packages."""
    from unet_edge.export.pipeline import ExportOptions, export_all

    opts = ExportOptions(
        fp16=fp16, int8=int8, calib_data=str(calib_data) if calib_data else None, calib_images=calib_images,
        calib_method=calib_method, data_format=data_format, dynamic=dynamic, threads=threads,
        eval_data=None if no_eval else str(eval_data or calib_data) if (eval_data or calib_data) else None,
        eval_split=eval_split, eval_limit=eval_limit, int8_target=int8_target, int8_cpu_scheme=int8_cpu_scheme,
        allow_int8_drop=allow_int8_drop,
        max_int8_drop=max_int8_drop, max_int8_class_drop=max_int8_class_drop, openvino=openvino,
        openvino_preset=openvino_preset, pt2=pt2, pt2_march=pt2_march, progress=not as_json,
    )
    steps = []  # run on the staged export before its report is written, so export_report.json is the final one
    if jetson:
        from unet_edge.trt.jetson import export_step

        precision = "int8" if int8 else "fp16" if fp16 else "fp32"
        steps.append(export_step(jetson, out, precision, log=log))  # bundle (+ engine) recorded in the report
    if triton:
        from unet_edge.triton import check_options, write_triton_repo

        check_options(triton_name, triton_max_batch, triton_instance, triton_count)

        def triton_step(stage: Path, report: dict) -> None:
            model = write_triton_repo(stage, triton, name=triton_name, max_batch_size=triton_max_batch,
                                      instance=triton_instance, count=triton_count, argmax=triton_argmax, log=log)
            report["triton_model"] = str(model)

        steps.append(triton_step)

    def finish(stage: Path, report: dict) -> None:
        for step in steps:
            step(stage, report)

    report = export_all(checkpoint, out, opts, log=log, finish=finish if steps else None)
    if as_json:
        _print_json(report)
    else:
        from unet_edge.formats import EXPORT_REPORT

        log(f"report: {out / EXPORT_REPORT}")


@app.command()
@handle_errors
def run(
    artifact: Path = typer.Argument(..., help="Checkpoint, TorchScript, ONNX, OpenVINO IR (.xml), .pt2 (torch.export "
                                              "or AOTInductor), TensorRT engine, or a shipped reference model's name "
                                              "(camvid-edge)."),
    source: Optional[str] = typer.Option(None, help="Video file, image folder, or GStreamer pipeline (needs OpenCV built with GStreamer)."),
    camera: Optional[int] = typer.Option(None, help="Camera index (V4L2), e.g. 0."),
    out: Optional[Path] = typer.Option(None, help="Overlay video to write (.mp4 or .avi); valid even after Ctrl-C."),
    show: bool = typer.Option(False, help="Show a window (q or Esc quits)."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Overlay opacity."),
    max_frames: Optional[int] = typer.Option(None, min=1),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: Optional[str] = typer.Option(None, help="Checkpoint/TorchScript only: fp32 (default), auto (the host's native autocast, see `doctor`), bf16, fp16 (CUDA); an emulated one runs with a warning. "
                                                       "OpenVINO IR: bf16 sets the bf16 inference hint (native-bf16 CPUs only; default f32)."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0: the physical cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print the stream statistics as JSON."),
):
    """Segment a video, image folder, camera or GStreamer pipeline; overlay video and per-stage timing.

    Ctrl-C (SIGINT, once or repeatedly) exits 130 and SIGTERM 143 (128 + the signal), after --out was
    finalised with the frames processed; a failure leaves an existing --out untouched.
    """
    import signal

    from unet_edge.runtime.loader import load_backend
    from unet_edge.runtime.stream import StreamInterrupted, check_output, stream

    if (source is None) == (camera is None):
        raise typer.BadParameter("give exactly one of --source PATH|PIPELINE or --camera N")
    if out is None and not show:
        raise typer.BadParameter("nothing to do: give --out FILE and/or --show")
    if out is not None:
        out = check_output(out)  # before the backend loads: a bad --out costs no model load, no frame
    with load_backend(artifact, device=device, precision=precision, threads=threads) as backend:
        try:
            stats = stream(backend, source if camera is None else camera, out=out, show=show, alpha=alpha,
                           max_frames=max_frames, progress=not as_json)
        except StreamInterrupted as e:
            # exiting now: a late second Ctrl-C must not turn a clean exit into a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if e.stats.drop_message():
                console.print(f"[yellow]warning:[/] {escape(e.stats.drop_message())}")
            if as_json:
                _print_json(e.stats.to_dict())
            held = f"{e.stats.out} holds them" if e.stats.out else "no video was written"
            console.print(f"[yellow]{e.signal}: stopped after {e.stats.frames} frames; {escape(held)}[/]")
            raise typer.Exit(e.exit_code)
    if stats.drop_message():
        console.print(f"[yellow]warning:[/] {escape(stats.drop_message())}")
    if as_json:
        _print_json(stats.to_dict())
        return
    log(f"{stats.frames} frames written of {stats.frames_read} read ({stats.frames_decoded} decoded, "
        f"{stats.dropped.total} dropped) in {stats.wall_s:.1f} s: {stats.fps:.1f} FPS end to end, "
        f"{stats.infer_fps:.1f} FPS inference only ({backend.label})")
    for stage, s in stats.summary().items():
        log(f"  {stage:<12} mean {s['mean_ms']:7.2f} ms  p50 {s['p50_ms']:7.2f}  p90 {s['p90_ms']:7.2f}  "
            f"p99 {s['p99_ms']:7.2f}")
    if stats.out:
        log(f"overlay video: {stats.out}")


@app.command()
@handle_errors
def frames2video(
    folder: Path = typer.Argument(..., help="Folder of frames (e.g. ../shared/datasets/camvid/val)."),
    out: Path = typer.Option(..., help="Video to write (.mp4)."),
    pattern: str = typer.Option("*", help="Glob of the frames to take, e.g. '0016E5_*' for one CamVid sequence."),
    fps: float = typer.Option(10.0, min=0.1),
):
    """Make a video from an image sequence (sorted by name), e.g. a CamVid sequence, to feed `run`."""
    from unet_edge.runtime.video import frames_to_video, sequence_frames

    from unet_edge.errors import SourceError

    _out_file(out, "--out")
    frames = sequence_frames(folder, pattern)
    if not frames:
        raise SourceError(f"no images in {folder} match --pattern {pattern!r}; give a folder of .png/.jpg frames")
    frames_to_video(frames, out, fps)
    log(f"{out}: {len(frames)} frames at {fps:g} FPS")


@app.command()
@handle_errors
def bench(
    artifacts: List[Path] = typer.Argument(..., help="Checkpoint (PyTorch eager FP32 baseline), TorchScript, ONNX, OpenVINO IR (.xml), .pt2, TensorRT engines "
                                                     "and/or export folders; with --compare: bench.json reports."),
    data: Optional[Path] = typer.Option(None, help="Dataset for mIoU and real input frames (without it: seeded random inputs, no mIoU)."),
    split: str = typer.Option("val", help="Split scored and sampled for inputs."),
    data_format: Optional[str] = typer.Option(None, help="Force the layout: carla, camvid, folder."),
    report: Path = typer.Option(Path("runs/bench"), help="Report folder: bench.md, bench.json, bench.csv, bench_stream.csv, PNG charts."),
    video: Optional[Path] = typer.Option(None, help="Video for the end-to-end streaming rows (default: the split's images in name order)."),
    input_size: Optional[str] = typer.Option(None, help="Benchmark input HxW (default: the model metadata's)."),
    warmup: int = typer.Option(10, min=0, help="Untimed warmup calls per row."),
    iters: int = typer.Option(50, min=1, help="Timed batch-1 calls per row."),
    rounds: int = typer.Option(5, min=1, help="Split the batch-1 timing into this many rounds that visit every row in turn, "
                                              "so load drift on a shared machine hits all rows alike (1: one row after another)."),
    batch: int = typer.Option(8, min=1, help="Larger batch for throughput (FPS@B)."),
    batch_iters: Optional[int] = typer.Option(None, min=1, help="Timed calls at --batch (default max(5, iters // batch))."),
    threads: int = typer.Option(0, min=0, help="CPU threads for every backend, torch and ONNX Runtime alike (0: the physical cores; "
                                               "the report records the resolved count)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Score mIoU on the first N images only."),
    pool: int = typer.Option(16, min=1, help="Distinct real images rotated through the timed calls."),
    device: str = typer.Option("auto", help="cpu (CPU rows), cuda (GPU rows) or auto (CPU rows + GPU rows when CUDA is available)."),
    emulated: bool = typer.Option(False, "--emulated", help="Also time precisions this host only emulates (slow); "
                                                            "by default those rows are skipped with the cost as the reason."),
    memory: str = typer.Option("subprocess", help="Memory pass: subprocess (fresh process per row), inprocess or off."),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="End-to-end streaming rows for the baseline and the best backend."),
    stream_frames: int = typer.Option(100, min=1, help="Frames per streaming row."),
    miou_tolerance: float = typer.Option(1.0, min=0.0, help="Best backend: fastest with mIoU within this many points of the baseline."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG charts."),
    label: Optional[str] = typer.Option(None, help="Report name (default: the report folder name)."),
    compare: bool = typer.Option(False, "--compare", help="Compare bench.json reports given as ARTIFACTS (first = reference); "
                                                          "writes compare.md + compare.json into --report."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Latency p50/p90/p99, FPS, memory, size, mIoU and agreement per backend x precision, speedup vs PyTorch FP32,
    end-to-end streaming stages; Markdown + JSON + CSV + PNG report. --compare: compare reports of two hosts/runs."""
    _out_folder(report, "--report")
    if compare:
        from benchmarks.compare import run_compare

        cmp = run_compare([str(a) for a in artifacts], report, log=log)
        if as_json:
            _print_json(cmp)
        return
    from benchmarks.runner import BenchOptions, run_bench

    if device not in ("cpu", "cuda", "auto"):
        raise typer.BadParameter(f"--device must be cpu, cuda or auto; got {device!r}")
    if memory not in ("subprocess", "inprocess", "off"):
        raise typer.BadParameter(f"--memory must be subprocess, inprocess or off; got {memory!r}")
    if split not in ("train", "val", "test"):
        raise typer.BadParameter(f"--split must be train, val or test; got {split!r}")
    opts = BenchOptions(data=str(data) if data else None, split=split, data_format=data_format,
                        video=str(video) if video else None,
                        input_size=_size(input_size, "--input-size") if input_size else None, warmup=warmup,
                        iters=iters, rounds=rounds, batch=batch, batch_iters=batch_iters, threads=threads, limit=limit, pool=pool,
                        device=device, emulated=emulated, memory=memory, stream=stream, stream_frames=stream_frames,
                        miou_tolerance=miou_tolerance, plots=plots, label=label,
                        command=" ".join(["unet-edge"] + sys.argv[1:]), progress=not as_json)
    result = run_bench([str(a) for a in artifacts], report, opts, log=log)
    if as_json:
        _print_json(result)


@app.command()
@handle_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where everything goes."),
    epochs: int = typer.Option(DEMO_EPOCHS, min=1, help="Upper bound of the training epochs on the synthetic scenes."),
    time_budget: str = typer.Option(
        format_duration(DEMO_TRAIN_BUDGET_S), "--time-budget", help="Time budget of the training stage (90s, 4m, 0.1h or "
        "plain minutes); it trains as many epochs as fit, at most --epochs, capped so the whole demo stays within "
        "--total-budget."),
    scenes: int = typer.Option(DEMO_SCENES, min=5, help="Training scenes (validation: a fifth as many)."),
    drive_frames: int = typer.Option(DEMO_DRIVE_FRAMES, min=1, help="Frames of the synthetic drive video."),
    bench_iters: int = typer.Option(DEMO_BENCH_ITERS, min=1, help="Timed runs per benchmark row (at most; fewer when time is short)."),
    total_budget: str = typer.Option(format_duration(DEMO_TOTAL_BUDGET_S), "--total-budget",
                                     help="Budget of the whole demo: caps the training budget (never below "
                                          f"{format_duration(DEMO_MIN_TRAIN_S)}) and cuts the benchmark's measurements "
                                          "to the time left."),
    size: str = typer.Option("x".join(map(str, DEMO_SIZE)), help="Scene, video and model input size HxW."),
    threads: int = typer.Option(0, min=0, help="CPU threads (0: the physical cores)."),
):
    """The whole pipeline on built-in synthetic scenes, no downloads: synth -> train -> export
    (TorchScript, ONNX FP32/FP16/INT8) -> stream a drive video through INT8 -> bench table.
    About 8 minutes on 2 CPU cores (training in --precision auto within --time-budget)."""
    from unet_edge.demo import run_demo
    from unet_edge.time_budget import parse_time_budget

    from benchmarks.runner import BenchOptions, run_bench

    def bench(artifacts: list[str], report_dir: Path, options: dict) -> dict:
        return run_bench(artifacts, report_dir, BenchOptions(**options), log=log)

    run_demo(out, epochs=epochs, threads=threads, n_train=scenes, n_val=max(1, scenes // 5), bench=bench,
             drive_frames=drive_frames, bench_iters=bench_iters, time_budget_s=parse_time_budget(time_budget),
             total_budget_s=parse_time_budget(total_budget), size=_size(size, "--size"), log=log)


@app.command()
@handle_errors
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the host and the choices as JSON.")):
    """What this host is (CPU class, ISA flags, cores, CUDA, ONNX Runtime providers, TensorRT) and what each
    stage will choose on it, with the reason (precision, INT8 scheme, threads, recommended artifact)."""
    from unet_edge.doctor import diagnose

    d = diagnose()
    if as_json:
        _print_json(d)
        return
    from rich.table import Table

    out = Console()
    h = d["host"]
    t = Table(title="host", show_header=False, title_justify="left")
    t.add_column(style="bold"), t.add_column()
    for k, v in d["host_lines"].items():
        t.add_row(k, escape(str(v)))
    out.print(t)
    c = Table(title=f"choices on this host ({h['cpu_class']})", title_justify="left")
    c.add_column("stage", style="bold"), c.add_column("choice"), c.add_column("why")
    for row in d["choices"]:
        c.add_row(row["stage"], escape(row["choice"]), escape(row["why"]))
    out.print(c)


from unet_edge.trt.cli import register as _register_trt  # noqa: E402  (adds `build`)

_register_trt(app, wrap=handle_errors)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
