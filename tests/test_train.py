import csv
import json

import numpy as np
import pytest
import torch

import unet_edge.train as train_mod
from unet_edge.artifacts import load_checkpoint, model_from_checkpoint
from unet_edge.errors import ArtifactError, EmulatedPrecisionWarning, UsageError
from unet_edge.host import HostInfo
from unet_edge.train import (TrainConfig, enet_class_weights, parse_time_budget, plan_epochs, segmentation_loss,
                             train)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """train() sets torch's thread count for the process; give the next test the count it had."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_checkpoint_carries_metadata(tiny_run, folder_dataset):
    ck = load_checkpoint(tiny_run["best"])
    meta = ck["meta"]
    assert meta["arch"]["num_classes"] == 3 and meta["arch"]["base_channels"] == 8
    assert meta["class_names"] == ["class0", "class1", "class2"] and len(meta["palette"]) == 3
    assert meta["input_size"] == [48, 64] and meta["ignore_index"] == 255
    assert meta["dataset"]["format"] == "folder" and meta["train_command"] == "pytest"
    assert "val_metrics" in meta["extra"]
    last = load_checkpoint(tiny_run["last"])
    assert last["epoch"] == 2 and {"optimizer", "scheduler", "history", "torch_rng"} <= set(last)
    rows = list(csv.DictReader(open(tiny_run["out"] / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["val_miou"] for r in rows)
    assert (tiny_run["out"] / "curves.png").stat().st_size > 1000


def test_resume_continues_and_matches_uninterrupted_run(folder_dataset, tmp_path):
    common = dict(data=str(folder_dataset), preset="tiny", batch_size=4, crop=(48, 64), progress=False, limit=6)
    full = train(TrainConfig(out=str(tmp_path / "full"), epochs=2, **common), log=lambda *a: None)
    train(TrainConfig(out=str(tmp_path / "part"), epochs=1, **common), log=lambda *a: None)
    # a run killed after epoch 1 resumes from last.pt (same schedule length: 2 epochs)
    ck = load_checkpoint(tmp_path / "part" / "last.pt")
    assert ck["epoch"] == 1
    resumed = train(TrainConfig(out=str(tmp_path / "part"), epochs=2, resume=True, **common), log=lambda *a: None)
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 2
    assert resumed["best_epoch"] >= 1 and len(load_checkpoint(tmp_path / "part" / "last.pt")["history"]) == 2
    assert full["best_miou"] >= 0
    with pytest.raises(ArtifactError, match="resume"):
        train(TrainConfig(out=str(tmp_path / "none"), epochs=1, resume=True, **common), log=lambda *a: None)


def test_training_learns_the_toy_task(folder_dataset, tmp_path):
    s = train(TrainConfig(data=str(folder_dataset), out=str(tmp_path), preset="tiny", epochs=6, batch_size=4,
                          crop=(48, 64), lr=1e-2, progress=False), log=lambda *a: None)
    # chance level over 3 classes is ~0.2 mIoU; the squares and stripes are learnable
    assert s["best_miou"] > 0.5


def test_loss_ignores_void_and_handles_binary():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    ignored = target.clone()
    ignored[:, :2] = 255
    l_all = segmentation_loss(logits, target, 255)
    l_ign = segmentation_loss(logits, ignored, 255)
    assert torch.isfinite(l_all) and torch.isfinite(l_ign) and l_all != l_ign
    bin_logits = torch.randn(2, 1, 4, 4)
    assert torch.isfinite(segmentation_loss(bin_logits, (target > 0).long(), 255, dice_weight=0.5))


def test_enet_weights_favour_rare_classes():
    m = np.zeros((10, 10), np.uint8)
    m[0, 0] = 1
    w = enet_class_weights([m], 2)
    assert w[1] > w[0] > 0


# --- time budget -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("20m", 1200), ("1.5h", 5400), ("45", 2700), (45, 2700), (0.5, 30), (" 2 MIN ", 120),
    (".5h", 1800), ("10sec", 10), ("3 hours", 10800),
])
def test_parse_time_budget_accepts_units_and_plain_minutes(text, seconds):
    assert parse_time_budget(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5m", "0", "0s", "1h30m", "m", "5 m s", "inf", "1e3"])
def test_parse_time_budget_rejects_bad_text_as_usage_error(text):
    with pytest.raises(UsageError, match="time-budget") as e:
        parse_time_budget(text)
    assert e.value.exit_code == 2


def test_plan_epochs_counts_validation_and_the_final_epoch():
    # 10 s per epoch of steps, 4 s per validation pass, every 2nd epoch and the last validate
    assert plan_epochs(100, 1, 30, 10, 4, val_every=1) == 7       # 7 * 14 = 98
    assert plan_epochs(100, 1, 30, 10, 4, val_every=2) == 8       # 80 + 3 * 4 (ep 2, 4, 6) + 4 (ep 8) = 96
    assert plan_epochs(100, 1, 5, 10, 4) == 5                      # the upper bound
    assert plan_epochs(3, 4, 30, 10, 4) == 4                       # always at least one more epoch


class FakeClock:
    """A deterministic clock for the trainer: every training step costs ``step_s`` fake seconds
    (``slow_s`` from call ``slow_after`` on), every validated image ``image_s``; real time is ignored."""

    def __init__(self, monkeypatch, step_s=1.0, image_s=0.25, slow_after=None, slow_s=3.0, kill_at=None):
        self.t, self.calls = 0.0, 0
        self.step_s, self.image_s, self.slow_after, self.slow_s, self.kill_at = step_s, image_s, slow_after, slow_s, kill_at
        loss, evaluate = train_mod.segmentation_loss, train_mod.evaluate

        def fake_loss(*a, **k):
            self.calls += 1
            if self.kill_at is not None and self.calls >= self.kill_at:
                raise Killed
            slow = self.slow_after is not None and self.calls > self.slow_after
            self.t += self.slow_s if slow else self.step_s
            return loss(*a, **k)

        def fake_evaluate(infer, dataset, meta, batch_size=4, limit=None, **k):
            self.t += self.image_s * (len(dataset) if limit is None else min(limit, len(dataset)))
            return evaluate(infer, dataset, meta, batch_size=batch_size, limit=limit, **k)

        monkeypatch.setattr(train_mod, "_clock", lambda: self.t)
        monkeypatch.setattr(train_mod, "segmentation_loss", fake_loss)
        monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)


class Killed(Exception):
    pass


def _budget_cfg(folder_dataset, out, **kw):
    # the folder fixture: 8 train images (2 steps of 4 per epoch), 2 val images
    return TrainConfig(**{**dict(data=str(folder_dataset), out=str(out), preset="tiny", batch_size=4, crop=(48, 64),
                                 lr=5e-3, threads=1, progress=False, command="pytest", epochs=30), **kw})


def _rows(out):
    return list(csv.DictReader(open(out / "log.csv")))


def test_time_budget_picks_fewer_epochs_and_completes_the_schedule(folder_dataset, tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=20.0), log=lines.append)
    # calibration: 1 + 3 steps (4 s) + validation warm-up 1 image and 2 timed images (0.75 s) -> 4.75 s used;
    # an epoch costs 2 s of steps + 0.5 s of validation; 92% of 20 s leaves 13.65 s -> 5 epochs
    assert s["epochs"] == 5 and s["epochs_planned"] == 5 and s["epochs_max"] == 30
    assert s["time_budget_s"] == 20.0 and s["epoch_estimate_s"] == pytest.approx(2.5)
    assert s["elapsed_s"] == pytest.approx(4.75 + 5 * 2.5, abs=0.06) and s["elapsed_s"] <= 20
    assert json.loads((tmp_path / "summary.json").read_text())["epochs"] == 5
    assert any("time budget 20s" in line and "-> 5 epochs" in line for line in lines)
    rows = _rows(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    lrs = [float(r["lr"]) for r in rows]
    # built for 5 epochs, not for the 30 of the bound: the cosine ends at 0 on the last step
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9) and all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    assert lrs[1] < 5e-3 * 0.95  # decaying after the 1-epoch warmup (a 30-epoch cosine would still be at ~0.99)
    assert load_checkpoint(tmp_path / "last.pt")["plan"]["epochs"] == 5


@pytest.mark.parametrize("schedule, final_lr", [("cosine", 0.0), ("onecycle", 5e-3 / 25 / 1e4)])
def test_time_budget_shortens_when_epochs_get_slower(folder_dataset, tmp_path, monkeypatch, schedule, final_lr):
    # steps cost 1 s until the end of epoch 2 (4 calibration + 2 x 2 steps), then 3 s
    clock = FakeClock(monkeypatch, slow_after=8)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=40.0, schedule=schedule), log=lines.append)
    # first plan: (36.8 - 4.75) / 2.5 -> 12 epochs; after epoch 3 (6.5 s) at 16.25 s: 20.55 s left -> 3 more
    assert s["epochs_planned"] == 12 and s["epochs"] == 6
    assert s["elapsed_s"] == pytest.approx(16.25 + 3 * 6.5, abs=0.06) and s["elapsed_s"] <= 40
    assert any("6 epochs instead of 12" in line for line in lines)
    rows = _rows(tmp_path)
    assert len(rows) == 6 and rows[-1]["val_miou"]
    lrs = [float(r["lr"]) for r in rows]
    # the compressed schedule still reaches its final LR on the last step of epoch 6
    assert lrs[-1] == pytest.approx(final_lr, rel=1e-3, abs=1e-12)
    assert lrs[3] < lrs[2]
    assert clock.calls == 4 + 6 * 2


def test_resume_with_a_budget_counts_earlier_sessions(folder_dataset, tmp_path, monkeypatch):
    # killed in the first step of epoch 3 (calls: 4 calibration, 2 + 2 epochs 1-2, then the 9th)
    FakeClock(monkeypatch, kill_at=9)
    with pytest.raises(Killed):
        train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=20.0), log=lambda *a: None)
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 2 and ck["plan"]["epochs"] == 5 and ck["elapsed_s"] == pytest.approx(4.75 + 2 * 2.5)
    # resumed (fresh process: the clock starts again at 0) with a tighter budget: 9.75 s are already
    # spent, 92% of 15 s leaves 4.05 s -> only epoch 3 fits; the schedule is compressed into it
    monkeypatch.undo()
    FakeClock(monkeypatch)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=15.0, resume=True), log=lines.append)
    assert s["epochs"] == 3 and s["epochs_planned"] == 5
    assert s["elapsed_s"] == pytest.approx(9.75 + 2.5, abs=0.06) and s["elapsed_s"] <= 15
    assert any("3 epochs instead of 5" in line for line in lines)
    rows = _rows(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9) and float(rows[1]["lr"]) > 1e-3


# --- precision ---------------------------------------------------------------------------------

def _fake_host(*flags):
    return HostInfo(cpu_model="Fake CPU", arch="x86_64", cores_physical=2, cores_logical=2, affinity=2,
                    flags=frozenset(flags))


@pytest.mark.parametrize("flags, expected", [
    (("avx2", "fma"), "fp32"),
    (("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"), "bf16"),
])
def test_precision_auto_follows_the_host(folder_dataset, tmp_path, monkeypatch, flags, expected):
    host = _fake_host(*flags)
    monkeypatch.setattr(train_mod, "probe_host", lambda: host)
    used = []
    real_backend = train_mod.TorchBackend

    def spy_backend(*a, precision="fp32", **k):
        used.append(precision)
        return real_backend(*a, precision=precision, **k)

    monkeypatch.setattr(train_mod, "TorchBackend", spy_backend)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, epochs=1, device="cpu"), log=lines.append)
    assert s["precision"]["precision"] == expected and not s["precision"]["emulated"]
    assert s["host"]["cpu_class"] == host.cpu_class and s["threads"] == 1
    assert used == [expected]  # the per-epoch validation runs in the same precision
    extra = load_checkpoint(s["best"])["meta"]["extra"]
    assert extra["train_precision"]["precision"] == expected and extra["train_host"]["cpu_model"] == "Fake CPU"
    assert extra["train_config"]["precision"] == "auto"
    label = "fp32 (CPU x86-avx2 has no bf16" if expected == "fp32" else "bf16 autocast (CPU x86-avx512 computes bf16"
    assert any(label in line and "1 threads" in line for line in lines)


def test_explicit_bf16_without_native_bf16_warns_and_runs(folder_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "probe_host", lambda: _fake_host("avx2", "fma"))
    with pytest.warns(EmulatedPrecisionWarning, match="emulated"):
        s = train(_budget_cfg(folder_dataset, tmp_path, epochs=1, device="cpu", precision="bf16"), log=lambda *a: None)
    assert s["precision"] == {"precision": "bf16", "reason": s["precision"]["reason"], "emulated": True}
    assert load_checkpoint(s["last"])["meta"]["extra"]["train_precision"]["emulated"] is True


def test_unknown_precision_is_a_usage_error(folder_dataset, tmp_path):
    with pytest.raises(UsageError, match="precision"):
        train(_budget_cfg(folder_dataset, tmp_path, epochs=1, precision="int4"), log=lambda *a: None)


def test_cli_train_rejects_a_bad_time_budget(folder_dataset):
    from typer.testing import CliRunner

    from cli import app

    r = CliRunner().invoke(app, ["train", "--data", str(folder_dataset), "--time-budget", "soon"])
    assert r.exit_code == 2 and "time-budget" in r.output


def test_demo_bench_plan_cuts_measurements_when_time_is_short():
    from unet_edge.demo import _bench_plan

    roomy = _bench_plan(1e6, 0.05, 30, 32, 90)
    assert roomy["level"] == 0 and roomy["iters"] == 30 and roomy["memory"] == "subprocess" and roomy["stream"]
    mid = _bench_plan(roomy["estimate_s"] - 1, 0.05, 30, 32, 90)
    assert mid["level"] == 1 and mid["iters"] == 10 and mid["estimate_s"] < roomy["estimate_s"]
    floor = _bench_plan(1.0, 0.05, 30, 32, 90)
    assert floor["level"] == 3 and floor["iters"] == 5 and floor["memory"] == "off" and not floor["stream"]
    assert floor["estimate_s"] < mid["estimate_s"] and _bench_plan(1e6, 0.05, 2, 32, 90)["iters"] == 2
    # a slower host (frames take twice as long) gets cut at the same time left
    assert _bench_plan(roomy["estimate_s"] + 1, 0.10, 30, 32, 90)["level"] > 0
