"""Logit offsets on finished checkpoints: val mIoU and per-class IoU before and after.

    python -m benchmarks.logit_offsets --data ../shared/datasets/camvid \\
        --checkpoint v1=runs/v1.pt --checkpoint v2=runs/v2.pt --report benchmarks/reports/logit-offsets-<class>

For each checkpoint: the trainer's own offsets stage (:mod:`unet_edge.logit_offsets`: the
training split's pixels sampled with seed 0, offsets fit for mIoU, folded into the head), then the
whole val split scored before and after with :func:`unet_edge.evaluate.evaluate`, in the
precision ``train`` validates in on this host. Nothing is written next to the checkpoints; the
report folder gets ``logit_offsets.json`` and ``logit_offsets.md``.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np

from unet_edge.artifacts import model_from_checkpoint
from unet_edge.data.layouts import load_dataset
from unet_edge.evaluate import evaluate
from unet_edge.host import probe_cpu
from unet_edge.io_utils import write_json_atomic, write_text_atomic
from unet_edge.logit_offsets import fit_offsets, fold_offsets, sample_miou, sample_pixels
from unet_edge.runtime.torch_backend import TorchBackend


def offsets_row(name: str, checkpoint: Path, data: str, precision: str = "auto") -> dict:
    """Fit, fold and score one checkpoint; mIoU and IoU are fractions 0-1, ``fit_seconds`` the wall time
    of sampling and fitting."""
    model, meta, _ = model_from_checkpoint(checkpoint)
    if meta.extra.get("logit_offsets"):
        raise SystemExit(f"{checkpoint} already holds logit offsets; give one without them")
    train_ds, val_ds = load_dataset(data, "train"), load_dataset(data, "val")
    t0 = time.perf_counter()
    before_backend = TorchBackend(model, meta, precision=precision)
    items = [train_ds[i] for i in range(len(train_ds))]
    sample = sample_pixels(before_backend.infer, items, meta)
    offsets = fit_offsets(sample)
    fit_s = time.perf_counter() - t0
    before = evaluate(before_backend.infer, val_ds, meta, progress=False)
    folded = copy.deepcopy(model)
    fold_offsets(folded, offsets)
    after = evaluate(TorchBackend(folded, meta, precision=precision).infer, val_ds, meta, progress=False)
    return {"name": name, "checkpoint": str(checkpoint), "precision": before_backend.precision_choice.precision,
            "offsets": dict(zip(meta.class_names, offsets.round(4).tolist())), "pixels": int(len(sample.labels)),
            "train_miou_before": sample_miou(sample, np.zeros_like(offsets)), "train_miou_after": sample_miou(sample, offsets),
            "val_miou_before": before["miou"], "val_miou_after": after["miou"],
            "val_iou_before": before["per_class_iou"], "val_iou_after": after["per_class_iou"],
            "fit_seconds": round(fit_s, 1)}


def markdown(rows: list[dict], host: dict) -> str:
    """The report's table: one row per checkpoint, mIoU and each class's IoU before -> after."""
    classes = list(rows[0]["val_iou_before"])
    head = ["checkpoint", "val mIoU", "change"] + classes + ["fit s"]
    lines = [f"# Logit offsets on finished checkpoints, {host.get('cpu_class')}", "",
             f"Host: {host.get('cpu_model')} ({host.get('cpu_class')}), CamVid val (all images), IoU before -> "
             "after; offsets fit on the training split's pixels (`python -m benchmarks.logit_offsets`).", "",
             "| " + " | ".join(head) + " |", "| --- | " + " | ".join(["---:"] * (len(head) - 1)) + " |"]
    for r in rows:
        cells = [r["name"], f"{r['val_miou_before']:.4f} -> **{r['val_miou_after']:.4f}**",
                 f"{100 * (r['val_miou_after'] - r['val_miou_before']):+.2f}"]
        cells += [f"{r['val_iou_before'][c]:.2f} -> {r['val_iou_after'][c]:.2f}" for c in classes]
        lines.append("| " + " | ".join(cells + [f"{r['fit_seconds']:.0f}"]) + " |")
    lines += ["", "Offsets (logits added to each class):", ""]
    for r in rows:
        lines.append(f"- {r['name']}: " + ", ".join(f"{c} {v:+.2f}" for c, v in r["offsets"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset folder with train and val splits")
    ap.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                    help="a checkpoint without offsets; repeat for several")
    ap.add_argument("--report", type=Path, required=True, help="report folder")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.checkpoint:
        name, _, path = spec.partition("=")
        rows.append(offsets_row(name, Path(path), a.data))
        print(f"{name}: val mIoU {rows[-1]['val_miou_before']:.4f} -> {rows[-1]['val_miou_after']:.4f}", flush=True)
    host = probe_cpu().to_dict()
    a.report.mkdir(parents=True, exist_ok=True)
    write_json_atomic(a.report / "logit_offsets.json", {"host": host, "rows": rows})
    write_text_atomic(a.report / "logit_offsets.md", markdown(rows, host))
    print(f"report: {a.report / 'logit_offsets.md'}")


if __name__ == "__main__":
    main()
