"""An ablation table from training runs: one row per run folder (same budget and seed, one recipe
option changed), with the recipe options that differ from the first run, epochs, minutes, val
mIoU and per-class IoU of ``best.pt``, and the change against the first run (the baseline).

    python -m benchmarks.ablation runs/ablate/baseline runs/ablate/ema099 ... \\
        --out benchmarks/reports/ablation-x86-amx-8m --title "CamVid, --time-budget 8m"

Reads only ``summary.json`` and ``best.pt`` (weights-only load) of each folder. ``--previous
ablation.json`` keeps the rows of an earlier report with the same baseline whose folders are gone;
with ``--baseline-from-previous`` the baseline's folder may be gone too: its row and recipe
(``baseline_config``, which every report records) come from that report, and every folder given is
a new row.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from unet_edge.artifacts import load_checkpoint
from unet_edge.errors import ArtifactError
from unet_edge.io_utils import write_json_atomic, write_text_atomic
from unet_edge.train import TrainConfig

#: train_config keys that never define a recipe difference (paths, bookkeeping).
#: ``logit_offsets`` runs after the epochs; the table shows what it added in its own column.
_NOT_RECIPE = {"data", "out", "resume", "exist_ok", "progress", "threads", "device", "data_format", "logit_offsets"}


def read_run(folder: str | Path) -> dict:
    """One run: ``name`` (the folder name), ``config`` (its train_config), ``epochs``, ``minutes``,
    ``miou``, ``per_class`` {class: IoU}, ``host`` (CPU class), ``precision``, ``offsets_points``
    (val mIoU points the logit offsets folded into ``best.pt`` added; None without offsets).

    Raises:
        ArtifactError: the folder lacks ``best.pt`` or ``summary.json`` (an unfinished run).
    """
    folder = Path(folder)
    if not (folder / "summary.json").is_file() or not (folder / "best.pt").is_file():
        raise ArtifactError(f"{folder}: no summary.json/best.pt; is the run finished?")
    summary = json.loads((folder / "summary.json").read_text())
    meta = load_checkpoint(folder / "best.pt")["meta"]
    m = meta["extra"]["val_metrics"]
    off = meta["extra"].get("logit_offsets")
    return {"name": folder.name, "config": meta["extra"]["train_config"], "epochs": summary["epochs"],
            "best_epoch": summary["best_epoch"], "minutes": round(summary["elapsed_s"] / 60, 1),
            "miou": m["miou"], "per_class": {c: float(_class_iou(m["per_class_iou"], meta["class_names"], i))
                                        for i, c in enumerate(meta["class_names"])},
            "host": summary["host"].get("cpu_class"), "precision": summary["precision"].get("precision"),
            "offsets_points": None if not off else round(100 * (off["val_miou_after"] - off["val_miou_before"]), 2)}


def _class_iou(per_class, names: list[str], i: int) -> float:
    """IoU of class ``i`` from ``per_class``: a {name: IoU} dict (the trainer's) or a list by class id."""
    v = per_class.get(names[i]) if isinstance(per_class, dict) else per_class[i]
    return float("nan") if v is None else float(v)


#: the trainer's defaults: a run trained before an option existed ran with its default
_DEFAULTS = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(TrainConfig)
                                    if f.default is not dataclasses.MISSING}))  # as train_config stores them


def _diff(cfg: dict, base: dict) -> str:
    def get(c: dict, k: str):
        return c.get(k, _DEFAULTS.get(k))

    keys = sorted(k for k in set(cfg) | set(base) if k not in _NOT_RECIPE and get(cfg, k) != get(base, k))
    return ", ".join(f"{k}={get(cfg, k)}" for k in keys) or "(baseline)"


def table(runs: list[dict], previous: list[dict] | None = None) -> tuple[list[dict], str]:
    """Rows (dicts) and a Markdown table; the first run is the baseline of the deltas (points).
    ``previous``: an earlier report's rows, merged in by :func:`merge_previous` (which raises
    ``ArtifactError`` on another baseline)."""
    base = runs[0]
    rows = [_row(r, base) for r in runs]
    if previous:
        rows = merge_previous(rows, previous)
    return rows, _markdown(rows)


def _row(r: dict, base: dict) -> dict:
    """The table row of run ``r`` (:func:`read_run`) against ``base`` (needs its ``config`` and ``miou``)."""
    return {"run": r["name"], "changed": _diff(r["config"], base["config"]), "epochs": r["epochs"],
            "minutes": r["minutes"], "miou": round(r["miou"], 4),
            "delta_points": round(100 * (r["miou"] - base["miou"]), 2),
            "per_class_iou": {c: round(v, 4) for c, v in r["per_class"].items()},
            "offsets_points": r.get("offsets_points")}


def table_on_previous(runs: list[dict], earlier: dict) -> tuple[list[dict], str]:
    """Rows and a Markdown table of an earlier report (its ``ablation.json``) with ``runs`` appended
    as new rows against its baseline, whose folder may be gone: the baseline's recipe is the
    report's ``baseline_config``. A run already in the report replaces its row.

    Raises:
        ArtifactError: the report records no ``baseline_config`` (written before reports kept it),
        so what a run changed cannot be named.
    """
    if "baseline_config" not in earlier:
        raise ArtifactError("the earlier report records no baseline_config; pass the baseline's run folder first "
                            "instead of --baseline-from-previous")
    old = earlier["rows"]
    base = {"config": earlier["baseline_config"], "miou": old[0]["miou"]}
    rows = merge_previous([old[0]] + [_row(r, base) for r in runs], old)
    return rows, _markdown(rows)


def merge_previous(rows: list[dict], previous: list[dict]) -> list[dict]:
    """This table's ``rows`` (:func:`table`; the first is the baseline) with the rows of an earlier
    report (its ``ablation.json`` ``rows``) whose run folders are gone: those of ``previous`` not
    named in ``rows`` follow the baseline, in their order, values as reported then.

    Raises:
        ArtifactError: ``previous`` has another baseline (first row: other name or val mIoU), so its
        deltas would not compare with these.
    """
    base, old = rows[0], previous[0]
    if (old["run"], old["miou"]) != (base["run"], base["miou"]):
        raise ArtifactError(f"the earlier report's baseline is {old['run']} ({old['miou']}), this table's "
                            f"{base['run']} ({base['miou']}); pass the same baseline run first")
    names = {r["run"] for r in rows}
    return [base] + [r for r in previous[1:] if r["run"] not in names] + rows[1:]


def _markdown(rows: list[dict]) -> str:
    """The Markdown table of ``rows`` (:func:`table`'s or :func:`merge_previous`'s dicts)."""
    classes = list(rows[0]["per_class_iou"])
    head = ["run", "changed", "epochs", "min", "val mIoU", "vs base", "offsets"] + classes
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |"]
    for i, r in enumerate(rows):
        off = r.get("offsets_points")
        cells = [r["run"], r["changed"], str(r["epochs"]), f"{r['minutes']}", f"{r['miou']:.4f}",
                 "" if i == 0 else f"{r['delta_points']:+.2f}", "-" if off is None else f"{off:+.2f}"]
        lines.append("| " + " | ".join(cells + [f"{r['per_class_iou'][c]:.2f}" for c in classes]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders; the first is the baseline")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="Ablation")
    p.add_argument("--notes", default="", help="text (Markdown) placed under the table")
    p.add_argument("--previous", default=None,
                   help="an earlier ablation.json with the same baseline: keep its rows whose run folders are gone")
    p.add_argument("--baseline-from-previous", action="store_true",
                   help="the baseline's folder is gone: take its row and recipe from --previous; every run given is new")
    a = p.parse_args(argv)
    runs = [read_run(f) for f in a.runs]
    earlier = json.loads(Path(a.previous).read_text()) if a.previous else {}
    if a.baseline_from_previous:
        if not earlier:
            p.error("--baseline-from-previous needs --previous")
        rows, md = table_on_previous(runs, earlier)
        baseline_config = earlier["baseline_config"]
    else:
        rows, md = table(runs, earlier.get("rows"))
        baseline_config = runs[0]["config"]
    hosts = sorted({r["host"] for r in runs} | set(earlier.get("hosts", [])))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "ablation.json", {"title": a.title, "hosts": hosts, "rows": rows,
                                              "baseline_config": baseline_config})
    text = f"# {a.title}\n\nHost class: {', '.join(hosts)}; val mIoU and per-class IoU of each run's best.pt " \
           f"(CamVid val, 101 images); `vs base` in points.\n\n{md}\n" + (f"\n{a.notes}\n" if a.notes else "")
    write_text_atomic(out / "ablation.md", text)
    print(text)


if __name__ == "__main__":
    main()
