import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import unet_edge.train as train_mod
from unet_edge.artifacts import load_checkpoint, model_from_checkpoint
from unet_edge.errors import ArtifactError, EmulatedPrecisionWarning, UsageError
from unet_edge.host import HostInfo
from unet_edge.data.augment import reseed
from unet_edge.data.train_split import (build_train_data, class_frequencies, enet_class_weights,
                                       median_frequency_weights)
from unet_edge.seeding import rng_state, set_rng_state
from unet_edge.time_budget import BUDGET_ROOM_FACTOR, TIME_BUDGET_MARGIN, LowResPhase, parse_time_budget, plan_epochs, plan_with_room
from unet_edge.train import TrainConfig, segmentation_loss, train

from conftest import write_folder_dataset


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
    assert last["epoch"] == 2 and {"optimizer", "scheduler", "history", "rng"} <= set(last)
    rows = list(csv.DictReader(open(tiny_run["out"] / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["val_miou"] for r in rows)
    assert (tiny_run["out"] / "curves.png").stat().st_size > 1000


def test_logit_offsets_are_fit_on_training_pixels_and_folded_into_best_pt(tiny_run, folder_dataset, tmp_path):
    from unet_edge.data.layouts import load_dataset
    from unet_edge.evaluate import evaluate
    from unet_edge.runtime.torch_backend import TorchBackend

    rec = tiny_run["summary"]["logit_offsets"]
    assert rec["kept"] and rec["val_miou_after"] > rec["val_miou_before"]
    assert 0 < rec["pixels"] <= 8 * 4096 and list(rec["offsets"]) == ["class0", "class1", "class2"]
    assert rec["train_miou_after"] >= rec["train_miou_before"]
    model, meta, ck = model_from_checkpoint(tiny_run["best"])
    extra = meta.extra
    assert extra["logit_offsets"] == rec and tiny_run["summary"]["best_miou"] == rec["val_miou_after"]
    assert extra["val_metrics"]["miou"] == rec["val_miou_after"]
    assert extra["val_metrics_before_offsets"]["miou"] == rec["val_miou_before"]
    # the stored score is the folded model's: scoring best.pt again gives it
    choice = tiny_run["summary"]["precision"]["precision"]
    again = evaluate(TorchBackend(model, meta, precision=choice).infer, load_dataset(folder_dataset, "val"), meta,
                     progress=False)
    assert again["miou"] == pytest.approx(rec["val_miou_after"], abs=1e-9)
    # the head's bias moved by the offsets (centred: they sum to 0), nothing else
    last = load_checkpoint(tiny_run["last"])
    if ck["epoch"] == last["epoch"]:
        moved = ck["model"]["head.bias"] - last["model"]["head.bias"]
        assert torch.allclose(moved, torch.tensor(list(rec["offsets"].values())), atol=1e-4)
        assert all(torch.equal(v, last["model"][k]) for k, v in ck["model"].items() if k != "head.bias")


def test_a_resumed_finished_run_keeps_its_offsets(tiny_run, folder_dataset, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(tiny_run["out"], out)
    before = (out / "best.pt").read_bytes()
    lines = []
    s = train(TrainConfig(data=str(folder_dataset), out=str(out), preset="tiny", epochs=2, batch_size=4, crop=(48, 64),
                          lr=5e-3, progress=False, command="pytest", resume=True), log=lines.append)
    assert (out / "best.pt").read_bytes() == before
    assert s["logit_offsets"] == tiny_run["summary"]["logit_offsets"]
    assert any("already holds them" in line for line in lines)


def test_checkpoints_load_with_weights_only(tiny_run):
    for path in (tiny_run["best"], tiny_run["last"]):
        ck = torch.load(path, map_location="cpu", weights_only=True)  # raises on numpy or other Python objects
        assert ck["epoch"] in (1, 2) and set(ck["model"]) == set(load_checkpoint(tiny_run["last"])["model"])
    last = torch.load(tiny_run["last"], map_location="cpu", weights_only=True)
    assert set(last["rng"]) == {"torch", "numpy", "python"} and isinstance(last["rng"]["torch"], torch.Tensor)
    assert last["rng"]["numpy"][0] == "MT19937" and len(last["rng"]["numpy"][1]) == 624
    assert all(type(r["train_loss"]) is float and type(r["val_miou"]) is float for r in last["history"])
    assert type(last["best"]["miou"]) is float and type(last["elapsed_s"]) is float


def test_rng_state_round_trips_through_weights_only_save(tmp_path):
    import random

    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


class Killed(Exception):
    pass


_SAVE = train_mod._save_checkpoints


def _kill_after_epoch(monkeypatch, epoch):
    """Make train() die right after epoch ``epoch`` is saved, as a SIGKILL between epochs would."""
    real = train_mod._save_checkpoints

    def save(s, st, res):
        real(s, st, res)
        if res.epoch == epoch:
            raise Killed

    monkeypatch.setattr(train_mod, "_save_checkpoints", save)


def _small(out, **kw):
    return TrainConfig(**{**dict(data=kw.pop("data"), out=str(out), preset="tiny", epochs=3, batch_size=4,
                                 crop=(40, 56), lr=5e-3, limit=6, threads=1, device="cpu", progress=False,
                                 command="pytest"), **kw})


@pytest.fixture(scope="module")
def killed_run(folder_dataset, tmp_path_factory):
    """A 3-epoch run killed after epoch 1 (module-scoped; tests copy it) and the uninterrupted run."""
    root = tmp_path_factory.mktemp("killed")
    full = train(_small(root / "full", data=str(folder_dataset)), log=lambda *a: None)
    mp = pytest.MonkeyPatch()
    _kill_after_epoch(mp, 1)
    try:
        with pytest.raises(Killed):
            train(_small(root / "part", data=str(folder_dataset)), log=lambda *a: None)
    finally:
        mp.undo()
    return {"full": root / "full", "part": root / "part", "summary": full}


@pytest.fixture
def part_run(killed_run, tmp_path):
    import shutil

    return Path(shutil.copytree(killed_run["part"], tmp_path / "part"))


def test_resume_matches_the_uninterrupted_run(killed_run, part_run, folder_dataset):
    assert load_checkpoint(part_run / "last.pt")["epoch"] == 1 and not (part_run / "summary.json").exists()
    assert not (part_run / ".lock").exists()  # released when train() raised
    lines = []
    resumed = train(_small(part_run, data=str(folder_dataset), resume=True), log=lines.append)
    assert any("resumed from" in line and "at epoch 1" in line for line in lines)
    full, part = _rows(killed_run["full"]), _rows(part_run)
    assert [r["epoch"] for r in part] == ["1", "2", "3"]
    for a, b in zip(full, part):
        for key in ("train_loss", "lr", "val_miou", "val_pixel_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), (a["epoch"], key)
    losses = [float(r["train_loss"]) for r in full]
    assert len(set(losses)) == 3  # the epochs differ, so equal losses are not a coincidence of constants
    wa = load_checkpoint(killed_run["full"] / "last.pt")["model"]
    wb = load_checkpoint(part_run / "last.pt")["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    assert resumed["best_miou"] == pytest.approx(killed_run["summary"]["best_miou"], abs=1e-6)
    assert resumed["best_epoch"] == killed_run["summary"]["best_epoch"]


def test_resume_refuses_changed_options_naming_old_and_new(part_run, folder_dataset, tmp_path):
    before = (part_run / "last.pt").read_bytes()
    with pytest.raises(UsageError) as e:
        train(_small(part_run, data=str(folder_dataset), resume=True, lr=1e-2, epochs=5, crop=(32, 32)),
              log=lambda *a: None)
    msg = str(e.value)
    assert "--lr 0.005 (now 0.01)" in msg and "--epochs 3 (now 5)" in msg and "--crop 40x56 (now 32x32)" in msg
    assert "--batch-size" not in msg and e.value.exit_code == 2
    other = write_folder_dataset(tmp_path / "other", n=8)
    with pytest.raises(UsageError, match=r"--data .* \(now .*other\)"):
        train(_small(part_run, data=str(other), resume=True), log=lambda *a: None)
    assert (part_run / "last.pt").read_bytes() == before and not (part_run / ".lock").exists()


def test_a_fresh_run_never_overwrites_a_run_folder(part_run, folder_dataset):
    before = {n: (part_run / n).read_bytes() for n in ("best.pt", "last.pt", "log.csv")}
    with pytest.raises(UsageError) as e:
        train(_small(part_run, data=str(folder_dataset)), log=lambda *a: None)
    msg = str(e.value)
    assert str(part_run) in msg and "--resume" in msg and "--exist-ok" in msg and "--out" in msg
    assert {n: (part_run / n).read_bytes() for n in before} == before
    # --exist-ok replaces the run: the old files go first, so none of them outlives the new run
    (part_run / ".last.pt.x1y2.tmp.pt").write_bytes(b"half a checkpoint")  # left by a killed run
    (part_run / ".notes.tmp").write_text("not ours")
    lines = []
    s = train(_small(part_run, data=str(folder_dataset), epochs=1, exist_ok=True), log=lines.append)
    assert any("--exist-ok: deleted the earlier run's best.pt, last.pt, log.csv, curves.png" in line for line in lines)
    assert any("removed 1 temporary file" in line and ".last.pt.x1y2.tmp.pt" in line for line in lines)
    assert [r["epoch"] for r in _rows(part_run)] == ["1"] and s["epochs"] == 1
    assert sorted(p.name for p in part_run.iterdir()) == [".notes.tmp", "best.pt", "curves.png", "last.pt",
                                                           "log.csv", "summary.json"]


def test_resume_keeps_a_better_best_pt_written_before_the_kill(part_run, folder_dataset):
    # killed after writing best.pt of an epoch and before its last.pt: best.pt is ahead of last.pt
    ck = torch.load(part_run / "best.pt", weights_only=True)
    ck["meta"]["extra"]["val_metrics"]["miou"] = 0.99
    ck["meta"]["extra"]["epoch"] = 2
    torch.save(ck, part_run / "best.pt")
    before = (part_run / "best.pt").read_bytes()
    s = train(_small(part_run, data=str(folder_dataset), resume=True), log=lambda *a: None)
    assert s["best_miou"] == 0.99 and s["best_epoch"] == 2
    assert (part_run / "best.pt").read_bytes() == before  # no epoch beat it, so it was not replaced


def test_resume_without_last_pt_is_an_artifact_error(folder_dataset, tmp_path):
    with pytest.raises(ArtifactError, match=r"--resume: no .*last\.pt to resume from"):
        train(_small(tmp_path / "none", data=str(folder_dataset), resume=True), log=lambda *a: None)


def test_a_locked_run_folder_keeps_a_second_trainer_out(part_run, folder_dataset):
    import os

    from unet_edge.locks import FolderLock

    with FolderLock(part_run, "training run"):
        with pytest.raises(UsageError, match=rf"in use by pid {os.getpid()} on "):
            train(_small(part_run, data=str(folder_dataset), resume=True), log=lambda *a: None)
        assert (part_run / ".lock").exists()  # the refused trainer left the lock of its owner alone
    assert not (part_run / ".lock").exists()


def test_augmentation_is_reproducible_and_its_draws_independent():
    import albumentations as A

    from unet_edge.data.augment import reseed, train_transform

    img = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    t = train_transform((32, 32), 255, seed=7)
    first = [t(image=img, mask=mask)["image"] for _ in range(3)]
    reseed(t, 7)
    assert all(np.array_equal(a, t(image=img, mask=mask)["image"]) for a in first)
    reseed(t, 8)
    assert not np.array_equal(first[0], t(image=img, mask=mask)["image"])
    # one shared stream: two p=0.5 transforms fire independently (A.Compose(seed=) makes them fire together)
    two = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], save_applied_params=True)
    reseed(two, 3)
    fired = [len(two(image=img)["applied_transforms"]) for _ in range(200)]
    assert 25 < fired.count(2) < 75 and 25 < fired.count(0) < 75


@pytest.mark.parametrize("option, value, flag", [
    ("lr", 0.0, "--lr"), ("lr", -1e-3, "--lr"), ("lr", float("nan"), "--lr"), ("weight_decay", -1e-4, "--weight-decay"),
    ("dropout", 1.0, "--dropout"), ("dropout", -0.1, "--dropout"), ("limit", 0, "--limit"),
    ("batch_size", 0, "--batch-size"), ("warmup_epochs", -1.0, "--warmup-epochs"), ("epochs", 0, "--epochs"),
    ("val_every", 0, "--val-every"), ("seed", -1, "--seed"), ("threads", -2, "--threads"),
    ("dice_weight", -0.5, "--dice-weight"), ("lovasz_weight", -1.0, "--lovasz-weight"), ("crop", (0, 64), "--crop"), ("input_size", (48,), "--input-size"),
    ("preset", "huge", "--preset"), ("schedule", "step", "--schedule"), ("class_weights", "inverse", "--class-weights"),
    ("device", "gpu", "--device"), ("device", "cuda:x", "--device"), ("time_budget_s", 0.0, "--time-budget"),
    ("sync_bn", "yes", "--sync-bn"), ("scale", (2.0, 0.5), "--scale"), ("scale", (0.0, 1.0), "--scale"),
    ("ema", 1.0, "--ema"), ("ema", 0.2, "--ema"), ("ohem", 1.0, "--ohem"), ("rare_crop", 1.5, "--rare-crop"),
])
def test_bad_options_are_usage_errors(folder_dataset, option, value, flag):
    with pytest.raises(UsageError) as e:
        TrainConfig(data=str(folder_dataset), **{option: value})
    assert str(e.value).startswith(f"{flag} must be ") and repr(value) in str(e.value) and e.value.exit_code == 2


def test_cli_train_exit_codes_for_bad_options_and_existing_runs(folder_dataset, part_run):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    for args, text in ((["--lr", "0"], "--lr must be a positive number"),
                       (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
                       (["--preset", "huge"], "--preset must be one of"),
                       ([], "already holds a training run")):
        r = runner.invoke(app, ["train", "--data", str(folder_dataset), "--out", str(part_run), *args])
        assert r.exit_code == 2 and text in r.output.replace("\n", ""), (args, r.output)
        assert "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--help"])
    assert "--exist-ok" in r.output and "--resume" in r.output


def test_training_learns_the_toy_task(folder_dataset, tmp_path):
    s = train(TrainConfig(data=str(folder_dataset), out=str(tmp_path), preset="tiny", epochs=6, batch_size=4,
                          crop=(48, 64), lr=1e-2, progress=False), log=lambda *a: None)
    # chance level over 3 classes is ~0.2 mIoU; the squares and stripes are learnable
    assert s["best_miou"] > 0.5


def test_compile_runs_the_steps_through_torch_compile_and_saves_the_eager_module(folder_dataset, tmp_path, monkeypatch):
    # torch.compile is replaced by a recorder (Inductor's own compile is benchmarks.train_throughput's
    # ``compile_cl`` row): the test is about what goes through it and what is validated and saved
    seen = []

    class Recorded(torch.nn.Module):
        def __init__(self, mod):
            super().__init__()
            self._orig_mod = mod  # the attribute torch.compile's OptimizedModule uses

        def __len__(self):  # as OptimizedModule: the trainer must not test it for truth
            raise TypeError("no len()")

        def forward(self, x):
            seen.append((id(self._orig_mod), self.training, tuple(x.shape)))
            return self._orig_mod(x)

    def fake_compile(model, dynamic=None):
        assert dynamic is False
        return Recorded(model)

    monkeypatch.setattr(train_mod.torch, "compile", fake_compile)
    s = train(_small(tmp_path / "c", data=str(folder_dataset), epochs=4, compile=True, time_budget_s=3600.0,
                     low_res=0.5),
              log=lambda *a: None)
    # the budget's calibration probe and the run's model: 2 modules; training batches only, at full and low resolution
    assert len({m for m, _, _ in seen}) == 2 and all(training for _, training, _ in seen)
    assert {shape for _, _, shape in seen} == {(4, 3, 40, 56), (4, 3, 20, 28)}
    ck = load_checkpoint(s["best"])
    assert not any(k.startswith("_orig_mod") for k in ck["model"])
    assert ck["meta"]["extra"]["train_config"]["compile"] is True
    model_from_checkpoint(s["best"])  # loads into a plain UNet
    with pytest.raises(UsageError, match="--compile is for single-process training"):
        for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
            monkeypatch.setenv(k, v)
        train(_small(tmp_path / "d", data=str(folder_dataset), compile=True), log=lambda *a: None)


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
    w = enet_class_weights(class_frequencies([m], 2))
    assert w[1] > w[0] > 0


def test_median_frequency_weights_follow_eigen_fergus():
    # class 0 fills image a (100 px) and 90 px of b; class 1 has 10 px of b; class 2 appears nowhere;
    # 255 is ignored. f = pixels / pixels of the images holding the class: f0 = 190/200, f1 = 10/100.
    a = np.zeros((10, 10), np.uint8)
    b = np.zeros((10, 10), np.uint8)
    b[0] = 1
    c = np.full((4, 4), 255, np.uint8)
    w = median_frequency_weights([a, b, c], 3)
    f = np.array([190 / 200, 10 / 100])
    med = np.median(f)
    np.testing.assert_allclose(w, [med / f[0], med / f[1], 0.0], rtol=1e-6)
    assert w.dtype == np.float32


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
    (``slow_s`` from call ``slow_after`` on, ``first_s`` for the first ``first_calls`` calls; ``low_step_s`` on
    batches smaller than the crop of :func:`_budget_cfg`), every validated image ``image_s``; real time is
    ignored. The calibration warms up with ``warmup_steps`` steps (the plans' arithmetic below: 1 warm-up
    and 3 timed steps; None keeps the trainer's :data:`~unet_edge.train.CALIB_WARMUP_STEPS`). ``extra``:
    {call number: seconds added to that call}."""

    def __init__(self, monkeypatch, step_s=1.0, image_s=0.25, slow_after=None, slow_s=3.0, kill_at=None,
                 low_step_s=None, warmup_steps=1, first_calls=0, first_s=5.0, extra=None):
        self.t, self.calls, self.low_step_s, self.extra = 0.0, 0, low_step_s, extra or {}
        self.step_s, self.image_s, self.slow_after, self.slow_s, self.kill_at = step_s, image_s, slow_after, slow_s, kill_at
        self.first_calls, self.first_s = first_calls, first_s
        if warmup_steps is not None:
            monkeypatch.setattr(train_mod, "CALIB_WARMUP_STEPS", warmup_steps)
        loss, evaluate = train_mod.segmentation_loss, train_mod.evaluate

        def fake_loss(*a, **k):
            self.calls += 1
            if self.kill_at is not None and self.calls >= self.kill_at:
                raise Killed
            slow = self.slow_after is not None and self.calls > self.slow_after
            low = self.low_step_s is not None and a[0].shape[-2] * a[0].shape[-1] < 48 * 64  # _budget_cfg's crop
            first = self.calls <= self.first_calls
            self.t += self.first_s if first else self.low_step_s if low else self.slow_s if slow else self.step_s
            self.t += self.extra.get(self.calls, 0.0)
            return loss(*a, **k)

        def fake_evaluate(infer, dataset, meta, batch_size=4, limit=None, **k):
            self.t += self.image_s * (len(dataset) if limit is None else min(limit, len(dataset)))
            return evaluate(infer, dataset, meta, batch_size=batch_size, limit=limit, **k)

        monkeypatch.setattr(train_mod, "_clock", lambda: self.t)
        monkeypatch.setattr(train_mod, "segmentation_loss", fake_loss)
        monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)


def _budget_cfg(folder_dataset, out, **kw):
    # the folder fixture: 8 train images (2 steps of 4 per epoch), 2 val images
    # logit offsets off: the plans below are the epochs' arithmetic alone (their reserve has its own test)
    return TrainConfig(**{**dict(data=str(folder_dataset), out=str(out), preset="tiny", batch_size=4, crop=(48, 64),
                                 lr=5e-3, threads=1, progress=False, command="pytest", epochs=30,
                                 logit_offsets=False), **kw})


def _rows(out):
    return list(csv.DictReader(open(out / "log.csv")))


def test_curves_are_redrawn_at_most_every_curves_every_s_and_after_the_last_epoch(folder_dataset, tmp_path, monkeypatch):
    FakeClock(monkeypatch)  # an epoch: 2 steps of 1 s + 2 val images of 0.25 s = 2.5 s
    monkeypatch.setattr(train_mod, "CURVES_EVERY_S", 6.0)
    drawn, plot = [], train_mod._plot_curves
    monkeypatch.setattr(train_mod, "_plot_curves", lambda history, path: (drawn.append(len(history)), plot(history, path)))
    train(_budget_cfg(folder_dataset, tmp_path, epochs=8), log=lambda *a: None)
    # the first epoch ends at 2.5 s, epoch 4 at 10 s (7.5 s later), epoch 7 at 17.5 s; epoch 8 is the last
    assert drawn == [1, 4, 7, 8]
    assert cv2.imread(str(tmp_path / "curves.png")) is not None


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
    # first plan: (36.8 - 4.75) / 2.5 -> 12 epochs. After epoch 3 (6.5 s) at 16.25 s two more such epochs still
    # fit in 40 s, so the median of epochs 1-3 (2.5 s) plans: 16.25 + 9 x 2.5 = 38.75 s > 38.4 s -> 11 epochs;
    # after epoch 4 (median 6.5 s) at 22.75 s: 14.05 s left -> 2 more
    assert s["epochs_planned"] == 12 and s["epochs"] == 6
    assert s["elapsed_s"] == pytest.approx(16.25 + 3 * 6.5, abs=0.06) and s["elapsed_s"] <= 40
    cuts = [line for line in lines if "instead of" in line]
    assert len(cuts) == 2 and "epoch 3 took 6.5 s (median of the last 3: 2.5 s)" in cuts[0], cuts
    assert "11 epochs instead of 12" in cuts[0] and "6 epochs instead of 11" in cuts[1]
    rows = _rows(tmp_path)
    assert len(rows) == 6 and rows[-1]["val_miou"]
    lrs = [float(r["lr"]) for r in rows]
    # the compressed schedule still reaches its final LR on the last step of epoch 6
    assert lrs[-1] == pytest.approx(final_lr, rel=1e-3, abs=1e-12)
    assert lrs[3] < lrs[2]
    assert clock.calls == 4 + 6 * 2


@pytest.mark.parametrize("clock_kw, epochs, cut_after", [
    # one slow step in epoch 3 (calls 9-10; +0.5 s): its own forecast 12.75 + 9 x 3 = 39.75 s passes 96 % of 40 s
    # (38.4 s); the median of epochs 1-3 (2 s) forecasts 35.25 s, so the plan holds (the old forecast cut 12
    # epochs to 11 here, and extended back to 12 after epoch 6)
    (dict(extra={10: 0.5}), 12, None),
    # every step from call 9 on costs 1.25 s: epoch 3 alone is the jitter case above; after epoch 4 the median
    # (2.5 s) forecasts 15.75 + 8 x 3 = 39.75 s -> (36.8 - 15.75) / 3 -> 7 more epochs, 11 in all
    (dict(slow_after=8, slow_s=1.25), 11, 4),
])
def test_time_budget_shortens_on_the_median_of_recent_epochs(folder_dataset, tmp_path, monkeypatch, clock_kw, epochs,
                                                             cut_after):
    FakeClock(monkeypatch, **clock_kw)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=40.0), log=lines.append)
    cuts = [line for line in lines if "instead of" in line]
    assert s["epochs_planned"] == 12 and s["epochs"] == epochs
    if cut_after is None:
        assert not cuts, cuts
    else:
        assert len(cuts) == 1 and f"epoch {cut_after} took 3.0 s, forecast 40 s > 38 s" in cuts[0], cuts
    assert s["elapsed_s"] <= 40 * (1 - TIME_BUDGET_MARGIN / 2)


def test_time_budget_extends_when_epochs_run_faster_than_measured(folder_dataset, tmp_path, monkeypatch):
    # the measurement's steps cost 1 s (kernel warm-up, a busy start), every later step 0.5 s
    clock = FakeClock(monkeypatch, slow_after=4, slow_s=0.5)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=20.0), log=lines.append)
    # first plan 5 epochs of 2.5 s; after epoch 1 (1.5 s) at 6.25 s: 18.4 - 6.25 = 12.15 s -> epochs 2..9
    assert s["epochs_planned"] == 5 and s["epochs"] == 9
    assert s["elapsed_s"] == pytest.approx(4.75 + 9 * 1.5, abs=0.06) and s["elapsed_s"] <= 20
    assert any("9 epochs instead of 5" in line and "stretched" in line for line in lines)
    lrs = [float(r["lr"]) for r in _rows(tmp_path)]
    assert len(lrs) == 9 and lrs[-1] == pytest.approx(0.0, abs=1e-9)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))  # one decay, stretched, not restarted
    assert clock.calls == 4 + 9 * 2


def test_time_budget_reserves_the_logit_offsets_stage(folder_dataset, tmp_path, monkeypatch):
    FakeClock(monkeypatch)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=20.0, logit_offsets=True), log=lines.append)
    # as in the test above, 13.65 s are left for epochs of 2.5 s, less the offsets stage: 8 training images at the
    # validation's 0.25 s, one more validation (0.5 s) and the fit (8 x 4096 px x 10 us): 2.83 s -> 4 epochs, not 5
    assert s["epochs_planned"] == 4 and s["epochs"] == 4
    assert s["logit_offsets"] is not None and any(line.startswith("logit offsets") for line in lines)
    assert s["elapsed_s"] <= 20


def test_time_budget_calibration_leaves_the_slow_first_steps_out(folder_dataset, tmp_path, monkeypatch):
    # a fresh process: its first 3 steps cost 5 s, every later one 1 s (the trainer's real warm-up count)
    assert train_mod.CALIB_WARMUP_STEPS == 3
    FakeClock(monkeypatch, warmup_steps=None, first_calls=3, first_s=5.0)
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=40.0), log=lambda *a: None)
    # timed: steps 4-6 (1 s each) -> epoch 2 + 0.5 s, the steady cost; calibration used 15 + 3 + 0.75 s.
    # 36.8 - 18.75 = 18.05 s -> 7 epochs (1 warm-up step would time (5 + 5 + 1) / 3 s a step: 7.83 s an epoch)
    assert s["epoch_estimate_s"] == pytest.approx(2.5) and s["epochs_planned"] == 7
    assert s["elapsed_s"] == pytest.approx(18.75 + 7 * 2.5, abs=0.06)


def test_time_budget_never_extends_past_the_epochs_bound(folder_dataset, tmp_path, monkeypatch):
    FakeClock(monkeypatch, slow_after=4, slow_s=0.5)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=20.0, epochs=6), log=lines.append)
    assert s["epochs_planned"] == 5 and s["epochs"] == 6
    # the extension stops at the bound and says what the budget would hold (9 epochs, as without the bound)
    capped = [line for line in lines if "6 epochs instead of 5" in line]
    assert len(capped) == 1 and "--epochs 6 ends the run before the budget, which would hold 9 epochs" in capped[0]


def test_time_budget_says_when_the_epochs_bound_ends_the_first_plan(folder_dataset, tmp_path, monkeypatch):
    FakeClock(monkeypatch)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=20.0, epochs=3), log=lines.append)
    assert s["epochs_planned"] == 3 and s["epochs"] == 3  # 5 fit (first budget test)
    assert sum("which would hold 5 epochs" in line for line in lines) == 1
    quiet = []
    train(_budget_cfg(folder_dataset, tmp_path / "b", time_budget_s=20.0, epochs=5), log=quiet.append)
    assert not any("would hold" in line for line in quiet)  # the budget, not the bound, ends this plan


def test_plan_with_room_reports_room_only_when_the_bound_binds():
    assert plan_epochs(100, 1, 30, 10, 4) == 7
    assert plan_with_room(100, 1, 5, 10, 4) == (5, 7) and plan_with_room(100, 1, 7, 10, 4) == (7, None)
    assert plan_with_room(100, 1, 30, 10, 4) == (7, None)
    assert plan_with_room(100, 4, 6, 10, 4) == (6, 10)   # from epoch 4 on: epochs 4..10 fit
    assert plan_with_room(10, 4, 6, 10, 4) == (4, None)  # nothing fits: at least the first epoch, as plan_epochs
    assert plan_with_room(1e6, 1, 2, 1, 0) == (2, 2 * BUDGET_ROOM_FACTOR)  # looks no further than 10x the bound
    for bound in range(1, 12):  # the bounded plan is plan_epochs' own
        assert plan_with_room(100, 1, bound, 10, 4)[0] == plan_epochs(100, 1, bound, 10, 4)


def test_plan_epochs_with_a_low_res_phase():
    assert [LowResPhase(0.5, 2.5).epochs(n) for n in (0, 1, 2, 3, 163)] == [0, 1, 1, 2, 82]
    # a quarter of the schedule done: of 4 epochs over the rest, those starting before 0.5 -> 2 (at 0.25 and 0.4375)
    assert LowResPhase(0.5, 1.0, done=0.25).epochs(4) == 2 and LowResPhase(0.5, 1.0, done=0.5).epochs(9) == 0
    # 12 epochs: 6 low (2.5 s, no validation) + 6 full (10 s + 4 s) = 99 s <= 100; 13 would take 101.5 s
    assert plan_epochs(100, 1, 30, 10, 4, low_res=LowResPhase(0.5, 2.5)) == 12
    assert plan_epochs(100, 1, 30, 10, 4) == 7


def test_time_budget_plans_the_cheaper_low_res_epochs(folder_dataset, tmp_path, monkeypatch):
    clock = FakeClock(monkeypatch, low_step_s=0.25)
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, time_budget_s=20.0, low_res=0.5), log=lines.append)
    # calibration 4 full + 4 low steps + validation (0.75 s) = 5.75 s; 18.4 - 5.75 = 12.65 s left for epochs of
    # 0.5 s (low, not validated) or 2 + 0.5 s: 9 epochs, 5 low = 2.5 + 4 x 2.5 = 12.5 s (10 would take 15 s)
    assert s["epochs_planned"] == 9 and s["epochs"] == 9
    assert any("-> 9 epochs (5 at low resolution)" in line for line in lines)
    assert s["elapsed_s"] == pytest.approx(5.75 + 12.5, abs=0.06) and s["elapsed_s"] <= 20
    rows = _rows(tmp_path)
    assert [float(r["input_scale"]) for r in rows] == [0.5] * 5 + [1.0] * 4
    assert [bool(r["val_miou"]) for r in rows] == [False] * 5 + [True] * 4
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] >= 6
    assert clock.calls == 8 + 9 * 2


@pytest.mark.parametrize("cfg, slow_call, oneoff, epochs", [
    # the run's first step (call 5, after 4 calibration steps) costs 2 s more, as when --compile traces the run's
    # own module: first plan 12 epochs of 2.5 s (as above); epoch 1 took 4 + 0.5 s. Forecast with its recurring
    # 2 s: 4.75 + 4.5 + 11 x 2.5 = 36.75 s <= 38.4 s, so the plan holds (counted whole, 11 more epochs of
    # 4.5 s would forecast 58.75 s and cut the plan to 7 epochs)
    (dict(time_budget_s=40.0), 5, 2.0, [2.0] + [0.0] * 11),
    # --low-res: 9 epochs planned, 5 low (as in the test above); the first full-resolution step (call 8 + 10 + 1)
    # costs 0.5 s more: 5.75 + 2.5 + 3 + 3 x 2.5 = 18.75 s <= 19.2 s (whole: 20.25 s, cut to 8 epochs)
    (dict(time_budget_s=20.0, low_res=0.5), 19, 0.5, [0.0] * 5 + [0.5] + [0.0] * 3),
])
def test_time_budget_leaves_a_one_off_first_step_out_of_the_forecast(folder_dataset, tmp_path, monkeypatch, cfg,
                                                                     slow_call, oneoff, epochs):
    FakeClock(monkeypatch, low_step_s=0.25, extra={slow_call: oneoff})
    lines = []
    s = train(_budget_cfg(folder_dataset, tmp_path, **cfg), log=lines.append)
    # the plan never moved (the old forecast cut it, then extended it again over the next epochs)
    assert not any("instead of" in line for line in lines), lines
    assert s["epochs"] == s["epochs_planned"] == len(epochs)
    assert [float(r["oneoff_seconds"]) for r in _rows(tmp_path)] == epochs
    assert s["elapsed_s"] <= cfg["time_budget_s"]


def test_low_res_epochs_see_half_size_crops_and_resume_in_their_phase(folder_dataset, tmp_path, monkeypatch):
    shapes = []
    real = train_mod.segmentation_loss
    monkeypatch.setattr(train_mod, "segmentation_loss", lambda *a, **k: shapes.append(tuple(a[0].shape[-2:])) or real(*a, **k))
    cfg = dict(data=str(folder_dataset), epochs=4, low_res=0.6, limit=8)
    full = train(_small(tmp_path / "full", **cfg), log=lambda *a: None)
    # 4 epochs x 2 steps: epochs starting before 60% of the schedule (steps 0, 2, 4 of 8) at half the 40x56 crop
    assert shapes == [(20, 28)] * 6 + [(40, 56)] * 2
    _kill_after_epoch(monkeypatch, 2)
    with pytest.raises(Killed):
        train(_small(tmp_path / "part", **cfg), log=lambda *a: None)
    monkeypatch.setattr(train_mod, "_save_checkpoints", _SAVE)
    shapes.clear()
    resumed = train(_small(tmp_path / "part", resume=True, **cfg), log=lambda *a: None)
    assert shapes == [(20, 28)] * 2 + [(40, 56)] * 2  # epoch 3 still low, epoch 4 full
    for a, b in zip(_rows(tmp_path / "full"), _rows(tmp_path / "part")):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), abs=1e-6)
        assert a["input_scale"] == b["input_scale"]
    assert resumed["best_miou"] == pytest.approx(full["best_miou"], abs=1e-6)


def _stripe_widths(transform, items, draws=4):
    """Widths (px) of the folder dataset's class-2 stripe (6 px wide) in ``transform``'s outputs, where it lies
    inside the crop."""
    widths = []
    for d in range(draws):
        reseed(transform, d)
        for img, mask in items:
            row = transform(image=img, mask=mask)["mask"][0] == 2
            cols = np.flatnonzero(row)
            if cols.size and cols[0] > 0 and cols[-1] < row.size - 1:
                widths.append(int(cols[-1] - cols[0] + 1))
    return widths


@pytest.mark.parametrize("mode, widths, scale", [("scale", (2, 5), 0.5), ("crop", (4, 9), 1.0)])
def test_low_res_mode_crop_keeps_objects_at_full_resolution_size(folder_dataset, tmp_path, monkeypatch, mode, widths,
                                                                 scale):
    cfg = _small(tmp_path, data=str(folder_dataset), epochs=2, low_res=0.5, low_res_mode=mode, limit=8)
    data = build_train_data(cfg, "cpu")
    assert data.transform_low(image=data.train_items[0][0], mask=data.train_items[0][1])["mask"].shape == (20, 28)
    # the 6-px stripe at the --scale range 0.75-1.5 (crop) or half of it (scale)
    seen = _stripe_widths(data.transform_low, data.train_items)
    assert len(seen) >= 8 and all(widths[0] <= w <= widths[1] for w in seen), seen
    shapes = []
    real = train_mod.segmentation_loss
    monkeypatch.setattr(train_mod, "segmentation_loss", lambda *a, **k: shapes.append(tuple(a[0].shape[-2:])) or real(*a, **k))
    train(cfg, log=lambda *a: None)
    assert shapes == [(20, 28)] * 2 + [(40, 56)] * 2
    rows = _rows(tmp_path)
    assert [(r["low_res"], float(r["input_scale"])) for r in rows] == [("1", scale), ("0", 1.0)]


def test_low_res_mode_is_checked():
    with pytest.raises(UsageError, match="--low-res-mode must be scale or crop"):
        TrainConfig(data="d", low_res=0.5, low_res_mode="half")


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


@pytest.mark.parametrize("scheme", ["enet", "median", "none"])
def test_class_weights_option_picks_the_scheme(folder_dataset, scheme):
    from unet_edge.data.train_split import build_train_data

    data = build_train_data(TrainConfig(data=str(folder_dataset), class_weights=scheme), "cpu")
    masks = [m for _, m in data.train_items]
    k = data.info.num_logits
    expected = {"enet": enet_class_weights(class_frequencies(masks, k)),
                "median": median_frequency_weights(masks, k), "none": None}[scheme]
    if expected is None:
        assert data.weight is None
    else:
        np.testing.assert_allclose(data.weight.numpy(), expected, rtol=1e-6)
