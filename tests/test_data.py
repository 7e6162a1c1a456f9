from pathlib import Path

import cv2
import numpy as np
import pytest

from unet_edge.data.augment import train_transform
from unet_edge.data.layouts import CAMVID_CLASSES, CARLA_CLASSES, detect_format, load_dataset, read_image
from unet_edge.errors import DataError, UsageError


def _img(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def make_carla(root: Path, n=5, split_dirs=False, mask_dir="CameraSeg"):
    for split in (["train", "val"] if split_dirs else [None]):
        base = root / split if split else root
        (base / "CameraRGB").mkdir(parents=True)
        (base / mask_dir).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(base / "CameraRGB" / f"{i:04d}.png"), _img(seed=i))
            seg = np.zeros((24, 32, 3), np.uint8)
            seg[..., 2] = (np.arange(32) % 13)[None, :]  # class id in the red channel (BGR index 2)
            seg[..., 1] = 99  # other channels must be ignored
            cv2.imwrite(str(base / mask_dir / f"{i:04d}.png"), seg)
    return root


def make_camvid(root: Path, n=3):
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / split / f"0001TP_{i:06d}.png"), _img(seed=i))
            ann = np.full((24, 32), 3, np.uint8)
            ann[:4] = 11  # void
            cv2.imwrite(str(root / f"{split}annot" / f"0001TP_{i:06d}.png"), ann)
    return root


def make_folder(root: Path, values, n=5):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), _img(seed=i))
        m = np.zeros((24, 32), np.uint8)
        for k, v in enumerate(values):
            m[:, k * 8 : (k + 1) * 8] = v
        cv2.imwrite(str(root / "masks" / f"{i}.png"), m)
    return root


def test_carla_flat_layout_red_channel_and_holdout(tmp_path):
    root = make_carla(tmp_path / "c", n=10)
    assert detect_format(root) == "carla"
    tr, va = load_dataset(root, "train"), load_dataset(root, "val")
    assert len(tr) == 8 and len(va) == 2  # every 5th frame is val
    assert not set(tr.image_paths()) & set(va.image_paths())
    img, mask = tr[0]
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(mask[0], np.arange(32) % 13)
    assert tr.info.class_names == CARLA_CLASSES and len(tr.info.palette) == 13


def test_carla_split_dirs_and_cameramask(tmp_path):
    root = make_carla(tmp_path / "c", n=3, split_dirs=True, mask_dir="CameraMask")
    assert len(load_dataset(root, "train")) == 3 and len(load_dataset(root, "val")) == 3


def test_camvid_layout_void_becomes_ignore(tmp_path):
    root = make_camvid(tmp_path / "cv")
    assert detect_format(root) == "camvid"
    ds = load_dataset(root, "val")
    _, mask = ds[0]
    assert set(np.unique(mask)) == {3, 255}
    assert ds.info.class_names == CAMVID_CLASSES and ds.info.ignore_index == 255
    with pytest.raises(DataError, match="test"):
        load_dataset(root, "test")


@pytest.mark.parametrize("values,kind,expected", [
    ((0, 1, 2, 255), "index", {0, 1, 2, 255}),
    ((0, 255, 0, 255), "binary", {0, 1}),
    ((1, 2, 3, 2), "trimap", {1, 0, 255}),
])
def test_folder_mask_kinds(tmp_path, values, kind, expected):
    root = make_folder(tmp_path / "f", values)
    ds = load_dataset(root, "train", "folder")
    assert ds.info.mask_kind == kind
    assert set(np.unique(ds[0][1])) == expected
    assert ds.info.binary == (kind != "index")
    assert ds.info.num_logits == (1 if kind != "index" else 3)


def test_folder_classes_txt_names(tmp_path):
    root = make_folder(tmp_path / "f", (0, 1, 2))
    (root / "classes.txt").write_text("road\ncar\nsky\n")
    assert load_dataset(root, "train").info.class_names == ["road", "car", "sky"]


def test_real_camvid_files(camvid):
    ds = load_dataset(camvid, "val")
    assert ds.info.format == "camvid" and len(ds) == 101
    img, mask = ds[0]
    assert img.shape == (360, 480, 3) and mask.shape == (360, 480)
    vals = set(np.unique(mask).tolist())
    assert vals <= set(range(11)) | {255} and len(vals - {255}) >= 5
    assert len(load_dataset(camvid, "train")) == 367


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not a known dataset layout"):
        load_dataset(tmp_path / "junk")
    root = make_folder(tmp_path / "f", (0, 1))
    (root / "images" / "extra.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="no mask"):
        load_dataset(root, "train")
    (root / "masks" / "extra.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode mask .*extra.png"):
        load_dataset(root, "train")  # masks are sniffed on open
    with pytest.raises(DataError, match="cannot decode image .*extra.png"):
        read_image(root / "images" / "extra.png")
    with pytest.raises(UsageError, match="unknown split"):
        load_dataset(root, "bogus")
    with pytest.raises(UsageError, match="unknown dataset format"):
        load_dataset(root, "train", "voc")


def test_augmentation_pads_masks_with_ignore_and_uses_nearest():
    img = _img(40, 40)
    mask = np.random.default_rng(1).integers(0, 3, (40, 40)).astype(np.uint8)
    t = train_transform((64, 64), ignore_index=255, scale=(1.0, 1.0))
    out = t(image=img, mask=mask)
    assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (64, 64)
    assert set(np.unique(out["mask"])) <= {0, 1, 2, 255}
    assert (out["mask"] == 255).sum() == 64 * 64 - 40 * 40
    t2 = train_transform((32, 32), ignore_index=255, scale=(0.6, 1.4))
    for _ in range(5):
        assert set(np.unique(t2(image=img, mask=mask)["mask"])) <= {0, 1, 2, 255}  # no interpolated labels
