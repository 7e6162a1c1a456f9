"""Training loop: cross-entropy (+ optional Dice) with ignore index, AdamW, warmup+cosine or
one-cycle schedule, bf16 autocast on CPU / AMP on CUDA, per-epoch validation, atomic best/last
checkpoints, ``--resume``, CSV log and training-curve PNG."""
from __future__ import annotations

import csv
import math
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .artifacts import load_checkpoint
from .data.augment import train_transform
from .data.layouts import SegDataset, load_dataset
from .errors import ArtifactError, DataError
from .evaluate import evaluate
from .io_utils import atomic_path, write_json_atomic
from .metadata import ModelMeta
from .model import UNet, config_from_preset, count_parameters
from .preprocess import normalize, preprocess
from .progress import make_progress
from .runtime.torch_backend import TorchBackend, resolve_device


@dataclass
class TrainConfig:
    """Options of :func:`train` (the CLI's ``train`` flags).

    ``crop`` and ``input_size`` are (H, W) pixels; ``input_size`` None means the size of the first
    training image. ``lr`` is the peak learning rate. ``limit`` caps the images per split (quick runs).
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
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    limit: int | None = None
    val_every: int = 1
    resume: bool = False
    progress: bool = True
    command: str = field(default_factory=lambda: " ".join(shlex.quote(a) for a in sys.argv))


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


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warm = max(1, int(cfg.warmup_epochs * steps_per_epoch))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return f


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
    and ``meta.json`` under ``cfg.out``.

    Returns:
        summary dict: ``best_miou``, ``best_epoch``, ``epochs``, ``seconds``, ``checkpoint`` paths.

    Raises:
        DataError: dataset problems. ArtifactError: ``resume`` with a missing/incompatible ``last.pt``.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)

    train_ds = load_dataset(cfg.data, "train", cfg.data_format)
    val_ds = load_dataset(cfg.data, "val", cfg.data_format)
    info = train_ds.info
    train_items = _load_split(train_ds, cfg.limit)
    input_size = tuple(cfg.input_size) if cfg.input_size else train_items[0][0].shape[:2]
    crop = (min(cfg.crop[0], input_size[0] * 2), min(cfg.crop[1], input_size[1] * 2))

    arch = config_from_preset(cfg.preset, info.num_logits, cfg.dropout)
    meta = ModelMeta(
        arch=arch.to_dict(), class_names=list(info.class_names), palette=[list(c) for c in info.palette],
        ignore_index=info.ignore_index, input_size=input_size,
        dataset={"name": info.name, "format": info.format, "path": str(Path(cfg.data).resolve()),
                 "mask_kind": info.mask_kind},
        train_command=cfg.command, extra={"train_config": {k: v for k, v in asdict(cfg).items() if k != "command"}},
    )
    model = UNet(arch).to(device)
    weight = None
    if cfg.class_weights == "enet" and not info.binary:
        weight = torch.from_numpy(enet_class_weights([m for _, m in train_items], info.num_logits)).to(device)
    elif cfg.class_weights not in ("enet", "none"):
        raise DataError(f"unknown --class-weights {cfg.class_weights!r}; use enet or none")

    loader = torch.utils.data.DataLoader(
        _AugmentedSplit(train_items, train_transform(crop, info.ignore_index), meta),
        batch_size=cfg.batch_size, shuffle=True, drop_last=len(train_items) > cfg.batch_size, num_workers=0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * len(loader))
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, len(loader)))
    else:
        raise DataError(f"unknown --schedule {cfg.schedule!r}; use cosine or onecycle")
    amp_dtype = torch.bfloat16 if device == "cpu" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.startswith("cuda"))

    start_epoch, best, history = 1, {"miou": -1.0, "epoch": 0}, []
    last_path, best_path = out / "last.pt", out / "best.pt"
    if cfg.resume:
        if not last_path.is_file():
            raise ArtifactError(f"--resume: no {last_path} to resume from; drop --resume to start fresh")
        ck = load_checkpoint(last_path)
        if ck["meta"]["arch"] != meta.arch:
            raise ArtifactError(f"--resume: {last_path} has architecture {ck['meta']['arch']}, not {meta.arch}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck.get("scaler", {})) if ck.get("scaler") else None
        start_epoch, best, history = ck["epoch"] + 1, ck["best"], ck["history"]
        torch.set_rng_state(ck["torch_rng"])
        np.random.set_state(ck["numpy_rng"])
        random.setstate(ck["python_rng"])
        log(f"resumed from {last_path} at epoch {ck['epoch']} (best mIoU {best['miou']:.4f})")

    log(f"training {cfg.preset} U-Net ({count_parameters(model) / 1e6:.2f} M params) on {info.name} "
        f"[{len(train_items)} train / {len(val_ds) if cfg.limit is None else min(cfg.limit, len(val_ds))} val], "
        f"input {input_size[0]}x{input_size[1]}, crop {crop[0]}x{crop[1]}, {device}, "
        f"{'bf16 autocast' if device == 'cpu' and cfg.amp else 'AMP fp16' if cfg.amp else 'fp32'}")
    t0 = time.time()
    with make_progress() as prog:
        ep_task = prog.add_task("epochs", total=cfg.epochs, completed=start_epoch - 1, status="")
        for epoch in range(start_epoch, cfg.epochs + 1):
            model.train()
            it_task = prog.add_task(f"epoch {epoch}", total=len(loader), status="")
            losses, te = [], time.time()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                with torch.autocast(device.split(":")[0], dtype=amp_dtype, enabled=cfg.amp):
                    logits = model(x)
                loss = segmentation_loss(logits, y, info.ignore_index, weight, cfg.dice_weight)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                losses.append(loss.item())
                prog.update(it_task, advance=1, status=f"loss {np.mean(losses[-20:]):.3f}")
            prog.remove_task(it_task)
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                   "epoch_seconds": round(time.time() - te, 1), "val_miou": None, "val_pixel_accuracy": None,
                   "val_dice": None}
            if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
                precision = ("bf16" if device == "cpu" else "fp16") if cfg.amp else "fp32"
                backend = TorchBackend(model, meta, device=device, precision=precision)
                m = evaluate(backend.infer, val_ds, meta, batch_size=4, limit=cfg.limit, progress=False)
                row.update(val_miou=m["miou"], val_pixel_accuracy=m["pixel_accuracy"], val_dice=m["dice"])
                if m["miou"] > best["miou"]:
                    best = {"miou": m["miou"], "epoch": epoch, "metrics": m}
                    _save(best_path, {"model": model.state_dict(), "meta": meta.with_(extra={"val_metrics": m, "epoch": epoch}).to_dict(), "epoch": epoch})
            history.append(row)
            _save(last_path, {
                "model": model.state_dict(), "meta": meta.to_dict(), "epoch": epoch, "best": best, "history": history,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
            })
            _write_log(out / "log.csv", history)
            _plot_curves(history, out / "curves.png")
            prog.update(ep_task, advance=1, status=f"loss {row['train_loss']:.3f} val mIoU "
                        f"{row['val_miou'] if row['val_miou'] is None else round(row['val_miou'], 4)} best {best['miou']:.4f}")
            if not prog.console.is_terminal:
                log(f"epoch {epoch}/{cfg.epochs} loss {row['train_loss']:.4f} val mIoU {row['val_miou']} "
                    f"({row['epoch_seconds']}s)")
    summary = {"best_miou": best["miou"], "best_epoch": best["epoch"], "epochs": cfg.epochs,
               "seconds": round(time.time() - t0, 1), "best": str(best_path), "last": str(last_path)}
    write_json_atomic(out / "summary.json", summary)
    return summary


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0].keys()))
            w.writeheader()
            w.writerows(history)
