"""CPU INT8 engines side by side on one host: ONNX Runtime FP32 / INT8 (the export's CPU INT8 file,
``model_int8_cpu.onnx``) against OpenVINO FP32 IR / NNCF INT8 IR made from the same FP32 ONNX and
calibrated on the same 64 train images. Batch-1 latency with the calls of all rows interleaved
(:func:`interleaved_p50s`; the report takes the median of ``--repeats`` repeats' p50s, per thread
count of ``--threads``) and val mIoU with :func:`unet_edge.evaluate.evaluate` on each backend's ``infer``.

OpenVINO's FP32 IR is also timed with the bf16 inference hint, which is what OpenVINO picks by
itself on this CPU when no hint is set: the row shows what the silent default would cost and give.

    python -m benchmarks.openvino_engines runs/camvid15_export \\
        --data ../shared/datasets/camvid --ir-dir runs/camvid15_openvino \\
        --out benchmarks/reports/openvino-x86-amx --threads 2,1 --presets performance,mixed
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.hostinfo import host_info, load_avg
from benchmarks.timing import latency_stats
from unet_edge.artifacts import read_meta
from unet_edge.data.layouts import load_dataset
from unet_edge.evaluate import evaluate
from unet_edge.export.openvino import KEYS, export_openvino
from unet_edge.formats import DEFAULT_CALIB_IMAGES, artifact
from unet_edge.host import probe_host, resolve_threads
from unet_edge.io_utils import write_json_atomic, write_text_atomic
from unet_edge.preprocess import preprocess
from unet_edge.runtime.openvino_backend import OpenVinoBackend
from unet_edge.runtime.ort_backend import OrtBackend


def _versions() -> dict:
    import nncf
    import onnxruntime
    import openvino

    return {"openvino": openvino.get_version(), "nncf": nncf.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}


def interleaved_p50s(backends: dict, pool: list[np.ndarray], iters: int, warmup: int) -> dict[str, dict]:
    """One repeat: ``warmup`` untimed calls per row, then ``iters`` passes that each time one call
    of every row (row order rotated per pass, inputs rotating through ``pool``), so every row sees
    the same load. Returns :func:`benchmarks.timing.latency_stats` per row (ms)."""
    keys = list(backends)
    for k in keys:
        for i in range(warmup):
            backends[k].infer(pool[i % len(pool)])
    samples: dict[str, list[float]] = {k: [] for k in keys}
    gc.collect(1)  # young generations only, as in benchmarks.timing.time_calls
    gc.disable()
    try:
        for i in range(iters):
            x = pool[i % len(pool)]
            for k in keys[i % len(keys):] + keys[: i % len(keys)]:
                t0 = time.perf_counter()
                backends[k].infer(x)
                samples[k].append((time.perf_counter() - t0) * 1e3)
    finally:
        gc.enable()
    return {k: latency_stats(v) for k, v in samples.items()}


def _irs(export_dir: Path, data: Path, ir_dir: Path, calib_images: int, presets: list[str], reuse: bool, log) -> tuple[dict, float | None]:
    made, t0 = {}, time.perf_counter()
    for preset in presets:
        d = ir_dir if preset == presets[0] else ir_dir / preset
        files = {k: d / artifact(k).file for k in KEYS}
        if reuse and all(f.is_file() for f in files.values()):
            made[preset] = files
            continue
        made[preset] = export_openvino(export_dir, calib_data=data, calib_images=calib_images, preset=preset, out_dir=d)
    seconds = round(time.perf_counter() - t0, 1)
    log(f"IRs ready in {seconds} s: {made}")
    return made, None if reuse else seconds


def _row_makers(export_dir: Path, made: dict, presets: list[str]) -> dict:
    """{key: (label, make(threads) -> backend, path)} of every row."""
    fp32_onnx, int8_onnx = export_dir / artifact("onnx_fp32").file, export_dir / artifact("onnx_int8_cpu").file
    meta, fp32_ir = read_meta(fp32_onnx), made[presets[0]]["openvino_fp32"]
    rows = {
        "ort_fp32": ("ONNX Runtime FP32", lambda t: OrtBackend(str(fp32_onnx), meta, threads=t), fp32_onnx),
        "ort_int8": (f"ONNX Runtime INT8 ({int8_onnx.name}, cpu-u8s8)",
                     lambda t: OrtBackend(str(int8_onnx), read_meta(int8_onnx), threads=t), int8_onnx),
        "ov_fp32": ("OpenVINO FP32 IR (f32 hint)", lambda t: OpenVinoBackend(fp32_ir, threads=t), fp32_ir),
    }
    for preset in presets:
        key = "ov_int8" if preset == presets[0] else f"ov_int8_{preset}"
        xml = made[preset]["openvino_int8"]
        rows[key] = (f"OpenVINO INT8 IR (NNCF {preset}, f32 hint)", lambda t, xml=xml: OpenVinoBackend(xml, threads=t), xml)
    rows["ov_fp32_bf16"] = ("OpenVINO FP32 IR, bf16 hint (what OpenVINO picks by itself here)",
                            lambda t: OpenVinoBackend(fp32_ir, threads=t, precision="bf16"), fp32_ir)
    return rows


def run(export_dir: Path, data: Path, ir_dir: Path, calib_images: int, threads: list[int], iters: int,
        repeats: int, warmup: int, presets: list[str], reuse: bool = False, log=print) -> dict:
    made, quant_s = _irs(export_dir, data, ir_dir, calib_images, presets, reuse, log)
    makers = _row_makers(export_dir, made, presets)
    meta = read_meta(export_dir / artifact("onnx_fp32").file)
    ds = load_dataset(data, "val")
    pool = [preprocess(ds[i][0], meta)[None] for i in np.linspace(0, len(ds) - 1, 8).round().astype(int)]
    threads = [resolve_threads(t) for t in threads]
    timing = {}
    for t in threads:
        backends = {k: make(t) for k, (_, make, _) in makers.items()}
        reps = []
        for r in range(repeats):
            before = load_avg()
            stats = interleaved_p50s(backends, pool, iters, warmup if r == 0 else 2)
            reps.append({"load_avg_before": before, "load_avg_after": load_avg(), "stats": stats})
            log(f"{t} threads, repeat {r + 1}: " + ", ".join(f"{k} {v['p50']:.1f}" for k, v in stats.items())
                + f" ms p50 (load {before} -> {reps[-1]['load_avg_after']})")
        timing[str(t)] = {
            "repeats": [{"load_avg_before": x["load_avg_before"], "load_avg_after": x["load_avg_after"]} for x in reps],
            "rows": {k: {"p50_ms_repeats": [round(x["stats"][k]["p50"], 2) for x in reps],
                         "p50_ms": round(statistics.median(x["stats"][k]["p50"] for x in reps), 2),
                         "min_ms": round(min(x["stats"][k]["min"] for x in reps), 2),
                         "p10_ms_median": round(statistics.median(x["stats"][k]["p10"] for x in reps), 2)}
                     for k in makers}}
        for b in backends.values():
            b.close()

    main_threads = threads[0]
    result_rows = []
    ref = None
    for k, (label, make, path) in makers.items():
        b = make(main_threads)
        m = evaluate(b.infer, ds, meta, progress=False)
        logits = np.concatenate([b.infer(x) for x in pool])
        ref = logits if ref is None else ref  # the first row is ONNX Runtime FP32
        result_rows.append({
            "key": k, "label": label, "backend": b.label, "path": str(path), "precision": b.precision,
            "inference_precision": getattr(b, "inference_precision", None), "miou": round(m["miou"], 4),
            "pixel_accuracy": round(m["pixel_accuracy"], 4), "per_class_iou": m["per_class_iou"],
            "vs_ort_fp32": {"max_abs_logit_error": float(np.abs(logits - ref).max()),
                            "argmax_agreement": float((logits.argmax(1) == ref.argmax(1)).mean())},
            "timing": {t: timing[t]["rows"][k] for t in timing}})
        b.close()
        log(f"{k:<14} mIoU {m['miou']:.4f}")
    q = read_meta(export_dir / artifact("onnx_int8_cpu").file).extra["quantization"]
    return {"command": " ".join(["python", "-m", "benchmarks.openvino_engines", *sys.argv[1:]]), "host": host_info(),
            "cpu_class": probe_host().cpu_class, "threads": threads, "versions": _versions(),
            "export_dir": str(export_dir), "data": str(data), "val_images": len(ds), "input_size": list(meta.input_size),
            "batch": 1, "iters_per_repeat": iters, "warmup": warmup, "repeats": repeats, "calib_images": calib_images,
            "ort_int8_quantization": q, "openvino_quantize_seconds": quant_s, "presets": presets,
            "load": {t: timing[t]["repeats"] for t in timing}, "rows": result_rows}


def markdown(r: dict) -> str:
    """The report: one table (mIoU, then latency per thread count) plus the verdict from the numbers."""
    rows = {x["key"]: x for x in r["rows"]}
    h, ts = r["host"], [str(t) for t in r["threads"]]
    main = ts[0]
    lines = [f"# OpenVINO + NNCF vs ONNX Runtime on {r['cpu_class']} ({h['cpu']['model']})", "",
             f"Model: `{r['export_dir']}` (U-Net, {r['input_size'][0]}x{r['input_size'][1]}, batch 1); mIoU on the "
             f"{r['val_images']} val images of `{r['data']}`. Both INT8 files are calibrated on the same "
             f"{r['calib_images']} train images (seed 0) through the same preprocessing "
             f"(ONNX Runtime: {r['ort_int8_quantization']['variant']}, {r['ort_int8_quantization']['method']} "
             f"calibration, made for {r['ort_int8_quantization']['target']}; OpenVINO: NNCF post-training quantization).", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items())
             + f", torch {h['versions'].get('torch')}, python {h['versions'].get('python')}.", "",
             f"Command: `{r['command']}`", "",
             f"Latency: {r['repeats']} repeats; in each, {r['iters_per_repeat']} passes that time one batch-1 call of "
             "every row in turn (rotated order, same input), so all rows share the same load. p50 = median of the "
             "repeats' p50s; min = the fastest call seen (the least disturbed by other jobs).", "",
             "| row | backend label | val mIoU | " + " | ".join(f"p50 ms, {t} thr | p50 per repeat | min ms, {t} thr" for t in ts)
             + " | vs ORT FP32: max abs logit err / argmax agreement |",
             "| --- | --- | ---: | " + " | ".join("---: | --- | ---:" for _ in ts) + " | ---: |"]
    for x in r["rows"]:
        v = x["vs_ort_fp32"]
        cells = []
        for t in ts:
            tm = x["timing"][t]
            cells.append(f"{tm['p50_ms']:.1f} | {' / '.join(f'{p:.1f}' for p in tm['p50_ms_repeats'])} | {tm['min_ms']:.1f}")
        lines.append(f"| {x['label']} | `{x['backend']}` | {x['miou']:.4f} | " + " | ".join(cells)
                     + f" | {v['max_abs_logit_error']:.2e} / {v['argmax_agreement'] * 100:.2f}% |")
    ort, ov = rows["ort_int8"], rows["ov_int8"]
    d = (ov["miou"] - ort["miou"]) * 100
    acc = ("OpenVINO + NNCF INT8" if d > 0 else "ONNX Runtime INT8") if abs(d) >= 0.05 else "neither (within 0.05 points)"
    lines += ["", "## Verdict on this host", ""]
    for t in ts:
        a, b = ov["timing"][t], ort["timing"][t]
        faster = "OpenVINO + NNCF INT8" if a["p50_ms"] < b["p50_ms"] else "ONNX Runtime INT8"
        ratio = max(a["p50_ms"], b["p50_ms"]) / min(a["p50_ms"], b["p50_ms"])
        per_rep = sum(x < y for x, y in zip(a["p50_ms_repeats"], b["p50_ms_repeats"]))
        lines.append(f"- {t} thread(s): faster CPU INT8 engine **{faster}**, {ratio:.2f}x by p50 ({a['p50_ms']:.1f} ms "
                     f"OpenVINO vs {b['p50_ms']:.1f} ms ONNX Runtime; OpenVINO faster in {per_rep} of "
                     f"{len(a['p50_ms_repeats'])} repeats; min {a['min_ms']:.1f} vs {b['min_ms']:.1f} ms).")
    bf = rows["ov_fp32_bf16"]
    lines += [f"- More accurate: **{acc}** (val mIoU {ov['miou']:.4f} OpenVINO INT8 vs {ort['miou']:.4f} ONNX Runtime INT8, "
              f"{d:+.2f} points; FP32 {rows['ort_fp32']['miou']:.4f}).",
              f"- Without a hint OpenVINO runs the FP32 IR in bf16 on this CPU: {bf['timing'][main]['p50_ms']:.1f} ms, "
              f"mIoU {bf['miou']:.4f}, max logit error {bf['vs_ort_fp32']['max_abs_logit_error']:.2e} against FP32. "
              "The backend therefore always sets the f32 hint, and bf16 only when asked for.", ""]
    loads = "; ".join(f"{t} threads: " + ", ".join(f"{x['load_avg_before'][0]:.1f}->{x['load_avg_after'][0]:.1f}"
                                                      for x in r["load"][t] if x["load_avg_before"]) for t in ts)
    lines += [f"Load: other jobs shared this {h['cpu'].get('default_threads')}-core machine while it was measured "
              f"(1-minute load average per repeat, before->after: {loads}). Absolute times are inflated and noisy; "
              "the comparison between rows holds better than the numbers themselves, because the calls are interleaved.", ""]
    if r["openvino_quantize_seconds"] is not None:
        lines.append(f"NNCF quantization ({r['calib_images']} images, conversion included) took "
                     f"{r['openvino_quantize_seconds']} s for all presets together ({', '.join(r.get('presets', []))}).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path, help="an `unet-edge export --int8` folder (model_fp32.onnx, model_int8_cpu.onnx)")
    p.add_argument("--data", type=Path, required=True, help="dataset: calibration on train, mIoU on val")
    p.add_argument("--ir-dir", type=Path, required=True, help="where the OpenVINO IRs are written")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES)
    p.add_argument("--threads", default="0", help="comma-separated thread counts (0: physical cores); mIoU uses the first")
    p.add_argument("--iters", type=int, default=40, help="timed calls per row and repeat")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--presets", default="performance", help="NNCF presets, comma-separated (the first is the main row)")
    p.add_argument("--reuse", action="store_true", help="reuse IRs already in --ir-dir")
    a = p.parse_args(argv)
    r = run(a.export_dir, a.data, a.ir_dir, a.calib_images, [int(t) for t in a.threads.split(",")], a.iters,
            a.repeats, a.warmup, a.presets.split(","), a.reuse)
    write_json_atomic(a.out / "openvino.json", r)
    write_text_atomic(a.out / "openvino.md", markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
