"""Score any backend on a dataset split: confusion-matrix metrics and optional prediction images."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .data.layouts import SegDataset, check_classes
from .metadata import ModelMeta
from .metrics import ConfusionMatrix
from .preprocess import colorize, labels_from_logits, preprocess_batch, resize_labels
from .progress import progress_iter


def evaluate(
    infer: Callable[[np.ndarray], np.ndarray],
    dataset: SegDataset,
    meta: ModelMeta,
    batch_size: int = 4,
    limit: int | None = None,
    save_dir: str | Path | None = None,
    max_saved: int = 16,
    progress: bool = True,
    description: str = "eval",
) -> dict:
    """Run ``infer`` over a split and compute metrics at the labels' resolution.

    Args:
        infer: float32 (N, 3, H, W) -> logits float32 (N, K, H, W), e.g. ``Backend.infer``.
        dataset: the split; images are preprocessed with :func:`unet_edge.preprocess.preprocess_batch`.
        meta: model metadata (input size, class names, ignore index).
        limit: score only the first ``limit`` images.
        save_dir: if set, write up to ``max_saved`` PNGs: input | ground truth | prediction.

    Returns:
        the dict of :meth:`unet_edge.metrics.ConfusionMatrix.compute` (``ignored_pixels`` counts the
        void pixels left out) plus ``images``.

    Raises:
        DataError: the model's and the dataset's classes differ (:func:`check_classes`, checked before
            any image is read; same count with generic names only warns ``ClassMismatchWarning``), or
            a mask is unreadable or holds ids its layout does not define.
    """
    check_classes(meta, dataset.info)
    names = list(meta.class_names)
    cm = ConfusionMatrix(len(names), meta.ignore_index)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    saved = 0
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    for start in progress_iter(range(0, n, batch_size), total=(n + batch_size - 1) // batch_size,
                               description=description, enabled=progress):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        batch = preprocess_batch([img for img, _ in items], meta)
        preds = labels_from_logits(infer(batch))
        for k, ((img, mask), pred) in enumerate(zip(items, preds)):
            pred = resize_labels(pred, mask.shape[:2])
            cm.update(pred, mask)
            if save_dir and saved < max_saved:
                gt = colorize(np.where(mask == meta.ignore_index, 255, mask).astype(np.uint8), meta.palette)
                panel = np.concatenate([img, gt, colorize(pred, meta.palette)], axis=1)
                name = Path(dataset.pairs[start + k][0]).stem
                cv2.imwrite(str(Path(save_dir) / f"{name}_pred.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
                saved += 1
    out = cm.compute(names)
    out["images"] = n
    return out
