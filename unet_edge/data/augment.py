"""Training augmentation with albumentations: scale, crop, flip, colour jitter.

Images are interpolated bilinearly; masks with nearest neighbour and padded with the ignore
index, so no invented labels enter the loss.
"""
from __future__ import annotations

import albumentations as A
import cv2


def train_transform(crop_hw: tuple[int, int], ignore_index: int, scale: tuple[float, float] = (0.75, 1.5)) -> A.Compose:
    """Random scale in ``scale`` -> pad to the crop (image 0, mask ``ignore_index``) -> random crop
    ``crop_hw`` (H, W) -> horizontal flip -> colour jitter. Input/output: RGB uint8 (H, W, 3) and
    mask uint8 (H, W)."""
    h, w = crop_hw
    return A.Compose([
        A.RandomScale(scale_limit=(scale[0] - 1.0, scale[1] - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
        A.RandomCrop(height=h, width=w),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8),
    ])
