"""Confusion-matrix segmentation metrics: IoU/mIoU, Dice, pixel accuracy.

IoU_c = TP / (TP + FP + FN) (Everingham et al., PASCAL VOC, IJCV 2010); Dice_c = 2TP / (2TP + FP + FN).
Pixels whose label is the ignore index (void) are excluded. Classes that never occur in the
labels nor the predictions have undefined IoU (NaN) and are left out of the means.
"""
from __future__ import annotations

import numpy as np

from .errors import DataError


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix; rows are ground truth, columns predictions.

    ``ignored`` counts the label pixels equal to the ignore index (void), which the matrix leaves out.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.ignored = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add a batch: ``pred`` and ``target`` integer arrays of the same shape (any rank).

        Raises:
            ValueError: the shapes differ.
            DataError: ``target`` holds ids that are neither 0..C-1 nor the ignore index: labels and
                model classes do not match (see :func:`unet_edge.data.layouts.check_classes`).
        """
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != label shape {target.shape}")
        t = target.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        void = t == self.ignore_index
        keep = ~void & (t >= 0) & (t < self.num_classes)
        if keep.sum() + void.sum() != t.size:
            bad, counts = np.unique(t[~keep & ~void], return_counts=True)
            shown = ", ".join(f"{v} ({c} px)" for v, c in zip(bad[:8].tolist(), counts[:8].tolist()))
            raise DataError(f"labels hold class id(s) {shown}{' ...' if bad.size > 8 else ''} outside the model's "
                            f"0..{self.num_classes - 1} and not the ignore index {self.ignore_index}: the dataset's "
                            "classes do not match the model's; score the model on data with its classes")
        self.ignored += int(void.sum())
        idx = t[keep] * self.num_classes + np.clip(p[keep], 0, self.num_classes - 1)
        self.matrix += np.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def compute(self, class_names: list[str] | None = None) -> dict:
        """Metrics as a JSON-ready dict.

        Returns:
            ``miou``, ``dice`` (mean Dice), ``pixel_accuracy``, ``mean_class_accuracy`` (floats in
            [0, 1]), ``per_class_iou`` and ``per_class_dice`` ({class name: float, None when undefined}),
            ``pixels`` (label pixels scored) and ``ignored_pixels`` (void pixels left out).
        """
        return {**metrics_from_confusion(self.matrix, class_names), "ignored_pixels": self.ignored}


def metrics_from_confusion(cm: np.ndarray, class_names: list[str] | None = None) -> dict:
    """Compute IoU, Dice and accuracies from a (C, C) confusion matrix (rows = ground truth)."""
    cm = cm.astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
        dice = 2 * tp / (2 * tp + fp + fn)
        class_acc = tp / (tp + fn)
    names = class_names or [str(i) for i in range(len(tp))]
    total = cm.sum()

    def named(v):
        return {n: (None if np.isnan(x) else float(x)) for n, x in zip(names, v)}

    return {
        "miou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else 0.0,
        "dice": float(np.nanmean(dice)) if np.any(~np.isnan(dice)) else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_class_accuracy": float(np.nanmean(class_acc)) if np.any(~np.isnan(class_acc)) else 0.0,
        "per_class_iou": named(iou),
        "per_class_dice": named(dice),
        "pixels": int(total),
    }


def label_agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, int]:
    """(fraction of pixels whose class id is equal in two label maps of one shape, pixels compared).

    The argmax agreement of the export's parity check and of ``bench`` rows against their baseline:
    ``reference`` and ``candidate`` are integer class ids of any one shape, e.g. uint8 (N, H, W)
    from :func:`unet_edge.preprocess.labels_from_logits`.

    Raises:
        ValueError: the shapes differ or the maps are empty.
    """
    if reference.shape != candidate.shape or reference.size == 0:
        raise ValueError(f"label maps of shapes {reference.shape} and {candidate.shape}: need one non-empty shape")
    return float(np.count_nonzero(reference == candidate) / reference.size), int(reference.size)
