"""Tests of the procedural CARLA-style scene generator (unet_edge.data.synth). Small frames, quick."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import unet_edge.data.synth as synth_pkg
from unet_edge.data.layouts import CARLA_CLASSES, detect_format, load_dataset, read_image, read_mask
from unet_edge.data.synth import DEFAULT_SIZE, SceneParams, generate_dataset, render_drive, render_scene
from unet_edge.data.synth import constants
from unet_edge.errors import UsageError

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


def test_bad_arguments_raise_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="at least 16x16 pixels, got 8x8"):
        render_scene(np.random.default_rng(0), (8, 8))
    with pytest.raises(UsageError, match=r"must be \(H, W\)"):
        render_scene(np.random.default_rng(0), (96, 128, 3))
    with pytest.raises(UsageError, match="at least one frame"):
        generate_dataset(tmp_path / "x", n_train=0, n_val=0, progress=False)
    with pytest.raises(UsageError, match="frames >= 1"):
        render_drive(tmp_path / "x.mp4", frames=0)
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x").exists()


# sha256 of image bytes and label bytes of two small seeded frames. Any change in the scene layout,
# the order of random draws, drawing, shading or camera effects changes them: a refactor must keep
# them; a deliberate change of the generator (or a new OpenCV / numpy that rasterizes or draws
# differently) updates them here, with the reason in the commit.
PINNED = {
    "seed0_96x128": ("4579c15c343a3674a234211c2783b12a13d19182a261a126cf34e2c271ac93e0",
                     "47e438668d557ec54345aca9566b5d2be472fad33d6ce71e7c6f31f84947a1d9"),
    "drive3_t57.5_64x80": ("87f6a45ec536f533517b3744c9359e8a24fea66d6d411400d057b62fec494e42",
                           "7ebb57e1485e6d80a20d151a15724cd4e30e530674e7a3dd55e2635b9a956aef"),
}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_seeded_frames_match_their_pinned_hashes(frames):
    img, lab = frames[0]  # render_scene(default_rng(0), (96, 128))
    assert (_sha(img), _sha(lab)) == PINNED["seed0_96x128"]
    p = SceneParams.random(np.random.default_rng(3), length=400.0)
    img, lab = render_scene(np.random.default_rng([3, 1]), (64, 80), t=57.5, params=p)
    assert (_sha(img), _sha(lab)) == PINNED["drive3_t57.5_64x80"]
    # the label histogram says which classes moved when only the hash is off
    assert np.bincount(lab.ravel(), minlength=13).tolist() == [295, 1170, 0, 0, 9, 251, 26, 2166, 256, 506, 411, 9, 21]


def test_label_ids_follow_the_carla_class_order():
    assert DEFAULT_SIZE == (240, 320)
    for i, name in enumerate(CARLA_CLASSES):
        assert getattr(constants, name.upper()) == i


# The subpackage's modules, each importing only modules listed before it (so no cycles), plus these.
SYNTH_LAYERS = ["constants", "colours", "objects", "params", "camera", "painter", "textures", "lighting",
                "ground", "buildings", "roadside", "traffic", "scene", "writer", "__init__"]
SYNTH_EXTERNAL = {"__future__", "math", "dataclasses", "pathlib", "typing", "numpy", "cv2",
                  "unet_edge.errors", "unet_edge.io_utils", "unet_edge.progress", "unet_edge.data.layouts"}


def _synth_imports(path: Path) -> set[str]:
    """Modules ``path`` imports anywhere (function level too): sibling names or absolute module names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                out.add(node.module)
            elif node.level:  # ..layouts, ...errors: relative to unet_edge.data.synth
                base = ["unet_edge", "data", "synth"][: 3 - node.level + 1]
                out.add(".".join(base + [node.module]))
            else:
                out.add(node.module)
    return out


def test_synth_modules_import_only_downwards_and_the_core():
    pkg = Path(synth_pkg.__file__).parent
    assert sorted(p.stem for p in pkg.glob("*.py")) == sorted(SYNTH_LAYERS)
    for i, name in enumerate(SYNTH_LAYERS):
        deps = _synth_imports(pkg / f"{name}.py")
        siblings = deps & set(SYNTH_LAYERS)
        assert siblings <= set(SYNTH_LAYERS[:i]), (name, sorted(siblings - set(SYNTH_LAYERS[:i])))
        assert deps - siblings <= SYNTH_EXTERNAL, (name, sorted(deps - siblings - SYNTH_EXTERNAL))
