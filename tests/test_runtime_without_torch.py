"""The ONNX runtime path (`run`, `eval`, `bench`, `doctor`) works where PyTorch cannot be imported.

A Jetson or edge-box user installs only numpy, OpenCV and ONNX Runtime. The subprocesses here
get a meta-path hook that makes every ``import torch`` fail, as it would without the package, so a
stray import anywhere on the path is caught (a lazy one included).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("torchvision", "albumentations"):
            raise ImportError(f"No module named {name!r} (blocked by the test: a runtime install has no PyTorch)")
        return None
sys.meta_path.insert(0, _NoTorch())
sys.argv = sys.argv[1:]
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    shim = tmp_path / "no_torch.py"
    shim.write_text(BLOCK_TORCH)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(shim), str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)


def test_the_block_really_blocks(tmp_path):
    shim = tmp_path / "no_torch.py"
    shim.write_text(BLOCK_TORCH)
    (tmp_path / "t.py").write_text("import torch\n")
    r = subprocess.run([sys.executable, str(shim), str(tmp_path / "t.py")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "blocked by the test" in r.stderr


def test_run_eval_bench_and_doctor_on_onnx_without_torch(tiny_export, folder_dataset, tmp_path):
    onnx_path = tiny_export / "model_fp32.onnx"
    video = tmp_path / "in.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(5):
        w.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    w.release()

    r = _cli(tmp_path, "run", str(onnx_path), "--source", str(video), "--out", str(tmp_path / "o.mp4"), "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["frames"] == 5 and (tmp_path / "o.mp4").stat().st_size > 0

    r = _cli(tmp_path, "eval", str(onnx_path), "--data", str(folder_dataset), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert 0.0 < m["miou"] <= 1.0 and m["backend"].startswith("onnxruntime")

    r = _cli(tmp_path, "bench", str(onnx_path), "--report", str(tmp_path / "bench"), "--iters", "2", "--warmup", "1",
             "--batch", "2", "--memory", "off", "--no-stream", "--no-plots", "--device", "cpu", "--json")
    assert r.returncode == 0, r.stderr
    rows = {(row["backend"], row["precision"]): row for row in json.loads(r.stdout)["rows"]}
    assert rows[("onnxruntime", "fp32")]["status"] == "ok" and rows[("pytorch", "fp32")]["status"] == "skipped"

    r = _cli(tmp_path, "doctor", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["host"]["cpu_class"]


def test_a_checkpoint_without_torch_says_what_to_install(tiny_run, tmp_path):
    r = _cli(tmp_path, "eval", str(tiny_run["best"]), "--data", str(tmp_path))
    assert r.returncode == 6, r.stderr
    assert "Traceback" not in r.stderr and "PyTorch" in r.stderr and "unet-edge[train]" in r.stderr
