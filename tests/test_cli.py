"""The CLI through typer's test runner: the contract other tools rely on, and clear errors."""
import json

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_every_command():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("synth", "train", "eval", "export", "run", "bench", "demo"):
        assert cmd in r.output
    for cmd in ("train", "eval", "export", "run", "bench"):
        assert invoke(cmd, "--help").exit_code == 0



def test_demo_cli_defaults_are_the_library_defaults():
    """``cli.py demo`` with no options runs what ``run_demo()`` runs: both read unet_edge.formats."""
    import inspect

    from unet_edge.demo import run_demo
    from unet_edge.time_budget import parse_time_budget

    import cli

    cmd = typer.main.get_command(app).commands["demo"]
    cli_defaults = {p.name: p.default for p in cmd.params if p.param_type_name == "option"}
    lib = {k: p.default for k, p in inspect.signature(run_demo).parameters.items()}
    assert cli_defaults["epochs"] == lib["epochs"] and cli_defaults["scenes"] == lib["n_train"]
    assert cli_defaults["scenes"] // 5 == lib["n_val"]
    assert cli_defaults["drive_frames"] == lib["drive_frames"] and cli_defaults["bench_iters"] == lib["bench_iters"]
    assert parse_time_budget(cli_defaults["time_budget"]) == lib["time_budget_s"] == 240.0
    assert parse_time_budget(cli_defaults["total_budget"]) == lib["total_budget_s"] == 480.0
    assert cli._size(cli_defaults["size"], "--size") == tuple(lib["size"]) == (240, 320)
    assert "never below 30s" in invoke("demo", "--help").output.replace("\n", " ").replace("│", "")

def test_train_eval_json_contract(folder_dataset, tmp_path):
    out = tmp_path / "run"
    r = invoke("train", "--data", folder_dataset, "--out", out, "--preset", "tiny", "--epochs", "1",
               "--batch-size", "4", "--crop", "48x64")
    assert r.exit_code == 0, r.output
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    r = invoke("eval", out / "best.pt", "--data", folder_dataset, "--split", "val", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert {"miou", "per_class_iou", "pixel_accuracy", "dice"} <= set(m)
    assert 0 <= m["miou"] <= 1 and set(m["per_class_iou"]) == {"class0", "class1", "class2"}


def test_eval_every_artifact_kind_agrees(tiny_export, tiny_run, folder_dataset):
    results = {}
    for art in (tiny_run["best"], tiny_export / "model.ts", tiny_export / "model_fp32.onnx"):
        r = invoke("eval", art, "--data", folder_dataset, "--json")
        assert r.exit_code == 0, r.output
        results[art.name] = json.loads(r.stdout)["miou"]
    assert len({round(v, 6) for v in results.values()}) == 1  # FP32 artifacts score identically


def test_export_cli_writes_report(tiny_run, folder_dataset, tmp_path):
    r = invoke("export", tiny_run["best"], "--out", tmp_path / "exp", "--fp16", "--int8", "--calib-data",
               folder_dataset, "--calib-images", "4", "--allow-int8-drop", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert set(rep["eval"]) == {"pytorch_fp32", "onnx_fp32", "onnx_fp16", "onnx_int8", "onnx_int8_cpu",
                                "onnx_int8_fakequant", "onnx_int8_cpu_fakequant"}
    assert {c["status"] for c in rep["int8_check"].values()} <= {"passed", "failed"} and len(rep["int8_check"]) == 2
    assert rep["artifacts"]["onnx_fp32"]["parity_vs_pytorch"]["max_abs_error"] < 1e-4


def _video(path, n=6, size=(48, 64)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size[1], size[0]))
    for i in range(n):
        w.write(np.full((*size, 3), i * 30, np.uint8))
    w.release()
    return path


def test_run_streams_a_video(tiny_export, tmp_path):
    src = _video(tmp_path / "in.mp4")
    out = tmp_path / "out.mp4"
    r = invoke("run", tiny_export / "model_int8.onnx", "--source", src, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"] == 6
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


@pytest.mark.parametrize("args,code,text", [
    (["eval", "missing.pt", "--data", "."], 4, "artifact not found"),
    (["train", "--data", "no/such/dir", "--epochs", "1"], 3, "dataset folder not found"),
    (["run", "{ckpt}", "--camera", "9", "--out", "{tmp}/o.mp4"], 5, "camera 9"),
    (["run", "{ckpt}", "--source", "{tmp}/none.mp4", "--out", "{tmp}/o.mp4"], 5, "none.mp4"),
    (["eval", "{ckpt}", "--data", "{tmp}"], 3, "not a known dataset layout"),
    (["eval", "{ckpt}", "--data", "{data}", "--device", "cuda"], 6, "CUDA"),
])
def test_bad_inputs_exit_with_clear_errors(args, code, text, tiny_run, folder_dataset, tmp_path):
    """A few end-to-end cases; the full exit-code table is tests/test_cli_errors.py."""
    args = [a.format(ckpt=tiny_run["best"], tmp=tmp_path, data=folder_dataset) for a in args]
    r = invoke(*args)
    assert r.exit_code == code, r.output
    assert text in r.output.replace("\n", "")


@pytest.mark.parametrize("args, bound", [(("--time-budget", "20m"), 1000), ((), 30),
                                         (("--time-budget", "20m", "--epochs", "7"), 7)])
def test_train_epochs_bound_defaults_to_the_budget(folder_dataset, tmp_path, monkeypatch, args, bound):
    # --time-budget without --epochs: the budget, not the no-budget default of 30, sets the length
    import unet_edge.train

    seen = {}

    def fake_train(cfg, log=print):
        seen["epochs"] = cfg.epochs
        return {"best_miou": 0.5, "best_epoch": 1, "epochs": 1, "elapsed_s": 1.0, "best": "b.pt"}

    monkeypatch.setattr(unet_edge.train, "train", fake_train)
    r = runner.invoke(app, ["train", "--data", str(folder_dataset), "--out", str(tmp_path / "r"), *args])
    assert seen.get("epochs") == bound, r.output


def test_train_bad_size_is_a_usage_error(folder_dataset):
    r = runner.invoke(app, ["train", "--data", str(folder_dataset), "--crop", "big"])
    assert r.exit_code == 2 and "HxW" in r.output


def test_frames2video_then_run_keeps_every_frame(tiny_run, folder_dataset, tmp_path):
    video = tmp_path / "seq.mp4"
    r = invoke("frames2video", folder_dataset / "images", "--out", video, "--pattern", "00*", "--fps", "5")
    assert r.exit_code == 0, r.output
    n = len(list((folder_dataset / "images").glob("00*")))
    assert int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT)) == n
    out = tmp_path / "overlay.mp4"
    r = invoke("run", tiny_run["best"], "--source", video, "--out", out, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == n and json.loads(r.stdout)["frames"] == n
    assert invoke("frames2video", tmp_path / "nope", "--out", video).exit_code == 5


def test_synth_cli_writes_a_loadable_dataset_and_video(tmp_path):
    from unet_edge.data.layouts import load_dataset

    r = invoke("synth", tmp_path / "s", "--train", "3", "--val", "2", "--size", "48x64", "--frames", "4",
               "--video", tmp_path / "d.mp4")
    assert r.exit_code == 0, r.output
    assert len(load_dataset(tmp_path / "s", "train")) == 3 and len(load_dataset(tmp_path / "s", "val")) == 2
    assert int(cv2.VideoCapture(str(tmp_path / "d.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    assert invoke("synth", tmp_path / "s2", "--frames", "3").exit_code == 2  # --frames needs --video


def test_demo_runs_every_stage_small(tmp_path):
    out = tmp_path / "demo"
    r = invoke("demo", "--out", out, "--epochs", "1", "--scenes", "10", "--drive-frames", "6", "--bench-iters", "2",
               "--size", "64x96", "--total-budget", "40s")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["stream"]["frames"] == 6
    assert int(cv2.VideoCapture(summary["overlay_video"]).get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    for f in ("model.ts", "model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx", "model_int8_cpu.onnx", "calib.cache"):
        assert (out / "export" / f).is_file()
    assert (out / "bench" / "bench.md").is_file() and (out / "train" / "best.pt").is_file()
    assert summary["bench_plan"]["level"] >= 1 and summary["host"]["cpu_class"]  # cut to fit the 40 s budget
