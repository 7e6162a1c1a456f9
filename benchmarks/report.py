"""Report writers: Markdown (``bench.md``), JSON (``bench.json``), CSV (``bench.csv`` one line per
row, ``bench_stream.csv`` one line per streaming row) and the rich console table.

Units everywhere: latency in ms, throughput in FPS (images per second), sizes and memory in MB
(1e6 bytes), mIoU and agreement as fractions in JSON/CSV and as percent / points in Markdown.
Every file is written atomically (``unet_edge.io_utils``).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from unet_edge.io_utils import write_json_atomic, write_text_atomic

from .hostinfo import cpu_class_of, host_summary
from .records import MemoryProbe, Row, StreamRow, Timing, rows_of, streams_of

STAGES = ("read", "preprocess", "infer", "postprocess", "overlay", "write")
FILE_NAMES = {"markdown": "bench.md", "json": "bench.json", "csv": "bench.csv", "stream_csv": "bench_stream.csv"}

#: Column glossary, shared by the Markdown report and benchmarks/README.md.
COLUMNS = {
    "p50 / p90 / p99 ms": "latency percentiles of one batch-1 inference call (ms), after warmup; the median (p50) "
                          "is the number to quote, p90/p99 show the tail",
    "mean ± std ms": "mean and standard deviation of the same calls (ms)",
    "FPS@1": "images per second at batch 1, 1000 / p50",
    "FPS@B": "images per second at the larger batch B, 1000 * B / p50 of a batch-B call",
    "Speedup": "baseline p50 / row p50 at batch 1 (the baseline is 1.00x; >1 is faster)",
    "mIoU": "mean intersection-over-union over the classes on the evaluated split, void pixels excluded",
    "ΔmIoU pt": "row mIoU - baseline mIoU, in points (1 point = 0.01 mIoU)",
    "Agree %": "pixels whose predicted class equals the baseline's, over all evaluated images at the model input size",
    "Peak MB": "peak resident memory (RSS) above the process before loading, while loading and running batch 1, "
               "measured in a separate pass; GPU rows add device memory",
    "Size MB": "artifact file size on disk",
}


def planned_files(report_dir: str | Path) -> dict:
    """Paths of the text reports in ``report_dir`` (keys of :data:`FILE_NAMES`)."""
    d = Path(report_dir)
    return {k: str(d / v) for k, v in FILE_NAMES.items()}


# ----------------------------------------------------------------------------------------- helpers


def fmt(v, nd: int = 2, suffix: str = "") -> str:
    """Number -> fixed decimals (``-`` for None)."""
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:  # NaN
        return "-"
    return f"{v:.{nd}f}{suffix}"


def pct(v, nd: int = 2) -> str:
    """Fraction -> percent string (``-`` for None)."""
    return "-" if v is None else f"{100 * v:.{nd}f}"


def pts(v, nd: int = 2) -> str:
    """mIoU difference (fraction) -> signed points."""
    return "-" if v is None else f"{100 * v:+.{nd}f}"


def peak_mb(row: Row) -> float | None:
    """The Peak MB column: RSS peak at batch 1 (+ GPU peak on CUDA rows)."""
    return row.memory.peak_b1_mb if row.memory else None


def row_notes(row: Row) -> str:
    """Notes column: baseline/best marks, skip/failure reason and the row's notes."""
    parts = []
    if row.baseline:
        parts.append("BASELINE")
    if row.best:
        parts.append("BEST")
    if not row.ok:
        parts.append(f"{row.status}: {row.reason}")
    parts += row.notes
    if row.memory and row.memory.error:
        parts.append(f"memory: {row.memory.error}")
    return "; ".join(parts)


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- markdown


def _headline(result: dict, rows: list[Row]) -> list[str]:
    by_id = {r.id: r for r in rows}
    out = []
    base = by_id.get(result.get("baseline"))
    best = by_id.get(result.get("best"))
    if base:
        acc = f", mIoU {fmt(base.miou, 4)}" if base.miou is not None else ""
        out.append(f"- **Baseline**: {base.label}: p50 {fmt(base.latency_ms.p50)} ms ({fmt(base.fps_b1, 1)} FPS){acc}")
    if best:
        acc = (f", mIoU {fmt(best.miou, 4)} ({pts(best.delta_miou)} pt)" if best.miou is not None
               else f", agreement {pct(best.agreement)} %")
        tol = result["settings"].get("miou_tolerance", 1.0)
        h = result.get("host") or {}
        fam = f"{h['int8_family']} int8 kernels; " if h.get("int8_family") else ""
        out.append(f"- **Best on this {cpu_class_of(h) or 'unknown-class'} host** ({fam}fastest p50 with mIoU within "
                   f"{tol:g} pt of the baseline): {best.label}: p50 {fmt(best.latency_ms.p50)} ms, "
                   f"**{fmt(best.speedup)}x** the baseline{acc}")
    return out


def _main_rows(rows: list[Row]) -> list[list]:
    out = []
    for r in rows:
        if not r.ok:
            continue
        lat = r.latency_ms
        name = r.label + (" ★" if r.best else "")
        out.append([
            f"**{name}**" if r.baseline or r.best else name, fmt(lat.p50), fmt(lat.p90),
            fmt(lat.p99), f"{fmt(lat.mean)} ± {fmt(lat.std)}", fmt(r.fps_b1, 1),
            fmt(r.fps_batch, 1), fmt(r.speedup, 2, "x"), fmt(r.miou, 4), pts(r.delta_miou),
            pct(r.agreement), fmt(peak_mb(r), 1), fmt(r.size_mb, 2), row_notes(r),
        ])
    return out


def main_header(batch: int) -> list[str]:
    """Header of the results table (``batch``: the larger batch, for the FPS@B column)."""
    return ["Backend / precision (device)", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "FPS@1",
            f"FPS@{batch}", "Speedup", "mIoU", "ΔmIoU pt", "Agree %", "Peak MB", "Size MB", "Notes"]


def _commit(h: dict) -> str:
    git = h.get("git") or {}
    return (git.get("commit") or "")[:10] + ("+dirty" if git.get("dirty") else "") if git.get("commit") else "n/a"


def _md_title(result: dict) -> list[str]:
    s, h, m = result["settings"], result["host"], result["model"]
    arch = m.get("arch") or {}
    model_line = (f"Model: U-Net base {arch.get('base_channels')} ch, depth {arch.get('depth')}, {m['num_classes']} classes"
                  + (f", {m['params'] / 1e6:.2f} M params" if m.get("params") else "")
                  + (f", {m['gmacs']:.2f} GMACs/image" if m.get("gmacs") else "")
                  + f"; input {s['input_size'][0]}x{s['input_size'][1]}")
    return [f"# unet-edge benchmark: {result['label']}", "", model_line + "  ", f"Host: {host_summary(h)}  ",
            f"Date: {h.get('date')}, commit {_commit(h)}", ""]


def _md_results(result: dict, rows: list[Row]) -> list[str]:
    s = result["settings"]
    L = ["## Results (batch 1 latency, larger-batch throughput, accuracy)", ""]
    L += [_md_table(main_header(s.get("batch", 8)), _main_rows(rows), "l" + "r" * 12 + "l"), ""]
    eval_desc = (f"mIoU on {s.get('eval_images')} images of the `{s.get('eval_split')}` split" if s.get("eval_split")
                 else "no dataset: no mIoU")
    rounds = s.get("rounds", 1)
    interleave = f", in {rounds} rounds interleaved across rows" if rounds > 1 else ""
    L += [f"{s['iters']} timed calls per row after {s['warmup']} warmup calls{interleave}; threads: {s['threads']}; inputs: "
          f"{s['inputs']}. FPS@{s['batch']}: {s['batch_iters']} calls of batch {s['batch']}. {eval_desc}. "
          f"Timer: {', '.join(s.get('timers') or ['-'])}.", ""]
    skipped = [r for r in rows if not r.ok]
    if skipped:
        L += ["### Not run on this host", ""]
        L += [_md_table(["Backend / precision (device)", "Status", "Reason"],
                        [[r.label, r.status, r.reason] for r in skipped], "lll"), ""]
    return L


def _md_per_class(rows: list[Row]) -> list[str]:
    ok = [r for r in rows if r.ok and r.per_class_iou]
    if not ok:
        return []
    classes = list(ok[0].per_class_iou)
    body = [[c] + [fmt(r.per_class_iou.get(c), 4) for r in ok] for c in classes]
    body.append(["**mIoU**"] + [f"**{fmt(r.miou, 4)}**" for r in ok])
    return ["## Per-class IoU", "", _md_table(["Class"] + [r.label for r in ok], body), ""]


def _md_streaming(result: dict) -> list[str]:
    streams = streams_of(result)
    if not streams:
        return []
    body = []
    for st in streams:
        if not st.ok:
            body.append([st.label, st.role, "failed", "-"] + ["-"] * len(STAGES) + ["-"])
            continue
        body.append([st.label, st.role, fmt(st.fps, 1), fmt(st.infer_fps, 1)]
                    + [fmt(st.stages[k]["mean_ms"]) for k in STAGES] + [st.frames])
    return ["## End-to-end streaming (read → preprocess → infer → postprocess → overlay → write)", "",
            _md_table(["Backend", "Role", "FPS end-to-end", "FPS infer only"] + [f"{k} ms" for k in STAGES] + ["frames"],
                      body, "ll" + "r" * (len(STAGES) + 3)), "",
            f"Video: {result['settings'].get('stream_video')}. Stages are per-frame means (ms). Three threads overlap "
            "the stages (reader: read + preprocess; main: infer + postprocess; writer: overlay + write), so end-to-end "
            "FPS is bounded by the slowest thread, not by the sum of the stages.", ""]


def _md_charts(result: dict) -> list[str]:
    charts = [(k, v) for k, v in result.get("files", {}).items() if str(v).endswith(".png")]
    if not charts:
        return []
    titles = {"latency_vs_miou": "Latency vs accuracy", "latency_dist": "Latency distribution",
              "stream_stages": "Where streaming time goes"}
    L = ["## Charts", ""]
    for k, v in charts:
        L += [f"![{titles.get(k, k)}]({Path(v).name})", ""]
    return L


def _md_memory(result: dict, rows: list[Row]) -> list[str]:
    body = []
    for r in rows:
        if not r.ok:
            continue
        mm = r.memory or MemoryProbe()
        body.append([r.label, fmt(mm.rss_load_mb, 1), fmt(mm.rss_peak_b1_mb, 1), fmt(mm.rss_peak_batch_mb, 1),
                     fmt(mm.gpu_peak_mb, 1), (mm.mode or "off") + (f" ({mm.error})" if mm.error else "")])
    header = ["Backend", "RSS after load", "peak RSS batch 1", f"peak RSS batch {result['settings']['batch']}",
              "GPU peak", "how"]
    return ["## Memory (separate pass, MB above the process before loading)", "", _md_table(header, body, "lrrrrl"), ""]


def _host_rows(result: dict) -> list[list]:
    h = result["host"]
    cpu, gpu, git = h.get("cpu", {}), h.get("gpu"), h.get("git") or {}
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in (cpu.get("flags") or {}).items())
    cls_extra = (f" (int8 kernels {h['int8_family']}, {'native bf16' if h.get('native_bf16') else 'bf16 emulated'})"
                 if h.get("int8_family") else "")
    torch_info = h.get("torch") or {}
    return [
        ["CPU", f"{cpu.get('model')} ({cpu.get('cores_physical')} physical / {cpu.get('cores_logical')} logical cores, "
                f"{cpu.get('affinity')} usable; governor {cpu.get('governor') or 'n/a'})"],
        ["CPU class", (cpu_class_of(h) or "unknown") + cls_extra],
        ["CPU flags", flags or "-"],
        ["PyTorch CPU kernels", f"{torch_info.get('cpu_capability')}, oneDNN {torch_info.get('mkldnn')}"],
        ["Memory", f"{h.get('memory_gb')} GB"],
        ["GPU", (f"{gpu['name']} (sm {gpu['capability']}, {gpu['memory_gb']} GB, driver {gpu.get('driver')}, CUDA "
                 f"{gpu.get('cuda_runtime')}, cuDNN {gpu.get('cudnn')}" + (f", {gpu['l4t']}" if gpu.get("l4t") else "") + ")")
                if gpu else "none"],
        ["OS", h.get("os")],
        ["Versions", ", ".join(f"{k} {val}" for k, val in h.get("versions", {}).items() if val)],
        ["ONNX Runtime providers", ", ".join(h.get("onnxruntime_providers") or [])],
        ["Load average (1/5/15 min)", f"start {h.get('load_avg')}, end {result.get('load_avg_end')}"],
        ["Git commit", (git.get("commit") or "n/a") + (" (uncommitted changes)" if git.get("dirty") else "")],
        ["Date", h.get("date")],
    ]


#: Settings listed in the Markdown report, in this order.
MD_SETTINGS = ("threads", "threads_requested", "emulated", "iters", "rounds", "warmup", "batch", "batch_iters",
               "batch_warmup", "pool", "eval_batch", "limit", "device", "memory", "miou_tolerance", "data", "split",
               "video", "stream_frames")


def _md_host_settings_notes(result: dict) -> list[str]:
    s = result["settings"]
    L = ["## Host", "", _md_table(["", ""], _host_rows(result), "ll"), ""]
    L += ["## Settings", "", _md_table(["setting", "value"], [[k, s.get(k)] for k in MD_SETTINGS], "ll"), ""]
    if s.get("command"):
        L += ["Command:", "", "```", s["command"], "```", ""]
    if result.get("notes"):
        L += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return L + ["## Columns", ""] + [f"- **{k}**: {v}" for k, v in COLUMNS.items()] + [""]


def to_markdown(result: dict) -> str:
    """The Markdown report of a report dict (``bench.json``): headline, results, rows not run,
    per-class IoU, streaming, charts, memory, host, settings, notes and the column glossary."""
    rows = rows_of(result)
    L = _md_title(result) + _headline(result, rows) + [""]
    L += _md_results(result, rows) + _md_per_class(rows) + _md_streaming(result) + _md_charts(result)
    L += _md_memory(result, rows) + _md_host_settings_notes(result)
    return "\n".join(L)


# ------------------------------------------------------------------------------------------- csv


CSV_FIELDS = ["id", "label", "backend", "precision", "device", "variant", "status", "reason", "baseline", "best",
              "artifact", "size_mb", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "n",
              "batch", "batch_p50_ms", "batch_p90_ms", "fps_b1", "fps_batch", "speedup", "speedup_batch", "miou",
              "delta_miou", "pixel_accuracy", "agreement", "rss_load_mb", "rss_peak_b1_mb", "rss_peak_batch_mb",
              "gpu_peak_mb", "notes"]


def _stat(t: Timing | None, key: str):
    return getattr(t, key) if t is not None else None


def _csv_values(r: Row) -> dict:
    lat, bl, mem = r.latency_ms, r.batch_latency_ms, r.memory or MemoryProbe()
    return {**{k: getattr(r, k, None) for k in CSV_FIELDS},
            **{f"{k}_ms": _stat(lat, k) for k in ("p50", "p90", "p99", "mean", "std", "min", "max")},
            "n": _stat(lat, "n"), "batch_p50_ms": _stat(bl, "p50"), "batch_p90_ms": _stat(bl, "p90"),
            "rss_load_mb": mem.rss_load_mb, "rss_peak_b1_mb": mem.rss_peak_b1_mb,
            "rss_peak_batch_mb": mem.rss_peak_batch_mb, "gpu_peak_mb": mem.gpu_peak_mb, "notes": "; ".join(r.notes)}


def to_csv(result: dict) -> str:
    """One line per row (:data:`CSV_FIELDS` then ``iou_<class>`` columns)."""
    classes = list(result["model"].get("classes") or [])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS + [f"iou_{c}" for c in classes])
    for r in rows_of(result):
        vals = _csv_values(r)
        pc = r.per_class_iou or {}
        w.writerow([_csv_val(vals[k]) for k in CSV_FIELDS] + [_csv_val(pc.get(c)) for c in classes])
    return buf.getvalue()


def stream_csv(result: dict) -> str:
    """One line per streaming row: FPS and per-stage mean / p50 ms."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "label", "role", "status", "frames", "wall_s", "fps", "infer_fps"]
               + [f"{s}_{q}_ms" for s in STAGES for q in ("mean", "p50")])
    for st in streams_of(result):
        w.writerow([st.id, st.label, st.role, st.status, st.frames, st.stats.get("wall_s"),
                    _csv_val(st.fps), _csv_val(st.infer_fps)]
                   + [_csv_val((st.stages.get(s) or {}).get(f"{q}_ms")) for s in STAGES for q in ("mean", "p50")])
    return buf.getvalue()


def _csv_val(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_reports(result: dict, report_dir: str | Path) -> dict:
    """Write bench.json, bench.md, bench.csv, bench_stream.csv into ``report_dir``; returns their paths."""
    files = planned_files(report_dir)
    write_json_atomic(files["json"], result)
    write_text_atomic(files["markdown"], to_markdown(result))
    write_text_atomic(files["csv"], to_csv(result))
    write_text_atomic(files["stream_csv"], stream_csv(result))
    return files


# ---------------------------------------------------------------------------------------- console


def rich_tables(result: dict) -> list:
    """The console tables: results of the rows that ran, rows not run with their reasons, streaming."""
    rows = rows_of(result)
    out = [_rich_results(result, rows)]
    skipped = [r for r in rows if not r.ok]
    if skipped:
        out.append(_rich_skipped(skipped))
    streams = streams_of(result)
    if streams:
        out.append(_rich_streaming(streams))
    return out


def _rich_results(result: dict, rows: list[Row]):
    from rich.table import Table

    s = result["settings"]
    t = Table(title=f"unet-edge bench: {result['label']} (input {s['input_size'][0]}x{s['input_size'][1]}, "
                    f"threads {s['threads']}, {host_summary(result['host'])})", title_justify="left")
    t.add_column("Backend / precision (device)", no_wrap=True)
    for c in ["p50 ms", "p90 ms", "p99 ms", "FPS@1", f"FPS@{s['batch']}", "Speedup", "mIoU", "ΔmIoU pt", "Agree %",
              "Peak MB", "Size MB"]:
        t.add_column(c, justify="right", no_wrap=True)
    t.add_column("Notes", overflow="fold", min_width=12)
    for r in rows:
        if not r.ok:
            continue
        lat = r.latency_ms
        style = "bold green" if r.best else ("bold" if r.baseline else None)
        t.add_row(r.label, fmt(lat.p50), fmt(lat.p90), fmt(lat.p99), fmt(r.fps_b1, 1), fmt(r.fps_batch, 1),
                  fmt(r.speedup, 2, "x"), fmt(r.miou, 4), pts(r.delta_miou), pct(r.agreement), fmt(peak_mb(r), 1),
                  fmt(r.size_mb, 2), row_notes(r), style=style)
    return t


def _rich_skipped(skipped: list[Row]):
    from rich.table import Table

    sk = Table(title="not run on this host", title_justify="left")
    sk.add_column("Backend / precision (device)", no_wrap=True)
    sk.add_column("Status", no_wrap=True)
    sk.add_column("Reason", overflow="fold")
    for r in skipped:
        sk.add_row(r.label, r.status, r.reason, style="dim")
    return sk


def _rich_streaming(streams: list[StreamRow]):
    from rich.table import Table

    st = Table(title="end-to-end streaming (per-frame mean ms per stage)", title_justify="left")
    for i, c in enumerate(["Backend", "Role", "FPS", "infer FPS"] + list(STAGES)):
        st.add_column(c, justify="left" if i < 2 else "right", no_wrap=True)
    for x in streams:
        if not x.ok:
            st.add_row(x.label, x.role, "failed", "-", *(["-"] * len(STAGES)))
            continue
        st.add_row(x.label, x.role, fmt(x.fps, 1), fmt(x.infer_fps, 1), *[fmt(x.stages[k]["mean_ms"]) for k in STAGES])
    return st


def emit(renderables: list, log: Callable) -> None:
    """Send rich renderables to ``log``: as objects to a rich ``Console.print`` (at least 160
    columns wide when the console is not a terminal, e.g. a log file), else as plain text."""
    from rich.console import Console

    con = getattr(log, "__self__", None)
    if isinstance(con, Console):
        saved = con._width if hasattr(con, "_width") else None
        widen = not con.is_terminal and con.width < 160
        try:
            if widen:
                con.width = 160  # a log file: do not squeeze the table into 80 columns
            for r in renderables:
                con.print(r)
        finally:
            if widen:
                con._width = saved
        return
    buf = io.StringIO()
    plain = Console(file=buf, width=160, no_color=True, highlight=False, emoji=False)
    for r in renderables:
        plain.print(r)
    log(buf.getvalue().rstrip("\n"))


def emit_table(result: dict, log: Callable) -> None:
    """Print the result tables and where the reports are."""
    emit(rich_tables(result), log)
    f = result.get("files") or {}
    if f.get("markdown"):
        log(f"report: {f['markdown']} (+ bench.json, bench.csv, charts)")
