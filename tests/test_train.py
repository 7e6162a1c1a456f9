import csv

import numpy as np
import pytest
import torch

from unet_edge.artifacts import load_checkpoint, model_from_checkpoint
from unet_edge.errors import ArtifactError
from unet_edge.train import TrainConfig, enet_class_weights, segmentation_loss, train


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
