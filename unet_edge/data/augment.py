"""Training augmentation with albumentations: scale, crop, flip, colour jitter.

Images are interpolated bilinearly; masks with nearest neighbour and padded with the ignore
index, so no invented labels enter the loss. Augmentation is reproducible: :func:`reseed` sets
the random streams of a pipeline from one integer (the trainer reseeds it every epoch).
"""
from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np


def train_transform(crop_hw: tuple[int, int], ignore_index: int, scale: tuple[float, float] = (0.75, 1.5),
                    seed: int = 0, rare_classes: tuple[int, ...] = (), rare_p: float = 0.0) -> A.Compose:
    """Random scale in ``scale`` -> pad to the crop (image 0, mask ``ignore_index``) -> crop
    ``crop_hw`` (H, W) -> horizontal flip -> colour jitter. Input/output: RGB uint8 (H, W, 3) and
    mask uint8 (H, W). The random draws follow ``seed`` (see :func:`reseed`).

    The crop is uniform, or with probability ``rare_p`` one around a pixel of ``rare_classes``
    (albumentations' ``CropNonEmptyMaskIfExists``, every other label ignored; uniform when the
    image has none), so thin and rare classes (poles, signs, cyclists) reach the loss more often.
    """
    h, w = crop_hw
    crop = A.RandomCrop(height=h, width=w)
    if rare_classes and rare_p > 0:
        common = [v for v in range(256) if v not in set(rare_classes)]
        crop = A.OneOf([A.RandomCrop(height=h, width=w, p=1.0 - rare_p),
                        A.CropNonEmptyMaskIfExists(height=h, width=w, ignore_values=common, p=rare_p)], p=1.0)
    t = A.Compose([
        A.RandomScale(scale_limit=(scale[0] - 1.0, scale[1] - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
        crop,
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8),
    ])
    reseed(t, seed)
    return t


def reseed(transform: A.Compose, seed: int) -> None:
    """Restart every random draw of ``transform`` from ``seed`` (a non-negative int).

    All transforms share one numpy Generator and one ``random.Random``. (``A.Compose(seed=...)``
    would give each transform its own generators with the same seed, so e.g. the flip and the
    colour jitter would draw the same numbers and fire together.)
    """
    ss = np.random.SeedSequence(int(seed))
    transform.set_random_state(np.random.default_rng(ss), random.Random(int(ss.generate_state(1, np.uint64)[0])))
