"""Recipe options of the trainer: OHEM, rare-class crops, weight EMA, the scale range."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unet_edge.artifacts import load_checkpoint
from unet_edge.data.augment import train_transform
from unet_edge.data.train_split import class_frequencies, rare_classes
from unet_edge.train import TrainConfig, segmentation_loss, train


def test_ohem_averages_only_the_hardest_labelled_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    target[0, :2] = 255
    pix = F.cross_entropy(logits, target, ignore_index=255, reduction="none")[target != 255]
    k = int(0.25 * pix.numel())
    assert segmentation_loss(logits, target, 255, ohem=0.25).item() == pytest.approx(pix.sort().values[-k:].mean().item())
    assert segmentation_loss(logits, target, 255, ohem=0.0).item() == pytest.approx(pix.mean().item())
    assert segmentation_loss(logits, target, 255, ohem=0.25) > segmentation_loss(logits, target, 255)


def test_ohem_ranks_pixels_unweighted_and_then_weights_the_kept_ones():
    """Class weights must not decide which pixels are hard (else a common class, weighted low,
    is never kept and never learnt): the kept set is the unweighted top share."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (1, 8, 8), generator=g)
    weight = torch.tensor([0.01, 1.0, 100.0])
    pix = F.cross_entropy(logits, target, reduction="none").flatten()
    keep = pix.argsort()[-16:]
    w = weight[target.flatten()[keep]]
    expected = (w * pix[keep]).sum() / w.sum()
    got = segmentation_loss(logits, target, 255, weight=weight, ohem=0.25)
    assert got.item() == pytest.approx(expected.item())
    by_weighted = (weight[target.flatten()] * pix).argsort()[-16:]
    assert set(by_weighted.tolist()) != set(keep.tolist())  # the two rankings differ on this input


def test_rare_classes_are_the_present_classes_under_the_share():
    m = np.zeros((100, 100), np.uint8)  # class 0: the rest
    m[:30] = 1                            # 30 %
    m[30, :50] = 2                        # 0.5 %
    m[31:, :10] = 255                     # ignored: not counted
    freqs = class_frequencies([m], 4)
    assert freqs == pytest.approx([6260 / 9310, 3000 / 9310, 50 / 9310, 0.0])
    assert rare_classes(freqs) == (2,)   # class 3 is absent, not rare
    assert rare_classes(freqs, freq=0.5) == (1, 2)


def test_rare_crops_find_a_thin_pole_that_uniform_crops_miss():
    img = np.zeros((360, 480, 3), np.uint8)
    mask = np.full((360, 480), 3, np.uint8)
    mask[40:120, 430:433] = 2
    rare = train_transform((96, 96), 11, seed=0, rare_classes=(2,), rare_p=1.0)
    uniform = train_transform((96, 96), 11, seed=0)
    hits = lambda t: sum(bool((t(image=img, mask=mask)["mask"] == 2).any()) for _ in range(40))  # noqa: E731
    assert hits(rare) == 40 and hits(uniform) < 10


def test_scale_range_reaches_the_augmentation():
    img = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    t = train_transform((300, 300), 11, scale=(2.0, 2.0), seed=0)   # 200x200 scaled, padded to 300
    out = t(image=img, mask=mask)["mask"]
    assert (out == 0).sum() == 200 * 200 and (out == 11).sum() == 300 * 300 - 200 * 200


def test_ema_weights_are_validated_saved_and_resumed(folder_dataset, tmp_path):
    cfg = dict(data=str(folder_dataset), out=str(tmp_path), preset="tiny", epochs=2, batch_size=2, crop=(48, 64),
               lr=5e-3, ema=0.9, val_every=2, progress=False, command="pytest")
    n = torch.get_num_threads()
    try:
        train(TrainConfig(**cfg), log=lambda *a: None)
        last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
        ema = {k[len("module."):]: v for k, v in last["ema"].items() if k.startswith("module.")}
        assert ema.keys() == last["model"].keys()
        assert any(not torch.equal(ema[k], last["model"][k]) for k in ema)   # the average lags the weights
        # best.pt: the EMA, its head's bias moved by the logit offsets fit after the last epoch
        assert best["epoch"] == 2 and all(torch.equal(ema[k], best["model"][k]) for k in ema if k != "head.bias")
        offsets = best["meta"]["extra"].get("logit_offsets")
        shift = torch.tensor(list(offsets["offsets"].values())) if offsets else torch.zeros(3)
        assert torch.allclose(best["model"]["head.bias"], ema["head.bias"] + shift, atol=1e-4)
        lines = []
        train(TrainConfig(**cfg, resume=True), log=lines.append)             # the stored EMA loads back
        assert any("resumed from" in line for line in lines)
    finally:
        torch.set_num_threads(n)
