"""Calibration images drawn from a dataset's training split, fed through the runtime's preprocessing.

Both calibrators (ONNX Runtime's :class:`OrtCalibrationReader` here and TensorRT 10.x's
``IInt8EntropyCalibrator2`` in :mod:`unet_edge.trt.calibrator`) take their batches from
:func:`calibration_batches`, so every INT8 artifact is calibrated on identical tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from unet_edge.data.layouts import IMAGE_EXTS, check_classes, load_dataset, read_image
from unet_edge.errors import DataError
from unet_edge.formats import DEFAULT_CALIB_IMAGES
from unet_edge.metadata import ModelMeta
from unet_edge.preprocess import preprocess_batch


def calibration_images(data: str | Path, n: int = DEFAULT_CALIB_IMAGES, data_format: str | None = None, seed: int = 0,
                       meta: ModelMeta | None = None) -> list[Path]:
    """Pick ``n`` images (seeded, without replacement) from the training split of ``data``.

    ``data`` may also be a plain folder of images (no masks needed for calibration, and no classes
    to check).

    Args:
        meta: the model being calibrated; when given and ``data`` is a dataset, its classes are
            compared with the dataset's (:func:`unet_edge.data.layouts.check_classes`) so that a
            model is not calibrated on another label set's scenes unnoticed.

    Raises:
        DataError: the folder is missing or holds no images, or ``meta``'s classes differ from the
            dataset's (same count with generic names only warns ``ClassMismatchWarning``).
    """
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"calibration data folder not found: {data}")
    plain = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if plain and data_format is None:
        paths = plain
    else:
        ds = load_dataset(data, "train", data_format)
        if meta is not None:
            check_classes(meta, ds.info)
        paths = ds.image_paths()
    if not paths:
        raise DataError(f"no calibration images in {data}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(paths), size=min(n, len(paths)), replace=False)
    return [paths[i] for i in sorted(idx)]


def calibration_batches(paths: list[Path], meta: ModelMeta, batch_size: int = 1) -> Iterator[np.ndarray]:
    """Yield float32 (B, 3, H, W) batches, H x W = ``meta.input_size``, preprocessed exactly as the
    runtime does (:func:`unet_edge.preprocess.preprocess_batch`). The last batch may be smaller."""
    for i in range(0, len(paths), batch_size):
        yield preprocess_batch([read_image(p) for p in paths[i : i + batch_size]], meta)


class OrtCalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over :func:`calibration_batches`.

    Feeds ``{meta.input_name: float32 (1, 3, H, W)}`` dicts, one image at a time. ``set_range``
    restricts it to ``paths[start:end]``: ONNX Runtime's ``CalibStridedMinMax`` option calibrates in
    such chunks, so the calibrator holds the activations of one chunk, not of every image.
    """

    def __init__(self, paths: list[Path], meta: ModelMeta):
        self.paths, self.meta = paths, meta
        self._it = calibration_batches(paths, meta, batch_size=1)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = calibration_batches(self.paths[start_index:end_index], self.meta, batch_size=1)

    def get_next(self) -> dict | None:
        batch = next(self._it, None)
        return None if batch is None else {self.meta.input_name: batch}

    def rewind(self) -> None:
        self._it = calibration_batches(self.paths, self.meta, batch_size=1)

    def __len__(self) -> int:
        return len(self.paths)
