"""PNG charts of a benchmark report (matplotlib, Agg backend, no display needed).

* ``latency_vs_miou.png``: one point per row, x = batch-1 p50 latency (ms) with p10-p90 error
  bars, y = mIoU (or argmax agreement with the baseline when there was no dataset); colour =
  precision, marker = backend; the baseline and the best row are labelled.
* ``latency_dist.png``: box plot of every row's batch-1 latency samples (ms), whiskers at
  p1/p99, median line, mean marker.
* ``stream_stages.png``: stacked horizontal bars of the per-frame mean time (ms) of each
  streaming stage, with the end-to-end FPS.
"""
from __future__ import annotations

from pathlib import Path

from unet_edge.io_utils import atomic_path

from .records import rows_of, streams_of

PRECISION_COLORS = {"fp32": "#1f77b4", "bf16": "#9467bd", "fp16": "#2ca02c", "int8": "#d62728"}
BACKEND_MARKERS = {"pytorch": "o", "torchscript": "s", "onnxruntime": "D", "tensorrt": "^", "openvino": "v",
                   "torch.export": "P", "aotinductor": "X"}
STAGE_COLORS = {"read": "#8c564b", "preprocess": "#e377c2", "infer": "#1f77b4", "postprocess": "#ff7f0e",
                "overlay": "#2ca02c", "write": "#7f7f7f"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight", format="png")
    _plt().close(fig)
    return str(path)


def latency_vs_accuracy(result: dict, path: Path) -> str | None:
    """Scatter of p50 latency (ms, p10-p90 error bars) against mIoU (or agreement %)."""
    rows = [r for r in rows_of(result) if r.ok and r.latency_ms]
    if not rows:
        return None
    use_miou = any(r.miou is not None for r in rows)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in rows:
        y = r.miou if use_miou else r.agreement
        if y is None:
            continue
        lat = r.latency_ms
        x = lat.p50
        color = PRECISION_COLORS.get(r.precision, "k")
        tag = " (baseline)" if r.baseline else (" (best)" if r.best else "")
        ax.errorbar([x], [100 * y], xerr=[[x - lat.p10], [lat.p90 - x]], fmt=BACKEND_MARKERS.get(r.backend, "o"),
                    color=color, mfc=color if r.device == "cpu" else "white", ms=9 if tag else 7, capsize=3,
                    mec="black", mew=1.4 if tag else 0.6, label=r.label + tag, alpha=0.9)
    base = next((r for r in rows if r.baseline), None)
    if use_miou and base and base.miou is not None:
        tol = result["settings"].get("miou_tolerance", 1.0)
        ax.axhline(100 * base.miou - tol, color="grey", ls="--", lw=0.8, label=f"baseline mIoU - {tol:g} pt")
    ax.set_xlim(left=0)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="colour: precision, marker: backend\nhollow: cuda", title_fontsize=7.5)
    s = result["settings"]
    ax.set_xlabel(f"latency p50 at batch 1 (ms), bars p10-p90 — {s['threads']} threads, input "
                  f"{s['input_size'][0]}x{s['input_size'][1]}")
    ax.set_ylabel("mIoU (%)" if use_miou else "argmax agreement with baseline (%)")
    ax.set_title(f"{result['label']}: latency vs {'mIoU' if use_miou else 'agreement'} (left/up is better)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def latency_distribution(result: dict, path: Path) -> str | None:
    """Box plot of batch-1 latency samples (ms) per row."""
    rows = [r for r in rows_of(result) if r.ok and r.samples_ms]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    data = [r.samples_ms for r in rows]
    kw = dict(whis=(1, 99), showmeans=True, patch_artist=True, showfliers=True, flierprops={"markersize": 3, "alpha": 0.5})
    try:
        bp = ax.boxplot(data, orientation="horizontal", **kw)  # matplotlib >= 3.10
    except TypeError:
        bp = ax.boxplot(data, vert=False, **kw)
    for patch, r in zip(bp["boxes"], rows):
        patch.set_facecolor(PRECISION_COLORS.get(r.precision, "#cccccc"))
        patch.set_alpha(0.6)
    ax.set_yticks(range(1, len(rows) + 1), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    lo, hi = min(min(d) for d in data), max(max(d) for d in data)
    if lo > 0 and hi / lo > 20:
        ax.set_xscale("log")
    ax.set_xlabel(f"batch-1 latency (ms), {result['settings']['iters']} calls per row; box p25-p75, whiskers p1-p99, "
                  "line median, triangle mean")
    ax.set_title(f"{result['label']}: latency distribution")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def stream_stages(result: dict, path: Path) -> str | None:
    """Stacked per-stage mean ms per frame for the streaming rows."""
    rows = [s for s in streams_of(result) if s.ok]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.6))
    labels = [f"{s.label} ({s.role})\n{s.fps:.1f} FPS end to end" for s in rows]
    totals = [sum(s.stages[k]["mean_ms"] for k in STAGE_COLORS) for s in rows]
    left = [0.0] * len(rows)
    for stage, color in STAGE_COLORS.items():
        vals = [s.stages[stage]["mean_ms"] for s in rows]
        ax.barh(range(len(rows)), vals, left=left, color=color, label=stage, edgecolor="white")
        for i, v in enumerate(vals):
            if v >= 0.06 * max(1e-9, totals[i]):
                ax.text(left[i] + v / 2, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white")
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per frame in each stage (stages overlap in 3 threads)")
    ax.set_title(f"{result['label']}: where streaming time goes")
    ax.legend(ncol=6, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(rows) < 3 else -0.12))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def write_plots(result: dict, report_dir: str | Path) -> dict:
    """Write the charts that have data; returns ``{name: path}`` (``latency_vs_miou``,
    ``latency_dist``, ``stream_stages``)."""
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, fn in (("latency_vs_miou", latency_vs_accuracy), ("latency_dist", latency_distribution),
                     ("stream_stages", stream_stages)):
        p = fn(result, d / f"{name}.png")
        if p:
            out[name] = p
    return out
