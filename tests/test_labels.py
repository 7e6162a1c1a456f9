"""Label ids and class lists: out-of-range ids, 16-bit masks, model vs dataset classes."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.images import calibration_images
from unet_edge.data.layouts import (
    CAMVID_CLASSES, MAX_INFERRED_CLASSES, DatasetInfo, check_classes, decode_ids, load_dataset,
)
from unet_edge.errors import ClassMismatchWarning, DataError
from unet_edge.evaluate import evaluate
from unet_edge.metadata import ModelMeta

H, W = 16, 24


def _img(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _stripes(values, dtype=np.uint8) -> np.ndarray:
    """(H, W) mask, one vertical stripe per value, the last stripe to the right edge."""
    m = np.zeros((H, W), dtype)
    step = W // len(values)
    for k, v in enumerate(values):
        m[:, k * step :] = v
    return m


def _folder(root: Path, masks: list[np.ndarray], classes: list[str] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i, m in enumerate(masks):
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), _img(i))
        assert cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), m)
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def _carla(root: Path, red: np.ndarray, n: int = 5) -> Path:
    (root / "CameraRGB").mkdir(parents=True)
    (root / "CameraSeg").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "CameraRGB" / f"{i:04d}.png"), _img(i))
        seg = np.zeros((H, W, 3), red.dtype)
        seg[..., 2] = red if i == 0 else 7  # only the first frame is bad
        cv2.imwrite(str(root / "CameraSeg" / f"{i:04d}.png"), seg)
    return root


def _camvid(root: Path, ann: np.ndarray) -> Path:
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir(parents=True)
        cv2.imwrite(str(root / split / "0001TP_000000.png"), _img())
        cv2.imwrite(str(root / f"{split}annot" / "0001TP_000000.png"), ann)
    return root


def _meta(names: list[str]) -> ModelMeta:
    return ModelMeta(arch={"num_classes": len(names)}, class_names=names, palette=[[0, 0, 0]] * len(names),
                     input_size=(H, W), dataset={"name": "trainset"})


# --- out-of-range ids, per layout --------------------------------------------------------------


def test_carla_id_beyond_13_classes_is_a_data_error_naming_file_and_pixels(tmp_path):
    ds = load_dataset(_carla(tmp_path / "c", _stripes([0, 20, 7, 40])), "train")
    with pytest.raises(DataError, match=r"0000\.png holds class id\(s\) .*20 \(96 px\), 40 \(96 px\) of 384 pixels.*0\.9\.0-0\.9\.9"):
        ds[0]
    assert set(np.unique(ds[1][1]).tolist()) == {7}


def test_carla_bad_id_stops_training_before_the_loss(tmp_path):
    """Today: a bare ``IndexError: Target 20 is out of bounds`` from the cross-entropy."""
    from unet_edge.train import TrainConfig, train

    root = _carla(tmp_path / "c", _stripes([0, 20]))
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), preset="tiny", epochs=1, batch_size=2,
                      crop=(H, W), progress=False, command="pytest")
    with pytest.raises(DataError, match=r"0000\.png holds class id\(s\) .*20 \(192 px\)"):
        train(cfg, log=lambda *a: None)


def test_folder_id_200_without_classes_txt_is_refused_not_a_201_class_model(tmp_path):
    root = _folder(tmp_path / "f", [_stripes([0, 1, 2])] * 4 + [_stripes([0, 200])])
    with pytest.raises(DataError, match=rf"200 in .*004\.png.*201 classes, more than the {MAX_INFERRED_CLASSES}.*classes\.txt"):
        load_dataset(root, "train")


def test_folder_inferred_ids_with_gaps_are_refused(tmp_path):
    root = _folder(tmp_path / "f", [_stripes([0, 1, 5])] * 3)
    with pytest.raises(DataError, match=r"ids \[0, 1, 5\] .*never \[2, 3, 4\].*classes\.txt"):
        load_dataset(root, "train")


def test_folder_id_beyond_classes_txt_names_file_values_and_count(tmp_path):
    root = _folder(tmp_path / "f", [_stripes([0, 1, 2, 255])] * 4 + [_stripes([0, 3, 9])], ["road", "car", "sky"])
    ds = load_dataset(root, "train")  # 000..003 train, 004 val (every 5th)
    assert ds.info.class_names == ["road", "car", "sky"]
    ds[0]
    assert ds.void_counts == {255: 6 * H}
    val = load_dataset(root, "val")
    with pytest.raises(DataError, match=r"004\.png holds class id\(s\) .*3 \(128 px\), 9 \(128 px\).*classes\.txt names 3 classes"):
        val[0]


def test_folder_classes_are_the_same_for_every_split(tmp_path):
    """Today each split infers its own count: train class0..2, val (no id 2) class0..1."""
    masks = [_stripes([0, 1]) if i % 5 == 4 else _stripes([0, 1, 2]) for i in range(10)]
    root = _folder(tmp_path / "f", masks)
    names = ["class0", "class1", "class2"]
    assert load_dataset(root, "train").info.class_names == names
    assert load_dataset(root, "val").info.class_names == names


def test_camvid_void_ids_map_to_ignore_and_are_counted_other_ids_are_errors(tmp_path):
    ds = load_dataset(_camvid(tmp_path / "ok", _stripes([3, 11, 255, 10])), "val")
    _, mask = ds[0]
    np.testing.assert_array_equal(mask, _stripes([3, 255, 255, 10]))
    assert ds.void_counts == {11: 6 * H, 255: 6 * H}
    bad = load_dataset(_camvid(tmp_path / "bad", _stripes([3, 12, 200])), "val")
    with pytest.raises(DataError, match=r"0001TP_000000\.png holds class id\(s\) .*12 \(128 px\), 200 \(128 px\).*CamVid"):
        bad[0]


@pytest.mark.parametrize("kind,raw,expected,bad", [
    ("binary", [0, 255, 1], [0, 1, 1], None),
    ("binary", [0, 255, 128], None, r"128 \(128 px\).*binary masks"),
    ("trimap", [1, 2, 3], [1, 0, 255], None),
    ("trimap", [1, 2, 0], None, r"0 \(128 px\).*trimap"),
])
def test_binary_and_trimap_ids_outside_their_values_are_errors(kind, raw, expected, bad):
    info = DatasetInfo("d", "folder", ["background", "fg"], [[0, 0, 0]] * 2, binary=True, mask_kind=kind)
    if bad:
        with pytest.raises(DataError, match=r"m\.png holds class id\(s\) .*" + bad):
            decode_ids(_stripes(raw), info, "m.png")
    else:
        np.testing.assert_array_equal(decode_ids(_stripes(raw), info, "m.png"), _stripes(expected))


# --- 16-bit masks --------------------------------------------------------------------------------


def test_16bit_mask_with_256_and_300_is_an_error_never_wrapped(tmp_path):
    """Today ``astype(np.uint8)`` reads 256 as 0 and 300 as 44."""
    root = _folder(tmp_path / "f", [_stripes([0, 1, 2], np.uint16)] * 2 + [_stripes([0, 256, 300], np.uint16)],
                   ["a", "b", "c"])
    assert cv2.imread(str(root / "masks" / "002.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    ds = load_dataset(root, "train")
    with pytest.raises(DataError, match=r"002\.png holds class id\(s\) .*256 \(128 px\), 300 \(128 px\)"):
        ds[2]


def test_16bit_mask_in_range_reads_as_uint8_class_ids(tmp_path):
    root = _folder(tmp_path / "f", [_stripes([0, 1, 2, 255], np.uint16)] * 3)
    ds = load_dataset(root, "train")
    _, mask = ds[0]
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, _stripes([0, 1, 2, 255]))
    assert ds.info.class_names == ["class0", "class1", "class2"]


def test_16bit_ids_refused_when_inferring_classes_and_in_carla_and_camvid(tmp_path):
    with pytest.raises(DataError, match=r"256 in .*000\.png.*classes\.txt"):
        load_dataset(_folder(tmp_path / "f", [_stripes([0, 256], np.uint16)] * 2), "train")
    with pytest.raises(DataError, match=r"0000\.png holds class id\(s\) .*256 \(192 px\)"):
        load_dataset(_carla(tmp_path / "c", _stripes([0, 256], np.uint16)), "train")[0]
    with pytest.raises(DataError, match=r"holds class id\(s\) .*267 \(192 px\)"):
        load_dataset(_camvid(tmp_path / "v", _stripes([3, 267], np.uint16)), "val")[0]  # 267 % 256 == 11


# --- model vs dataset classes ---------------------------------------------------------------------


def test_check_classes_count_mismatch_names_both_lists():
    info = DatasetInfo("camvid", "camvid", CAMVID_CLASSES, [[0, 0, 0]] * 11, root="datasets/camvid")
    with pytest.raises(DataError, match=r"class count mismatch: the model \(trained on trainset\) has 3 classes "
                                        r"\[road, car, sky\], dataset datasets/camvid \(camvid\) has 11 \[Sky, Building, "):
        check_classes(_meta(["road", "car", "sky"]), info)


def test_check_classes_name_mismatch_is_an_error_generic_names_only_warn():
    info = DatasetInfo("f", "folder", ["road", "car", "sky"], [[0, 0, 0]] * 3, root="/d")
    with pytest.raises(DataError, match=r"class name mismatch \(1: 'bus' vs 'car'\): .*\[road, bus, sky\].*\[road, car, sky\]"):
        check_classes(_meta(["road", "bus", "sky"]), info)
    with pytest.warns(ClassMismatchWarning, match=r"\[class0, class1, class2\].*\[road, car, sky\]"):
        check_classes(_meta(["class0", "class1", "class2"]), info)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_classes(_meta(["road", "car", "sky"]), info)


def test_evaluate_refuses_a_dataset_with_other_classes_before_inference(tmp_path):
    ds = load_dataset(_camvid(tmp_path / "cv", _stripes([3, 11])), "val")

    def infer(x):
        raise AssertionError("inference ran before the class check")

    with pytest.raises(DataError, match=r"has 3 classes \[road, car, sky\].*has 11"):
        evaluate(infer, ds, _meta(["road", "car", "sky"]), progress=False)


def test_evaluate_reports_ignored_pixels(tmp_path):
    ds = load_dataset(_camvid(tmp_path / "cv", _stripes([3, 11])), "val")

    def infer(x):
        logits = np.zeros((x.shape[0], 11, H, W), np.float32)
        logits[:, 3] = 1
        return logits

    m = evaluate(infer, ds, _meta(list(CAMVID_CLASSES)), progress=False)
    assert (m["pixels"], m["ignored_pixels"], m["images"]) == (12 * H, 12 * H, 1)
    assert m["per_class_iou"]["Road"] == 1.0


def test_calibration_checks_dataset_classes_but_not_plain_image_folders(tmp_path):
    root = _folder(tmp_path / "f", [_stripes([0, 1, 2])] * 5, ["road", "car", "sky"])
    assert len(calibration_images(root, n=2, meta=_meta(["road", "car", "sky"]))) == 2
    with pytest.raises(DataError, match=r"class name mismatch"):
        calibration_images(root, n=2, meta=_meta(["road", "bus", "sky"]))
    with pytest.raises(DataError, match=r"class count mismatch"):
        calibration_images(root, n=2, meta=_meta(CAMVID_CLASSES))
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(3):
        cv2.imwrite(str(plain / f"{i}.png"), _img(i))
    assert len(calibration_images(plain, n=2, meta=_meta(CAMVID_CLASSES))) == 2


def test_cli_eval_on_other_classes_exits_3_naming_both_lists(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    data = _camvid(tmp_path / "cv", _stripes([3, 11]))
    r = CliRunner().invoke(app, ["eval", str(tiny_run["best"]), "--data", str(data), "--json"])
    assert r.exit_code == 3, r.output
    assert "class count mismatch" in r.output and "[class0, class1, class2]" in r.output and "Traceback" not in r.output


def test_colour_mask_is_an_error_not_its_blue_channel(tmp_path):
    colour = np.zeros((H, W, 3), np.uint8)
    colour[:, :12] = (128, 64, 128)  # BGR of a palette colour, not an id
    root = _folder(tmp_path / "f", [_stripes([0, 1])] * 4 + [colour], ["a", "b"])
    with pytest.raises(DataError, match=r"mask .*004\.png is a colour image"):
        load_dataset(root, "train")
    grey = np.repeat(_stripes([0, 1])[..., None], 3, axis=2)
    ok = _folder(tmp_path / "g", [grey] * 2)
    np.testing.assert_array_equal(load_dataset(ok, "train")[0][1], _stripes([0, 1]))
