"""Training runs killed for real: ``cli.py train`` subprocesses get SIGKILL at chosen or random
moments; what they leave must be complete or absent, and resuming must give the uninterrupted run.

Each subprocess pays the CLI's start-up (imports, host probe: a few seconds), so the runs are tiny:
the 'tiny' preset on 6 images of 48x64, one torch thread.
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch

from unet_edge.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 8
ARGS = dict(preset="tiny", batch_size=4, crop=(40, 56), lr=5e-3, limit=6, threads=1, device="cpu")


def _cli_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), "train", "--data", str(data), "--out", str(out), "--preset", "tiny",
            "--epochs", str(EPOCHS), "--batch-size", "4", "--crop", "40x56", "--lr", "0.005", "--limit", "6",
            "--threads", "1", "--device", "cpu", *extra]


def _start(data: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    # a session of its own, so SIGKILL reaches any helper process too (as kill -9 of a job would)
    return subprocess.Popen(_cli_args(data, out, *extra), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll ``pred()`` every 10 ms until true (True), the process ends or ``timeout`` s pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc.poll() is not None:
            return bool(pred())
        time.sleep(0.01)
    return False


@pytest.fixture(scope="module")
def uninterrupted(folder_dataset, tmp_path_factory) -> dict:
    """The reference: the same run as the CLI's, trained in one go in this process (``out``), and
    the seconds per epoch it took here (``epoch_s``: steps, validation, checkpoints, log, plot)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    started = []
    n = torch.get_num_threads()
    try:
        train(TrainConfig(data=str(folder_dataset), out=str(out), epochs=EPOCHS, progress=False, command="pytest",
                          **ARGS), log=lambda line: started.append(time.monotonic()) if "training" in line else None)
    finally:
        torch.set_num_threads(n)
    return {"out": out, "epoch_s": (time.monotonic() - started[0]) / EPOCHS}


def _assert_same_run(out: Path, reference: dict) -> None:
    got, want = _rows(out), _rows(reference["out"])
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, EPOCHS + 1)]
    for a, b in zip(got, want):
        for key in ("train_loss", "lr", "val_miou"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), (a["epoch"], key)


def test_sigkill_during_epoch_2_then_resume_matches_the_uninterrupted_run(folder_dataset, uninterrupted, tmp_path):
    out = tmp_path / "run"
    proc = _start(folder_dataset, out, tmp_path / "stderr.txt")
    try:
        assert _wait_for(lambda: (out / "log.csv").is_file() and len(_rows(out)) >= 1, proc), \
            (tmp_path / "stderr.txt").read_text()
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert 1 <= done < EPOCHS and not (out / "summary.json").exists()
    n = torch.get_num_threads()
    try:
        lines = []
        train(TrainConfig(data=str(folder_dataset), out=str(out), epochs=EPOCHS, resume=True, progress=False,
                          command="pytest", **ARGS), log=lines.append)
    finally:
        torch.set_num_threads(n)
    assert any("taking over the stale lock" in line and f"pid {proc.pid}" in line for line in lines)
    _assert_same_run(out, uninterrupted)


def _check_folder(out: Path, passed_cleanup: bool) -> list[str]:
    """Every file in a killed run's folder is complete and loadable (or a leftover temp file / lock);
    returns the temp files."""
    tmps, names = [], sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    for name in names:
        p = out / name
        if name.startswith(".") and ".tmp" in name:
            tmps.append(name)
        elif name in ("best.pt", "last.pt"):
            ck = torch.load(p, map_location="cpu", weights_only=True)
            assert {"model", "meta", "epoch"} <= set(ck), name
        elif name == "log.csv":
            epochs = [int(r["epoch"]) for r in _rows(out)]
            assert epochs == list(range(1, len(epochs) + 1))
            last = torch.load(out / "last.pt", weights_only=True)["epoch"]
            assert last - 1 <= len(epochs) <= last  # log.csv is written after last.pt
        elif name == "summary.json":
            assert json.loads(p.read_text())["epochs"] == EPOCHS
        elif name == "curves.png":
            assert cv2.imread(str(p)) is not None
        elif name == ".lock":
            text = p.read_text()
            assert text == "" or json.loads(text)["pid"] > 0
        else:
            raise AssertionError(f"unexpected file {name} in {out}")
    # one atomic write at a time: a process that got past the start-up clean-up leaves at most one
    assert not passed_cleanup or len(tmps) <= 1, tmps
    return tmps


@pytest.mark.slow  # five CLI start-ups (imports and host probe: 5-10 s each on 2 busy cores)
def test_sigkill_at_random_moments_leaves_complete_files_and_resumes(folder_dataset, uninterrupted, tmp_path):
    rng = random.Random(20240611)
    epoch_s = uninterrupted["epoch_s"]
    out = tmp_path / "run"
    landed = []
    for i in range(6):
        extra = ("--resume",) if (out / "last.pt").is_file() else ("--exist-ok",)
        log = tmp_path / f"stderr{i}.txt"
        proc = _start(folder_dataset, out, log, *extra)
        try:
            if i == 0:  # in the imports
                time.sleep(rng.uniform(0.2, 3.0))
            elif i == 1:  # holding the lock: host probe, dataset, model, clean-up
                _wait_for(lambda: (out / ".lock").is_file(), proc)
                time.sleep(rng.uniform(0.0, 0.5))
            else:  # inside the epochs: steps, best.pt, last.pt, log.csv, curves.png
                _wait_for(lambda: "training tiny U-Net" in log.read_text(), proc)
                time.sleep(rng.uniform(0.5, 2.0) * epoch_s)  # about an epoch each: some progress, not the whole run
        finally:
            _kill(proc)
        text = log.read_text()
        assert proc.returncode in (-signal.SIGKILL, 0) and "Traceback" not in text and "error:" not in text, text
        _check_folder(out, passed_cleanup="training tiny U-Net" in text)
        landed.append(len(_rows(out)) if (out / "log.csv").is_file() else 0)
    assert sum(0 < n < EPOCHS for n in landed) >= 2, landed  # kills did land inside the epochs
    # the next start cleans up and finishes the run (here in this process: one CLI start-up less)
    n = torch.get_num_threads()
    try:
        train(TrainConfig(data=str(folder_dataset), out=str(out), epochs=EPOCHS, resume=(out / "last.pt").is_file(),
                          exist_ok=True, progress=False, command="pytest", **ARGS), log=lambda *a: None)
    finally:
        torch.set_num_threads(n)
    _check_folder(out, passed_cleanup=True)
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "curves.png", "last.pt", "log.csv", "summary.json"]
    _assert_same_run(out, uninterrupted)


# --- the folder lock ------------------------------------------------------------------------------

def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_folder_lock_keeps_a_second_process_out_naming_the_owner(tmp_path):
    from unet_edge.locks import FolderLock

    with FolderLock(tmp_path, "training run"):
        r = _python("import sys\nfrom unet_edge.errors import UsageError\nfrom unet_edge.locks import FolderLock\n"
                    "try:\n    FolderLock(sys.argv[1], 'training run').acquire()\n"
                    "except UsageError as e:\n    print(e)\n    sys.exit(2)\n", str(tmp_path))
        assert r.returncode == 2, r.stderr
        assert f"in use by pid {os.getpid()} on " in r.stdout and "another training run" in r.stdout
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_folder_lock_takes_over_the_lock_of_a_killed_process(tmp_path):
    from unet_edge.locks import FolderLock

    r = _python("import os, sys\nfrom unet_edge.locks import FolderLock\nFolderLock(sys.argv[1]).acquire()\n"
                "print(os.getpid(), flush=True)\nos.kill(os.getpid(), 9)\n", str(tmp_path))
    assert r.returncode == -signal.SIGKILL
    dead = int(r.stdout)
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == dead  # left behind
    lines = []
    with FolderLock(tmp_path, log=lines.append):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert len(lines) == 1 and f"stale lock {tmp_path / '.lock'} of pid {dead} on " in lines[0]
    assert "no longer running" in lines[0]
    (tmp_path / ".lock").write_text("")  # killed between creating and writing it
    lines.clear()
    with FolderLock(tmp_path, log=lines.append):
        pass
    assert len(lines) == 1 and "its owner died before writing it" in lines[0]


def test_folder_lock_of_another_host_is_not_taken_over(tmp_path):
    from unet_edge.errors import UsageError
    from unet_edge.locks import FolderLock

    (tmp_path / ".lock").write_text(json.dumps({"pid": 4242, "host": "build-farm-7", "started": 0.0}))
    with pytest.raises(UsageError, match=r"pid 4242 on build-farm-7 .*another host.*delete .*\.lock"):
        FolderLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["host"] == "build-farm-7"
