"""Tests of the procedural CARLA-style scene generator (unet_edge.data.synth). Small frames, quick."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from unet_edge.data.layouts import CARLA_CLASSES, detect_format, load_dataset, read_image, read_mask
from unet_edge.data.synth import SceneParams, generate_dataset, render_drive, render_scene
from unet_edge.errors import UnetEdgeError

UNLABELED, ROAD, SIDEWALK, VEHICLE, BUILDING = 0, 7, 8, 10, 1
SIZE = (96, 128)


def _frame(seed: int, size=SIZE, **kw):
    return render_scene(np.random.default_rng(seed), size, **kw)


@pytest.fixture(scope="module")
def frames():
    """Six independent scenes at 96x128."""
    return [_frame(s) for s in range(6)]


def test_shapes_dtypes_and_label_ids(frames):
    for img, lab in frames:
        assert img.shape == SIZE + (3,) and img.dtype == np.uint8
        assert lab.shape == SIZE and lab.dtype == np.uint8
        assert int(lab.max()) < len(CARLA_CLASSES) == 13
        assert img.flags.c_contiguous and lab.flags.c_contiguous
    img, lab = _frame(0, (37, 53))  # odd, small sizes work too
    assert img.shape == (37, 53, 3) and lab.shape == (37, 53)


def test_deterministic_per_seed(frames):
    img, lab = _frame(0)
    assert np.array_equal(img, frames[0][0]) and np.array_equal(lab, frames[0][1])
    assert not np.array_equal(frames[0][0], frames[1][0])
    assert not np.array_equal(frames[0][1], frames[1][1])
    p1 = SceneParams.random(np.random.default_rng(7))
    p2 = SceneParams.random(np.random.default_rng(7))
    a = render_scene(np.random.default_rng(1), SIZE, t=3.0, params=p1)
    b = render_scene(np.random.default_rng(1), SIZE, t=3.0, params=p2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_typical_frames_hold_several_classes(frames):
    present = set()
    for _, lab in frames[:4]:
        ids = set(np.unique(lab).tolist())
        assert len(ids) >= 5, ids
        assert ROAD in ids and UNLABELED in ids  # road and sky in every frame
        present |= ids
    assert {ROAD, SIDEWALK, UNLABELED, VEHICLE, BUILDING} <= present


def test_drive_is_temporally_coherent():
    p = SceneParams.random(np.random.default_rng(3))
    lab = [render_scene(np.random.default_rng(i), SIZE, t=t, params=p)[1] for i, t in enumerate((0.0, 0.5, 40.0))]
    near, far = (lab[0] == lab[1]).mean(), (lab[0] == lab[2]).mean()
    assert near > 0.9
    assert far < near - 0.03  # the scene really moves


def _fit_means(img, lab):
    return {int(c): img[lab == c].reshape(-1, 3).astype(np.float64).mean(0) for c in np.unique(lab)}


def _nearest_mean_accuracy(means, img, lab):
    cls = np.array(sorted(means))
    M = np.stack([means[c] for c in cls])
    px = img.reshape(-1, 3).astype(np.float64)
    pred = cls[np.argmin(((px[:, None, :] - M[None]) ** 2).sum(-1), axis=1)]
    return float((pred == lab.reshape(-1)).mean())


def test_not_a_colour_lookup(frames):
    # a nearest-mean-colour classifier fit on one frame does badly on the next
    accs = [_nearest_mean_accuracy(_fit_means(*frames[i]), *frames[i + 1]) for i in range(4)]
    assert max(accs) < 0.9, accs
    assert np.mean(accs) < 0.7, accs

    # and per-class colour distributions overlap: 8x8x8 RGB histogram intersection over four frames
    def hist(c):
        px = np.concatenate([img[lab == c] for img, lab in frames[:4]]).astype(np.int64) // 32
        return np.bincount(px[:, 0] * 64 + px[:, 1] * 8 + px[:, 2], minlength=512) / len(px)

    for a, b in ((ROAD, BUILDING), (ROAD, VEHICLE), (ROAD, SIDEWALK)):
        assert np.minimum(hist(a), hist(b)).sum() > 0.15, (CARLA_CLASSES[a], CARLA_CLASSES[b])


def _no_temp_files(root):
    return [p for p in root.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]


def test_generate_dataset_is_a_loadable_reproducible_carla_layout(tmp_path):
    root = generate_dataset(tmp_path / "ds", n_train=3, n_val=2, size=(48, 64), seed=5, progress=False)
    assert root == tmp_path / "ds"
    assert detect_format(root) == "carla"
    for split, n in (("train", 3), ("val", 2)):
        ds = load_dataset(root, split)
        assert len(ds) == n and ds.info.format == "carla" and ds.info.class_names == CARLA_CLASSES
        assert [p.name for p in ds.image_paths()] == [f"{i:06d}.png" for i in range(n)]
        for img_path, mask_path in ds.pairs:
            raw = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
            assert raw.ndim == 3 and raw.shape == (48, 64, 3)
            assert not raw[..., :2].any()  # blue and green are 0, the id is in red
            ids = read_mask(mask_path, ds.info)
            assert np.array_equal(ids, raw[..., 2]) and int(ids.max()) <= 12
            assert read_image(img_path).shape == (48, 64, 3)
        img, mask = ds[0]
        assert img.shape == (48, 64, 3) and mask.shape == (48, 64)
    text = (root / "README.txt").read_text()
    assert "CameraSeg" in text and all(name in text for name in CARLA_CLASSES)
    assert _no_temp_files(root) == []

    again = generate_dataset(tmp_path / "ds2", n_train=3, n_val=2, size=(48, 64), seed=5, progress=False)
    other = generate_dataset(tmp_path / "ds3", n_train=3, n_val=2, size=(48, 64), seed=6, progress=False)
    files = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    assert len(files) == 10
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((root / f).read_bytes() != (other / f).read_bytes() for f in files)

    # a smaller run into the same folder leaves exactly the frames asked for
    generate_dataset(root, n_train=2, n_val=1, size=(48, 64), seed=5, progress=False)
    assert len(load_dataset(root, "train")) == 2 and len(load_dataset(root, "val")) == 1


def test_render_drive_writes_the_requested_frames(tmp_path):
    out = render_drive(tmp_path / "drive.mp4", frames=10, size=(48, 64), seed=2, fps=10.0, frames_dir=tmp_path / "frames")
    assert out == tmp_path / "drive.mp4" and out.is_file()
    cap = cv2.VideoCapture(str(out))
    try:
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
        ok, frame = cap.read()
        assert ok and frame.shape == (48, 64, 3)
    finally:
        cap.release()
    # the labelled frames form a flat CARLA folder: every 5th frame is val
    assert detect_format(tmp_path / "frames") == "carla"
    assert len(load_dataset(tmp_path / "frames", "train")) == 8
    assert len(load_dataset(tmp_path / "frames", "val")) == 2
    assert _no_temp_files(tmp_path) == []


def test_bad_arguments_raise_library_errors(tmp_path):
    with pytest.raises(UnetEdgeError):
        render_scene(np.random.default_rng(0), (8, 8))
    with pytest.raises(UnetEdgeError):
        generate_dataset(tmp_path / "x", n_train=0, n_val=0, progress=False)
    with pytest.raises(UnetEdgeError):
        render_drive(tmp_path / "x.mp4", frames=0)
    assert not (tmp_path / "x.mp4").exists()
