"""Recipe options of the trainer: OHEM, the Lovasz-Softmax term, rare-class crops, weight EMA, the scale range."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unet_edge.artifacts import load_checkpoint
from unet_edge.data.augment import train_transform
from unet_edge.data.train_split import class_frequencies, rare_classes
from unet_edge import losses
from unet_edge.losses import lovasz_softmax
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


def test_lovasz_softmax_of_hard_predictions_is_one_minus_the_miou_of_present_classes():
    """The Lovasz extension is exact on 0/1 vectors (Berman et al. 2018, Sec. 3): with one-hot
    probabilities the loss is the Jaccard loss, 1 - mean IoU over the classes in the labels."""
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 3, (500,), generator=g)  # class 3 absent from the labels
    pred = torch.where(torch.rand(500, generator=g) < 0.3, torch.randint(0, 4, (500,), generator=g), labels)
    ious = [((pred == c) & (labels == c)).sum() / ((pred == c) | (labels == c)).sum() for c in range(3)]
    got = lovasz_softmax(F.one_hot(pred, 4).float(), labels)
    assert got.item() == pytest.approx(1 - torch.stack(ious).float().mean().item())
    assert 0.2 < got.item() < 0.6  # neither perfect nor all wrong
    assert lovasz_softmax(F.one_hot(labels, 4).float(), labels).item() == 0.0


def test_lovasz_term_adds_to_cross_entropy_on_the_labelled_pixels(monkeypatch):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 6, 6), generator=g)
    target[1, :3] = 255
    v = target != 255
    expected = F.cross_entropy(logits, target, ignore_index=255) + 0.7 * lovasz_softmax(
        logits.softmax(1).permute(0, 2, 3, 1)[v], target[v])
    got = segmentation_loss(logits, target, 255, lovasz_weight=0.7)
    assert got.item() == pytest.approx(expected.item())
    got.backward()
    assert logits.grad[0].abs().sum() > 0 and logits.grad[1][:, :3].abs().sum() == 0  # ignored pixels get none
    # above LOVASZ_PIXELS labelled pixels a random subset is sorted: confident logits still cost ~0 (right) or ~1 (wrong)
    monkeypatch.setattr(losses, "LOVASZ_PIXELS", 16)
    sure = F.one_hot(target.clamp(0, 3), 4).permute(0, 3, 1, 2).float() * 30
    right = segmentation_loss(sure, target, 255, lovasz_weight=1.0) - F.cross_entropy(sure, target, ignore_index=255)
    wrong = segmentation_loss(sure.roll(1, 1), target, 255, lovasz_weight=1.0) - F.cross_entropy(
        sure.roll(1, 1), target, ignore_index=255)
    assert right.item() == pytest.approx(0.0, abs=1e-6) and wrong.item() == pytest.approx(1.0, abs=1e-6)
    fg = torch.where(v, target.clamp(0, 1), 255)
    binary = segmentation_loss(logits[:, :1], fg, 255, lovasz_weight=1.0)
    assert binary > F.binary_cross_entropy_with_logits(logits[:, 0][v], fg[v].float()) + 0.1


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
