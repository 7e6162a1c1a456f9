"""Training loop: cross-entropy (+ optional Dice) with ignore index, AdamW, warmup+cosine or
one-cycle schedule, per-epoch validation, atomic best/last checkpoints, ``--resume``, CSV log and
training-curve PNG.

Precision comes from :func:`unet_edge.precision.choose_precision` (``--precision auto``: bf16
autocast where the CPU or GPU computes bf16 natively, fp16 AMP + GradScaler on CUDA 7.x, FP32
otherwise; never an emulated precision). On CUDA the model and inputs use channels_last and cuDNN
autotuning.

Time budget (``--time-budget``, Ultralytics' ``time``): before the schedule is built the trainer
times a few warm training steps and a validation pass on a copy of the model, then picks the
largest epoch count (at most ``--epochs``) whose forecast ends inside the budget less a safety
margin, and builds the LR schedule for that count, so it completes. After every epoch the forecast
is redone with the epoch's measured cost; if the run would overshoot (the host got slower), the
epoch count is lowered and the rest of the schedule is compressed into the remaining steps so it
still reaches its final LR. See :func:`train`.
"""
from __future__ import annotations

import copy
import csv
import math
import random
import re
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .artifacts import load_checkpoint
from .data.augment import train_transform
from .data.layouts import SegDataset, load_dataset
from .errors import ArtifactError, DataError, EmulatedPrecisionWarning, UsageError
from .evaluate import evaluate
from .host import probe_host, resolve_threads
from .io_utils import atomic_path, write_json_atomic
from .metadata import ModelMeta
from .model import UNet, config_from_preset, count_parameters
from .precision import PrecisionChoice, choose_precision
from .preprocess import normalize
from .progress import make_progress
from .runtime.torch_backend import TorchBackend, resolve_device

#: With a time budget every plan ends at ``(1 - TIME_BUDGET_MARGIN) * budget``; an epoch-end
#: forecast re-plans only when it passes ``(1 - TIME_BUDGET_MARGIN / 2) * budget`` (hysteresis: a
#: few percent of timing noise does not cost an epoch).
TIME_BUDGET_MARGIN = 0.08
#: timed training steps of the calibration (after one untimed warm-up step).
CALIB_STEPS = 3
#: validation images timed by the calibration (the cost is scaled to the whole split).
CALIB_VAL_IMAGES = 8

#: the trainer's clock (seconds); tests replace it with a fake one.
_clock = time.perf_counter


@dataclass
class TrainConfig:
    """Options of :func:`train` (the CLI's ``train`` flags).

    ``crop`` and ``input_size`` are (H, W) pixels; ``input_size`` None means the size of the first
    training image. ``lr`` is the peak learning rate. ``limit`` caps the images per split (quick runs).
    ``precision``: ``auto`` (see :func:`unet_edge.precision.choose_precision`), ``fp32``, ``bf16``
    or ``fp16`` (CUDA only). ``threads``: torch CPU threads, 0 = the physical cores
    (:func:`unet_edge.host.resolve_threads`). ``time_budget_s``: wall-clock seconds for the whole
    training (setup, calibration, epochs; summed over resumed sessions), None for no budget; with a
    budget ``epochs`` is the upper bound (see :func:`train`).
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
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    limit: int | None = None
    val_every: int = 1
    resume: bool = False
    progress: bool = True
    time_budget_s: float | None = None
    command: str = field(default_factory=lambda: " ".join(shlex.quote(a) for a in sys.argv))


_UNITS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
          "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
          "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0}
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_time_budget(text: str | float | int) -> float:
    """A time budget in seconds from ``90s``, ``20m``, ``1.5h`` or plain minutes (``45``, ``45.5``).

    Units: ``s``/``sec``/``seconds``, ``m``/``min``/``minutes``, ``h``/``hr``/``hours`` (any case).
    A number without a unit (str, int or float) is minutes (Ultralytics' ``time`` takes hours).

    Raises:
        UsageError: unparsable text, an unknown unit, or a budget that is not positive and finite.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "m"
    else:
        m = _BUDGET_RE.match(str(text))
        if not m or m.group(2).lower() not in ("", *_UNITS):
            raise UsageError(f"--time-budget must look like 90s, 20m, 1.5h or plain minutes (45); got {text!r}")
        value, unit = float(m.group(1)), m.group(2).lower() or "m"
    seconds = value * _UNITS[unit]
    if not (math.isfinite(seconds) and seconds > 0):
        raise UsageError(f"--time-budget must be positive; got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``90s``, ``10m``, ``1.5h``: a duration in seconds, short, as :func:`parse_time_budget` reads it."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.3g}m"
    return f"{seconds / 3600:.3g}h"


def precision_label(choice: PrecisionChoice, device: str) -> str:
    """``bf16 autocast``, ``fp16 autocast + GradScaler`` (CUDA) or ``fp32``."""
    if not choice.autocast:
        return "fp32"
    scaled = choice.precision == "fp16" and device.startswith("cuda")
    return f"{choice.precision} autocast" + (" + GradScaler" if scaled else "")


def plan_epochs(available_s: float, first_epoch: int, max_epochs: int, train_s: float, val_s: float,
                val_every: int = 1) -> int:
    """The largest final epoch N in ``[first_epoch, max_epochs]`` whose epochs ``first_epoch..N``
    fit in ``available_s`` seconds, each costing ``train_s`` plus ``val_s`` when it validates
    (every ``val_every``-th epoch and always the final one). At least ``first_epoch``, even when
    that one does not fit."""
    best, before = first_epoch, 0.0  # before: cost of the epochs first_epoch..e-1 as non-final ones
    for e in range(first_epoch, max_epochs + 1):
        if before + train_s + val_s > available_s:
            break
        best = e
        before += train_s + (val_s if e % val_every == 0 else 0.0)
    return best


@dataclass
class ScheduleWarp:
    """Maps a real optimizer step to the step of the LR schedule it runs at (piecewise linear).

    The schedule has ``total`` steps. From real step ``real0`` (where the schedule stood at
    ``virt0``) each real step advances the schedule by ``rate`` steps. :meth:`fit` re-aims the rest
    of the schedule at a new real end, so a shortened run still ends on the schedule's final LR.
    """

    total: int
    real0: int = 0
    virt0: float = 0.0
    rate: float = 1.0

    @property
    def identity(self) -> bool:
        return self.rate == 1.0 and self.virt0 == self.real0

    def __call__(self, step: int) -> float:
        return min(float(self.total), self.virt0 + (step - self.real0) * self.rate)

    def fit(self, step: int, virt: float, end_step: int) -> None:
        """From real ``step`` (schedule at ``virt``), reach the schedule's end at real ``end_step``."""
        self.real0, self.virt0 = step, float(virt)
        self.rate = (self.total - self.virt0) / max(1, end_step - step)
        if self.virt0 == step and end_step == self.total:
            self.virt0, self.rate = float(step), 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_split(ds: SegDataset, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(ds) if limit is None else min(limit, len(ds))
    return [ds[i] for i in range(n)]


def enet_class_weights(masks: list[np.ndarray], num_classes: int, c: float = 1.02) -> np.ndarray:
    """ENet class weighting w_c = 1 / ln(c + p_c), p_c the pixel frequency of class c (Paszke et al.
    2016, arXiv:1606.02147). Returns float32 (num_classes,)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for m in masks:
        counts += np.bincount(m.reshape(-1), minlength=256)[:num_classes]
    p = counts / max(counts.sum(), 1)
    return (1.0 / np.log(c + p)).astype(np.float32)


class _AugmentedSplit(torch.utils.data.Dataset):
    def __init__(self, items, transform, meta: ModelMeta):
        self.items, self.transform, self.meta = items, transform, meta

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, mask = self.items[i]
        out = self.transform(image=img, mask=mask)
        x = normalize(out["image"], self.meta.mean, self.meta.std)
        return torch.from_numpy(x), torch.from_numpy(out["mask"].astype(np.int64))


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                      weight: torch.Tensor | None = None, dice_weight: float = 0.0) -> torch.Tensor:
    """Loss on logits (N, K, H, W) float and target (N, H, W) int64 with ``ignore_index``.

    K > 1: weighted cross-entropy; K == 1: binary cross-entropy on the non-ignored pixels. Plus
    ``dice_weight`` times the soft Dice loss (Milletari et al., V-Net, 2016) over non-ignored pixels.
    """
    logits = logits.float()
    valid = target != ignore_index
    if logits.shape[1] == 1:
        t = target.clamp(0, 1).float()
        loss = F.binary_cross_entropy_with_logits(logits[:, 0][valid], t[valid]) if valid.any() else logits.sum() * 0
        probs = torch.sigmoid(logits[:, 0]).unsqueeze(1)
        onehot = t.unsqueeze(1)
    else:
        loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)
        probs = logits.softmax(1)
        onehot = F.one_hot(target.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
    if dice_weight > 0:
        v = valid.unsqueeze(1).float()
        inter = (probs * onehot * v).sum((0, 2, 3))
        denom = ((probs + onehot) * v).sum((0, 2, 3))
        loss = loss + dice_weight * (1 - ((2 * inter + 1) / (denom + 1)).mean())
    return loss


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
        DataError: an unknown ``cfg.schedule``.
    """
    if cfg.schedule == "onecycle":
        # OneCycleLR's last phase ends at position total_steps - 1; one spare step puts it at total_steps
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps + 1)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, cfg.warmup_epochs * steps_per_epoch))
    raise DataError(f"unknown --schedule {cfg.schedule!r}; use cosine or onecycle")


def _train_step(model, opt, scaler, x, y, device: str, choice: PrecisionChoice, ignore_index: int,
                weight, dice_weight: float) -> torch.Tensor:
    """One optimizer step on a batch x float32 (N, 3, H, W), y int64 (N, H, W); returns the loss."""
    if device.startswith("cuda"):
        x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
    else:
        x = x.to(device)
    y = y.to(device)
    with torch.autocast(device.split(":")[0], dtype=choice.dtype, enabled=choice.autocast):
        logits = model(x)
    loss = segmentation_loss(logits, y, ignore_index, weight, dice_weight)
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


def _measure_costs(model, loader, val_ds, n_val: int, meta: ModelMeta, cfg: TrainConfig, device: str,
                   choice: PrecisionChoice, ignore_index: int, weight) -> dict:
    """Time one epoch's real costs on a throw-away copy of the model (the run's model, optimizer
    and random streams are left as they were): one untimed warm-up step, then
    :data:`CALIB_STEPS` timed training steps (data loading and augmentation included), and a
    validation pass over up to :data:`CALIB_VAL_IMAGES` images after an untimed 1-image warm-up,
    scaled to the ``n_val`` images of the split.

    Returns:
        ``{"step_s", "train_s" (one epoch of steps), "val_s" (one validation pass)}`` in seconds.
    """
    probe = copy.deepcopy(model)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=choice.precision == "fp16" and device.startswith("cuda"))
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(), loader.generator.get_state(),
              torch.cuda.get_rng_state_all() if device.startswith("cuda") else None)

    def batches():
        while True:
            yield from loader

    it = batches()
    probe.train()
    try:
        for i in range(CALIB_STEPS + 1):
            if i == 1:
                t = _clock()
            x, y = next(it)
            _train_step(probe, opt, scaler, x, y, device, choice, ignore_index, weight, cfg.dice_weight).item()
        step_s = (_clock() - t) / CALIB_STEPS
        n_cal = max(1, min(n_val, CALIB_VAL_IMAGES))
        _validate(probe, meta, val_ds, device, choice, 1)
        t = _clock()
        _validate(probe, meta, val_ds, device, choice, n_cal)
        val_s = (_clock() - t) * max(1, n_val) / n_cal
    finally:
        it.close()
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        loader.generator.set_state(states[3])
        if states[4] is not None:
            torch.cuda.set_rng_state_all(states[4])
        del probe, opt
    return {"step_s": step_s, "train_s": step_s * len(loader), "val_s": val_s}


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


def train(cfg: TrainConfig, log=print) -> dict:
    """Train a U-Net on ``cfg.data``; writes ``best.pt``, ``last.pt``, ``log.csv``, ``curves.png``
    and ``summary.json`` under ``cfg.out``.

    Precision: ``choose_precision(device, cfg.precision)`` for the training autocast and for the
    per-epoch validation; a GradScaler only for fp16 on CUDA. The choice and the host
    (:meth:`unet_edge.host.HostInfo.to_dict`) go into the checkpoints' ``meta.extra``
    (``train_precision``, ``train_host``, ``train_threads``) and into ``summary.json``.

    Time budget (``cfg.time_budget_s``): the budget counts everything from the call on (dataset
    loading, calibration, epochs, checkpoints) plus, on ``resume``, the time of the earlier
    sessions (``elapsed_s`` in ``last.pt``: up to their last finished epoch). The run is planned to end at
    ``(1 - TIME_BUDGET_MARGIN)`` of it: :func:`_measure_costs` times the epoch, :func:`plan_epochs`
    picks N <= ``cfg.epochs``, and the LR schedule is built for N epochs. After each epoch the
    forecast uses that epoch's measured cost (training + checkpointing, and the latest validation);
    when it passes ``(1 - TIME_BUDGET_MARGIN / 2)`` of the budget, N is lowered (never raised) and
    the rest of the schedule is compressed into the remaining steps (:class:`ScheduleWarp`), so the
    run still ends on the schedule's final LR. At least one more epoch always runs, so a sudden
    several-fold slowdown can overshoot by that epoch. With ``cfg.epochs == 1`` nothing is timed.
    Resuming with a budget keeps the stored plan and schedule (at most ``cfg.epochs``), forecasts
    with the last epoch's stored costs (timed afresh for checkpoints without them) and shortens
    when needed. Resuming without one trains to ``cfg.epochs``: the stored schedule continues when
    it was built for that many epochs (a compressed rest still reaches its end), else it is rebuilt
    for ``cfg.epochs`` and continues at the current step.

    Returns:
        summary dict (also ``summary.json``): ``best_miou``, ``best_epoch``, ``epochs`` (epochs
        run, the final plan), ``epochs_max`` (``cfg.epochs``), ``epochs_planned`` (the first plan),
        ``time_budget_s``, ``epoch_estimate_s`` (the seconds per epoch the plan started from, None
        when nothing was planned), ``seconds`` (this call), ``elapsed_s`` (all sessions),
        ``precision`` (:meth:`PrecisionChoice.to_dict`), ``threads``,
        ``device``, ``host``, ``best``/``last`` checkpoint paths.

    Raises:
        DataError: dataset problems, unknown schedule or class weights. ArtifactError: ``resume``
        with a missing/incompatible ``last.pt``. UsageError: unknown precision, non-positive
        budget. BackendUnavailableError: fp16 on CPU, CUDA requested but absent.
    """
    t_start = _clock()
    budget = cfg.time_budget_s
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UsageError(f"time budget must be a positive number of seconds; got {budget!r}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    threads = resolve_threads(cfg.threads)
    torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    host = probe_host()
    choice = choose_precision(device, cfg.precision, host=host)
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cudnn.benchmark = True

    train_ds = load_dataset(cfg.data, "train", cfg.data_format)
    val_ds = load_dataset(cfg.data, "val", cfg.data_format)
    info = train_ds.info
    train_items = _load_split(train_ds, cfg.limit)
    n_val = len(val_ds) if cfg.limit is None else min(cfg.limit, len(val_ds))
    input_size = tuple(cfg.input_size) if cfg.input_size else train_items[0][0].shape[:2]
    crop = (min(cfg.crop[0], input_size[0] * 2), min(cfg.crop[1], input_size[1] * 2))

    arch = config_from_preset(cfg.preset, info.num_logits, cfg.dropout)
    meta = ModelMeta(
        arch=arch.to_dict(), class_names=list(info.class_names), palette=[list(c) for c in info.palette],
        ignore_index=info.ignore_index, input_size=input_size,
        dataset={"name": info.name, "format": info.format, "path": str(Path(cfg.data).resolve()),
                 "mask_kind": info.mask_kind},
        train_command=cfg.command,
        extra={"train_config": {k: v for k, v in asdict(cfg).items() if k != "command"},
               "train_precision": choice.to_dict(), "train_host": host.to_dict(), "train_threads": threads},
    )
    model = UNet(arch).to(device, memory_format=torch.channels_last) if cuda else UNet(arch).to(device)
    weight = None
    if cfg.class_weights == "enet" and not info.binary:
        weight = torch.from_numpy(enet_class_weights([m for _, m in train_items], info.num_logits)).to(device)
    elif cfg.class_weights not in ("enet", "none"):
        raise DataError(f"unknown --class-weights {cfg.class_weights!r}; use enet or none")

    loader = torch.utils.data.DataLoader(
        _AugmentedSplit(train_items, train_transform(crop, info.ignore_index), meta),
        batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_items) > cfg.batch_size, num_workers=0,
        generator=torch.Generator().manual_seed(cfg.seed), pin_memory=cuda,
    )
    spe = len(loader)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=choice.precision == "fp16" and cuda)
    if cfg.schedule not in ("cosine", "onecycle"):
        raise DataError(f"unknown --schedule {cfg.schedule!r}; use cosine or onecycle")

    start_epoch, best, history, elapsed_before = 1, {"miou": -1.0, "epoch": 0}, [], 0.0
    last_path, best_path = out / "last.pt", out / "best.pt"
    ck = None
    if cfg.resume:
        if not last_path.is_file():
            raise ArtifactError(f"--resume: no {last_path} to resume from; drop --resume to start fresh")
        ck = load_checkpoint(last_path)
        if ck["meta"]["arch"] != meta.arch:
            raise ArtifactError(f"--resume: {last_path} has architecture {ck['meta']['arch']}, not {meta.arch}")
        start_epoch, elapsed_before = ck["epoch"] + 1, float(ck.get("elapsed_s", 0.0))

    def elapsed() -> float:
        return elapsed_before + _clock() - t_start

    budget_text = format_duration(budget) if budget else ""
    costs, estimate = None, None  # costs: {"train_s", "val_s"} of one epoch, seconds
    plan = (ck or {}).get("plan") or {}
    if ck is None:
        if budget and cfg.epochs > 1:  # (a bound of 1 epoch leaves nothing to choose)
            costs = _measure_costs(model, loader, val_ds, n_val, meta, cfg, device, choice, info.ignore_index, weight)
            epochs = plan_epochs(budget * (1 - TIME_BUDGET_MARGIN) - elapsed(), 1, cfg.epochs, costs["train_s"],
                                 costs["val_s"], cfg.val_every)
            estimate = round(costs["train_s"] + costs["val_s"], 2)
            log(f"time budget {budget_text}: epoch ~{_s(costs['train_s'] + costs['val_s'])} (train "
                f"{_s(costs['train_s'])} + val {_s(costs['val_s'])}), {_s(elapsed())} used -> {epochs} epochs "
                f"(at most {cfg.epochs}; planned to end by {1 - TIME_BUDGET_MARGIN:.0%} of the budget)")
        else:
            epochs = cfg.epochs
            if budget:
                log(f"time budget {budget_text}: 1 epoch, the --epochs bound (nothing to plan)")
        schedule_steps = epochs * spe
    else:
        epochs = min(cfg.epochs, plan.get("epochs", cfg.epochs)) if budget else cfg.epochs
        schedule_steps = plan.get("schedule_steps", epochs * spe) if budget else epochs * spe
    epochs_planned = plan.get("epochs_planned", epochs)
    sched = _make_scheduler(opt, cfg, schedule_steps, spe)
    warp = ScheduleWarp(schedule_steps)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if plan.get("schedule_steps", schedule_steps) == schedule_steps:  # the same schedule: continue it
            sched.load_state_dict(ck["scheduler"])
        else:  # rebuilt for another --epochs (no budget): continue it at this step, as before
            sched.last_epoch = (start_epoch - 1) * spe
        scaler.load_state_dict(ck.get("scaler", {})) if ck.get("scaler") else None
        best, history = ck["best"], ck["history"]
        torch.set_rng_state(ck["torch_rng"])
        np.random.set_state(ck["numpy_rng"])
        random.setstate(ck["python_rng"])
        if ck.get("loader_rng") is not None:
            loader.generator.set_state(ck["loader_rng"])
        # the remaining steps run the rest of the schedule, wherever it stood, to its end
        end = sched.total_steps - 1 if isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) else schedule_steps
        warp = ScheduleWarp(int(end))
        warp.fit((start_epoch - 1) * spe, sched.last_epoch, epochs * spe)
        log(f"resumed from {last_path} at epoch {ck['epoch']} (best mIoU {best['miou']:.4f}, "
            f"{elapsed_before:.0f} s of training so far)")
        if budget and start_epoch <= epochs:
            # the last epoch's measured costs (stored in last.pt); timed afresh for older checkpoints
            costs = ck.get("costs") or _measure_costs(model, loader, val_ds, n_val, meta, cfg, device, choice,
                                                      info.ignore_index, weight)
            new = plan_epochs(budget * (1 - TIME_BUDGET_MARGIN) - elapsed(), start_epoch, epochs, costs["train_s"],
                              costs["val_s"], cfg.val_every)
            estimate = round(costs["train_s"] + costs["val_s"], 2)
            log(f"time budget {budget_text}: {_s(elapsed())} used, epoch ~{_s(costs['train_s'] + costs['val_s'])} "
                f"-> {new} epochs" + (f" instead of {epochs} (schedule compressed)" if new < epochs else ""))
            if new < epochs:
                epochs = new
                warp.fit((start_epoch - 1) * spe, warp((start_epoch - 1) * spe), epochs * spe)

    log(f"training {cfg.preset} U-Net ({count_parameters(model) / 1e6:.2f} M params) on {info.name} "
        f"[{len(train_items)} train / {n_val} val], input {input_size[0]}x{input_size[1]}, crop {crop[0]}x{crop[1]}, "
        f"{device}, {threads} threads, {precision_label(choice, device)} ({choice.reason})")
    step = (start_epoch - 1) * spe
    epoch = start_epoch
    with make_progress() as prog:
        ep_task = prog.add_task("epochs", total=epochs, completed=start_epoch - 1, status="")
        while epoch <= epochs:
            model.train()
            it_task = prog.add_task(f"epoch {epoch}", total=spe, status="")
            losses, te = [], _clock()
            for x, y in loader:
                loss = _train_step(model, opt, scaler, x, y, device, choice, info.ignore_index, weight, cfg.dice_weight)
                step += 1
                if not warp.identity:
                    sched.last_epoch = warp(step) - 1  # step() adds the 1
                sched.step()
                losses.append(loss.item())
                prog.update(it_task, advance=1, status=f"loss {np.mean(losses[-20:]):.3f}")
            prog.remove_task(it_task)
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                   "epoch_seconds": round(_clock() - te, 1), "val_miou": None, "val_pixel_accuracy": None,
                   "val_dice": None}
            val_s = None
            if epoch % cfg.val_every == 0 or epoch == epochs:
                tv = _clock()
                m = _validate(model, meta, val_ds, device, choice, cfg.limit)
                val_s = _clock() - tv
                row.update(val_miou=m["miou"], val_pixel_accuracy=m["pixel_accuracy"], val_dice=m["dice"])
                if m["miou"] > best["miou"]:
                    best = {"miou": m["miou"], "epoch": epoch, "metrics": m}
                    _save(best_path, {"model": model.state_dict(), "meta": meta.with_(extra={"val_metrics": m, "epoch": epoch}).to_dict(), "epoch": epoch})
            history.append(row)
            # this epoch's cost (steps + best.pt; last.pt, log and plot are added below for the forecast)
            costs = {"train_s": _clock() - te - (val_s or 0.0),
                     "val_s": val_s if val_s is not None else (costs or {}).get("val_s", 0.0)}
            _save(last_path, {
                "model": model.state_dict(), "meta": meta.to_dict(), "epoch": epoch, "best": best, "history": history,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
                "loader_rng": loader.generator.get_state(), "elapsed_s": elapsed(), "costs": costs,
                "plan": {"epochs": epochs, "schedule_steps": warp.total, "epochs_planned": epochs_planned,
                         "time_budget_s": budget},
            })
            _write_log(out / "log.csv", history)
            _plot_curves(history, out / "curves.png")
            prog.update(ep_task, advance=1, status=f"loss {row['train_loss']:.3f} val mIoU "
                        f"{row['val_miou'] if row['val_miou'] is None else round(row['val_miou'], 4)} best {best['miou']:.4f}")
            if not prog.console.is_terminal:
                log(f"epoch {epoch}/{epochs} loss {row['train_loss']:.4f} val mIoU {row['val_miou']} "
                    f"({row['epoch_seconds']}s)")
            if budget and epoch < epochs:
                # forecast with the epoch's full cost (steps, checkpoints, log, plot) and the latest validation
                costs["train_s"] = _clock() - te - (val_s or 0.0)
                forecast = elapsed() + _epochs_cost(epoch + 1, epochs, costs["train_s"], costs["val_s"], cfg.val_every)
                if forecast > budget * (1 - TIME_BUDGET_MARGIN / 2):
                    new = plan_epochs(budget * (1 - TIME_BUDGET_MARGIN) - elapsed(), epoch + 1, epochs,
                                      costs["train_s"], costs["val_s"], cfg.val_every)
                    over = elapsed() + _epochs_cost(epoch + 1, new, costs["train_s"], costs["val_s"],
                                                    cfg.val_every) > budget
                    log(f"time budget {budget_text}: epoch {epoch} took {_s(costs['train_s'] + (val_s or 0.0))}, "
                        f"forecast {_s(forecast)} > {_s(budget * (1 - TIME_BUDGET_MARGIN / 2))} -> "
                        + (f"{new} epochs instead of {epochs} (rest of the schedule compressed)" if new < epochs
                           else f"epoch {epochs} is the last one")
                        + ("; the run may overshoot the budget by its last epoch" if over else ""))
                    if new < epochs:
                        epochs = new
                        warp.fit(step, warp(step), epochs * spe)
                        prog.update(ep_task, total=epochs)
            epoch += 1
    summary = {"best_miou": best["miou"], "best_epoch": best["epoch"], "epochs": epochs, "epochs_max": cfg.epochs,
               "epochs_planned": epochs_planned, "time_budget_s": budget,
               "epoch_estimate_s": estimate,
               "seconds": round(_clock() - t_start, 1), "elapsed_s": round(elapsed(), 1),
               "precision": choice.to_dict(), "threads": threads, "device": device, "host": host.to_dict(),
               "best": str(best_path), "last": str(last_path)}
    write_json_atomic(out / "summary.json", summary)
    return summary


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _epochs_cost(first: int, last: int, train_s: float, val_s: float, val_every: int) -> float:
    """Seconds of epochs ``first..last`` (``last`` final, so validated)."""
    n_val = sum(1 for e in range(first, last) if e % val_every == 0) + (1 if last >= first else 0)
    return (last - first + 1) * train_s + n_val * val_s


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
            w.writeheader()
            w.writerows(history)
