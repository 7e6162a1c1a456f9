"""The benchmark: row planning, timing statistics, reports, charts and --compare (tiny model, tiny data)."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.compare import compare_reports, load_report, run_compare
from benchmarks.hostinfo import cpu_class_of, host_info, host_summary
from benchmarks.plan import plan_rows
from benchmarks.records import ROW_KEYS, MemoryProbe, Row, StreamRow, Timing
from benchmarks.report import to_csv, stream_csv
from benchmarks.runner import BenchOptions, run_bench
from benchmarks.timing import MemorySpec, Timer, latency_stats, measure_memory, time_calls
from unet_edge.errors import ArtifactError, BackendUnavailableError
from unet_edge.host import CudaDevice, HostInfo, probe_host, resolve_threads
from unet_edge.metadata import ModelMeta
from unet_edge.model import UNet, config_from_preset

K = 3
H, W = 64, 96
REPORTS = Path(__file__).resolve().parents[1] / "benchmarks" / "reports"


def _host(flags=("avx2", "fma"), arch="x86_64", cuda=(), ort_providers=("CPUExecutionProvider",)) -> HostInfo:
    """A fake host (default: a 2-core AVX2-only x86 CPU: no bf16 arithmetic, x86-avx2 int8 kernels, no GPU)."""
    return HostInfo(cpu_model="x", arch=arch, cores_physical=2, cores_logical=2, affinity=2, flags=frozenset(flags),
                    cuda=tuple(cuda), ort_providers=tuple(ort_providers))


def _cpu_int8_id(ids) -> str:
    """The CPU-scheme INT8 row (variant cpu-u8s8, or cpu-u8s8-w7 when exported for 7-bit weights)."""
    return next(i for i in ids if i.startswith("onnxruntime/int8/cpu/cpu-u8s8"))


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
    exact = latency_stats([4.0, 1.0, 3.0, 2.0])  # linear interpolation, population std
    assert list(exact) == ["n", "mean", "std", "min", "p10", "p50", "p90", "p99", "max"]
    assert exact == pytest.approx({"n": 4, "mean": 2.5, "std": 1.25 ** 0.5, "min": 1.0, "p10": 1.3, "p50": 2.5,
                                   "p90": 3.7, "p99": 3.97, "max": 4.0})
    assert Timing.of([4.0, 1.0, 3.0, 2.0]).to_dict() == exact
    assert latency_stats([]) == {"n": 0, "mean": None, "std": None, "min": None, "p10": None, "p50": None,
                                 "p90": None, "p99": None, "max": None}
    assert latency_stats([5.0])["p99"] == 5.0


def test_time_calls_rotates_inputs_and_excludes_warmup():
    seen = []
    pool = [np.full((1, 3, 2, 2), i, np.float32) for i in range(3)]
    def counting_timer(fn) -> float:  # "ms" = calls seen so far: shows which calls were timed
        fn()
        return float(len(seen))

    samples = time_calls(lambda x: seen.append(int(x[0, 0, 0, 0])), pool, iters=5, warmup=2, timer=counting_timer)
    assert samples == [3.0, 4.0, 5.0, 6.0, 7.0]  # the 2 warmup calls are not timed
    assert seen == [0, 1, 2, 0, 1, 2, 0]  # warmup continues the rotation; every input used
    ms = Timer("cpu")(lambda: time.sleep(0.02))
    assert 20.0 <= ms < 2000.0  # milliseconds, not seconds


def test_time_calls_runs_the_timed_calls_with_gc_off_and_no_full_collection():
    import gc

    collections, enabled = [], []
    def on_gc(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(on_gc)
    try:
        time_calls(lambda x: enabled.append(gc.isenabled()), [np.zeros((1, 3, 2, 2), np.float32)], iters=4, warmup=0,
                   timer=lambda fn: fn() or 1.0)
    finally:
        gc.callbacks.remove(on_gc)
    assert enabled == [False] * 4 and gc.isenabled()  # off while timing, back on after
    # a full (generation-2) collection of a large heap costs ~140 ms a call: time_calls runs none
    assert collections and max(collections) < 2


# -------------------------------------------------------------------------------------------- plan


def test_interleaved_latency_visits_rows_in_rounds_and_isolates_failures():
    from types import SimpleNamespace

    from benchmarks.runner import _Ctx, _interleaved_latency

    calls: list[str] = []

    class Fake:
        def __init__(self, name, fail_at=None):
            self.name, self.fail_at, self.n = name, fail_at, 0

        def capabilities(self):
            return SimpleNamespace(device="cpu")

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


def test_batch_latency_asks_the_loaded_backend_which_batches_it_takes():
    from types import SimpleNamespace

    from benchmarks.runner import _batch_latency, _Ctx
    from unet_edge.runtime.base import Capabilities

    calls: list[int] = []

    class Fake:
        def __init__(self, **caps):
            self.caps = Capabilities(kind="fake", device="cpu", precision="fp32", input_name="images",
                                     output_name="logits", output_shape=(None, 3, None, None), artifact="m.pt2",
                                     **{"input_shape": (None, 3, None, None)} | caps)

        def capabilities(self):
            return self.caps

        def infer(self, x):
            calls.append(len(x))
            return x

    ctx = _Ctx(opts=BenchOptions(batch=4, iters=5, warmup=0), plan=None, size=(2, 2),
               pool=np.zeros((4, 3, 2, 2), np.float32), inputs_desc="", dataset=None, log=print)
    spec = SimpleNamespace(static_batch=None)  # what the plan read from the file is not asked
    notes: list[str] = []
    assert _batch_latency(spec, Fake(batch_range=(1, 2)), Timer("cpu"), ctx, notes) == (None, None)
    assert notes == ["batch 4 not timed: m.pt2 (fake): batch 4 is outside [1, 2]; split the batch"] and calls == []
    notes = []
    three = Fake(static_batch=3, input_shape=(3, 3, None, None), batch_range=(3, None))
    assert _batch_latency(spec, three, Timer("cpu"), ctx, notes) == (None, None)
    assert notes == ["static batch 3: batch 4 not a multiple, not timed"] and calls == []
    notes = []
    two = Fake(static_batch=2, input_shape=(2, 3, None, None), batch_range=(2, None))
    latency, samples = _batch_latency(spec, two, Timer("cpu"), ctx, notes)
    assert notes == ["static batch 2: batch 4 runs as 2 chunks"]
    assert calls == [4] * 7 and latency.n == len(samples) == 5  # 2 warmup + max(5, 5 // 4) timed calls


def test_plan_lists_every_row_and_skips_with_reasons(checkpoint, export_dir):
    plan = plan_rows([str(export_dir)], device="auto")  # no checkpoint given: found via source_checkpoint
    ids = [r.id for r in plan.rows]
    assert plan.checkpoint and Path(plan.checkpoint).resolve() == checkpoint.resolve()
    for rid in ("pytorch/fp32/cpu", "pytorch/bf16/cpu", "torchscript/fp32/cpu", "onnxruntime/fp32/cpu",
                "onnxruntime/fp16/cpu", "onnxruntime/int8/cpu/tensorrt-qdq", _cpu_int8_id(ids), "pytorch/fp16/cuda",
                "pytorch/bf16/cuda", "tensorrt/fp32/cuda", "tensorrt/fp16/cuda", "tensorrt/int8/cuda"):
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
    for rid in ("pytorch/fp32/cpu", "torchscript/fp32/cpu", "onnxruntime/fp32/cpu",
                "onnxruntime/fp16/cpu", "onnxruntime/int8/cpu/tensorrt-qdq", _cpu_int8_id(rows)):
        assert rows[rid]["status"] == "ok", (rid, rows[rid].get("reason"))
    # bf16 is timed only where the CPU computes it (emulated bf16 is skipped without --emulated)
    bf16 = rows["pytorch/bf16/cpu"]
    if probe_host().native_bf16:
        assert bf16["status"] == "ok", bf16.get("reason")
    else:
        assert bf16["status"] == "skipped" and "emulated" in bf16["reason"]
    base = rows["pytorch/fp32/cpu"]
    assert result["baseline"] == "pytorch/fp32/cpu" and base["baseline"]
    assert [r["id"] for r in result["rows"] if r["baseline"]] == ["pytorch/fp32/cpu"]
    assert base["speedup"] == 1.0 and base["speedup_batch"] == 1.0 and base["delta_miou"] == 0.0
    assert base["agreement"] == 1.0
    assert [r["id"] for r in result["rows"] if r["best"]] == [result["best"]]
    ok = [r for r in result["rows"] if r["status"] == "ok"]
    assert rows[result["best"]]["latency_ms"]["p50"] == min(r["latency_ms"]["p50"] for r in ok
                                                            if r["miou"] >= base["miou"] - 0.01)
    for r in ok:
        lat, blat = r["latency_ms"], r["batch_latency_ms"]
        assert lat["n"] == 8 and len(r["samples_ms"]) == 8 and r["timer"] == "perf_counter"
        assert lat["p50"] == pytest.approx(float(np.median(r["samples_ms"])), abs=1e-3)
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["fps_b1"] == pytest.approx(1000.0 / lat["p50"])
        assert r["batch"] == 2 and blat["n"] == len(r["batch_samples_ms"]) == 5  # max(5, iters // batch)
        assert r["fps_batch"] == pytest.approx(2000.0 / blat["p50"])
        assert r["speedup"] == pytest.approx(base["latency_ms"]["p50"] / lat["p50"])
        assert r["speedup_batch"] == pytest.approx(r["fps_batch"] / base["fps_batch"])
        assert r["delta_miou"] == pytest.approx(r["miou"] - base["miou"])
        assert 0.0 <= r["miou"] <= 1.0 and set(r["per_class_iou"]) == {"background", "road", "car"}
        assert r["eval_images"] == 6 and r["agreement_pixels"] == 6 * H * W  # every val image at the model size
        assert 0.0 <= r["agreement"] <= 1.0
        assert r["size_mb"] == round(Path(r["artifact"]).stat().st_size / 1e6, 3)
        assert r["memory"]["mode"] == "inprocess" and r["memory"]["rss_peak_b1_mb"] is not None
    # static batch-1 ONNX: batch 2 runs in chunks, and the row says so
    assert any("chunks" in n for n in rows["onnxruntime/fp32/cpu"]["notes"])
    # FP32 graphs agree with the FP32 baseline (same weights)
    assert rows["onnxruntime/fp32/cpu"]["agreement"] > 0.99
    assert result["settings"]["inputs"].startswith("4 real val images")


#: Row keys of bench.json as the committed reports have them, per kind of row.
OK_ROW_KEYS = list(ROW_KEYS) + ["load_s", "timer", "samples_ms", "batch", "batch_samples_ms", "pixel_accuracy", "dice",
                                "eval_images", "agreement_pixels"]


def test_bench_json_keeps_the_field_names_and_order_of_the_committed_reports(bench):
    result, report, _ = bench
    committed = json.loads((REPORTS / "camvid-x86-amx" / "bench.json").read_text())
    assert list(result) == list(committed)
    assert list(result["settings"]) == list(committed["settings"])
    for r in committed["rows"]:
        assert list(r) == (OK_ROW_KEYS if r["status"] == "ok" else list(ROW_KEYS)), r["id"]
    for r in result["rows"]:
        assert list(r) == (OK_ROW_KEYS if r["status"] == "ok" else list(ROW_KEYS)), r["id"]
        if r["status"] == "ok":
            assert list(r["memory"]) == list(committed["rows"][0]["memory"])
            assert list(r["latency_ms"]) == list(committed["rows"][0]["latency_ms"])
    for s in result["streaming"]:  # the stream's own keys (StreamStats.to_dict) follow, less "out"
        assert list(s)[:4] == ["id", "label", "role", "status"] and "out" not in s and "stages" in s
    with open(report / "bench.csv", newline="") as f:
        header = next(csv.reader(f))
    with open(REPORTS / "camvid-x86-amx" / "bench.csv", newline="") as f:
        committed_header = next(csv.reader(f))
    assert header[:36] == committed_header[:36]
    assert header[36:] == ["iou_background", "iou_road", "iou_car"]


@pytest.mark.parametrize("name", ["camvid-x86-amx", "camvid-x86-avx512-vnni", "camvid-x86-avx512-vnni-run2"])
def test_records_read_the_committed_reports_back_exactly(name):
    """Row/StreamRow.from_dict(d).to_dict() is d, keys in order, nothing left over; the CSVs the
    report writer makes of them are the committed ones, byte for byte."""
    data = json.loads((REPORTS / name / "bench.json").read_text())
    for r in data["rows"]:
        row = Row.from_dict(r)
        assert row.extra == {} and (row.memory is None or row.memory.extra == {})
        assert row.to_dict() == r and list(row.to_dict()) == list(r)
        if r["memory"]:
            assert list(row.to_dict()["memory"]) == list(r["memory"])
        if row.ok:
            assert row.latency_ms.p50 == r["latency_ms"]["p50"] and row.memory.mode == r["memory"]["mode"]
    for s in data["streaming"]:
        assert StreamRow.from_dict(s).to_dict() == s and list(StreamRow.from_dict(s).to_dict()) == list(s)
    assert to_csv(data) == (REPORTS / name / "bench.csv").read_text()
    assert stream_csv(data) == (REPORTS / name / "bench_stream.csv").read_text()


def test_row_keeps_unknown_keys_and_writes_measured_keys_only_when_set():
    skipped = Row(id="tensorrt/fp16/cuda", label="TensorRT FP16 (cuda)", backend="tensorrt", precision="fp16",
                  device="cuda", status="skipped", reason="no FP16 engine given")
    d = skipped.to_dict()
    assert list(d) == list(ROW_KEYS) and d["latency_ms"] is None and d["memory"] is None and d["notes"] == []
    loaded_then_failed = Row.from_dict({**d, "status": "failed", "load_s": 0.5})
    assert list(loaded_then_failed.to_dict()) == list(ROW_KEYS) + ["load_s"]
    future = Row.from_dict({**d, "new_field": [1, 2], "memory": {"mode": "off", "new_mem": 3}})
    assert future.extra == {"new_field": [1, 2]} and future.memory.extra == {"new_mem": 3}
    assert future.to_dict() == {**d, "new_field": [1, 2], "memory": {**MemoryProbe(mode="off").to_dict(), "new_mem": 3}}
    assert list(future.to_dict())[-1] == "new_field"
    with pytest.raises(KeyError):
        Row.from_dict({"id": "x"})


def _ok_row(rid: str, p50: float, batch_p50: float, miou: float | None, agreement: float | None = None,
            backend: str = "onnxruntime", precision: str = "fp32") -> Row:
    return Row(id=rid, label=rid, backend=backend, precision=precision, device="cpu", status="ok", batch=4,
               latency_ms=Timing.of([p50]), batch_latency_ms=Timing.of([batch_p50]), miou=miou, agreement=agreement)


def test_finish_rows_speedups_and_best_row_are_exact():
    """FPS, speedups and ΔmIoU against the baseline (also for a row planned before it), and the best
    row: the fastest whose mIoU is within the tolerance (1 point)."""
    from benchmarks.runner import _finish_rows

    early = _ok_row("torchscript/fp32/cpu", 8.0, 16.0, 0.700, backend="torchscript")
    base = _ok_row("onnxruntime/fp32/cpu", 10.0, 20.0, 0.700)
    fast_bad = _ok_row("onnxruntime/int8/cpu", 2.0, 4.0, 0.680, precision="int8")  # -2.0 points: not best
    fast_ok = _ok_row("onnxruntime/fp16/cpu", 5.0, 8.0, 0.6905, precision="fp16")  # -0.95 points: best
    skipped = Row(id="pytorch/fp32/cpu", label="p", backend="pytorch", precision="fp32", device="cpu", status="skipped")
    notes: list[str] = []
    b, best = _finish_rows([skipped, early, base, fast_bad, fast_ok], base.id, BenchOptions(), notes)
    assert b is base and base.baseline and best is fast_ok and fast_ok.best
    assert [r.best for r in (early, base, fast_bad)] == [False, False, False]
    assert base.speedup == 1.0 and base.fps_b1 == 100.0 and base.fps_batch == 200.0
    assert early.speedup == 1.25 and early.fps_batch == 250.0 and early.speedup_batch == 1.25
    assert fast_ok.speedup == 2.0 and fast_ok.speedup_batch == 2.5 and fast_ok.delta_miou == pytest.approx(-0.0095)
    assert skipped.speedup is None and skipped.fps_b1 is None
    assert notes == ["PyTorch eager FP32 could not run; speedups and agreement are relative to onnxruntime/fp32/cpu"]

    no_data = [_ok_row("a/fp32/cpu", 10.0, 20.0, None, 1.0), _ok_row("b/int8/cpu", 1.0, 2.0, None, 0.98),
               _ok_row("c/fp16/cpu", 4.0, 8.0, None, 0.995)]
    notes = []
    _, best = _finish_rows(no_data, "a/fp32/cpu", BenchOptions(), notes)
    assert best.id == "c/fp16/cpu"  # b is faster but agrees on only 98% of the pixels
    assert notes[-1] == "no dataset: the best row is the fastest with >= 99% argmax agreement with the baseline"
    notes = []
    assert _finish_rows(no_data, None, BenchOptions(), notes) == (None, None)
    assert notes == ["no FP32 row ran: no baseline, no speedup"]


def test_label_agreement_is_the_fraction_of_equal_pixels():
    from benchmarks.runner import label_agreement

    a = np.zeros((2, 2, 5), np.uint8)
    b = a.copy()
    b[0, 0, :3] = 1
    assert label_agreement(a, b) == (17 / 20, 20)
    assert label_agreement(a, a) == (1.0, 20)
    with pytest.raises(ValueError, match="shapes"):
        label_agreement(a, a[:1])


def test_load_report_refuses_malformed_rows(tmp_path):
    bad = {"schema": "unet-edge-bench/1", "rows": [{"id": "x"}]}
    (tmp_path / "bench.json").write_text(json.dumps(bad))
    with pytest.raises(ArtifactError, match="malformed rows"):
        load_report(tmp_path)


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
        assert s["status"] == "ok" and s["frames"] == 6 and "out" not in s and "reason" not in s
        assert s["fps"] == pytest.approx(s["frames"] / s["wall_s"], rel=1e-2)
        assert set(s["stages"]) == {"read", "preprocess", "infer", "postprocess", "overlay", "write"}
        for v in s["stages"].values():
            assert v["total_ms"] == pytest.approx(6 * v["mean_ms"], abs=1e-3)  # a mean over the 6 frames
        assert s["stages"]["infer"]["mean_ms"] > 0
        assert s["infer_fps"] == pytest.approx(1000.0 / s["stages"]["infer"]["mean_ms"], rel=1e-3)
        assert StreamRow.from_dict(s).to_dict() == s


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
    cls = probe_host().cpu_class
    assert result["host"]["cpu_class"] == cls and result["host"]["int8_family"] == probe_host().int8_family
    assert f"Host: {host_summary(result['host'])}" in md and f", {cls}, " in host_summary(result["host"])
    assert f"**Best on this {cls} host**" in md  # the headline names the host's CPU class
    assert "![Latency vs accuracy](latency_vs_miou.png)" in md
    with open(report / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result["rows"]) and "iou_car" in rows[0]
    table = next(x for x in lines if isinstance(x, str) and x.startswith("unet-edge bench: tiny-cpu (input 64x96, threads 1"))
    assert "PyTorch eager FP32 (cpu)" in table and "BASELINE" in table and "not run on this host" in table
    assert lines[-1] == f"report: {report / 'bench.md'} (+ bench.json, bench.csv, charts)"
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
    spec = MemorySpec(path=str(checkpoint), device="cpu", precision="fp32", threads=1, input_size=(H, W), batch=2)
    m = measure_memory(spec, mode="subprocess", timeout_s=120)
    assert m.error is None and m.batch_error is None, m
    assert m.mode == "subprocess" and m.gpu_peak_mb is None and m.gpu_kind is None
    assert m.rss_peak_b1_mb >= m.rss_load_mb - 1e-6
    assert m.rss_peak_batch_mb >= m.rss_peak_b1_mb - 1e-6
    assert list(m.to_dict()) == ["rss_load_mb", "rss_peak_b1_mb", "rss_peak_batch_mb", "gpu_peak_mb", "gpu_kind", "mode"]
    assert m.peak_b1_mb == m.rss_peak_b1_mb
    assert measure_memory(spec, mode="off") == MemoryProbe(mode="off")
    bad = measure_memory(MemorySpec(str(checkpoint.parent / "missing.pt"), "cpu", "fp32", 1, (H, W), 2), mode="inprocess")
    assert bad.rss_peak_b1_mb is None and bad.error.startswith("ArtifactError: ") and "missing.pt" in bad.error
    assert list(bad.to_dict()) == ["rss_load_mb", "rss_peak_b1_mb", "rss_peak_batch_mb", "gpu_peak_mb", "gpu_kind",
                                   "mode", "error"]
    with pytest.raises(ValueError, match="memory mode"):
        measure_memory(spec, mode="fast")


def test_cli_bench_json_without_data(checkpoint, tmp_path):
    """The CLI path: no --data -> seeded random inputs (said so), no mIoU, agreement still measured."""
    out = CliRunner().invoke(__import__("cli").app, [
        "bench", str(checkpoint), "--report", str(tmp_path / "r"), "--iters", "3", "--warmup", "1", "--batch", "2",
        "--memory", "off", "--no-stream", "--no-plots", "--json"])  # default --threads 0: the physical cores
    torch.set_num_threads(1)  # the bench set torch's threads; this module runs with one
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    # the report records the resolved thread count, not the 0 that asked for it
    assert result["settings"]["threads"] == resolve_threads(0) == probe_host().default_threads > 0
    assert result["settings"]["threads_requested"] == 0
    assert f"threads: {resolve_threads(0)};" in (tmp_path / "r" / "bench.md").read_text()
    rows = _rows(result)
    assert rows["pytorch/fp32/cpu"]["status"] == "ok" and rows["pytorch/fp32/cpu"]["agreement"] == 1.0
    assert rows["pytorch/fp32/cpu"]["miou"] is None and "eval_images" not in rows["pytorch/fp32/cpu"]
    assert rows["pytorch/fp32/cpu"]["agreement_pixels"] == 16 * H * W  # the 16 pool tensors (default --pool)
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


# ------------------------------------------------------------------------------ host-aware planning


def test_plan_skips_emulated_bf16_unless_asked(checkpoint):
    """A CPU without bf16 arithmetic: the eager BF16 row is skipped with the emulation cost as the
    reason; --emulated plans it (noted as emulated); a CPU with native bf16 plans it plainly."""
    from unet_edge.precision import EMULATED_BF16_COST

    avx2 = _host()
    assert not avx2.native_bf16
    r = {x.id: x for x in plan_rows([str(checkpoint)], device="cpu", host=avx2).rows}["pytorch/bf16/cpu"]
    assert r.status == "skipped" and "emulated" in r.reason and EMULATED_BF16_COST in r.reason
    assert "--emulated" in r.reason
    r = {x.id: x for x in plan_rows([str(checkpoint)], device="cpu", host=avx2, emulated=True).rows}["pytorch/bf16/cpu"]
    assert r.status == "planned" and r.reason == "" and any("emulated" in n for n in r.notes)
    amx = _host(("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"))
    r = {x.id: x for x in plan_rows([str(checkpoint)], device="cpu", host=amx).rows}["pytorch/bf16/cpu"]
    assert r.status == "planned" and r.notes == ["autocast bf16"]
    # the FP32 baseline is never affected
    assert {x.id: x for x in plan_rows([str(checkpoint)], device="cpu", host=avx2).rows}["pytorch/fp32/cpu"].status == "planned"


def test_plan_cuda_bf16_row_needs_compute_capability_8(checkpoint):
    """PyTorch CUDA rows: fp32, fp16 and bf16; bf16 below compute capability 8.0 is emulated and
    skipped unless asked for. A fake host with a GPU: planning loads nothing."""
    def by(cc, **kw):
        host = _host(cuda=[CudaDevice(0, "fake GPU", cc, 16.0)])
        return {x.id: x for x in plan_rows([str(checkpoint)], device="auto", host=host, **kw).rows}

    turing = by((7, 5))
    assert turing["pytorch/fp16/cuda"].status == "planned" and turing["pytorch/fp32/cuda"].status == "planned"
    assert turing["pytorch/bf16/cuda"].status == "skipped"
    assert "compute capability 7.5" in turing["pytorch/bf16/cuda"].reason and "emulated" in turing["pytorch/bf16/cuda"].reason
    assert by((7, 5), emulated=True)["pytorch/bf16/cuda"].status == "planned"
    ampere = by((8, 0))["pytorch/bf16/cuda"]
    assert ampere.status == "planned" and ampere.notes == ["autocast bf16"]
    # no GPU on the host: every CUDA row is skipped for that reason, bf16 included
    none = {x.id: x for x in plan_rows([str(checkpoint)], device="auto", host=_host()).rows}
    assert none["pytorch/bf16/cuda"].status == "skipped" and "no CUDA device" in none["pytorch/bf16/cuda"].reason
    with pytest.raises(BackendUnavailableError):
        plan_rows([str(checkpoint)], device="cuda", host=_host())


def test_plan_notes_cpu_int8_made_for_another_int8_family(export_dir, tmp_path):
    """A CPU INT8 ONNX whose metadata says it was quantized for x86-vnni gets a note on an AVX2
    host (x86-avx2 int8 kernels), none on a VNNI host; the TensorRT Q/DQ file is noted on the AVX2
    host only (its full-range weights saturate ONNX Runtime's AVX2 int8 kernels)."""
    import onnx

    from unet_edge.artifacts import read_meta
    from unet_edge.export.onnx_export import save_onnx

    src = export_dir / "model_int8_cpu.onnx"
    meta = read_meta(src)
    q = dict(meta.extra["quantization"])
    assert q["scheme"] == "cpu"
    vnni_file = save_onnx(onnx.load(str(src)), meta.with_(extra={"quantization": {**q, "target": "x86-vnni"}}),
                          tmp_path / "model_int8_cpu.onnx")
    files = [str(vnni_file), str(export_dir / "model_int8.onnx")]

    def rows(host):
        plan = plan_rows(files, device="cpu", host=host)
        return next(r for r in plan.rows if r.path == str(vnni_file)), next(
            r for r in plan.rows if r.path == str(export_dir / "model_int8.onnx"))

    avx2 = _host()
    assert avx2.int8_family == "x86-avx2"
    cpu_row, trt_row = rows(avx2)
    note = [n for n in cpu_row.notes if "quantized for" in n]
    assert note == [f"quantized for x86-vnni CPUs, this host is x86-avx2: its int8 kernels may lose "
                    "accuracy or speed; re-export here (unet-edge export --int8)"]
    assert cpu_row.status == "planned"  # noted, still timed: the measured mIoU shows what it costs
    assert not any("quantized for" in n for n in trt_row.notes)
    assert [n for n in trt_row.notes if "saturate" in n] == [
        "the TensorRT Q/DQ file: ONNX Runtime's int8 kernels on this x86-avx2 CPU saturate on its full-range "
        "weights; model_int8_cpu.onnx is the INT8 file for ONNX Runtime here"]
    vnni = _host(("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"))
    assert vnni.int8_family == "x86-vnni"
    cpu_row, trt_row = rows(vnni)
    assert not any("quantized for" in n or "saturate" in n for n in cpu_row.notes + trt_row.notes)


# ------------------------------------------------------------------------------------- host block


def test_host_info_is_built_from_the_probe():
    fake = _host()
    h = host_info(probe=fake)
    assert h["cpu_class"] == "x86-avx2" and h["int8_family"] == "x86-avx2" and h["native_bf16"] is False
    assert h["probe"] == fake.to_dict()
    assert h["cpu"]["model"] == "x" and h["cpu"]["all_speed_flags"] == ["avx2", "fma"]
    assert h["cpu"]["flags"]["avx2"] is True and h["cpu"]["flags"]["avx512_vnni"] is False
    assert "asimddp" not in h["cpu"]["flags"]  # no Arm flags listed on x86
    assert h["cpu"]["default_threads"] == 2 and h["gpu"] is None
    assert host_summary(h) == "x, 2 cores, x86-avx2, no GPU"
    real = host_info()
    assert real["cpu_class"] == probe_host().cpu_class and real["probe"] == probe_host().to_dict()


def test_host_summary_reads_old_reports():
    """Reports written before the probe have no cpu_class: the class comes from their flag list with
    the probe's rules; without flags it says so."""
    old = json.loads((REPORTS / "camvid-x86-avx512-vnni" / "bench.json").read_text())["host"]
    assert "cpu_class" not in old and "avx512_vnni" in old["cpu"]["all_speed_flags"]
    assert cpu_class_of(old) == "x86-avx512-vnni"  # AVX-512 VNNI + BF16 EPYC, no AMX
    assert host_summary(old) == "AMD EPYC, 2 cores, x86-avx512-vnni, no GPU"
    assert cpu_class_of({"arch": "aarch64", "cpu": {"model": "Orin", "all_speed_flags": ["asimd", "asimddp"]}}) == "arm64-dotprod"
    only_dict = {"arch": "x86_64", "cpu": {"model": "y", "flags": {"avx2": True, "avx512_vnni": False}, "affinity": 4}}
    assert host_summary(only_dict) == "y, 4 cores, x86-avx2, no GPU"
    bare = {"cpu": {"model": "z", "cores_logical": 8}}
    assert cpu_class_of(bare) is None and host_summary(bare) == "z, 8 cores, unknown class, no GPU"
    new = {"cpu_class": "x86-amx", "arch": "x86_64", "cpu": {"model": "Intel Xeon", "default_threads": 2,
                                                             "all_speed_flags": ["avx2"]},
           "gpu": {"name": "Orin", "driver": "540"}}
    assert host_summary(new) == "Intel Xeon, 2 cores, x86-amx, Orin (driver 540)"  # the recorded class wins


def test_compare_reads_an_old_report_beside_a_new_one(bench):
    result, report, _ = bench
    cmp = compare_reports([load_report(REPORTS / "camvid-x86-avx512-vnni"), load_report(report)])
    assert [r["cpu_class"] for r in cmp["reports"]] == ["x86-avx512-vnni", probe_host().cpu_class]
    assert cmp["reports"][0]["host"] == "AMD EPYC, 2 cores, x86-avx512-vnni, no GPU"
    assert any(r["key"] == "pytorch/fp32/cpu" and all(r["cells"]) for r in cmp["rows"])


def test_int8_schemes_report_compares_every_cpu_scheme(tiny_export, folder_dataset, tmp_path):
    from benchmarks.int8_schemes import run

    r = run(tiny_export / "model_fp32.onnx", folder_dataset, tmp_path, calib_images=4, iters=4, rounds=2, limit=4,
            threads=1, log=lambda *a: None)
    assert [row["scheme"] for row in r["rows"]] == ["u8s8", "u8s8-w7", "u8u8"]
    assert "7-bit" in r["rows"][1]["weights"] and "full range" in r["rows"][0]["weights"] and "uint8" in r["rows"][2]["weights"]
    assert all(row["p50_ms"] > 0 for row in r["rows"]) and r["fp32_p50_ms"] > 0
    md = (tmp_path / "int8_schemes.md").read_text()
    assert md.count("\n| u8") == 3 and r["cpu_class"] in md and not list(tmp_path.glob("*.onnx"))
