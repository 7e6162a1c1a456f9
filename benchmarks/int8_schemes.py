"""Measure the CPU INT8 schemes on this host: for every scheme of
:data:`unet_edge.export.int8.CPU_SCHEMES` (U8S8 full-range weights, 7-bit ``reduce_range`` weights, U8U8),
quantize the same FP32 ONNX on the same calibration images, then score the val split with ONNX
Runtime's integer kernels and as a fake-quant run (mIoU and per-class IoU drop against FP32) and
time batch-1 latency in interleaved rounds. This is how the per-family order of
``CPU_TARGETS`` is chosen; run it on each CPU class and commit the report.

    python -m benchmarks.int8_schemes runs/camvid_export/model_fp32.onnx \\
        --data ../shared/datasets/camvid --out benchmarks/reports/int8-schemes-x86-amx
"""
from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from unet_edge.artifacts import read_meta
from unet_edge.data.layouts import load_dataset
from unet_edge.errors import HostMismatchWarning
from unet_edge.evaluate import evaluate
from unet_edge.formats import DEFAULT_CALIB_IMAGES
from unet_edge.export.accuracy import check_int8
from unet_edge.export.int8 import CPU_SCHEMES, export_int8
from unet_edge.host import probe_host, resolve_threads
from unet_edge.io_utils import write_json_atomic
from unet_edge.preprocess import preprocess
from unet_edge.runtime.ort_backend import OrtBackend

from .hostinfo import host_info
from .timing import latency_stats, time_calls

#: Every CPU scheme, with the INT8 family recorded as its target.
TARGETS = {"u8s8": "x86-vnni", "u8s8-w7": "x86-avx2", "u8u8": "x86-avx2"}


def run(fp32: str | Path, data: str | Path, out: str | Path, calib_images: int = DEFAULT_CALIB_IMAGES, calib_method: str = "entropy",
        threads: int = 0, iters: int = 40, rounds: int = 4, limit: int | None = None, log=print) -> dict:
    """Quantize, score and time every target; writes ``int8_schemes.json`` and ``int8_schemes.md``
    into ``out`` and returns the JSON dict (latency in ms, drops in mIoU points). The quantized
    files live in a temporary folder: only the report is kept."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # running a file made for another INT8 family is the point here
        warnings.simplefilter("ignore", HostMismatchWarning)
        return _run(fp32, data, out, Path(tmp), calib_images, calib_method, threads, iters, rounds, limit, log)


def _run(fp32, data, out: Path, tmp: Path, calib_images, calib_method, threads, iters, rounds, limit, log) -> dict:
    threads = resolve_threads(threads)
    meta = read_meta(fp32)
    ds = load_dataset(data, "val")
    backends = {"fp32": OrtBackend(str(fp32), meta, threads=threads)}
    for t, family in TARGETS.items():
        path = export_int8(fp32, meta, tmp / f"model_int8_cpu_{t}.onnx", data, calib_images, calib_method,
                           scheme="cpu", target=family, cpu_scheme=t)
        m = read_meta(path)
        backends[t] = OrtBackend(str(path), m, threads=threads)
        backends[f"{t}/fake-quant"] = OrtBackend(str(path), m, threads=threads, optimize=False)
    metrics = {}
    for key, b in backends.items():
        metrics[key] = evaluate(b.infer, ds, meta, limit=limit, progress=False)
        log(f"{key:<22} val mIoU {metrics[key]['miou']:.4f}")
    n = len(ds) if limit is None else min(limit, len(ds))
    pool = [preprocess(ds[i][0], meta)[None] for i in np.linspace(0, n - 1, 8).round().astype(int)]
    timed = ["fp32", *TARGETS]
    samples: dict[str, list[float]] = {k: [] for k in timed}
    for r in range(rounds):
        for k in timed:
            samples[k] += time_calls(backends[k].infer, pool, iters // rounds, 5 if r == 0 else 2)
    rows = []
    for t in TARGETS:
        c = check_int8(t, metrics["fp32"], metrics[t], metrics[f"{t}/fake-quant"])
        rows.append({"scheme": t, "target": TARGETS[t], "weights": CPU_SCHEMES[t]["weights"], "miou": metrics[t]["miou"],
                     "fake_quant_miou": metrics[f"{t}/fake-quant"]["miou"], "check": c.to_dict(),
                     "p50_ms": latency_stats(samples[t])["p50"]})
    result = {"host": host_info(), "cpu_class": probe_host().cpu_class, "threads": threads, "fp32": str(fp32),
              "fp32_miou": metrics["fp32"]["miou"], "fp32_p50_ms": latency_stats(samples["fp32"])["p50"],
              "images": n, "calib_images": calib_images, "calib_method": calib_method, "rows": rows,
              "per_class_iou": {k: v["per_class_iou"] for k, v in metrics.items()}}
    write_json_atomic(out / "int8_schemes.json", result)
    (out / "int8_schemes.md").write_text(markdown(result))
    return result


def markdown(r: dict) -> str:
    """The report as a Markdown table (drops in mIoU points, latency p50 ms)."""
    lines = [f"# CPU INT8 schemes on {r['cpu_class']} ({r['host'].get('cpu', {}).get('model', '?')}, {r['threads']} threads)",
             "", f"FP32 (ONNX Runtime): val mIoU {r['fp32_miou']:.4f}, p50 {r['fp32_p50_ms']:.1f} ms; {r['images']} val "
             f"images (not calibrated on), {r['calib_images']} calibration images ({r['calib_method']}).", "",
             "| scheme | weights | val mIoU | drop (pts) | worst class (pts) | fake-quant drop | integer-kernel effect | p50 ms | check |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for row in r["rows"]:
        c = row["check"]
        lines.append(f"| {row['scheme']} | {row['weights']} | {row['miou']:.4f} | {c['miou_drop']:.2f} | "
                     f"{c['worst_class']} {c['worst_class_drop']:.1f} | {c['fake_quant_drop']:.2f} | "
                     f"{c['kernel_effect']:.2f} | {row['p50_ms']:.1f} | {'ok' if c['passed'] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fp32", help="model_fp32.onnx of an export")
    p.add_argument("--data", required=True, help="dataset: calibration on train, scoring on val")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES)
    p.add_argument("--threads", type=int, default=0, help="0: physical cores")
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    r = run(a.fp32, a.data, a.out, a.calib_images, threads=a.threads, iters=a.iters, limit=a.limit)
    print(json.dumps({k: r[k] for k in ("cpu_class", "fp32_miou", "fp32_p50_ms")}), markdown(r), sep="\n")


if __name__ == "__main__":
    main()
