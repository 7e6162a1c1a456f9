"""The benchmark: row planning, timing statistics, reports, charts and --compare (tiny model, tiny data)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.compare import compare_reports, load_report, run_compare
from benchmarks.plan import plan_rows
from benchmarks.runner import BenchOptions, run_bench
from benchmarks.timing import Timer, latency_stats, measure_memory, time_calls
from unet_edge.errors import ArtifactError, BackendUnavailableError
from unet_edge.metadata import ModelMeta
from unet_edge.model import UNet, config_from_preset

K = 3
H, W = 64, 96


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(i: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB image and index mask (0 background, 1 'road' band, 2 moving 'car' box)."""
    img = np.full((H, W, 3), (90, 140, 200), np.uint8)
    mask = np.zeros((H, W), np.uint8)
    img[40:] = (110, 110, 110)
    mask[40:] = 1
    x = 4 + 6 * (i % 10)
    img[30:50, x : x + 20] = (200, 30, 30)
    mask[30:50, x : x + 20] = 2
    mask[0, 0] = 255  # one void pixel
    return img, mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for split, n in (("train", 6), ("val", 6)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            img, mask = _scene(i + (0 if split == "train" else 3))
            name = f"seq01_{i:05d}.png"  # <sequence>_<frame>.png, time order
            cv2.imwrite(str(root / split / "images" / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / split / "masks" / name), mask)
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, dataset) -> Path:
    """A checkpoint the way training writes it: {'model': state_dict, 'meta': ModelMeta.to_dict()}."""
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", K)
    model = UNet(cfg).eval()
    meta = ModelMeta(arch=cfg.to_dict(), class_names=["background", "road", "car"],
                     palette=[[0, 0, 0], [128, 64, 128], [0, 0, 142]], input_size=(H, W),
                     dataset={"name": "tiny", "format": "folder", "path": str(dataset)})
    path = tmp_path_factory.mktemp("run") / "best.pt"
    torch.save({"model": model.state_dict(), "meta": meta.to_dict(), "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, checkpoint, dataset) -> Path:
    from unet_edge.export.pipeline import ExportOptions, export_all

    out = tmp_path_factory.mktemp("export")
    export_all(checkpoint, out, ExportOptions(fp16=True, int8=True, calib_data=str(dataset), calib_images=4,
                                              parity_images=2, threads=1, progress=False), log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory, checkpoint, export_dir, dataset):
    report = tmp_path_factory.mktemp("report") / "tiny-cpu"
    lines: list = []
    opts = BenchOptions(data=str(dataset), iters=8, warmup=2, batch=2, threads=1, pool=4, memory="inprocess",
                        stream_frames=6, progress=False, device="auto")
    result = run_bench([str(checkpoint), str(export_dir)], report, opts, log=lines.append)
    return result, report, lines


def _rows(result) -> dict:
    return {r["id"]: r for r in result["rows"]}


# ------------------------------------------------------------------------------------------ timing


def test_latency_stats_ordered_and_units():
    rng = np.random.default_rng(0)
    s = latency_stats(rng.gamma(2.0, 3.0, size=200).tolist())
    assert s["n"] == 200
    assert s["min"] <= s["p10"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert s["std"] > 0 and s["mean"] > 0
    assert latency_stats([])["p50"] is None
    assert latency_stats([5.0])["p99"] == 5.0


def test_time_calls_rotates_inputs_and_excludes_warmup():
    seen = []
    pool = [np.full((1, 3, 2, 2), i, np.float32) for i in range(3)]
    samples = time_calls(lambda x: seen.append(int(x[0, 0, 0, 0])), pool, iters=5, warmup=2, timer=Timer("cpu"))
    assert len(samples) == 5 and all(v >= 0 for v in samples)
    assert seen == [0, 1, 2, 0, 1, 2, 0]  # warmup continues the rotation; every input used


# -------------------------------------------------------------------------------------------- plan


def test_interleaved_latency_visits_rows_in_rounds_and_isolates_failures():
    from types import SimpleNamespace

    from benchmarks.runner import _Ctx, _interleaved_latency

    calls: list[str] = []

    class Fake:
        device = "cpu"

        def __init__(self, name, fail_at=None):
            self.name, self.fail_at, self.n = name, fail_at, 0

        def infer(self, x):
            self.n += 1
            if self.fail_at is not None and self.n == self.fail_at:
                raise RuntimeError("boom")
            calls.append(self.name)

    opts = BenchOptions(iters=7, warmup=3, rounds=3)
    ctx = _Ctx(opts=opts, plan=None, size=(2, 2), pool=np.zeros((4, 3, 2, 2), np.float32), inputs_desc="", dataset=None,
               log=print)
    loaded = [(SimpleNamespace(id="a"), Fake("a")), (SimpleNamespace(id="b"), Fake("b")),
              (SimpleNamespace(id="c"), Fake("c", fail_at=8))]
    out = _interleaved_latency(loaded, ctx)
    assert len(out["a"]) == len(out["b"]) == 7 and isinstance(out["c"], RuntimeError)
    # round 1: 3 warmup + 3 timed each; round 2: 2 warmup + 2 timed (c fails on its 8th call); round 3: 2 + 2
    assert calls == ["a"] * 6 + ["b"] * 6 + ["c"] * 6 + ["a"] * 4 + ["b"] * 4 + ["c"] + ["a"] * 4 + ["b"] * 4


def test_plan_lists_every_row_and_skips_with_reasons(checkpoint, export_dir):
    plan = plan_rows([str(export_dir)], device="auto")  # no checkpoint given: found via source_checkpoint
    ids = [r.id for r in plan.rows]
    assert plan.checkpoint and Path(plan.checkpoint).resolve() == checkpoint.resolve()
    for rid in ("pytorch/fp32/cpu", "pytorch/bf16/cpu", "torchscript/fp32/cpu", "onnxruntime/fp32/cpu",
                "onnxruntime/fp16/cpu", "onnxruntime/int8/cpu/tensorrt-qdq", "onnxruntime/int8/cpu/cpu-u8s8", "pytorch/fp16/cuda", "tensorrt/fp32/cuda",
                "tensorrt/fp16/cuda", "tensorrt/int8/cuda"):
        assert rid in ids
    by = {r.id: r for r in plan.rows}
    if not torch.cuda.is_available():
        assert by["pytorch/fp16/cuda"].status == "skipped"
        assert "no CUDA device" in by["pytorch/fp16/cuda"].reason
        assert "no CUDA device" in by["tensorrt/int8/cuda"].reason
    assert "no INT8 engine given" in by["tensorrt/int8/cuda"].reason
    assert any("source_checkpoint" in n for n in plan.notes)


def test_plan_rejects_other_model_and_missing_cuda(checkpoint, tmp_path):
    cfg = config_from_preset("tiny", 2)
    meta = ModelMeta(arch=cfg.to_dict(), class_names=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]], input_size=(H, W))
    other = tmp_path / "other.pt"
    torch.save({"model": UNet(cfg).state_dict(), "meta": meta.to_dict()}, other)
    with pytest.raises(ArtifactError, match="different model"):
        plan_rows([str(checkpoint), str(other)])
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError):
            plan_rows([str(checkpoint)], device="cuda")
    with pytest.raises(ArtifactError):
        plan_rows([str(tmp_path / "missing.onnx")])


# ------------------------------------------------------------------------------------------- bench


def test_bench_rows_backends_precisions(bench):
    result, _, _ = bench
    rows = _rows(result)
    for rid in ("pytorch/fp32/cpu", "pytorch/bf16/cpu", "torchscript/fp32/cpu", "onnxruntime/fp32/cpu",
                "onnxruntime/fp16/cpu", "onnxruntime/int8/cpu/tensorrt-qdq", "onnxruntime/int8/cpu/cpu-u8s8"):
        assert rows[rid]["status"] == "ok", (rid, rows[rid].get("reason"))
    base = rows["pytorch/fp32/cpu"]
    assert result["baseline"] == "pytorch/fp32/cpu" and base["baseline"]
    assert base["speedup"] == 1.0
    assert base["agreement"] == 1.0
    assert result["best"] in rows and rows[result["best"]]["best"]
    for r in result["rows"]:
        if r["status"] != "ok":
            continue
        lat = r["latency_ms"]
        assert lat["n"] == 8 and len(r["samples_ms"]) == 8
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["fps_b1"] == pytest.approx(1000.0 / lat["p50"])
        assert r["fps_batch"] and r["batch"] == 2
        assert 0.0 <= r["miou"] <= 1.0 and set(r["per_class_iou"]) == {"background", "road", "car"}
        assert 0.0 <= r["agreement"] <= 1.0
        assert r["size_mb"] > 0
        assert r["memory"]["rss_peak_b1_mb"] is not None
    # static batch-1 ONNX: batch 2 runs in chunks, and the row says so
    assert any("chunks" in n for n in rows["onnxruntime/fp32/cpu"]["notes"])
    # FP32 graphs agree with the FP32 baseline (same weights)
    assert rows["onnxruntime/fp32/cpu"]["agreement"] > 0.99
    assert result["settings"]["inputs"].startswith("4 real val images")


def test_bench_skipped_rows_have_reasons(bench):
    result, _, _ = bench
    rows = _rows(result)
    if torch.cuda.is_available():
        pytest.skip("CUDA host: GPU rows run")
    for rid in ("pytorch/fp32/cuda", "pytorch/fp16/cuda", "tensorrt/fp32/cuda", "tensorrt/fp16/cuda", "tensorrt/int8/cuda"):
        assert rows[rid]["status"] == "skipped"
        assert "no CUDA device" in rows[rid]["reason"]
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT not installed" in rows["tensorrt/fp16/cuda"]["reason"]
    assert "no FP16 engine given" in rows["tensorrt/fp16/cuda"]["reason"]


def test_bench_streaming_rows(bench):
    result, _, _ = bench
    st = result["streaming"]
    assert st and st[0]["role"] in ("baseline", "baseline+best")
    assert {s["id"] for s in st} == {result["baseline"], result["best"]}
    for s in st:
        assert s["status"] == "ok" and s["frames"] == 6 and s["fps"] > 0
        assert set(s["stages"]) == {"read", "preprocess", "infer", "postprocess", "overlay", "write"}
        assert all(v["mean_ms"] >= 0 for v in s["stages"].values())


def test_bench_report_files_and_json_roundtrip(bench):
    result, report, lines = bench
    for name in ("bench.md", "bench.json", "bench.csv", "bench_stream.csv", "latency_vs_miou.png",
                 "latency_dist.png", "stream_stages.png"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((report / "bench.json").read_text()) == json.loads(json.dumps(result))
    md = (report / "bench.md").read_text()
    assert "PyTorch eager FP32 (cpu)" in md and "Not run on this host" in md and "Per-class IoU" in md
    assert "avx512_vnni" in md or result["host"]["arch"] not in ("x86_64", "AMD64")
    assert "![Latency vs accuracy](latency_vs_miou.png)" in md
    with open(report / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result["rows"]) and "iou_car" in rows[0]
    assert any(isinstance(x, str) and "p50" in x for x in lines)  # the table went to the log
    host = result["host"]
    assert host["versions"]["torch"] and host["versions"]["onnxruntime"] and host["cpu"]["model"]


def test_compare_two_reports(bench, tmp_path):
    result, report, _ = bench
    other = json.loads((report / "bench.json").read_text())
    other["label"] = "run-b"
    for r in other["rows"]:
        if r["status"] == "ok":
            r["latency_ms"]["p50"] *= 2.0
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bench.json").write_text(json.dumps(other))
    cmp = compare_reports([load_report(report / "bench.json"), load_report(tmp_path / "b")])
    row = next(r for r in cmp["rows"] if r["key"].startswith("onnxruntime/int8"))
    assert row["ratio_p50"][0] == 1.0 and row["ratio_p50"][1] == pytest.approx(2.0)
    out = CliRunner().invoke(__import__("cli").app, ["bench", "--compare", str(report / "bench.json"),
                                                     str(tmp_path / "b" / "bench.json"), "--report", str(tmp_path / "cmp")])
    assert out.exit_code == 0, out.output
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "ONNX Runtime INT8" in md and "2.00x" in md
    with pytest.raises(ArtifactError):
        run_compare([str(report / "bench.json")], None, log=lambda *_: None)


def test_memory_probe_subprocess(checkpoint):
    m = measure_memory({"path": str(checkpoint), "device": "cpu", "precision": "fp32", "threads": 1,
                        "input_size": [H, W], "batch": 2}, mode="subprocess", timeout_s=120)
    assert "error" not in m, m
    assert m["mode"] == "subprocess"
    assert m["rss_peak_b1_mb"] >= m["rss_load_mb"] - 1e-6
    assert m["rss_peak_batch_mb"] >= m["rss_peak_b1_mb"] - 1e-6


def test_cli_bench_json_without_data(checkpoint, tmp_path):
    """The CLI path: no --data -> seeded random inputs (said so), no mIoU, agreement still measured."""
    out = CliRunner().invoke(__import__("cli").app, [
        "bench", str(checkpoint), "--report", str(tmp_path / "r"), "--iters", "3", "--warmup", "1", "--batch", "2",
        "--threads", "1", "--memory", "off", "--no-stream", "--no-plots", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    rows = _rows(result)
    assert rows["pytorch/fp32/cpu"]["status"] == "ok" and rows["pytorch/fp32/cpu"]["agreement"] == 1.0
    assert rows["pytorch/fp32/cpu"]["miou"] is None
    assert "seeded random" in result["settings"]["inputs"]
    assert rows["onnxruntime/int8/cpu"]["status"] == "skipped" and "no INT8 ONNX given" in rows["onnxruntime/int8/cpu"]["reason"]
    assert (tmp_path / "r" / "bench.md").is_file() and not list((tmp_path / "r").glob("*.png"))


def test_plan_static_and_dynamic_onnx_get_variants(checkpoint, export_dir, tmp_path):
    """Every ONNX given gets a row; two FP32 graphs are told apart (static vs dynamic batch)."""
    from unet_edge.artifacts import model_from_checkpoint
    from unet_edge.export.onnx_export import export_onnx

    model, meta, _ = model_from_checkpoint(checkpoint)
    dyn = export_onnx(model, meta, tmp_path / "model_dynamic.onnx", dynamic=True)
    plan = plan_rows([str(checkpoint), str(export_dir), str(dyn)], device="cpu")
    by = {r.id: r for r in plan.rows}
    assert by["onnxruntime/fp32/cpu/static"].static_batch == 1
    assert by["onnxruntime/fp32/cpu/dynamic"].static_batch is None
    assert "dynamic batch" in by["onnxruntime/fp32/cpu/dynamic"].notes
    assert by["pytorch/fp16/cuda"].status == "skipped"
