"""Training on several processes: ``torchrun --nproc_per_node 2 cli.py train`` on CPU (gloo).

The group tests launch real torchrun process groups on tiny data (the 'tiny' preset, 8 training
images of 48x64, one thread per rank). What each process writes is observed from outside the
trainer: a ``sitecustomize`` module on ``PYTHONPATH`` installs a Python audit hook (PEP 578) in
every process torchrun starts, which logs each file that process opens for writing or renames.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from unet_edge.distributed import DistInfo, PeerFailedError, env_dist, rank_threads, shutdown, state_dict_sha256
from unet_edge.errors import DataError, UsageError
from unet_edge.data.train_split import per_rank_batch
from unet_edge.train import TrainConfig, batch_norm_mode, train

from conftest import write_folder_dataset

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 10
N_TRAIN = 8  # the folder layout keeps 2 of 10 images for val

AUDIT_HOOK = textwrap.dedent('''
    import os, sys
    _out, _dir = os.environ.get("AUDIT_OUT"), os.environ.get("AUDIT_DIR")
    if _out and _dir:
        _fd = os.open(os.path.join(_dir, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(_fd, f"start {' '.join(sys.argv)}\\n".encode())
        _W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def _hook(event, args):
            if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                path, flags = os.fsdecode(args[0]), args[2] or 0
                if flags & _W and os.path.abspath(path).startswith(_out):
                    os.write(_fd, f"write {path}\\n".encode())
            elif event == "os.rename" and os.fsdecode(args[1]).startswith(_out):
                os.write(_fd, f"rename {os.fsdecode(args[1])}\\n".encode())
            elif event == "os.remove" and os.fsdecode(args[0]).startswith(_out):
                os.write(_fd, f"remove {os.fsdecode(args[0])}\\n".encode())

        sys.addaudithook(_hook)
''')


# -- one process: the pieces --------------------------------------------------------------------
def test_global_batch_is_split_evenly_or_refused():
    assert per_rank_batch(8, 1) == 8 and per_rank_batch(8, 2) == 4 and per_rank_batch(8, 8) == 1
    with pytest.raises(UsageError, match=r"--batch-size 6 is the global batch.*multiple of the 4 processes.*e\.g\. 4"):
        per_rank_batch(6, 4)


def test_batch_norm_mode_per_device_and_refusal():
    assert batch_norm_mode("auto", "cpu", 1) is False and batch_norm_mode("on", "cuda", 1) is False
    assert batch_norm_mode("auto", "cpu", 2) is False      # PyTorch's SyncBatchNorm needs CUDA tensors
    assert batch_norm_mode("auto", "cuda:1", 2) is True
    assert batch_norm_mode("off", "cuda:0", 4) is False
    with pytest.raises(UsageError, match="SyncBatchNorm runs on CUDA tensors only"):
        batch_norm_mode("on", "cpu", 2)


def test_torchrun_environment_is_read_and_checked(monkeypatch):
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(v, raising=False)
    assert env_dist() == DistInfo() and not DistInfo().enabled and DistInfo().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(UsageError, match="RANK, LOCAL_RANK, LOCAL_WORLD_SIZE not set"):
        env_dist()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert env_dist() == DistInfo(3, 4, 1, 2, None)
    assert rank_threads(16, env_dist()) == 8 and rank_threads(1, env_dist()) == 1
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UsageError, match="inconsistent torchrun environment"):
        env_dist()
    monkeypatch.setenv("LOCAL_RANK", "x")
    with pytest.raises(UsageError, match="LOCAL_RANK='x' is not an integer"):
        env_dist()


def test_weights_digest_sees_every_value():
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    a = state_dict_sha256(sd)
    assert a == state_dict_sha256({k: v.clone() for k, v in sd.items()})
    sd["w"][1, 2] = 5.000001
    assert state_dict_sha256(sd) != a
    assert state_dict_sha256({"w": sd["w"].double(), "n": sd["n"]}) != state_dict_sha256(sd)


def test_agree_in_one_process_passes_results_and_errors_through():
    assert DistInfo().agree(lambda: 7) == 7
    with pytest.raises(DataError, match="bad mask"):
        DistInfo().agree(lambda: (_ for _ in ()).throw(DataError("bad mask")))
    assert PeerFailedError("x", 3).exit_code == 3



def _record_teardown(monkeypatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda *a, **k: calls.append("destroy"))
    return calls


def test_ranks_leave_the_group_together_only_after_a_run_that_ended_well(monkeypatch, tmp_path):
    """A rank that finished early must not tear gloo down under a peer still writing (it aborted in
    C++ at exit once in five CI runs); after an error no barrier, where a peer may never arrive."""
    import unet_edge.train as train_mod

    calls = _record_teardown(monkeypatch)
    group = DistInfo(rank=1, world_size=2, local_rank=1, local_world_size=2, backend="gloo")
    shutdown(group, wait_for_peers=True)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    shutdown(group)
    shutdown(DistInfo(), wait_for_peers=True)  # one process: no group to leave
    assert calls == ["destroy"]

    calls.clear()
    monkeypatch.setattr(train_mod, "init_from_env", lambda device: (group, "cpu"))
    monkeypatch.setattr(train_mod, "_train_group", lambda *a: {"rank": 1})
    cfg = TrainConfig(data=tmp_path, out=tmp_path / "run", epochs=1)
    assert train(cfg) == {"rank": 1} and calls == ["barrier", "destroy"]
    calls.clear()
    monkeypatch.setattr(train_mod, "_train_group", lambda *a: (_ for _ in ()).throw(PeerFailedError("rank 0 stopped", 3)))
    with pytest.raises(PeerFailedError):
        train(cfg)
    assert calls == ["destroy"]

# -- two real processes -------------------------------------------------------------------------
def _torchrun(data: Path, out: Path, audit: Path | None, *extra: str, stderr=None, **popen) -> subprocess.Popen:
    # faulthandler: a rank that aborts (SIGABRT at exit, seen in CI) prints every thread's Python stack
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    if audit is not None:
        env.update(PYTHONPATH=os.pathsep.join([str(audit / "site"), env.get("PYTHONPATH", "")]),
                   AUDIT_OUT=str(out), AUDIT_DIR=str(audit))
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(REPO / "cli.py"), "train", "--data", str(data), "--out", str(out), "--preset", "tiny",
            "--epochs", str(EPOCHS), "--batch-size", "4", "--crop", "48x64", "--lr", "0.005", "--device", "cpu",
            "--precision", "fp32", *extra]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE if stderr is None else subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if stderr is None else stderr, text=True, **popen)


def _rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("ddp_ds"), n=N_TRAIN + 2)


@pytest.fixture(scope="module")
def group_run(data, tmp_path_factory) -> dict:
    """An uninterrupted 2-process run, every process watched by the audit hook."""
    root = tmp_path_factory.mktemp("ddp_run")
    audit, out = root / "audit", root / "run"
    (audit / "site").mkdir(parents=True)
    (audit / "site" / "sitecustomize.py").write_text(AUDIT_HOOK)
    proc = _torchrun(data, out, audit)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout
    logs = {int(p.stem): p.read_text().splitlines() for p in audit.glob("*.log")}
    return {"out": out, "stdout": stdout, "audit": logs, "summary": json.loads((out / "summary.json").read_text())}


def test_two_ranks_train_one_model_on_their_own_halves(group_run):
    d = group_run["summary"]["distributed"]
    assert (d["world_size"], d["backend"], d["global_batch"], d["per_rank_batch"], d["batch_norm"]) == \
        (2, "gloo", 4, 2, "per-rank")
    r0, r1 = d["ranks"]
    assert (r0["rank"], r1["rank"]) == (0, 1) and r0["pid"] != r1["pid"]
    # the DistributedSampler's shards: disjoint halves of the 8 training images, every epoch
    a, b = set(r0["first_epoch_images"]), set(r1["first_epoch_images"])
    assert len(a) == len(b) == N_TRAIN // 2 and not a & b and a | b == set(range(N_TRAIN))
    assert r0["images_seen"] == r1["images_seen"] == EPOCHS * N_TRAIN // 2
    # one model: the same weights and BatchNorm statistics on both ranks, and in the saved last.pt
    last = torch.load(group_run["out"] / "last.pt", weights_only=True)
    assert r0["weights_sha256"] == r1["weights_sha256"] == state_dict_sha256(last["model"])
    assert last["meta"]["extra"]["distributed"]["world_size"] == 2
    assert {r["world_size"] for r in _rows(group_run["out"])} == {"2"} and len(_rows(group_run["out"])) == EPOCHS
    assert group_run["stdout"].count("training tiny U-Net") == 1  # rank 0 alone logs
    assert "2 processes (gloo, global batch 4 = 2 x 2, per-rank BatchNorm)" in group_run["stdout"]


def test_rank_0_alone_writes_the_run_folder(group_run):
    logs = group_run["audit"]
    r0, r1 = (r["pid"] for r in group_run["summary"]["distributed"]["ranks"])
    assert r0 in logs and r1 in logs, f"the audit hook did not start in both ranks: {sorted(logs)}"
    writers = {pid for pid, lines in logs.items() if any(not line.startswith("start") for line in lines)}
    assert writers == {r0}
    renamed = {Path(line.split(" ", 1)[1]).name for line in logs[r0] if line.startswith("rename")}
    assert {"best.pt", "last.pt", "log.csv", "summary.json", "curves.png"} <= renamed


def test_killed_group_resumes_to_the_uninterrupted_run(data, group_run, tmp_path):
    out, err = tmp_path / "run", open(tmp_path / "stderr.txt", "w")
    proc = _torchrun(data, out, None, stderr=err, start_new_session=True)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and proc.poll() is None:
            if (out / "log.csv").is_file() and len(_rows(out)) >= 2:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert 2 <= done < EPOCHS, (tmp_path / "stderr.txt").read_text()
    proc = _torchrun(data, out, None, "--resume")
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout
    got, want = _rows(out), _rows(group_run["out"])
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, EPOCHS + 1)]
    for a, b in zip(got, want):
        for key in ("train_loss", "lr", "val_miou"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), (a["epoch"], key)
    ranks = json.loads((out / "summary.json").read_text())["distributed"]["ranks"]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] == group_run["summary"]["distributed"]["ranks"][0]["weights_sha256"]


def test_resuming_a_group_run_in_one_process_is_refused(group_run, data, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(group_run["out"], out)
    cfg = TrainConfig(data=str(data), out=str(out), preset="tiny", epochs=EPOCHS, batch_size=4, crop=(48, 64), lr=5e-3,
                      device="cpu", precision="fp32", resume=True, progress=False, command="pytest")
    n = torch.get_num_threads()
    try:
        with pytest.raises(UsageError, match=r"processes \(world size\) 2 \(now 1"):
            train(cfg, log=lambda *a: None)
    finally:
        torch.set_num_threads(n)


def test_an_error_on_rank_0_stops_every_rank(group_run, data):
    proc = _torchrun(data, group_run["out"], None)  # the folder holds a run: rank 0 refuses
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "already holds a training run" in stdout
    assert "rank 0 stopped the run (UsageError)" in stdout
    assert "unet_edge/" not in stdout  # no traceback through our code, only torchrun's own report
