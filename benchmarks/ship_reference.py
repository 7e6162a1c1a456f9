"""Ship a finished CamVid training run as the package's reference model (maintainers' tool).

    python -m benchmarks.ship_reference --run runs/r60/x --export runs/r60/x_export \\
        --data ../shared/datasets/camvid --notes "60-minute budget, alone on the host"

Writes, each file atomically:

- ``unet_edge/models/<name>.pt`` (the run's ``best.pt``: weights, epoch and model metadata),
  ``<name>.log.csv`` (the run's log) and ``<name>.json`` (the card: val mIoU and per-class IoU,
  recipe, host, the export's scores per artifact, licence);
- ``benchmarks/reports/reference-<name>/``: ``log.csv``, ``curves.png``, ``export_report.json``
  and ``overlay.png`` (the checkpoint run through the runtime on frame ``--frame`` of the val
  sequence ``--sequence``, with ``run``'s class colours and legend).

It prints the new SHA-256: paste it into :data:`unet_edge.zoo.REFERENCE_MODELS`, which refuses a
file that does not match (so a stale pin fails ``tests/test_zoo.py`` instead of shipping silently).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
from pathlib import Path

import cv2
import numpy as np

from unet_edge.formats import EXPORT_REPORT
from unet_edge.io_utils import atomic_path, sha256, write_json_atomic
from unet_edge.metadata import ModelMeta
from unet_edge.preprocess import labels_from_logits, preprocess
from unet_edge.runtime.loader import load_backend
from unet_edge.runtime.overlay import draw_overlay
from unet_edge.zoo import CAMVID_LICENCE, MODELS_DIR

REPORTS = Path(__file__).resolve().parent / "reports"
CAMVID_SPLIT = "CamVid (SegNet 11-class split: 367 train, 101 val, 360x480)"
RECIPE_KEYS = ("batch_size", "crop", "lr", "weight_decay", "schedule", "warmup_epochs", "class_weights", "scale",
               "rare_crop", "ema", "ohem", "dice_weight", "lovasz_weight", "low_res", "low_res_mode", "seed",
               "channels_last", "compile")


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def portable_command(command: str | None, root: Path) -> str | None:
    """``command`` (a training run's ``train_command``) with each absolute path under ``root`` (as a
    word or after ``--opt=``) made relative to ``root``, so a card does not name the machine it was
    shipped from; other words unchanged. None stays None."""
    if command is None:
        return None
    root = root.resolve()

    def rel(word: str) -> str:
        opt, eq, value = word.partition("=") if word.startswith("--") else ("", "", word)
        p = Path(value)
        if p.is_absolute() and p.resolve().is_relative_to(root):
            value = p.resolve().relative_to(root).as_posix()
        return f"{opt}{eq}{value}"

    return shlex.join(rel(w) for w in shlex.split(command))


def build_card(name: str, run: Path, export_report: dict | None, notes: str) -> dict:
    """The card of ``run``'s ``best.pt``: from its metadata, ``summary.json`` and the export report
    (mIoU per artifact, fractions 0-1). Raises FileNotFoundError when the run lacks a file."""
    import torch

    ck = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    meta = ck["meta"]
    extra = meta.get("extra", {})
    summary = json.loads((run / "summary.json").read_text())
    m = extra["val_metrics"]
    recipe = extra.get("train_config", {})
    return {
        "name": name, "file": f"{name}.pt", "sha256": None, "dataset": CAMVID_SPLIT,
        "val_miou": m["miou"], "val_per_class_iou": m["per_class_iou"], "val_pixel_accuracy": m.get("pixel_accuracy"),
        "best_epoch": ck["epoch"], "epochs": summary["epochs"], "epochs_planned": summary["epochs_planned"],
        "time_budget_s": summary["time_budget_s"], "elapsed_s": summary["elapsed_s"],
        "precision": summary["precision"], "threads": summary["threads"],
        "host_cpu_class": summary["host"].get("cpu_class"), "host_cpu_model": summary["host"].get("cpu_model"),
        "train_command": portable_command(meta.get("train_command"), Path.cwd()), "preset": recipe.get("preset"),
        "export_eval": {k: v["miou"] for k, v in ((export_report or {}).get("eval") or {}).items()},
        "licence": CAMVID_LICENCE, "notes": notes,
        "recipe": {k: recipe[k] for k in RECIPE_KEYS if k in recipe},
        "logit_offsets": extra.get("logit_offsets"),
    }


def render_overlay(checkpoint: Path, frame: Path, out: Path) -> None:
    """Run ``checkpoint`` on the image file ``frame`` and write its overlay (uint8 BGR PNG at the
    frame's size) to ``out``. The model keeps no state between frames, so one frame is enough."""
    with load_backend(checkpoint) as backend:
        meta: ModelMeta = backend.meta
        img = cv2.imread(str(frame), cv2.IMREAD_COLOR)
        logits = backend.infer(preprocess(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), meta)[None])
        labels = labels_from_logits(logits)[0].astype(np.uint8)
        vis = draw_overlay(img, labels, meta, hud={"": f"{checkpoint.stem} (FP32), CamVid val {frame.stem}"})
    with atomic_path(out) as tmp:  # keeps the .png suffix cv2 needs
        cv2.imwrite(str(tmp), vis)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="training run folder (best.pt, summary.json, log.csv)")
    ap.add_argument("--export", type=Path, help="export folder of best.pt (export_report.json)")
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/camvid"))
    ap.add_argument("--name", default="camvid-edge")
    ap.add_argument("--sequence", default="0016E5", help="val sequence prefix for the overlay")
    ap.add_argument("--frame", type=int, default=61, help="1-based frame of the sequence for the overlay")
    ap.add_argument("--notes", default="")
    a = ap.parse_args(argv)
    report = json.loads((a.export / EXPORT_REPORT).read_text()) if a.export else None
    card = build_card(a.name, a.run, report, a.notes)
    models = MODELS_DIR  # read at call time (tests point it elsewhere)
    _copy_atomic(a.run / "best.pt", models / f"{a.name}.pt")
    _copy_atomic(a.run / "log.csv", models / f"{a.name}.log.csv")
    card["sha256"] = sha256(models / f"{a.name}.pt")
    write_json_atomic(models / f"{a.name}.json", card)
    folder = REPORTS / f"reference-{a.name}"
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("log.csv", "curves.png"):
        _copy_atomic(a.run / f, folder / f)
    if a.export:
        _copy_atomic(a.export / EXPORT_REPORT, folder / EXPORT_REPORT)
    frames = sorted((a.data / "val").glob(f"{a.sequence}_*.png"))[: a.frame]
    if frames:
        render_overlay(models / f"{a.name}.pt", frames[-1], folder / "overlay.png")
    print(json.dumps({"sha256": card["sha256"], "val_miou": card["val_miou"], "best_epoch": card["best_epoch"],
                      "epochs": card["epochs"], "overlay_frame": frames[-1].name if frames else None}, indent=1))


if __name__ == "__main__":
    main()
