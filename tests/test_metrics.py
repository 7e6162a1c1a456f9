import numpy as np
import pytest

from unet_edge.metrics import ConfusionMatrix, metrics_from_confusion


def test_confusion_matrix_by_hand():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pred, target)
    # rows = truth, cols = prediction; the 255 pixel is ignored
    np.testing.assert_array_equal(cm.matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    m = cm.compute(["a", "b", "c"])
    # IoU a = 1/(1+1+1) ; b = 2/(2+1+0) ; c = 0/(0+0+1)
    assert m["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert m["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    # Dice a = 2/(2+1+1) ; b = 4/(4+1) ; c = 0
    assert m["per_class_dice"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0})
    assert m["dice"] == pytest.approx((0.5 + 0.8) / 3)
    assert m["pixel_accuracy"] == pytest.approx(3 / 5)
    assert m["pixels"] == 5


def test_absent_class_is_left_out_of_the_mean():
    cm = np.array([[5, 0, 0], [1, 3, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["per_class_iou"]["c"] is None
    assert m["miou"] == pytest.approx((5 / 6 + 3 / 4) / 2)


def test_accumulates_over_batches():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, (3, 20, 20)), rng.integers(0, 4, (3, 20, 20))
    whole, parts = ConfusionMatrix(4), ConfusionMatrix(4)
    whole.update(p, t)
    for i in range(3):
        parts.update(p[i], t[i])
    np.testing.assert_array_equal(whole.matrix, parts.matrix)
    assert whole.matrix.sum() == 1200


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update(np.zeros((2, 2)), np.zeros((3, 3)))


def test_label_ids_outside_the_classes_are_an_error_not_dropped():
    """Today ids >= C are silently left out of the matrix, so a mismatched dataset still gives a score."""
    from unet_edge.errors import DataError

    target = np.array([[0, 1, 3], [7, 7, 255]])
    with pytest.raises(DataError, match=r"class id\(s\) 3 \(1 px\), 7 \(2 px\) outside the model's 0\.\.2 and not the ignore index 255"):
        ConfusionMatrix(3).update(np.zeros_like(target), target)


def test_ignored_pixels_are_counted():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(np.array([0, 1, 1, 0]), np.array([0, 255, 255, 1]))
    cm.update(np.array([1]), np.array([255]))
    m = cm.compute(["a", "b"])
    assert (m["pixels"], m["ignored_pixels"]) == (2, 3)
    np.testing.assert_array_equal(cm.matrix, [[1, 0], [1, 0]])
