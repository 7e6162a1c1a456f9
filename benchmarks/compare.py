"""Compare benchmark reports (``bench.json``) from several hosts or runs.

Rows are matched by backend + precision (+ variant); when one report has the same backend and
precision on two devices (e.g. PyTorch FP32 on cpu and cuda) the device joins the key. The first
report is the reference: each other report gets the ratio of its p50 latency to the reference's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from unet_edge.errors import ArtifactError
from unet_edge.io_utils import write_json_atomic, write_text_atomic

from .hostinfo import cpu_class_of, host_summary
from .records import Row, rows_of
from .report import _md_table, fmt, pct, pts
from .runner import SCHEMA

#: Settings that must match for latencies to be comparable; differences are listed as warnings.
COMPARABLE = ("input_size", "threads", "batch", "iters", "warmup", "eval_split", "eval_images")


def load_report(path: str | Path) -> dict:
    """Read a ``bench.json``.

    Raises:
        ArtifactError: missing file, not JSON, or not a unet-edge bench report.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "bench.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"benchmark report not found: {p}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"cannot read benchmark report {p}: {e}") from e
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ArtifactError(f"{p} is not a unet-edge benchmark report (schema {SCHEMA}); produce one with `unet-edge bench`")
    try:
        if not isinstance(data.get("rows"), list) or not all(isinstance(r, dict) for r in data["rows"]):
            raise TypeError("rows is not a list of dicts")
        rows_of(data)
    except (KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{p} has malformed rows ({type(e).__name__}: {e}); re-run `unet-edge bench`") from e
    data.setdefault("_path", str(p))
    return data


def _base_key(r: Row) -> str:
    return "/".join([r.backend, r.precision] + ([r.variant] if r.variant else []))


def _multi_device(reports: list[list[Row]]) -> set[str]:
    """Base keys that some report has on more than one device: those are matched per device."""
    out = set()
    for rows in reports:
        seen: dict[str, set] = {}
        for r in rows:
            seen.setdefault(_base_key(r), set()).add(r.device)
        out |= {k for k, devs in seen.items() if len(devs) > 1}
    return out


def _keys(rows: list[Row], multi: set[str]) -> dict[str, Row]:
    out = {}
    for r in rows:
        k = _base_key(r)
        out.setdefault(f"{k}/{r.device}" if k in multi else k, r)
    return out


def _label(cells: list[Row | None]) -> str:
    from .plan import BACKEND_NAMES

    c0 = next(c for c in cells if c)
    devs = sorted({c.device for c in cells if c})
    v = f" {c0.variant}" if c0.variant else ""
    return f"{BACKEND_NAMES.get(c0.backend, c0.backend)} {c0.precision.upper()}{v} ({' | '.join(devs)})"


def _ratios(cells: list[Row | None]) -> list[float | None]:
    """p50 of each cell / p50 of the first (None where either did not run)."""
    ref = cells[0].latency_ms.p50 if cells[0] and cells[0].ok else None
    return [(c.latency_ms.p50 / ref if ref and c and c.ok else None) for c in cells]


def compare_reports(reports: list[dict]) -> dict:
    """Match rows across reports.

    Returns:
        ``{"reports": [{"label", "path", "host" (one line, :func:`host_summary`), "cpu_class"
        (None for an old report without flags), "date", "commit"}], "rows": [{"key", "label",
        "cells": [row dict or None per report], "ratio_p50": [p50 / reference p50 or None]}],
        "warnings": [...]}``.
    """
    if len(reports) < 2:
        raise ArtifactError("--compare needs at least two bench.json reports")
    typed = [rows_of(r) for r in reports]
    multi = _multi_device(typed)
    keyed = [_keys(r, multi) for r in typed]
    order: list[str] = []
    for k in keyed:
        for key in k:
            if key not in order:
                order.append(key)
    rows = []
    for key in order:
        cells = [k.get(key) for k in keyed]
        rows.append({"key": key, "label": _label(cells), "cells": [c.to_dict() if c else None for c in cells],
                     "ratio_p50": _ratios(cells)})
    warnings = []
    for name in COMPARABLE:
        vals = [json.dumps(r["settings"].get(name)) for r in reports]
        if len(set(vals)) > 1:
            warnings.append(f"setting {name} differs: " + ", ".join(f"{r['label']}={v}" for r, v in zip(reports, vals)))
    archs = [json.dumps(r["model"].get("arch"), sort_keys=True) for r in reports]
    if len(set(archs)) > 1:
        warnings.append("the reports benchmark different model architectures")
    for r in reports:
        for n in r.get("notes") or []:
            if n.startswith("host busy"):
                warnings.append(f"{r['label']}: {n}")
    meta = [{"label": r["label"], "path": r.get("_path"), "host": host_summary(r["host"]),
             "cpu_class": cpu_class_of(r["host"]), "date": r["host"].get("date"),
             "commit": ((r["host"].get("git") or {}).get("commit") or "")[:10] or None} for r in reports]
    return {"reports": meta, "rows": rows, "warnings": warnings}


def _cells(row: dict) -> list[Row | None]:
    """The cells of a comparison row (row dicts, as in ``compare.json``) as :class:`Row` records."""
    return [Row.from_dict(c) if c else None for c in row["cells"]]


def to_markdown(cmp: dict) -> str:
    """The comparison as Markdown: one table, per report p50 ms / FPS@1 / mIoU / speedup and the
    p50 ratio to the first report."""
    reps = cmp["reports"]
    L = ["# unet-edge benchmark comparison", ""]
    L += [_md_table(["#", "Report", "Host", "Date", "Commit"],
                    [[i + 1, r["label"], r["host"], r["date"], r["commit"] or "-"] for i, r in enumerate(reps)], "rllll"), ""]
    hdr = ["Backend / precision"]
    for i, r in enumerate(reps):
        n = i + 1
        hdr += [f"#{n} p50 ms", f"#{n} FPS@1", f"#{n} mIoU", f"#{n} speedup"]
        if i:
            hdr.append(f"#{n} / #1 p50")
    body = []
    for row in cmp["rows"]:
        line = [row["label"]]
        for i, c in enumerate(_cells(row)):
            if c is None:
                line += ["n/a"] * 4
            elif not c.ok:
                line += [c.status, "-", "-", "-"]
            else:
                line += [fmt(c.latency_ms.p50), fmt(c.fps_b1, 1), fmt(c.miou, 4), fmt(c.speedup, 2, "x")]
            if i:
                line.append(fmt(row["ratio_p50"][i], 2, "x"))
        body.append(line)
    L += ["## Rows", "", _md_table(hdr, body), ""]
    L += ["`#k / #1 p50` < 1 means report #k is faster than report #1 for that row. Speedup is each report's own "
          "p50 speedup over its own baseline.", ""]
    acc = []
    for row in cmp["rows"]:
        cells = _cells(row)
        ok = [c for c in cells if c and c.ok and c.miou is not None]
        if len(ok) >= 2:
            acc.append([row["label"]] + [fmt(c.miou, 4) if c and c.ok else "-" for c in cells]
                       + [pts(ok[-1].miou - ok[0].miou)])
    if acc:
        L += ["## Accuracy", "", _md_table(["Backend / precision"] + [f"#{i + 1} mIoU" for i in range(len(reps))]
                                           + ["last - first pt"], acc), ""]
    if cmp["warnings"]:
        L += ["## Warnings", ""] + [f"- {w}" for w in cmp["warnings"]] + [""]
    return "\n".join(L)


def rich_table(cmp: dict):
    """The comparison as a rich Table (p50 ms, FPS@1, mIoU per report, ratio to the first)."""
    from rich.table import Table

    t = Table(title="unet-edge bench comparison (" + " vs ".join(f"#{i + 1} {r['label']}" for i, r in
                                                               enumerate(cmp["reports"])) + ")", title_justify="left")
    t.add_column("Backend / precision")
    for i, _ in enumerate(cmp["reports"]):
        for c in ("p50 ms", "FPS@1", "mIoU", "agree %") + (("/#1",) if i else ()):
            t.add_column(f"#{i + 1} {c}", justify="right")
    for row in cmp["rows"]:
        cells = [row["label"]]
        for i, c in enumerate(_cells(row)):
            if c is None or not c.ok:
                cells += ["n/a" if c is None else c.status, "-", "-", "-"]
            else:
                cells += [fmt(c.latency_ms.p50), fmt(c.fps_b1, 1), fmt(c.miou, 4), pct(c.agreement)]
            if i:
                cells.append(fmt(row["ratio_p50"][i], 2, "x"))
        t.add_row(*cells)
    return t


def run_compare(paths: list[str], out_dir: str | Path | None = None, log: Callable = print) -> dict:
    """Load reports, compare them, print the table, write ``compare.md`` and ``compare.json`` into
    ``out_dir`` (when given); returns the comparison dict (with ``files``)."""
    from .report import emit

    cmp = compare_reports([load_report(p) for p in paths])
    emit([rich_table(cmp)], log)
    for w in cmp["warnings"]:
        log(f"warning: {w}")
    cmp["files"] = {}
    if out_dir is not None:
        d = Path(out_dir)
        cmp["files"] = {"markdown": str(write_text_atomic(d / "compare.md", to_markdown(cmp))),
                        "json": str(d / "compare.json")}
        write_json_atomic(d / "compare.json", cmp)
        log(f"comparison: {cmp['files']['markdown']}")
    return cmp
