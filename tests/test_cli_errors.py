"""The exit-code table of the README is a contract: bad inputs get their code, one clear line, no traceback.

Codes: 0 ok, 2 bad usage, 3 dataset error, 4 artifact error, 5 video source error, 6 backend
unavailable, 7 export error. A library error prints exactly one ``error: ...`` line naming the bad
input; typer's own parameter errors (exit 2) print a usage box naming the option.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

META = {"arch": {"num_classes": 3, "in_channels": 3, "base_channels": 8, "depth": 1, "dropout": 0.0},
        "class_names": ["class0", "class1", "class2"], "palette": [[70, 130, 180], [128, 64, 128], [0, 0, 142]],
        "ignore_index": 255, "input_size": [8, 8], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "input_name": "images", "output_name": "logits", "precision": "fp32", "format_version": 1}


def _meta(**changes) -> dict:
    d = json.loads(json.dumps(META))
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


def _onnx(path: Path, meta_text: str) -> Path:
    """A 3-class 'model' (Identity on 1x3x8x8) carrying ``meta_text`` as its unet-edge metadata; the class names
    are those of conftest's folder dataset."""
    shape = [1, 3, 8, 8]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"unet_edge": meta_text})
    onnx.save(model, str(path))
    return path


def _video(path: Path, n: int = 3, size=(16, 16)) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size[1], size[0]))
    for i in range(n):
        w.write(np.full((*size, 3), 40 * i, np.uint8))
    w.release()
    return path


@pytest.fixture(scope="module")
def env(tiny_run, folder_dataset, tmp_path_factory) -> dict:
    """Paths the table refers to as {name}: good and broken artifacts, a video, odd folders."""
    t = tmp_path_factory.mktemp("cli_errors")
    ckpt = tiny_run["best"]
    raw = ckpt.read_bytes()
    (t / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    with zipfile.ZipFile(ckpt) as zin, zipfile.ZipFile(t / "corrupt.pt", "w") as zout:
        for item in zin.infolist():  # a complete zip whose pickle is garbage
            zout.writestr(item, b"\x80\x02garbage" if item.filename.endswith("data.pkl") else zin.read(item.filename))
    (t / "notes.txt").write_text("not a model\n")
    (t / "afile").write_text("a file where a folder is expected\n")
    (t / "adir").mkdir()
    (t / "empty").mkdir()
    (t / "unknown_layout").mkdir()
    (t / "unknown_layout" / "readme.md").write_text("no images here\n")
    _onnx(t / "good.onnx", json.dumps(META))
    _onnx(t / "bad_json.onnx", json.dumps(META)[:-7])
    _onnx(t / "missing_key.onnx", json.dumps(_meta(palette=None)))
    _onnx(t / "wrong_type.onnx", json.dumps(_meta(input_size="big")))
    _onnx(t / "palette_mismatch.onnx", json.dumps(_meta(palette=META["palette"][:2])))
    _onnx(t / "classes_mismatch.onnx", json.dumps(_meta(class_names=["class0", "class1"], palette=META["palette"][:2])))
    (t / "edited.engine").write_bytes(b"not a plan")
    (t / "edited.engine.json").write_text(json.dumps({**_meta(ignore_index="void"), "engine": {}}))
    with zipfile.ZipFile(t / "edited.ts", "w") as z:
        z.writestr("edited/extra/unet_edge.json", json.dumps(_meta(mean=[0.5, 0.5])))
        z.writestr("edited/data.pkl", b"")
    _video(t / "in.mp4")
    return {"tmp": t, "ckpt": ckpt, "data": folder_dataset}


TRAIN = ["train", "--data", "{data}", "--out", "{case}/run", "--preset", "tiny", "--epochs", "1", "--batch-size", "4",
         "--crop", "48x64", "--device", "cpu"]
EVAL = ["eval", "{ckpt}", "--data", "{data}", "--device", "cpu"]
EXPORT = ["export", "{ckpt}", "--out", "{case}/exp", "--no-eval"]
RUN = ["run", "{tmp}/good.onnx", "--source", "{tmp}/in.mp4", "--out", "{case}/o.mp4", "--device", "cpu"]
BENCH = ["bench", "{tmp}/good.onnx", "--report", "{case}/rep", "--device", "cpu", "--memory", "off", "--no-stream",
         "--no-plots", "--warmup", "0", "--iters", "1", "--rounds", "1", "--batch", "1"]

# (id, args, exit code, text the message must contain[, marks])
CASES = [
    # counts and numbers
    ("eval-limit-0", EVAL + ["--limit", "0"], 2, "--limit"),
    ("build-nothing-to-do", ["build", "{tmp}"], 2, "nothing to do"),
    ("build-triton-without-out", ["build", "{tmp}", "--jetson", "{case}/bundle", "--triton", "{case}/repo"], 2, "--triton"),
    ("eval-limit-negative", EVAL + ["--limit", "-1"], 2, "--limit"),
    ("eval-limit-abc", EVAL + ["--limit", "abc"], 2, "--limit"),
    ("eval-batch-size-0", EVAL + ["--batch-size", "0"], 2, "--batch-size"),
    ("train-limit-0", TRAIN + ["--limit", "0"], 2, "limit"),
    ("train-lr-0", TRAIN + ["--lr", "0"], 2, "lr"),
    ("train-lr-negative", TRAIN + ["--lr", "-1"], 2, "lr"),
    ("train-dropout-1.5", TRAIN + ["--dropout", "1.5"], 2, "dropout"),
    ("train-epochs-0", TRAIN + ["--epochs", "0"], 2, "--epochs"),
    ("train-time-budget-0", TRAIN + ["--time-budget", "0"], 2, "--time-budget"),
    # devices and precisions
    ("eval-device-tpu", EVAL[:-2] + ["--device", "tpu"], 2, "tpu"),
    ("run-device-tpu", RUN[:-2] + ["--device", "tpu"], 2, "tpu"),
    ("train-device-tpu", TRAIN[:-2] + ["--device", "tpu"], 2, "tpu"),
    ("eval-device-cuda-absent", EVAL[:-2] + ["--device", "cuda"], 6, "cuda"),
    ("bench-device-npu", BENCH + ["--device", "npu"], 2, "npu"),
    ("eval-precision-fp8", EVAL + ["--precision", "fp8"], 2, "fp8"),
    ("run-onnx-precision-fp8", RUN + ["--precision", "fp8"], 2, "fp8"),
    ("train-precision-fp8", TRAIN + ["--precision", "fp8"], 2, "fp8"),
    ("bench-memory-bad", BENCH + ["--memory", "bad"], 2, "--memory"),
    # output paths
    ("train-out-is-a-file", TRAIN[:3] + ["--out", "{tmp}/afile"] + TRAIN[5:], 2, "afile"),
    ("export-out-is-a-file", ["export", "{ckpt}", "--out", "{tmp}/afile", "--no-eval"], 2, "afile"),
    ("bench-report-is-a-file", BENCH[:2] + ["--report", "{tmp}/afile"] + BENCH[4:], 2, "afile"),
    ("bench-report-under-a-file", BENCH[:2] + ["--report", "{tmp}/afile/rep"] + BENCH[4:], 2, "afile"),
    ("run-out-is-a-directory", RUN[:4] + ["--out", "{tmp}/adir"] + RUN[6:], 2, "adir"),
    ("synth-out-is-a-file", ["synth", "{tmp}/afile", "--train", "1", "--val", "1", "--size", "16x16"], 2, "afile"),
    ("frames2video-out-is-a-directory", ["frames2video", "{data}/images", "--out", "{tmp}/adir"], 2, "adir"),
    # artifacts
    ("onnx-metadata-bad-json", ["eval", "{tmp}/bad_json.onnx", "--data", "{data}"], 4, "bad_json.onnx"),
    ("onnx-metadata-missing-key", ["eval", "{tmp}/missing_key.onnx", "--data", "{data}"], 4, "'palette'"),
    ("onnx-metadata-wrong-type", ["eval", "{tmp}/wrong_type.onnx", "--data", "{data}"], 4, "'input_size'"),
    ("onnx-metadata-palette-length", ["eval", "{tmp}/palette_mismatch.onnx", "--data", "{data}"], 4, "'palette'"),
    ("onnx-metadata-classes-vs-arch", ["eval", "{tmp}/classes_mismatch.onnx", "--data", "{data}"], 4, "'class_names'"),
    ("engine-sidecar-wrong-type", ["eval", "{tmp}/edited.engine", "--data", "{data}"], 4, "'ignore_index'"),
    ("torchscript-metadata-mean-length", ["eval", "{tmp}/edited.ts", "--data", "{data}"], 4, "'mean'"),
    ("truncated-checkpoint", ["eval", "{tmp}/truncated.pt", "--data", "{data}"], 4, "truncated.pt"),
    ("corrupt-checkpoint", ["eval", "{tmp}/corrupt.pt", "--data", "{data}"], 4, "corrupt.pt"),
    ("txt-artifact", ["eval", "{tmp}/notes.txt", "--data", "{data}"], 4, "notes.txt"),
    ("artifact-is-a-directory", ["eval", "{tmp}/adir", "--data", "{data}"], 4, "adir"),
    ("bench-txt-artifact", ["bench", "{tmp}/notes.txt", "--report", "{case}/rep", "--memory", "off"], 4, "notes.txt"),
    ("run-truncated-checkpoint", ["run", "{tmp}/truncated.pt", "--source", "{tmp}/in.mp4", "--out", "{case}/o.mp4"], 4,
     "truncated.pt"),
    # datasets
    ("eval-data-missing", ["eval", "{ckpt}", "--data", "{tmp}/no_such_dir"], 3, "no_such_dir"),
    ("eval-data-unknown-layout", ["eval", "{ckpt}", "--data", "{tmp}/unknown_layout"], 3, "unknown_layout"),
    ("train-data-is-a-file", TRAIN[:1] + ["--data", "{tmp}/afile"] + TRAIN[3:], 3, "afile"),
    ("eval-split-nope", EVAL + ["--split", "nope"], 2, "nope"),
    ("bench-split-nope", BENCH + ["--split", "nope"], 2, "--split"),
    # sizes
    ("synth-size-0x5", ["synth", "{case}/s", "--size", "0x5"], 2, "--size"),
    ("train-crop-abc", TRAIN + ["--crop", "abc"], 2, "--crop"),
    ("demo-size-0x5", ["demo", "--out", "{case}/demo", "--size", "0x5"], 2, "--size"),
    ("demo-time-budget-abc", ["demo", "--out", "{case}/demo", "--time-budget", "abc"], 2, "--time-budget"),
    # video sources and display
    ("run-source-and-camera", RUN + ["--camera", "0"], 2, "--camera"),
    ("run-nothing-to-do", RUN[:4] + RUN[6:], 2, "--out"),
    ("run-missing-video", RUN[:3] + ["{tmp}/none.mp4"] + RUN[4:], 5, "none.mp4"),
    ("run-show-without-display", RUN + ["--show"], 2, "show"),
    ("frames2video-empty-folder", ["frames2video", "{tmp}/empty", "--out", "{case}/v.mp4"], 5, "empty"),
    ("frames2video-missing-folder", ["frames2video", "{tmp}/no_frames", "--out", "{case}/v.mp4"], 5, "no_frames"),
    # export options
    ("export-calib-method-foo", EXPORT + ["--int8", "--calib-data", "{data}", "--calib-method", "foo"], 2, "foo"),
    ("export-int8-without-calib-data", EXPORT + ["--int8"], 2, "--calib-data"),
    ("export-int8-target-nope", EXPORT + ["--int8", "--calib-data", "{data}", "--int8-target", "nope"], 2, "nope"),
    ("export-int8-cpu-scheme-nope", EXPORT + ["--int8", "--calib-data", "{data}", "--int8-cpu-scheme", "nope"], 2, "nope"),
    # training recipe names
    ("train-schedule-nope", TRAIN + ["--schedule", "nope"], 2, "nope"),
    ("train-class-weights-nope", TRAIN + ["--class-weights", "nope"], 2, "nope"),
    ("train-preset-nope", TRAIN + ["--preset", "nope"], 2, "nope"),
    # the good path of the same fixtures: exit 0
    ("eval-good-onnx", ["eval", "{tmp}/good.onnx", "--data", "{data}", "--json"], 0, ""),
    ("doctor", ["doctor", "--json"], 0, ""),
]


def _params():
    for case in CASES:
        cid, args, code, text, *marks = case
        yield pytest.param(args, code, text, id=cid, marks=marks)


def _flat(text: str) -> str:
    """Usage-box text on one line (the box wraps and frames long messages)."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


@pytest.mark.parametrize("args,code,text", list(_params()))
def test_exit_code_table(args, code, text, env, tmp_path):
    argv = [a.format(case=tmp_path, **env) for a in args]
    r = runner.invoke(app, argv)
    out = r.stdout + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert "Traceback" not in out
    assert r.exit_code == code, out
    if code == 0:
        return
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    if errors:  # a library error: one line that names the input
        assert len(errors) == 1 and text in errors[0], r.stderr
    else:  # typer's usage box names the option
        assert code == 2 and "Usage:" in r.stderr and text in _flat(r.stderr), r.stderr


def test_table_is_big_enough():
    assert len(CASES) >= 30
    assert {c[2] for c in CASES} == {0, 2, 3, 4, 5, 6}  # 7 (export failed its checks) needs a real export


@pytest.mark.parametrize("args,code,text", [
    (["eval", "{tmp}/bad_json.onnx", "--data", "{data}"], 4, "bad_json.onnx"),
    (["eval", "{ckpt}", "--data", "{data}", "--device", "tpu"], 2, "tpu"),
    (["frames2video", "{tmp}/empty", "--out", "{case}/v.mp4"], 5, "empty"),
], ids=["artifact", "usage", "source"])
def test_exit_codes_of_a_real_process(args, code, text, env, tmp_path):
    """The same contract end to end, as a shell sees it: stderr has one error line and no traceback."""
    argv = [a.format(case=tmp_path, **env) for a in args]
    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), *argv], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], p.stderr


def test_handle_errors_prints_one_error_line_and_keeps_details_indented():
    """A library message that embeds another library's multi-line text still gives one ``error:`` line."""
    import typer

    from cli import handle_errors
    from unet_edge.errors import ArtifactError

    mini = typer.Typer()

    @mini.command()
    @handle_errors
    def boom() -> None:
        raise ArtifactError("cannot load m.onnx: parser said\n  node 3: bad attribute\n\n")

    r = runner.invoke(mini, [])
    assert r.exit_code == 4
    assert r.stderr.splitlines() == ["error: cannot load m.onnx: parser said", "    node 3: bad attribute"]
