import numpy as np
import pytest
import torch

from unet_edge.errors import DataError, UsageError
from unet_edge.logit_offsets import PixelSample, fit_offsets, fold_offsets, sample_iou, sample_miou, sample_pixels
from unet_edge.metadata import ModelMeta
from unet_edge.model import UNet, config_from_preset


def _biased_sample(n=60_000, bias=(0.0, 0.0, 2.0), seed=0):
    """3 classes (70/25/5 % of the pixels) with noisy one-hot logits, class 2's logit raised by 2:
    the argmax over-predicts the rare class, as a class-weighted loss makes it do."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.7, 0.25, 0.05]).astype(np.int64)
    logits = 2.0 * np.eye(3, dtype=np.float32)[labels] + rng.normal(0, 1.0, (n, 3)).astype(np.float32)
    return PixelSample(logits + np.asarray(bias, dtype=np.float32), labels)


def test_fit_offsets_undoes_a_biased_argmax():
    s = _biased_sample()
    unbiased = PixelSample(s.logits - np.float32([0, 0, 2.0]), s.labels)
    before, ideal = sample_miou(s, np.zeros(3)), sample_miou(unbiased, np.zeros(3))
    off = fit_offsets(s)
    assert off.dtype == np.float32 and off.shape == (3,) and abs(float(off.sum())) < 1e-5
    # the rare class's offset is lowered against the others by about the planted 2 logits
    assert -2.75 <= off[2] - (off[0] + off[1]) / 2 <= -1.0
    after = sample_miou(s, off)
    assert after > before + 0.05 and after >= ideal - 0.005
    assert sample_iou(s, off)[2] > sample_iou(s, np.zeros(3))[2] + 0.1


def test_fit_offsets_leaves_a_perfect_argmax_alone_and_refuses_a_sigmoid_head():
    labels = np.array([0, 1, 2, 1, 0], dtype=np.int64)
    s = PixelSample(5.0 * np.eye(3, dtype=np.float32)[labels], labels)
    assert np.array_equal(fit_offsets(s), np.zeros(3, dtype=np.float32))
    with pytest.raises(UsageError, match="sigmoid"):
        fit_offsets(PixelSample(np.zeros((4, 1), dtype=np.float32), np.zeros(4, dtype=np.int64)))


def test_fold_offsets_adds_them_to_every_pixels_logits():
    torch.manual_seed(0)
    model = UNet(config_from_preset("tiny", 4)).eval()
    x = torch.randn(2, 3, 32, 48)
    off = np.array([0.5, -1.0, 0.25, 0.25], dtype=np.float32)
    with torch.no_grad():
        ref = model(x)
        fold_offsets(model, off)
        got = model(x)
    assert torch.allclose(got, ref + torch.from_numpy(off).view(1, 4, 1, 1), atol=1e-5)
    with pytest.raises(UsageError, match="3 logit offsets"):
        fold_offsets(model, off[:3])


def test_sample_pixels_takes_labelled_pixels_with_their_own_logits():
    meta = ModelMeta(arch={}, class_names=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]], input_size=(6, 8))
    h, w = meta.input_size

    def infer(batch):  # channel 0: the pixel's flat index, channel 1: the image's mean (its id)
        n = batch.shape[0]
        idx = np.broadcast_to(np.arange(h * w, dtype=np.float32).reshape(1, h, w), (n, h, w))
        ids = np.broadcast_to(batch.mean(axis=(1, 2, 3))[:, None, None], (n, h, w))
        return np.stack([idx, ids], axis=1)

    rng = np.random.default_rng(1)
    items = []
    for k in range(3):
        mask = rng.integers(0, 2, (h, w)).astype(np.uint8)
        mask[:2] = meta.ignore_index
        items.append((np.full((h, w, 3), 40 * (k + 1), dtype=np.uint8), mask))
    s = sample_pixels(infer, items, meta, pixels_per_image=10, seed=0, batch_size=2)
    assert s.logits.shape == (30, 2) and s.labels.shape == (30,)
    for k, (_, mask) in enumerate(items):
        rows = slice(10 * k, 10 * (k + 1))
        flat = s.logits[rows, 0].astype(int)
        assert len(set(flat.tolist())) == 10 and (flat >= 2 * w).all()  # distinct, never a void row
        assert np.array_equal(s.labels[rows], mask.reshape(-1)[flat])
    assert len(set(np.round(s.logits[:, 1], 3).tolist())) == 3  # one image's logits per block
    void = [(img, np.full_like(m, meta.ignore_index)) for img, m in items]
    with pytest.raises(DataError, match="void"):
        sample_pixels(infer, void, meta)


def test_offsets_benchmark_reports_before_and_after_per_class(tiny_run, folder_dataset, tmp_path):
    from benchmarks.logit_offsets import main

    # last.pt holds the raw weights of the last epoch, without offsets
    main(["--data", str(folder_dataset), "--checkpoint", f"raw={tiny_run['last']}", "--report", str(tmp_path)])
    import json

    row = json.loads((tmp_path / "logit_offsets.json").read_text())["rows"][0]
    assert row["name"] == "raw" and list(row["offsets"]) == ["class0", "class1", "class2"]
    assert abs(sum(row["offsets"].values())) < 1e-3 and row["train_miou_after"] >= row["train_miou_before"]
    assert set(row["val_iou_before"]) == set(row["val_iou_after"]) == {"class0", "class1", "class2"}
    md = (tmp_path / "logit_offsets.md").read_text()
    assert f"| raw | {row['val_miou_before']:.4f} -> **{row['val_miou_after']:.4f}** |" in md
    with pytest.raises(SystemExit, match="already holds logit offsets"):
        main(["--data", str(folder_dataset), "--checkpoint", f"best={tiny_run['best']}", "--report", str(tmp_path)])
