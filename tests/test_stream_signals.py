"""`run` as a user meets it: --out checked before anything loads, every way of stopping leaves a
playable video, dropped frames are reported.

The signal tests start `python cli.py run` in a subprocess on a long video, wait until the hidden
temporary output holds encoded frames (OpenCV's muxer writes a 44-byte header at open and then
flushes packets in blocks, so > 4 KiB means frames were written), send the signal(s) and check
the exit code (130 SIGINT, 143 SIGTERM), that ``o.mp4`` decodes with as many frames as the
summary line says, and that no temporary file is left.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app

REPO = Path(__file__).resolve().parents[1]
LONG_FRAMES = 900  # ~4 s of streaming for the tiny model: far longer than it takes to send a signal
runner = CliRunner()


def _decoded_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2 cannot open {path}"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)  # noise: big packets, so the muxer flushes early
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (160, 120))
    assert vw.isOpened()
    for i in range(LONG_FRAMES):
        vw.write(np.roll(base, 3 * i, axis=1))
    vw.release()
    return path


def _wait_for_encoded_frames(proc: subprocess.Popen, folder: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before it could be interrupted: {proc.communicate()}")
        if any(p.stat().st_size > 4096 for p in folder.glob(".*") if p.is_file()):
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no frames were written within the timeout")


@pytest.mark.parametrize("signals,code,name", [
    ([signal.SIGINT], 130, "SIGINT"),
    ([signal.SIGINT, signal.SIGINT], 130, "SIGINT"),  # 50 ms apart: the second lands during finalisation
    ([signal.SIGTERM], 143, "SIGTERM"),
], ids=["sigint", "sigint-twice", "sigterm"])
def test_signals_leave_a_playable_video_and_no_temp_file(signals, code, name, tiny_run, long_video, tmp_path):
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "run", str(tiny_run["best"]), "--source",
                             str(long_video), "--out", "o.mp4", "--device", "cpu", "--threads", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_encoded_frames(proc, tmp_path)
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.05)
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    m = re.search(rf"{name}: stopped after (\d+) frames; o\.mp4 holds them", err)
    assert m, err
    n = int(m.group(1))
    assert 1 <= n < LONG_FRAMES
    assert _decoded_frames(tmp_path / "o.mp4") == n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]  # no hidden temp file, no partial


# --- --out is checked before the backend loads ---------------------------------------------------------

@pytest.mark.parametrize("out,text", [
    ("adir", "adir is a directory"),
    ("afile/o.mp4", "which is a file, not a folder"),
    ("o.webm", "unsupported extension '.webm'"),
])
def test_bad_out_is_a_usage_error_before_the_artifact_is_read(out, text, tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    # the artifact does not exist: a usage error (2) instead of an artifact error (4) shows --out came first
    r = runner.invoke(app, ["run", str(tmp_path / "missing.pt"), "--source", str(tmp_path / "none.mp4"),
                            "--out", str(tmp_path / out)])
    assert r.exit_code == 2, r.output
    assert text in r.output.replace("\n", "") and str(tmp_path / out) in r.output.replace("\n", "")
    assert "Traceback" not in r.output


def test_dropped_frames_are_counted_in_json_and_warned(tiny_run, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a", "c", "d"):
        cv2.imwrite(str(folder / f"{name}.png"), np.full((48, 64, 3), 90, np.uint8))
    (folder / "b.png").write_bytes(b"garbage, not a png")
    out = tmp_path / "o.mp4"
    r = runner.invoke(app, ["run", str(tiny_run["best"]), "--source", str(folder), "--out", str(out),
                            "--device", "cpu", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["frames_read"], d["frames_decoded"], d["frames_written"]) == (4, 3, 3)
    assert d["frames_dropped"] == {"decode": 1, "corrupt": 0, "queue": 0, "total": 1}
    text = r.output.replace("\n", "")
    assert "warning: 1 of 4 frames read were dropped (1 undecodable)" in text and "b.png" in text
    assert _decoded_frames(out) == 3
