"""Training loop: cross-entropy (+ optional Dice or Lovasz-Softmax, :mod:`unet_edge.losses`) with
ignore index, AdamW, warmup+cosine or one-cycle schedule, optional progressive resizing, per-epoch
validation, atomic best/last checkpoints, ``--resume``, CSV log and training-curve PNG.

Precision comes from :func:`unet_edge.precision.choose_precision` (``--precision auto``: bf16
autocast where the CPU or GPU computes bf16 natively, fp16 AMP + GradScaler on CUDA 7.x, FP32
otherwise; never an emulated precision). The model and inputs use channels_last (NHWC) on CUDA
and, by default, on CPU (``--no-channels-last``: NCHW); on CUDA also cuDNN autotuning.

Time budget (``--time-budget``, Ultralytics' ``time``): before the schedule is built the trainer
times a few warm training steps and a validation pass on a copy of the model, then picks the
largest epoch count (at most ``--epochs``) whose forecast ends inside the budget less a safety
margin, and builds the LR schedule for that count, so it completes. After every epoch the forecast
is redone with the median measured cost of the last three epochs at that resolution (each less a
one-off first step: the first epoch at a resolution in a process compiles and selects kernels for
it), or with the epoch's own cost when two more such epochs would pass the budget; if the run
would overshoot (the host got slower), the epoch count is lowered and the rest of the schedule is
compressed into the remaining steps so it still reaches its final LR. See :func:`train`.

Run folders: one process at a time (:class:`unet_edge.locks.FolderLock`); an existing run is
continued only with ``resume`` and replaced only with ``exist_ok``. Every random stream of epoch
``e`` is seeded from ``(seed, e)`` (:func:`~unet_edge.data.train_split.seed_epoch`), so a run resumed from ``last.pt`` sees
the batches and augmentations of the uninterrupted run. Checkpoints hold tensors and plain Python
data only (they load with ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import numbers
import re
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .artifacts import load_checkpoint, model_from_checkpoint
from .data.train_split import (LOW_RES_MODES, TrainData, build_train_data, low_res_crop, low_res_scale,
                               per_rank_batch, seed_epoch)
from .distributed import DistInfo, env_dist, init_from_env, rank_identity, rank_threads, shutdown, state_dict_sha256
from .errors import ArtifactError, DataError, EmulatedPrecisionWarning, UnetEdgeError, UsageError
from .evaluate import evaluate
from .host import HostInfo, probe_host, resolve_threads
from .io_utils import atomic_path, ensure_folder, write_json_atomic
from .locks import FolderLock
from .losses import segmentation_loss
from .logit_offsets import PIXELS_PER_IMAGE, fit_offsets, fold_offsets, sample_miou, sample_pixels
from .metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMeta
from .model import PRESETS, UNet, UNetConfig, config_from_preset, count_parameters
from .precision import PrecisionChoice, choose_precision
from .progress import make_progress
from .runtime.torch_backend import TorchBackend, resolve_device
from .seeding import rng_state, seed_everything, set_rng_state
from .time_budget import (BUDGET_ROOM_FACTOR, TIME_BUDGET_MARGIN, LowResPhase, ScheduleWarp, epochs_cost, format_duration,
                          plan_epochs, plan_with_room)

#: untimed warm-up steps before the calibration's timed ones, per resolution: a fresh process's
#: first 4-6 steps ran 1.5-2x slower than the steady ones (oneDNN primitive creation, allocator,
#: loader workers starting), and one warm-up step left 2 of 4 60-minute CamVid plans 1.5-2x over.
CALIB_WARMUP_STEPS = 3
#: timed training steps of the calibration (after the warm-up ones).
CALIB_STEPS = 3
#: validation images timed by the calibration (the cost is scaled to the whole split).
CALIB_VAL_IMAGES = 8
SCHEDULES = ("cosine", "onecycle")
CLASS_WEIGHTS = ("enet", "median", "none")
#: ``--sync-bn``: auto = SyncBatchNorm on CUDA ranks, per-rank BatchNorm on CPU ranks (see :func:`batch_norm_mode`).
SYNC_BN = ("auto", "on", "off")
#: the files a run writes into its folder; the first three mark a folder as holding a run.
RUN_FILES = ("best.pt", "last.pt", "log.csv", "curves.png", "summary.json")
#: options that define what a run computes; a resumed run must keep them (see :func:`train`).
RECIPE_OPTIONS = ("preset", "dropout", "batch_size", "crop", "input_size", "lr", "weight_decay", "schedule",
                  "warmup_epochs", "class_weights", "dice_weight", "seed", "limit", "sync_bn", "scale", "ema",
                  "ohem", "rare_crop", "lovasz_weight", "low_res", "low_res_mode")
#: the trainer's clock (seconds); tests replace it with a fake one.
_clock = time.perf_counter
#: after a session's first epoch ``curves.png`` is redrawn at most this often (seconds), and after
#: the run's last epoch (:func:`_draw_curves`): one plot costs 0.1-0.5 s (matplotlib), much of a short epoch
CURVES_EVERY_S = 30.0
#: With a time budget the epoch-end forecast takes the median recurring cost of this many recent epochs at
#: the epoch's resolution (:func:`_replan_after_epoch`).
REPLAN_WINDOW = 3


@dataclass
class TrainConfig:
    """Options of :func:`train` (the CLI's ``train`` flags), checked when built.

    ``crop`` and ``input_size`` are (H, W) pixels; ``input_size`` None means the size of the first
    training image. ``lr`` is the peak learning rate. ``limit`` caps the images per split (quick runs).
    ``precision``: ``auto`` (see :func:`unet_edge.precision.choose_precision`), ``fp32``, ``bf16``
    or ``fp16`` (CUDA only). ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``threads``:
    torch CPU threads, 0 = the physical cores (:func:`unet_edge.host.resolve_threads`).
    ``batch_size`` is the global batch: under torchrun each of the ``world_size`` ranks takes
    ``batch_size / world_size`` images per step (a multiple is required). ``sync_bn``: see
    :func:`batch_norm_mode`. Recipe: ``scale`` the random-scale range (min, max); ``ema`` the decay
    of an exponential moving average of the weights that is validated and saved instead of the raw
    weights (0 = off; e.g. 0.995); ``ohem`` the share of the hardest labelled pixels the
    cross-entropy keeps (online hard example mining, 0 = all pixels); ``lovasz_weight`` the weight
    of the Lovasz-Softmax term (:func:`unet_edge.losses.lovasz_softmax`, 0 = off); ``rare_crop``
    the probability that a crop is centred on a rare class (below
    :data:`~unet_edge.data.train_split.RARE_CLASS_FREQ` of the pixels, 0 = off);
    ``low_res`` the share of the LR schedule trained at low resolution (progressive resizing, see
    :func:`train`; 0 = off); ``low_res_mode`` how those epochs save pixels
    (:data:`~unet_edge.data.train_split.LOW_RES_MODES`: ``scale``, half the scale and crop, or ``crop``,
    half the crop at the full scale).
    ``logit_offsets``: after the last epoch fit per-class logit offsets for mIoU on training
    pixels and fold them into ``best.pt``'s head when they raise val mIoU (:func:`_fit_logit_offsets`);
    not a recipe option. ``channels_last``: train in the NHWC memory format (always on CUDA; on CPU 1.47x faster steps
    than NCHW in ``benchmarks.train_throughput`` on x86-amx), not a recipe option: it changes
    kernels, not the model. ``compile``: run the training steps through ``torch.compile``
    (Inductor, one static graph per batch shape; validation, EMA and checkpoints use the eager
    module, which shares its weights), not a recipe option; single-process only; needs a C++
    compiler on CPU; 1.12x faster steps than channels_last eager on x86-amx
    (``benchmarks.train_throughput``, ``compile_cl``). ``time_budget_s``: wall-clock seconds for the whole training (setup, calibration, epochs;
    summed over resumed sessions), None for no budget; with a budget ``epochs`` is the upper bound
    (see :func:`train`). ``resume`` continues the run in ``out``; ``exist_ok`` lets a fresh run
    replace one there.

    Raises:
        UsageError: a value out of range (``lr`` > 0, ``weight_decay`` >= 0, 0 <= ``dropout`` < 1,
        ``epochs``/``batch_size``/``limit``/``val_every`` >= 1, ``warmup_epochs`` >= 0, ...), an
        unknown preset, schedule, class weighting or device.
    """

    data: str
    out: str = "runs/train"
    data_format: str | None = None
    preset: str = "edge"
    dropout: float = 0.0
    epochs: int = 30
    batch_size: int = 8
    crop: tuple[int, int] = (256, 320)
    input_size: tuple[int, int] | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    class_weights: str = "enet"
    dice_weight: float = 0.0
    lovasz_weight: float = 0.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    limit: int | None = None
    val_every: int = 1
    resume: bool = False
    exist_ok: bool = False
    progress: bool = True
    time_budget_s: float | None = None
    sync_bn: str = "auto"
    scale: tuple[float, float] = (0.75, 1.5)
    ema: float = 0.0
    ohem: float = 0.0
    rare_crop: float = 0.0
    low_res: float = 0.0
    low_res_mode: str = "scale"
    channels_last: bool = True
    compile: bool = False
    logit_offsets: bool = True
    command: str = field(default_factory=lambda: " ".join(shlex.quote(a) for a in sys.argv))

    def __post_init__(self) -> None:
        check_config(self)


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _hw(v) -> bool:
    return isinstance(v, (tuple, list)) and len(v) == 2 and all(_int(x) and x > 0 for x in v)


_CONFIG_RULES: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("preset", lambda v: v in PRESETS, "one of " + ", ".join(sorted(PRESETS))),
    ("schedule", lambda v: v in SCHEDULES, "one of " + ", ".join(SCHEDULES)),
    ("class_weights", lambda v: v in CLASS_WEIGHTS, "one of " + ", ".join(CLASS_WEIGHTS)),
    ("sync_bn", lambda v: v in SYNC_BN, "one of " + ", ".join(SYNC_BN)),
    ("device", lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
     "auto, cpu, cuda or cuda:N"),
    ("epochs", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("limit", lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 (images per split)"),
    ("val_every", lambda v: _int(v) and v >= 1, "an integer >= 1"),
    ("threads", lambda v: _int(v) and v >= 0, "an integer >= 0 (0: the physical cores)"),
    ("seed", lambda v: _int(v) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    ("lr", lambda v: _real(v) and v > 0, "a positive number"),
    ("weight_decay", lambda v: _real(v) and v >= 0, "a number >= 0"),
    ("dropout", lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("warmup_epochs", lambda v: _real(v) and v >= 0, "a number of epochs >= 0"),
    ("dice_weight", lambda v: _real(v) and v >= 0, "a number >= 0"),
    ("lovasz_weight", lambda v: _real(v) and v >= 0, "a number >= 0"),
    ("scale", lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_real(x) for x in v) and 0 < v[0] <= v[1],
     "two numbers 0 < min <= max (e.g. 0.5-2.0)"),
    ("ema", lambda v: _real(v) and (v == 0 or 0.5 <= v < 1), "0 (off) or a decay in [0.5, 1)"),
    ("ohem", lambda v: _real(v) and 0 <= v < 1, "a share in [0, 1) (0: every pixel)"),
    ("rare_crop", lambda v: _real(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ("low_res", lambda v: _real(v) and 0 <= v < 1, "a share of the schedule in [0, 1) (0: off)"),
    ("low_res_mode", lambda v: v in LOW_RES_MODES, " or ".join(LOW_RES_MODES)),
    ("channels_last", lambda v: isinstance(v, bool), "true or false"),
    ("compile", lambda v: isinstance(v, bool), "true or false"),
    ("crop", _hw, "two positive integers (H, W)"),
    ("input_size", lambda v: v is None or _hw(v), "two positive integers (H, W)"),
    ("time_budget_s", lambda v: v is None or (_real(v) and v > 0), "a positive number of seconds"),
)


def precision_label(choice: PrecisionChoice, device: str) -> str:
    """``bf16 autocast``, ``fp16 autocast + GradScaler`` (CUDA) or ``fp32``."""
    if not choice.autocast:
        return "fp32"
    scaled = choice.precision == "fp16" and device.startswith("cuda")
    return f"{choice.precision} autocast" + (" + GradScaler" if scaled else "")


def _plain(obj):
    """``obj`` with numpy scalars/arrays as Python numbers/lists and tuples as lists (JSON types)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if isinstance(o, (np.generic, np.ndarray)) else str(o)))


def _lr_lambda(total_steps: int, warm_steps: int):
    """Linear warmup over ``warm_steps`` then cosine to 0 at ``total_steps``: step (int or float,
    see :class:`ScheduleWarp`) -> LR factor in [0, 1]."""
    warm = max(1, int(warm_steps))

    def f(step: float) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return f


def _make_scheduler(opt, cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
    """The LR schedule over ``total_steps`` optimizer steps: its final LR (0 for cosine,
    ``lr / 25 / 1e4`` for one-cycle) is set by the ``total_steps``-th ``step()``, after the last update.

    Raises:
        UsageError: an unknown ``cfg.schedule``.
    """
    if cfg.schedule == "onecycle":
        # OneCycleLR's last phase ends at position total_steps - 1; one spare step puts it at total_steps
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps + 1)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, cfg.warmup_epochs * steps_per_epoch))
    raise UsageError(f"unknown --schedule {cfg.schedule!r}; use cosine or onecycle")


def step_module(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """What the training steps call: ``model``, or with ``cfg.compile`` ``torch.compile(model,
    dynamic=False)`` (PyTorch's torch.compile docs): one static graph per input shape (the full-size
    and the ``--low-res`` batches; the loader drops a last partial batch) instead of the dynamic-shape kernels
    that automatic dynamic shapes switch to after the second batch size. It shares ``model``'s
    parameters and buffers, and follows its train/eval mode."""
    return torch.compile(model, dynamic=False) if cfg.compile else model


def train_step(model, opt, scaler, x, y, device: str, choice: PrecisionChoice, ignore_index: int,
               weight, dice_weight: float, ohem: float = 0.0, channels_last: bool = False,
               lovasz_weight: float = 0.0) -> torch.Tensor:
    """One optimizer step on a batch x float32 (N, 3, H, W), y int64 (N, H, W): autocast forward in
    ``choice``'s precision, :func:`segmentation_loss`, backward (through ``scaler``), ``opt.step``.
    ``x`` goes to the channels_last (NHWC) memory format on CUDA or with ``channels_last``.
    Returns the loss (0-dim float32 tensor)."""
    cuda = device.startswith("cuda")
    x = x.to(device, non_blocking=cuda,
             memory_format=torch.channels_last if cuda or channels_last else torch.preserve_format)
    y = y.to(device)
    with torch.autocast(device.split(":")[0], dtype=choice.dtype, enabled=choice.autocast):
        logits = model(x)
    loss = segmentation_loss(logits, y, ignore_index, weight, dice_weight, ohem, lovasz_weight)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss


def _validate(model, meta: ModelMeta, val_ds, device: str, choice: PrecisionChoice, limit: int | None) -> dict:
    """Metrics of :func:`unet_edge.evaluate.evaluate` on the first ``limit`` images (None: all) of
    ``val_ds``, inferred in the training's precision."""
    with warnings.catch_warnings():  # an emulated precision was warned about once, at the start
        warnings.simplefilter("ignore", EmulatedPrecisionWarning)
        backend = TorchBackend(model, meta, device=device, precision=choice.precision)
    return evaluate(backend.infer, val_ds, meta, batch_size=4, limit=limit, progress=False)


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].legend(), ax[0].grid(alpha=0.3)
    val = [h for h in history if h.get("val_miou") is not None]
    ax[1].plot([h["epoch"] for h in val], [h["val_miou"] for h in val], label="val mIoU")
    ax[1].plot([h["epoch"] for h in val], [h["val_pixel_accuracy"] for h in val], label="val pixel acc")
    ax[1].set_xlabel("epoch"), ax[1].set_ylim(0, 1), ax[1].legend(), ax[1].grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _save(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclass
class _Setup:
    """What a run fixes at its start: options, folder, device, precision, host, data, model metadata."""

    cfg: TrainConfig
    out: Path
    device: str
    threads: int
    host: HostInfo
    choice: PrecisionChoice
    data: TrainData
    arch: UNetConfig
    meta: ModelMeta
    log: Callable[[str], None]
    dist: DistInfo = field(default_factory=DistInfo)
    sync_bn: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def budget(self) -> float | None:
        return self.cfg.time_budget_s

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


@dataclass
class RunState:
    """Everything of a run that changes while it trains; :func:`_save_checkpoints` writes it to
    ``last.pt`` and :func:`_restore` reads it back. ``epoch`` is the next epoch to run, ``epochs``
    the final one of the current plan, ``step`` the optimizer steps done; times in seconds
    (``elapsed_before``: the earlier sessions, ``t_start``: this session's start on :data:`_clock`)."""

    model: UNet
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    t_start: float
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    warp: ScheduleWarp | None = None
    epoch: int = 1
    epochs: int = 1
    epochs_planned: int = 1
    step: int = 0
    best: dict = field(default_factory=lambda: {"miou": -1.0, "epoch": 0})
    history: list = field(default_factory=list)
    costs: dict | None = None  # {"train_s", "val_s"} of one epoch
    estimate: float | None = None
    elapsed_before: float = 0.0
    net: torch.nn.Module | None = None  # what the steps run: ``model``, or DDP around it under torchrun
    ema: torch.optim.swa_utils.AveragedModel | None = None  # ``--ema``: the weights validated and saved
    curves_drawn: tuple[float, int] | None = None  # (when on _clock, history rows) of this session's last curves.png
    resolutions_seen: set = field(default_factory=set)  # ``low_res`` values this process has trained an epoch at
    #: ``costs`` key -> the recurring seconds (:meth:`EpochResult.recurring_s`) of this process's last
    #: :data:`REPLAN_WINDOW` epochs at that resolution: the planner shortens on their median
    recent_costs: dict = field(default_factory=dict)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The model validation scores and ``best.pt`` holds: the EMA of the weights, or the weights."""
        return self.model if self.ema is None else self.ema.module

    def elapsed(self) -> float:
        """Seconds of training so far, all sessions."""
        return self.elapsed_before + _clock() - self.t_start


@dataclass
class EpochResult:
    """One epoch: the loss of every step, the LR after the last one, the steps' wall time ``seconds``
    (from ``t0`` on :data:`_clock`), and the validation ``metrics`` and its time ``val_s`` when it validated."""

    epoch: int
    losses: list
    lr: float
    seconds: float
    t0: float
    metrics: dict | None = None
    val_s: float | None = None
    loss: float | None = None  # the mean loss over all ranks (None: the mean of ``losses``)
    world_size: int = 1
    images: list = field(default_factory=list)  # indices of the training images this rank read
    low_res: bool = False  # trained on the ``--low-res`` batches
    input_scale: float = 1.0  # the images' scale against full resolution (``--low-res-mode scale``: LOW_RES_FACTOR)
    #: seconds of one-off cost in ``seconds``: the first step's excess over the epoch's median step, in this
    #: process's first epoch at its resolution (``--compile`` traces the run's own module for the new shape,
    #: new shapes select kernels); 0 otherwise. The budget's forecasts leave it out (it is already spent).
    oneoff_s: float = 0.0

    def row(self) -> dict:
        """The epoch's line of ``log.csv``."""
        m = self.metrics or {}
        loss = float(np.mean(self.losses)) if self.loss is None else self.loss
        return {"epoch": self.epoch, "train_loss": loss, "lr": self.lr,
                "epoch_seconds": self.seconds, "val_miou": m.get("miou"), "val_pixel_accuracy": m.get("pixel_accuracy"),
                "val_dice": m.get("dice"), "world_size": self.world_size,
                "input_scale": self.input_scale, "oneoff_seconds": round(self.oneoff_s, 1),
                "low_res": int(self.low_res)}

    def recurring_s(self) -> float:
        """This epoch's cost a forecast repeats, in seconds: the wall time since ``t0`` (steps,
        checkpoints, log) less the validation and the one-off ``oneoff_s``."""
        return _clock() - self.t0 - (self.val_s or 0.0) - self.oneoff_s


def check_config(cfg: TrainConfig) -> None:
    """Raise UsageError for the first option of ``cfg`` out of its range (see :class:`TrainConfig`)."""
    for name, ok, rule in _CONFIG_RULES:
        value = getattr(cfg, name)
        if not ok(value):
            flag = "--time-budget" if name == "time_budget_s" else "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be {rule}; got {value!r}")


def _run_folder(cfg: TrainConfig) -> Path:
    """``cfg.out`` as a folder, created when missing (UsageError: a file, under a file, not creatable)."""
    return ensure_folder(cfg.out, "--out")


def _check_run_folder(out: Path, cfg: TrainConfig, log) -> None:
    """With the folder locked: remove the temporary files an interrupted run left (``atomic_path``'s
    ``.<name>.*.tmp*``), and refuse to start a fresh run over an existing one.

    Raises:
        UsageError: ``out`` holds a run (best.pt, last.pt or log.csv) and neither ``resume`` nor
        ``exist_ok`` is set. ArtifactError: ``resume`` without ``out/last.pt``.
    """
    stale = sorted(p for name in RUN_FILES for p in out.glob(f".{name}.*.tmp*"))
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log(f"removed {len(stale)} temporary file(s) an interrupted run left in {out}: {', '.join(p.name for p in stale)}")
    if cfg.resume:
        if not (out / "last.pt").is_file():
            raise ArtifactError(f"--resume: no {out / 'last.pt'} to resume from; drop --resume to start fresh")
        return
    existing = [name for name in RUN_FILES[:3] if (out / name).exists()]
    if existing and not cfg.exist_ok:
        raise UsageError(f"{out} already holds a training run ({', '.join(existing)}); add --resume to continue it, "
                         "--exist-ok to replace it, or give a new --out folder")


def _clear_old_run(s: _Setup) -> None:
    """A fresh ``exist_ok`` run: delete the earlier run's files, so none of them outlives it."""
    gone = [name for name in RUN_FILES if (s.out / name).exists()]
    for name in reversed(gone):  # log.csv before last.pt before best.pt: what is left stays consistent
        (s.out / name).unlink()
    if gone:
        s.log(f"--exist-ok: deleted the earlier run's {', '.join(gone)} in {s.out}")


def batch_norm_mode(sync_bn: str, device: str, world_size: int) -> bool:
    """Whether the ranks train with ``torch.nn.SyncBatchNorm`` (batch statistics over the global
    batch) instead of BatchNorm on each rank's own images.

    ``auto``: SyncBatchNorm on CUDA ranks, where per-GPU batches of 2-8 crops make per-rank
    statistics noisy (the common segmentation practice, e.g. DeepLab and MMSegmentation);
    per-rank BatchNorm on CPU ranks, because PyTorch's SyncBatchNorm computes on GPU tensors only.
    Per-rank BatchNorm still ends with one model: the ranks' running statistics are averaged
    after every epoch (:meth:`DistInfo.average_buffers`). One process: always False.

    Raises:
        UsageError: ``on`` for CPU ranks.
    """
    if world_size <= 1 or sync_bn == "off":
        return False
    cuda = device.startswith("cuda")
    if sync_bn == "on" and not cuda:
        raise UsageError("--sync-bn on: PyTorch's SyncBatchNorm runs on CUDA tensors only; CPU ranks train with "
                         "per-rank BatchNorm statistics (--sync-bn auto or off)")
    return cuda


def _setup(cfg: TrainConfig, out: Path, log, dist: DistInfo, device: str) -> _Setup:
    threads = cfg.threads if cfg.threads > 0 else rank_threads(resolve_threads(0), dist)
    torch.set_num_threads(threads)
    host = probe_host()
    choice = choose_precision(device, cfg.precision, host=host)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    sync_bn = batch_norm_mode(cfg.sync_bn, device, dist.world_size)
    data = build_train_data(cfg, device, dist.world_size, dist.rank)
    info = data.info
    arch = config_from_preset(cfg.preset, info.num_logits, cfg.dropout)
    meta = ModelMeta(
        arch=arch.to_dict(), class_names=list(info.class_names), palette=[list(c) for c in info.palette],
        ignore_index=info.ignore_index, input_size=data.input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        dataset={"name": info.name, "format": info.format, "path": str(Path(cfg.data).resolve()),
                 "mask_kind": info.mask_kind},
        train_command=cfg.command,
        extra={"train_config": _plain({k: v for k, v in asdict(cfg).items() if k != "command"}),
               "train_precision": choice.to_dict(), "train_host": host.to_dict(), "train_threads": threads,
               "distributed": {"world_size": dist.world_size, "backend": dist.backend, "global_batch": cfg.batch_size,
                               "per_rank_batch": data.loader.batch_size,
                               "batch_norm": "sync" if sync_bn else ("per-rank" if dist.world_size > 1 else "local")}},
    )
    return _Setup(cfg, out, device, threads, host, choice, data, arch, meta, log, dist, sync_bn)


def _new_state(s: _Setup, t_start: float) -> RunState:
    """A fresh model (initialised from ``cfg.seed`` alone), optimizer and scaler."""
    seed_everything(s.cfg.seed)
    model = UNet(s.arch)
    if s.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(s.device, memory_format=torch.channels_last) if s.cuda or s.cfg.channels_last else model.to(s.device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.cfg.lr, weight_decay=s.cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=s.choice.precision == "fp16" and s.cuda)
    net = step_module(model, s.cfg)
    if s.dist.enabled:
        # DDP broadcasts rank 0's parameters and buffers now and averages the gradients in backward;
        # BatchNorm running statistics stay per rank during an epoch and are averaged after it
        # (train_one_epoch), so they describe every rank's images, not rank 0's alone.
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.device(s.device)] if s.cuda else None,
                                                        forward_sync_buffers=False)
    ema = None
    if s.cfg.ema:
        # parameters and BatchNorm statistics averaged alike (use_buffers), as timm's ModelEmaV2 does
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(s.cfg.ema), use_buffers=True)
    return RunState(model, opt, scaler, t_start, net=net, ema=ema)


def _fmt(v) -> str:
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return f"{v[0]}x{v[1]}"
    return "none" if v is None else str(v)


def _check_resume(s: _Setup, ck: dict) -> None:
    """Refuse to resume with options that would make the rest another run than the one in ``last.pt``.

    ``epochs`` counts as such unless both the stored and this session have a time budget (then it
    is an upper bound; a lower one shortens the plan). The dataset is compared by resolved path.

    Raises:
        UsageError: naming each changed option with its stored and its new value.
        ArtifactError: ``last.pt`` holds another architecture.
    """
    cfg, meta = s.cfg, ck["meta"]
    old = (meta.get("extra") or {}).get("train_config") or {}
    names = RECIPE_OPTIONS + (() if old.get("time_budget_s") and cfg.time_budget_s else ("epochs",))
    new = _plain({n: getattr(cfg, n) for n in names})
    changed = [f"--{n.replace('_', '-')} {_fmt(old[n])} (now {_fmt(new[n])})"
               for n in names if n in old and old[n] != new[n]]
    old_data, new_data = (meta.get("dataset") or {}).get("path"), str(Path(cfg.data).resolve())
    if old_data and old_data != new_data:
        changed.append(f"--data {old_data} (now {new_data})")
    old_world = int(((meta.get("extra") or {}).get("distributed") or {}).get("world_size", 1))
    if old_world != s.dist.world_size:
        changed.append(f"processes (world size) {old_world} (now {s.dist.world_size}; each rank's share of the "
                       "data and batch would change)")
    if changed:
        raise UsageError(f"--resume: {s.last_path} was trained with other values of options that define the run: "
                         f"{', '.join(changed)}; resume with the run's values, or start a new run in another --out "
                         "folder (or replace this one with --exist-ok)")
    if meta.get("arch") != s.meta.arch:
        raise ArtifactError(f"--resume: {s.last_path} has architecture {meta.get('arch')}, not {s.meta.arch}")


def _resumed_best(s: _Setup, ck: dict) -> dict:
    """The run's best so far: ``last.pt``'s, or ``best.pt``'s when that one is better (a run killed
    after writing ``best.pt`` and before ``last.pt``), so a resumed run never replaces ``best.pt``
    with a worse model."""
    best = ck["best"]
    if not s.best_path.is_file():
        return best
    try:
        extra = load_checkpoint(s.best_path)["meta"]["extra"]
        m, epoch = extra["val_metrics"], int(extra["epoch"])
        better = float(m["miou"]) > float(best["miou"])
    except (UnetEdgeError, KeyError, TypeError, ValueError) as e:
        s.log(f"--resume: ignoring {s.best_path} ({e}); the next better epoch replaces it")
        return best
    return {"miou": float(m["miou"]), "epoch": epoch, "metrics": m} if better else best


def _restore(s: _Setup, st: RunState, ck: dict) -> None:
    """Continue the run of ``ck`` (``last.pt``): weights, optimizer, schedule (and its plan), scaler,
    best, history, random streams, elapsed time (a budget's re-plan follows: :func:`_replan_resumed`).

    Raises:
        UsageError, ArtifactError: see :func:`_check_resume`; ArtifactError: ``ck`` is incomplete.
    """
    _check_resume(s, ck)
    cfg, spe, plan = s.cfg, s.data.steps_per_epoch, ck.get("plan") or {}
    try:
        st.epoch, st.elapsed_before = int(ck["epoch"]) + 1, float(ck.get("elapsed_s", 0.0))
        st.epochs = min(cfg.epochs, int(plan.get("epochs", cfg.epochs)))
        st.epochs_planned = int(plan.get("epochs_planned", st.epochs))
        schedule_steps = int(plan.get("schedule_steps", st.epochs * spe))
        st.sched = _make_scheduler(st.opt, cfg, schedule_steps, spe)
        st.model.load_state_dict(ck["model"])
        st.opt.load_state_dict(ck["optimizer"])
        st.sched.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            st.scaler.load_state_dict(ck["scaler"])
        if st.ema is not None:
            st.ema.load_state_dict(ck["ema"])
        st.best, st.history = _resumed_best(s, ck), list(ck["history"])
        if ck.get("rng"):
            set_rng_state(ck["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"--resume: {s.last_path} is incomplete or from another version ({type(e).__name__}: "
                            f"{e}); start a new run (--exist-ok) instead") from e
    st.step = (st.epoch - 1) * spe
    # the remaining steps run the rest of the schedule, wherever it stood, to its end
    end = st.sched.total_steps - 1 if isinstance(st.sched, torch.optim.lr_scheduler.OneCycleLR) else schedule_steps
    st.warp = ScheduleWarp(int(end))
    st.warp.fit(st.step, st.sched.last_epoch, st.epochs * spe)
    s.log(f"resumed from {s.last_path} at epoch {ck['epoch']} (best mIoU {st.best['miou']:.4f}, "
          f"{st.elapsed_before:.0f} s of training so far)")


def _measure_costs(s: _Setup, st: RunState) -> dict:
    """Time one epoch's real costs on a throw-away copy of the model (the run's model, optimizer
    and random streams are left as they were): :data:`CALIB_WARMUP_STEPS` untimed warm-up steps, then
    :data:`CALIB_STEPS` timed training steps (data loading and augmentation included), and a
    validation pass over up to :data:`CALIB_VAL_IMAGES` images after an untimed 1-image warm-up,
    scaled to the ``n_val`` images of the split.

    With ``--low-res`` also :data:`CALIB_STEPS` low-resolution steps after as many warm-up ones.

    Returns:
        ``{"step_s", "train_s" (one epoch of steps), "val_s" (one validation pass)}`` in seconds,
        with ``--low-res`` also ``"train_low_s"`` (one low-resolution epoch of steps).
    """
    cfg, d = s.cfg, s.data
    probe = copy.deepcopy(st.model)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    probe_net = step_module(probe, cfg)  # with --compile the warm-up steps pay the compile
    scaler = torch.amp.GradScaler("cuda", enabled=s.choice.precision == "fp16" and s.cuda)
    streams, loader_state = rng_state(s.cuda), d.loader.generator.get_state()

    def batches():
        while True:
            yield from d.loader

    it = batches()

    def step_seconds() -> float:
        """CALIB_WARMUP_STEPS untimed steps (new shapes select new kernels), then the mean of CALIB_STEPS."""
        for i in range(CALIB_WARMUP_STEPS + CALIB_STEPS):
            if i == CALIB_WARMUP_STEPS:
                t = _clock()
            x, y = next(it)
            train_step(probe_net, opt, scaler, x, y, s.device, s.choice, d.info.ignore_index, d.weight,
                       cfg.dice_weight, cfg.ohem, cfg.channels_last, cfg.lovasz_weight).item()
        return (_clock() - t) / CALIB_STEPS

    probe.train()
    try:
        step_s, low_s = step_seconds(), None
        if d.transform_low is not None:  # back to full resolution in ``finally``
            d.use_low_res(True)
            low_s = step_seconds()
        n_cal = max(1, min(d.n_val, CALIB_VAL_IMAGES))
        _validate(probe, s.meta, d.val_ds, s.device, s.choice, 1)
        t = _clock()
        _validate(probe, s.meta, d.val_ds, s.device, s.choice, n_cal)
        val_s = (_clock() - t) * max(1, d.n_val) / n_cal
    finally:
        it.close()
        if d.transform_low is not None:
            d.use_low_res(False)
        set_rng_state(streams)
        d.loader.generator.set_state(loader_state)
        del probe, probe_net, opt
    costs = {"step_s": step_s, "train_s": step_s * len(d.loader), "val_s": val_s}
    if low_s is not None:
        costs["train_low_s"] = low_s * len(d.loader)
    return costs


def _sync_plan(s: _Setup, st: RunState) -> None:
    """Under torchrun: every rank takes rank 0's plan (epochs, schedule warp, costs). Rank 0's clock
    decides for all, because the ranks must run the same number of steps."""
    if not s.dist.enabled:
        return
    plan = s.dist.broadcast({"epochs": st.epochs, "epochs_planned": st.epochs_planned, "costs": st.costs,
                             "estimate": st.estimate, "warp": None if st.warp is None else asdict(st.warp)})
    st.epochs, st.epochs_planned, st.costs, st.estimate = (plan["epochs"], plan["epochs_planned"], plan["costs"],
                                                           plan["estimate"])
    if plan["warp"] is not None:
        st.warp = ScheduleWarp(**plan["warp"])


def low_res_epoch(share: float, warp: ScheduleWarp, step: int) -> bool:
    """Whether the epoch that starts at optimizer step ``step`` trains at low resolution
    (``--low-res``): it starts before ``share`` of the LR schedule, as ``warp`` maps the steps.
    Tied to the schedule, not to an epoch count, so the phase keeps its share of the schedule
    when a time budget shortens or stretches the run."""
    return share > 0 and warp(step) < share * warp.total


def _low_res_phase(s: _Setup, st: RunState, costs: dict | None = None) -> LowResPhase | None:
    """The low-resolution phase for the planner from the next epoch on (None without ``--low-res``)."""
    if s.cfg.low_res <= 0:
        return None
    done = st.warp(st.step) / st.warp.total if st.warp is not None else 0.0
    return LowResPhase(s.cfg.low_res, (costs or st.costs)["train_low_s"], done)


def _cost_key(res: EpochResult) -> str:
    """The key of ``RunState.costs`` an epoch's measured cost updates."""
    return "train_low_s" if res.low_res else "train_s"


def _plan_fresh(s: _Setup, st: RunState) -> None:
    """The first plan: ``cfg.epochs``, or with a budget the epochs that fit (timed by
    :func:`_measure_costs`); then the LR schedule for that many epochs."""
    cfg, budget, spe = s.cfg, s.budget, s.data.steps_per_epoch
    st.epochs = cfg.epochs
    if budget and cfg.epochs > 1:  # (a bound of 1 epoch leaves nothing to choose)
        c = st.costs = _measure_costs(s, st)
        low = _low_res_phase(s, st)
        avail = budget * (1 - TIME_BUDGET_MARGIN) - _committed(s, st)
        st.epochs, room = plan_with_room(avail, 1, cfg.epochs, c["train_s"], c["val_s"], cfg.val_every, low)
        st.estimate = round(c["train_s"] + c["val_s"], 2)
        s.log(f"time budget {format_duration(budget)}: epoch ~{_s(c['train_s'] + c['val_s'])} (train "
              f"{_s(c['train_s'])} + val {_s(c['val_s'])}"
              + (f"; low-resolution epoch ~{_s(low.train_s)}, not validated" if low else "")
              + f"), {_s(st.elapsed())} used -> {st.epochs} epochs"
              + (f" ({low.epochs(st.epochs)} at low resolution)" if low else "")
              + f" (at most {cfg.epochs}; planned to end by {1 - TIME_BUDGET_MARGIN:.0%} of the budget)"
              + _bound_note(cfg, room))
    elif budget:
        s.log(f"time budget {format_duration(budget)}: 1 epoch, the --epochs bound (nothing to plan)")
    st.epochs_planned = st.epochs
    _sync_plan(s, st)
    st.sched = _make_scheduler(st.opt, cfg, st.epochs * spe, spe)
    st.warp = ScheduleWarp(st.epochs * spe)


def _replan_resumed(s: _Setup, st: RunState, ck: dict) -> None:
    """A resumed budget run: forecast the remaining epochs with the last epoch's stored costs (timed
    afresh for checkpoints without them) and shorten the plan when they do not fit."""
    cfg, budget, spe = s.cfg, s.budget, s.data.steps_per_epoch
    c = ck.get("costs")
    if not c or (cfg.low_res > 0 and "train_low_s" not in c):
        c = _measure_costs(s, st)
    st.costs = c
    new = plan_epochs(budget * (1 - TIME_BUDGET_MARGIN) - _committed(s, st), st.epoch, st.epochs, c["train_s"],
                      c["val_s"], cfg.val_every, _low_res_phase(s, st))
    st.estimate = round(c["train_s"] + c["val_s"], 2)
    s.log(f"time budget {format_duration(budget)}: {_s(st.elapsed())} used, epoch ~{_s(c['train_s'] + c['val_s'])} "
          f"-> {new} epochs" + (f" instead of {st.epochs} (schedule compressed)" if new < st.epochs else ""))
    if new < st.epochs:
        st.epochs = new
        st.warp.fit(st.step, st.warp(st.step), st.epochs * spe)


def _replan_after_epoch(s: _Setup, st: RunState, res: EpochResult) -> bool:
    """Forecast the rest with the recurring cost (steps, checkpoints, log, plot; not the one-off
    first step, :attr:`EpochResult.oneoff_s`) of the recent epochs and the latest validation; past
    ``(1 - TIME_BUDGET_MARGIN / 2)`` of the budget, lower the plan and compress the rest of the
    schedule. Returns whether ``st.epochs`` changed.

    The cost is the median of the last :data:`REPLAN_WINDOW` epochs at this resolution, so one epoch
    slowed by host jitter does not cut epochs that the next epochs would stretch back (each swing
    warps the LR schedule); a lasting slowdown is seen one epoch later. This epoch's own cost still
    shortens the plan at once when two more epochs at that cost would pass the whole budget (near the
    end, where waiting one epoch could overshoot it)."""
    cfg, budget, c, key = s.cfg, s.budget, st.costs, _cost_key(res)
    own = res.recurring_s()
    recent = st.recent_costs.setdefault(key, [])
    recent[:] = (recent + [own])[-REPLAN_WINDOW:]

    def forecast_at(cost: float, last: int) -> float:
        costs = {**c, key: cost}
        return _committed(s, st) + epochs_cost(st.epoch + 1, last, costs["train_s"], costs["val_s"],
                                               cfg.val_every, _low_res_phase(s, st, costs))

    # waiting one epoch for the median to see a lasting slowdown is safe while two more epochs at this
    # epoch's cost still end inside the budget (the next re-plan can always make the one after the last)
    urgent = forecast_at(own, min(st.epoch + 2, st.epochs)) > budget
    typical = own if urgent else float(np.median(recent))
    forecast = forecast_at(typical, st.epochs)
    c[key] = typical
    if forecast <= budget * (1 - TIME_BUDGET_MARGIN / 2):
        return _extend(s, st, res, own)
    low = _low_res_phase(s, st)
    new = plan_epochs(budget * (1 - TIME_BUDGET_MARGIN) - _committed(s, st), st.epoch + 1, st.epochs,
                      c["train_s"], c["val_s"], cfg.val_every, low)
    over = forecast_at(typical, new) > budget
    s.log(f"time budget {format_duration(budget)}: epoch {st.epoch} took {_took(own, res)}"
          + (f" (median of the last {len(recent)}: {_s(typical + (res.val_s or 0.0))})" if typical != own else "")
          + f", forecast {_s(forecast)} > {_s(budget * (1 - TIME_BUDGET_MARGIN / 2))} -> "
          + (f"{new} epochs instead of {st.epochs} (rest of the schedule compressed)" if new < st.epochs
             else f"epoch {st.epochs} is the last one")
          + ("; the run may overshoot the budget by its last epoch" if over else ""))
    if new >= st.epochs:
        return False
    st.epochs = new
    st.warp.fit(st.step, st.warp(st.step), st.epochs * s.data.steps_per_epoch)
    return True


def _row_low_res(row: dict) -> bool:
    """Whether a history row is a ``--low-res`` epoch (rows before the ``low_res`` column: ``input_scale`` < 1)."""
    return bool(int(row["low_res"])) if row.get("low_res") not in (None, "") else float(row.get("input_scale", 1.0)) < 1


def _took(recurring_s: float, res: EpochResult) -> str:
    """The log's cost of epoch ``res``: what a forecast repeats (``recurring_s`` + validation), and its one-off part."""
    cost = _s(recurring_s + (res.val_s or 0.0))
    return cost + (f" (+{_s(res.oneoff_s)} one-off in its first step, left out)" if res.oneoff_s >= 0.05 else "")


def _bound_note(cfg: TrainConfig, room: int | None) -> str:
    """The log's warning when ``--epochs``, not the budget, ends the plan (``room``: :func:`plan_with_room`)."""
    if room is None:
        return ""
    more = "at least " if room >= cfg.epochs * BUDGET_ROOM_FACTOR else ""
    return (f"; --epochs {cfg.epochs} ends the run before the budget, which would hold {more}{room} epochs: "
            "raise --epochs (or leave it out) to use the whole budget")


def _extend(s: _Setup, st: RunState, res: EpochResult, own: float) -> bool:
    """Raise the plan when epochs run faster than the first measurement said (it includes one-off
    costs: kernel selection, allocator warm-up, a busy machine at start), while ``cfg.epochs``
    allows. Deliberately slower to extend than to shorten, so jitter between epochs does not make
    the plan swing: the cost is the slowest of the last three epochs (steps; this one's checkpoints
    included), and the plan grows only when that forecast ends before ``1 - 1.5 * margin`` of the
    budget, then fills it to ``1 - margin``. The rest of the LR schedule is stretched over the added
    steps, so the run still ends on its final LR inside the budget. Returns whether ``st.epochs``
    changed."""
    cfg, budget, c, key = s.cfg, s.budget, st.costs, _cost_key(res)
    if st.epochs >= cfg.epochs:
        return False
    worst = {**c, key: max([c[key]] + [float(h["epoch_seconds"]) - float(h.get("oneoff_seconds") or 0.0)
                                       for h in st.history[-3:]
                                       if _row_low_res(h) == res.low_res])}  # recent epochs of this phase
    low = _low_res_phase(s, st, worst)
    slow = _committed(s, st) + epochs_cost(st.epoch + 1, st.epochs, worst["train_s"], c["val_s"], cfg.val_every, low)
    if slow > budget * (1 - 1.5 * TIME_BUDGET_MARGIN):
        return False
    avail = budget * (1 - TIME_BUDGET_MARGIN) - _committed(s, st)
    new, room = plan_with_room(avail, st.epoch + 1, cfg.epochs, worst["train_s"], c["val_s"], cfg.val_every, low)
    if new <= st.epochs:
        return False
    s.log(f"time budget {format_duration(budget)}: epoch {st.epoch} took {_took(own, res)}, "
          f"forecast {_s(slow)} at the slowest recent epoch leaves room -> {new} epochs instead of {st.epochs} "
          "(rest of the schedule stretched)" + _bound_note(cfg, room))
    st.epochs = new
    st.warp.fit(st.step, st.warp(st.step), st.epochs * s.data.steps_per_epoch)
    return True


def train_one_epoch(s: _Setup, st: RunState, prog) -> EpochResult:
    """Epoch ``st.epoch``: its random streams seeded by :func:`seed_epoch`, one optimizer step per
    batch with the (possibly warped) LR schedule, on low-resolution batches when
    :func:`low_res_epoch` says so. Advances ``st.step``; ``st.epoch`` is left as is."""
    d = s.data
    seed_epoch(s.cfg.seed, st.epoch, d, s.dist.rank)
    low = low_res_epoch(s.cfg.low_res, st.warp, st.step)
    if d.transform_low is not None:
        d.use_low_res(low)
    st.model.train()
    d.loader.dataset.seen.clear()
    task = prog.add_task(f"epoch {st.epoch}", total=d.steps_per_epoch, status="")
    losses, step_s, t0 = [], [], _clock()
    t_prev = t0
    for x, y in d.loader:
        loss = train_step(st.net if st.net is not None else st.model, st.opt, st.scaler, x, y, s.device, s.choice, d.info.ignore_index,
                          d.weight, s.cfg.dice_weight, s.cfg.ohem, s.cfg.channels_last, s.cfg.lovasz_weight)
        if st.ema is not None:
            st.ema.update_parameters(st.model)
        st.step += 1
        if not st.warp.identity:
            st.sched.last_epoch = st.warp(st.step) - 1  # step() adds the 1
        st.sched.step()
        losses.append(loss.item())
        step_s.append(_clock() - t_prev)
        t_prev += step_s[-1]
        prog.update(task, advance=1, status=f"loss {np.mean(losses[-20:]):.3f}")
    prog.remove_task(task)
    first_here = low not in st.resolutions_seen
    st.resolutions_seen.add(low)
    oneoff = max(0.0, step_s[0] - float(np.median(step_s[1:]))) if first_here and len(step_s) > 1 else 0.0
    s.dist.average_buffers(st.model)
    return EpochResult(st.epoch, losses, float(st.opt.param_groups[0]["lr"]), round(_clock() - t0, 1), t0,
                       loss=s.dist.mean(float(np.mean(losses))) if s.dist.enabled else None,
                       world_size=s.dist.world_size, images=list(d.loader.dataset.seen), low_res=low,
                       input_scale=low_res_scale(s.cfg.low_res_mode) if low else 1.0, oneoff_s=oneoff)


def validate(s: _Setup, st: RunState, res: EpochResult) -> None:
    """Score the model on the validation split into ``res.metrics`` (plain floats) and ``res.val_s``."""
    t = _clock()
    res.metrics = _plain(_validate(st.eval_model, s.meta, s.data.val_ds, s.device, s.choice, s.cfg.limit))
    res.val_s = _clock() - t


def _save_checkpoints(s: _Setup, st: RunState, res: EpochResult) -> None:
    """After an epoch: ``best.pt`` when it beat the best so far, the history row, this epoch's cost
    (steps + best.pt), then ``last.pt`` (all of :class:`RunState`), ``log.csv`` and, when due
    (:func:`_draw_curves`), ``curves.png``, each written atomically. Everything saved is tensors
    and plain Python data."""
    m = res.metrics
    if m is not None and m["miou"] > st.best["miou"]:
        st.best = {"miou": m["miou"], "epoch": res.epoch, "metrics": m}
        _save(s.best_path, {"model": st.eval_model.state_dict(), "epoch": res.epoch,
                            "meta": s.meta.with_(extra={"val_metrics": m, "epoch": res.epoch}).to_dict()})
    st.history.append(res.row())
    costs = dict(st.costs or {})
    costs[_cost_key(res)] = res.recurring_s()
    costs["val_s"] = res.val_s if res.val_s is not None else costs.get("val_s", 0.0)
    st.costs = costs
    _save(s.last_path, {
        "model": st.model.state_dict(), "meta": s.meta.to_dict(), "epoch": res.epoch, "best": st.best,
        "history": st.history, "optimizer": st.opt.state_dict(), "scheduler": st.sched.state_dict(),
        "scaler": st.scaler.state_dict(), "ema": None if st.ema is None else st.ema.state_dict(),
        "rng": rng_state(s.cuda), "elapsed_s": st.elapsed(), "costs": dict(st.costs),
        "plan": {"epochs": st.epochs, "schedule_steps": st.warp.total, "epochs_planned": st.epochs_planned,
                 "time_budget_s": s.budget},
    })
    _write_log(s.out / "log.csv", st.history)
    _draw_curves(s, st)


def _draw_curves(s: _Setup, st: RunState, final: bool = False) -> None:
    """Redraw ``curves.png`` from ``st.history`` when it has new rows: after this session's first
    epoch, then when :data:`CURVES_EVERY_S` have passed since the last drawing, and after the run's
    last epoch (``final``)."""
    when, rows = st.curves_drawn or (None, 0)
    if len(st.history) == rows or (not final and when is not None and _clock() - when < CURVES_EVERY_S):
        return
    _plot_curves(st.history, s.out / "curves.png")
    st.curves_drawn = (_clock(), len(st.history))


def _finish_epoch(s: _Setup, st: RunState, res: EpochResult, prog, ep_task) -> None:
    """Rank 0 after an epoch: validate when due, write the checkpoints and the log, report progress."""
    cfg = s.cfg
    if (st.epoch % cfg.val_every == 0 and not res.low_res) or st.epoch == st.epochs:
        validate(s, st, res)
    _save_checkpoints(s, st, res)
    row = st.history[-1]
    val = row["val_miou"] if row["val_miou"] is None else round(row["val_miou"], 4)
    prog.update(ep_task, advance=1, status=f"loss {row['train_loss']:.3f} val mIoU {val} best {st.best['miou']:.4f}")
    if not cfg.progress or not prog.console.is_terminal:
        s.log(f"epoch {st.epoch}/{st.epochs} loss {row['train_loss']:.4f} val mIoU {row['val_miou']} "
              f"({row['epoch_seconds']}s)")


def _run_epochs(s: _Setup, st: RunState) -> list[EpochResult]:
    """Train epochs ``st.epoch..st.epochs`` (the plan may change on the way); returns their results.

    Under torchrun every rank trains; rank 0 alone validates, writes the checkpoints and the log,
    and re-plans a time budget (the others take its plan, :func:`_sync_plan`)."""
    cfg, main, results = s.cfg, s.dist.is_main, []
    with make_progress() as prog:
        prog.disable = not cfg.progress or not main
        ep_task = prog.add_task("epochs", total=st.epochs, completed=st.epoch - 1, status="")
        while st.epoch <= st.epochs:
            res = train_one_epoch(s, st, prog)
            results.append(res)
            if main:
                _finish_epoch(s, st, res, prog, ep_task)
            if s.budget and st.epoch < st.epochs:
                if main:
                    _replan_after_epoch(s, st, res)
                _sync_plan(s, st)
                prog.update(ep_task, total=st.epochs)
            st.epoch += 1
    if main:
        _draw_curves(s, st, final=True)
    return results


def train(cfg: TrainConfig, log=print) -> dict:
    """Train a U-Net on ``cfg.data``; writes ``best.pt``, ``last.pt``, ``log.csv``, ``curves.png``
    and ``summary.json`` under ``cfg.out``.

    Run folder: held with a :class:`unet_edge.locks.FolderLock` (``out/.lock``) for the whole call,
    so a second process gets a UsageError naming the first one's pid. Temporary files of an
    interrupted run are removed at the start. A folder that holds a run (``best.pt``, ``last.pt``
    or ``log.csv``) is continued only with ``cfg.resume`` and replaced only with ``cfg.exist_ok``
    (which deletes the old run's files once the new run is set up); ``best.pt`` is only ever
    replaced by a better model of the same run (on resume the best of ``last.pt`` and ``best.pt``).

    Resume: continues from ``last.pt``; options in :data:`RECIPE_OPTIONS`, the dataset and (unless
    both sessions have a time budget) ``epochs`` must be the stored ones. Every epoch's random
    streams come from ``(cfg.seed, epoch)`` (:func:`seed_epoch`), so on the same host, device and
    thread count a resumed run computes the same per-epoch losses as the uninterrupted run.

    Precision: ``choose_precision(device, cfg.precision)`` for the training autocast and for the
    per-epoch validation; a GradScaler only for fp16 on CUDA. The choice and the host
    (:meth:`unet_edge.host.HostInfo.to_dict`) go into the checkpoints' ``meta.extra``
    (``train_precision``, ``train_host``, ``train_threads``) and into ``summary.json``.

    Logit offsets (``cfg.logit_offsets``, default on): after the last epoch rank 0 fits per-class
    logit offsets for mIoU on training pixels and folds them into ``best.pt`` when they raise val
    mIoU (:func:`_fit_logit_offsets`).

    Time budget (``cfg.time_budget_s``): the budget counts everything from the call on (dataset
    loading, calibration, epochs, checkpoints, the logit offsets' forecast cost
    :func:`_offsets_cost`, reserved in every plan) plus, on ``resume``, the time of the earlier
    sessions (``elapsed_s`` in ``last.pt``: up to their last finished epoch). The run is planned to end at
    ``(1 - TIME_BUDGET_MARGIN)`` of it: :func:`_measure_costs` times the epoch, :func:`plan_epochs`
    picks N <= ``cfg.epochs``, and the LR schedule is built for N epochs. After each epoch the
    forecast uses the median measured cost (training + checkpointing) of the last three epochs at
    that resolution, or that epoch's own when two more such epochs would pass the budget, and the
    latest validation (:func:`_replan_after_epoch`); when it passes ``(1 - TIME_BUDGET_MARGIN / 2)``
    of the budget, N is lowered (raised only by :func:`_extend`) and the rest of the schedule is
    compressed into the remaining steps (:class:`ScheduleWarp`), so the run still ends on the
    schedule's final LR. At least one more epoch always runs, so a sudden several-fold slowdown can
    overshoot by that epoch. With ``cfg.epochs == 1`` nothing is timed.
    Resuming keeps the stored plan and schedule (at most ``cfg.epochs``); with a budget it
    forecasts with the last epoch's stored costs (timed afresh for checkpoints without them) and
    shortens when needed.

    Progressive resizing (``cfg.low_res`` > 0; fast.ai's DAWNBench ImageNet runs, Howard 2018, and
    EfficientNetV2's progressive learning, Tan and Le 2021): the epochs that start before
    ``cfg.low_res`` of the LR schedule (:func:`low_res_epoch`) train on batches at
    :data:`~unet_edge.data.train_split.LOW_RES_FACTOR` of the resolution (``cfg.low_res_mode``
    ``scale``: the scale range and the crop both scaled, so a crop covers the same scene in a
    quarter of the pixels) or on crops of that size at the full scale (``crop``: a quarter of the
    scene, thin objects as wide as at full resolution); they are not validated (``val_miou`` empty,
    ``low_res`` 1 and ``input_scale`` 0.5 or 1.0 in ``log.csv``), so ``best.pt`` comes from the
    full-resolution epochs. With a budget both epoch costs are timed and planned
    (:class:`~unet_edge.time_budget.LowResPhase`).

    Several processes (``torchrun --nproc_per_node N cli.py train ...``, :mod:`unet_edge.distributed`):
    the model is wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL with one GPU per process
    on CUDA); ``cfg.batch_size`` is the global batch, split evenly; a ``DistributedSampler`` gives
    each rank its own shard of the training images every epoch; BatchNorm per :func:`batch_norm_mode`,
    running statistics averaged over the ranks after each epoch. Rank 0 alone holds the lock,
    validates, logs, writes every file and decides the time-budget plan (broadcast to the others);
    errors in the setup stop every rank (:meth:`DistInfo.agree`). ``meta.extra["distributed"]``,
    ``log.csv``'s ``world_size`` and ``summary.json`` record the group; a run resumes only with
    the world size it was trained with.

    Returns:
        summary dict (also ``summary.json``; rank 0's): ``rank``, ``distributed`` (world size,
        backend, global and per-rank batch, BatchNorm mode, and per rank: pid, host, device,
        threads, images read, the first epoch's image indices, SHA-256 of its final weights),
        ``best_miou``, ``best_epoch``, ``epochs`` (epochs
        run, the final plan), ``epochs_max`` (``cfg.epochs``), ``epochs_planned`` (the first plan),
        ``time_budget_s``, ``epoch_estimate_s`` (the seconds per epoch the plan started from, None
        when nothing was planned), ``seconds`` (this call), ``elapsed_s`` (all sessions),
        ``precision`` (:meth:`PrecisionChoice.to_dict`), ``threads``,
        ``device``, ``host``, ``best``/``last`` checkpoint paths, ``logit_offsets`` (the record of
        :func:`_fit_logit_offsets`, None when off; on other ranks None).

    Raises:
        UsageError: an option out of range (:func:`check_config`), a global batch the ranks
        cannot share, a bad torchrun environment, ``out`` not a usable folder,
        ``out`` holding a run without ``resume``/``exist_ok``, ``out`` locked by another process,
        options changed on resume, unknown precision, ``compile`` under torchrun. DataError: dataset problems. ArtifactError:
        ``resume`` with a missing/incompatible ``last.pt``. BackendUnavailableError: fp16 on CPU,
        CUDA requested but absent.
    """
    t_start = _clock()
    check_config(cfg)
    dist = env_dist()
    if dist.world_size > 1 and cfg.compile:
        raise UsageError("--compile is for single-process training (not measured under torchrun); "
                         "drop --compile or run without torchrun")
    if dist.world_size > 1:
        per_rank_batch(cfg.batch_size, dist.world_size)  # before joining: every rank fails alike, at once
    dist, device = init_from_env(resolve_device(cfg.device))
    try:
        summary = _train_group(cfg, t_start, dist, device, log if dist.is_main else (lambda *a, **k: None))
    except BaseException:
        shutdown(dist)
        raise
    shutdown(dist, wait_for_peers=True)
    return summary


def _train_group(cfg: TrainConfig, t_start: float, dist: DistInfo, device: str, log) -> dict:
    """:func:`train` for this rank of the group (a group of one without torchrun). Rank 0 holds the
    folder lock and writes every file; steps that can fail on a user's input run under
    :meth:`DistInfo.agree`, so an error stops every rank."""
    out = dist.agree(lambda: _run_folder(cfg) if dist.is_main else Path(cfg.out))
    with FolderLock(out, "training run", log) if dist.is_main else contextlib.nullcontext():
        dist.agree(lambda: _check_run_folder(out, cfg, log) if dist.is_main else None)
        s = dist.agree(lambda: _setup(cfg, out, log, dist, device))
        st = _new_state(s, t_start)
        if cfg.resume:
            ck = dist.agree(lambda: load_checkpoint(s.last_path))
            dist.agree(lambda: _restore(s, st, ck))
            if s.budget and st.epoch <= st.epochs:
                _replan_resumed(s, st, ck)
                _sync_plan(s, st)
        else:
            if dist.is_main:
                _clear_old_run(s)
            _plan_fresh(s, st)
        group = (f", {dist.world_size} processes ({dist.backend}, global batch {cfg.batch_size} = "
                 f"{dist.world_size} x {s.data.loader.batch_size}, {s.meta.extra['distributed']['batch_norm']} "
                 "BatchNorm)") if dist.enabled else ""
        s.log(f"training {cfg.preset} U-Net ({count_parameters(st.model) / 1e6:.2f} M params) on {s.data.info.name} "
              f"[{len(s.data.train_items)} train / {s.data.n_val} val], input {s.meta.input_size[0]}x"
              f"{s.meta.input_size[1]}, crop {s.data.crop[0]}x{s.data.crop[1]}"
              + (f" (first {cfg.low_res:.0%} of the schedule on "
                 + ("half-resolution " if low_res_scale(cfg.low_res_mode) < 1 else "full-resolution ")
                 + f"{'x'.join(map(str, low_res_crop(s.data.crop)))} crops)" if cfg.low_res > 0 else "")
              + f", {s.device}, {s.threads} threads"
              f"{' per process' if dist.enabled else ''}, {precision_label(s.choice, s.device)} ({s.choice.reason})"
              + group)
        results = _run_epochs(s, st)
        offsets = dist.agree(lambda: _fit_logit_offsets(s, st) if dist.is_main else None)
        ranks = dist.gather({**rank_identity(dist), "device": s.device, "threads": s.threads,
                             "images_seen": sum(len(r.images) for r in results),
                             "first_epoch_images": sorted(results[0].images) if results else [],
                             "weights_sha256": state_dict_sha256(st.model.state_dict())})
        summary = {"best_miou": st.best["miou"], "best_epoch": st.best["epoch"], "epochs": st.epochs,
                   "epochs_max": cfg.epochs, "epochs_planned": st.epochs_planned, "time_budget_s": s.budget,
                   "epoch_estimate_s": st.estimate, "seconds": round(_clock() - t_start, 1),
                   "elapsed_s": round(st.elapsed(), 1), "precision": s.choice.to_dict(), "threads": s.threads,
                   "device": s.device, "host": s.host.to_dict(), "best": str(s.best_path), "last": str(s.last_path),
                   "distributed": {**s.meta.extra["distributed"], "ranks": ranks}, "rank": dist.rank,
                   "logit_offsets": offsets}
        if dist.is_main:
            write_json_atomic(out / "summary.json", summary)
    return summary


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


#: seconds per sampled pixel of the offsets fit, for planning (about 6 us measured on 2 x86 cores).
_FIT_S_PER_PIXEL = 1e-5


def _offsets_cost(s: _Setup, val_s: float) -> float:
    """Forecast seconds of :func:`_fit_logit_offsets`: inference over the training images at the
    validation's per-image cost, the fit, and one more validation; 0 when it will not run."""
    d = s.data
    if not s.cfg.logit_offsets or d.info.binary:
        return 0.0
    per_image = val_s / max(1, d.n_val)
    return per_image * len(d.train_items) + val_s + _FIT_S_PER_PIXEL * PIXELS_PER_IMAGE * len(d.train_items)


def _committed(s: _Setup, st: RunState) -> float:
    """Seconds of the budget already spent or owed: elapsed, plus the offsets stage after the epochs."""
    return st.elapsed() + _offsets_cost(s, (st.costs or {}).get("val_s", 0.0))


def _fit_logit_offsets(s: _Setup, st: RunState) -> dict | None:
    """Rank 0 after the last epoch: fit per-class logit offsets for mIoU on up to
    :data:`unet_edge.logit_offsets.PIXELS_PER_IMAGE` pixels of each training image (seeded by
    ``cfg.seed``), fold them into the head of ``best.pt``'s model and validate it again. ``best.pt``
    is rewritten (atomically) only when the val mIoU rises; its ``meta.extra`` then holds
    ``logit_offsets`` (the record below), ``val_metrics`` (with offsets) and
    ``val_metrics_before_offsets``. A ``best.pt`` that already holds offsets (a resumed, finished
    run) is left alone. See :mod:`unet_edge.logit_offsets` for why.

    Returns:
        None when off or for a binary head, else ``{"offsets": {class: logit offset}, "pixels",
        "train_miou_before", "train_miou_after", "val_miou_before", "val_miou_after", "kept",
        "seconds"}``.
    """
    if not s.cfg.logit_offsets:
        return None
    if s.data.info.binary:
        s.log("logit offsets: skipped (a binary sigmoid head has no argmax to adjust)")
        return None
    if not s.best_path.is_file():
        s.log(f"logit offsets: skipped ({s.best_path} was not written)")
        return None
    model, meta, ck = model_from_checkpoint(s.best_path)
    extra = meta.extra
    if extra.get("logit_offsets"):
        s.log(f"logit offsets: {s.best_path} already holds them")
        return extra["logit_offsets"]
    t0 = _clock()
    if s.cuda or s.cfg.channels_last:  # the memory format the epochs validated in (1.4x faster than NCHW on CPU)
        model = model.to(memory_format=torch.channels_last)
    with warnings.catch_warnings():  # an emulated precision was warned about once, at the start
        warnings.simplefilter("ignore", EmulatedPrecisionWarning)
        backend = TorchBackend(model, meta, device=s.device, precision=s.choice.precision)
    try:
        sample = sample_pixels(backend.infer, s.data.train_items, meta, seed=s.cfg.seed)
    except DataError as e:  # the epochs' best.pt stays as it is
        s.log(f"logit offsets: skipped ({e})")
        return None
    offsets = fit_offsets(sample)
    before = extra["val_metrics"]
    fold_offsets(model, offsets)
    after = _validate(model, meta, s.data.val_ds, s.device, s.choice, s.data.n_val)
    kept = after["miou"] > before["miou"]
    record = {"offsets": {n: round(float(o), 4) for n, o in zip(meta.class_names, offsets)},
              "pixels": int(len(sample.labels)), "train_miou_before": round(sample_miou(sample, np.zeros_like(offsets)), 4),
              "train_miou_after": round(sample_miou(sample, offsets), 4), "val_miou_before": before["miou"],
              "val_miou_after": after["miou"], "kept": kept, "seconds": round(_clock() - t0, 1)}
    if kept:
        _save(s.best_path, {"model": model.state_dict(), "epoch": ck["epoch"], "meta": meta.with_(extra={
            "val_metrics": after, "val_metrics_before_offsets": before, "logit_offsets": record}).to_dict()})
        st.best = {"miou": after["miou"], "epoch": st.best["epoch"], "metrics": after}
    s.log(f"logit offsets (fit for mIoU on {record['pixels']} training pixels, {_s(record['seconds'])}): train "
          f"mIoU {record['train_miou_before']:.4f} -> {record['train_miou_after']:.4f}, val mIoU "
          f"{before['miou']:.4f} -> {after['miou']:.4f}; "
          + (f"folded into {s.best_path}" if kept else f"not kept, {s.best_path} unchanged"))
    return record


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            # rows of a run resumed from an older version may lack later columns
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for h in history for k in h)), restval="")
            w.writeheader()
            w.writerows(history)
