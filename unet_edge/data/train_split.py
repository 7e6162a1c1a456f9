"""The training split of a run, in memory: class statistics (ENet or median-frequency weights, rare classes),
augmentation + normalization (the one :func:`unet_edge.preprocess.normalize`), the shuffling
loader (one per process, or a ``DistributedSampler`` shard under torchrun) and per-epoch seeding.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from ..metadata import IMAGENET_MEAN, IMAGENET_STD
from ..preprocess import normalize
from ..seeding import epoch_seed
from .augment import reseed, train_transform
from .layouts import DatasetInfo, SegDataset, load_dataset

#: ``--rare-crop``: a class is rare when it holds less than this share of the labelled training pixels.
RARE_CLASS_FREQ = 0.02
#: ``--low-res``: the low-resolution epochs see images, labels and the crop scaled by this factor.
LOW_RES_FACTOR = 0.5
#: ``--low-res-mode``: ``scale`` shrinks the random-scale range and the crop by :data:`LOW_RES_FACTOR`
#: (the same field of view at half resolution); ``crop`` shrinks the crop alone (a quarter of the field
#: of view, objects at their full-resolution size: a 4-pixel pole stays 3-6 pixels wide, not 1.5-3).
LOW_RES_MODES = ("scale", "crop")


def _load_split(ds: SegDataset, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(ds) if limit is None else min(limit, len(ds))
    return [ds[i] for i in range(n)]


def class_frequencies(masks: list[np.ndarray], num_classes: int) -> np.ndarray:
    """The share of labelled pixels of each class id ``0..num_classes-1`` in ``masks`` (ids >=
    ``num_classes``, the ignore index among them, not counted). Returns float64 (num_classes,)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for m in masks:
        counts += _labelled_counts(m, num_classes)
    return counts / max(counts.sum(), 1)


def _labelled_counts(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class id ``0..num_classes-1`` in one uint8 ``mask`` (ids >= ``num_classes``,
    the ignore index among them, not counted). Returns float64 (num_classes,)."""
    return np.bincount(mask.reshape(-1), minlength=256)[:num_classes].astype(np.float64)


def enet_class_weights(freqs: np.ndarray, c: float = 1.02) -> np.ndarray:
    """ENet class weighting w_c = 1 / ln(c + p_c), ``freqs`` the pixel frequencies p_c of
    :func:`class_frequencies` (Paszke et al. 2016, arXiv:1606.02147). Returns float32 (num_classes,)."""
    return (1.0 / np.log(c + np.asarray(freqs, dtype=np.float64))).astype(np.float32)


def median_frequency_weights(masks: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Median frequency balancing w_c = median(f) / f_c, where f_c is the pixels of class c over
    the pixels of the images in which c appears (Eigen & Fergus 2015, arXiv:1411.4734; SegNet's
    CamVid weights). The median is taken over the classes that appear; a class in no mask gets 0.
    ``masks`` hold class ids (ids >= ``num_classes``, the ignore index among them, not counted).
    Returns float32 (num_classes,).

    On CamVid it weights Pole 32x Road against ENet's 10x (:func:`enet_class_weights`)."""
    pixels = np.zeros(num_classes, dtype=np.float64)
    present_in = np.zeros(num_classes, dtype=np.float64)
    for m in masks:
        counts = _labelled_counts(m, num_classes)
        pixels += counts
        present_in += (counts > 0) * counts.sum()
    seen = pixels > 0
    freq = np.divide(pixels, present_in, out=np.zeros(num_classes), where=seen)
    weights = np.zeros(num_classes, dtype=np.float64)
    if seen.any():
        weights[seen] = np.median(freq[seen]) / freq[seen]
    return weights.astype(np.float32)


def rare_classes(freqs: np.ndarray, freq: float = RARE_CLASS_FREQ) -> tuple[int, ...]:
    """The class ids present (``freqs`` of :func:`class_frequencies` > 0) but holding less than
    ``freq`` of the labelled pixels."""
    p = np.asarray(freqs, dtype=np.float64)
    return tuple(int(c) for c in np.flatnonzero((p > 0) & (p < freq)))


class _AugmentedSplit(torch.utils.data.Dataset):
    """The in-memory training pairs, augmented and normalized; ``seen`` lists the indices read
    (the loader runs in this process: ``num_workers=0``), so a rank can say which images it trained on."""

    def __init__(self, items, transform, mean, std):
        self.items, self.transform, self.mean, self.std = items, transform, mean, std
        self.seen: list[int] = []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.seen.append(int(i))
        img, mask = self.items[i]
        out = self.transform(image=img, mask=mask)
        x = normalize(out["image"], self.mean, self.std)
        return torch.from_numpy(x), torch.from_numpy(out["mask"].astype(np.int64))


@dataclass
class TrainData:
    """The splits of a run: ``train_items`` (image RGB uint8 (H, W, 3), mask (H, W)) pairs in
    memory, ``val_ds`` read lazily (its first ``n_val`` images are scored), the augmentation and
    the shuffling loader, and the class weights (float32 (K,) on the device, or None)."""

    info: DatasetInfo
    train_items: list
    val_ds: SegDataset
    n_val: int
    input_size: tuple[int, int]
    crop: tuple[int, int]
    transform: object  # the albumentations Compose of data.augment.train_transform
    loader: torch.utils.data.DataLoader
    weight: torch.Tensor | None
    sampler: torch.utils.data.DistributedSampler | None = None  # several ranks: this rank's shard
    rare_classes: tuple[int, ...] = ()  # the classes ``--rare-crop`` centres crops on
    transform_low: object = None  # ``--low-res``: the same augmentation with the crop (``scale`` mode: and scale) shrunk

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def use_low_res(self, low: bool) -> None:
        """Make the loader's batches low-resolution (``transform_low``) or full-resolution ones.

        Raises:
            UsageError: ``low`` without a low-resolution transform (the run has no ``--low-res``).
        """
        if low and self.transform_low is None:
            raise UsageError("this run has no low-resolution phase (--low-res 0)")
        self.loader.dataset.transform = self.transform_low if low else self.transform


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The images one rank takes per step when ``batch_size`` is the global batch.

    Raises:
        UsageError: ``batch_size`` not a multiple of ``world_size``.
    """
    if batch_size % world_size:
        raise UsageError(f"--batch-size {batch_size} is the global batch; it must be a multiple of the {world_size} "
                         f"processes (e.g. {max(1, batch_size // world_size) * world_size}), each taking an equal share")
    return batch_size // world_size


def build_train_data(cfg, device: str, world_size: int = 1, rank: int = 0) -> TrainData:
    """Load the splits and build the loader: one shuffling loader, or under torchrun (rank
    ``rank`` of ``world_size``) a ``DistributedSampler`` giving each rank its own ``1 / world_size``
    of the images (the same count on every rank, so every rank runs the same steps).

    ``cfg`` is a :class:`unet_edge.train.TrainConfig`; this reads its ``data``, ``data_format``,
    ``limit``, ``input_size``, ``crop``, ``class_weights``, ``rare_crop``, ``scale``, ``low_res``,
    ``low_res_mode`` (:data:`LOW_RES_MODES`), ``seed`` and ``batch_size``. Class weights go to ``device``.

    Raises:
        DataError: a dataset problem (from :func:`unet_edge.data.layouts.load_dataset`).
        UsageError: a batch or dataset the ranks cannot share.
    """
    train_ds = load_dataset(cfg.data, "train", cfg.data_format)
    val_ds = load_dataset(cfg.data, "val", cfg.data_format)
    info = train_ds.info
    items = _load_split(train_ds, cfg.limit)
    n_val = len(val_ds) if cfg.limit is None else min(cfg.limit, len(val_ds))
    input_size = tuple(cfg.input_size) if cfg.input_size else tuple(items[0][0].shape[:2])
    crop = (min(cfg.crop[0], input_size[0] * 2), min(cfg.crop[1], input_size[1] * 2))
    weight, rare = None, ()
    weighted = cfg.class_weights != "none" and not info.binary
    if weighted or cfg.rare_crop > 0:
        masks = [m for _, m in items]
        freqs = class_frequencies(masks, info.num_logits)
        if weighted:
            w = (enet_class_weights(freqs) if cfg.class_weights == "enet"
                 else median_frequency_weights(masks, info.num_logits))
            weight = torch.from_numpy(w).to(device)
        rare = rare_classes(freqs) if cfg.rare_crop > 0 else ()
    transform = train_transform(crop, info.ignore_index, scale=tuple(cfg.scale), seed=cfg.seed, rare_classes=rare,
                                rare_p=cfg.rare_crop)
    transform_low = None
    if cfg.low_res > 0:  # a quarter of the pixels: scale range and crop both shrink, or the crop alone
        factor = low_res_scale(cfg.low_res_mode)
        transform_low = train_transform(low_res_crop(crop), info.ignore_index,
                                        scale=tuple(factor * v for v in cfg.scale), seed=cfg.seed,
                                        rare_classes=rare, rare_p=cfg.rare_crop)
    split = _AugmentedSplit(items, transform, IMAGENET_MEAN, IMAGENET_STD)
    batch, sampler, shard = per_rank_batch(cfg.batch_size, world_size), None, len(items)
    if world_size > 1:
        if len(items) < world_size:
            raise UsageError(f"{len(items)} training image(s) cannot be shared by {world_size} processes; "
                             "use fewer processes or more images (--limit)")
        sampler = torch.utils.data.DistributedSampler(split, num_replicas=world_size, rank=rank,
                                                      shuffle=True, seed=cfg.seed, drop_last=True)
        shard = len(items) // world_size
    loader = torch.utils.data.DataLoader(
        split, batch_size=batch, shuffle=sampler is None, sampler=sampler, drop_last=shard > batch, num_workers=0,
        generator=torch.Generator().manual_seed(cfg.seed), pin_memory=device.startswith("cuda"),
    )
    return TrainData(info, items, val_ds, n_val, input_size, crop, transform, loader, weight, sampler, rare, transform_low)


def low_res_scale(mode: str) -> float:
    """The images' scale against full resolution in a ``--low-res`` epoch of ``--low-res-mode`` ``mode``
    (:data:`LOW_RES_MODES`): :data:`LOW_RES_FACTOR` for ``scale``, 1.0 for ``crop``."""
    return LOW_RES_FACTOR if mode == "scale" else 1.0


def low_res_crop(crop: tuple[int, int]) -> tuple[int, int]:
    """The crop (H, W) of the ``--low-res`` epochs: ``crop`` scaled by :data:`LOW_RES_FACTOR`, at least 1 pixel."""
    return tuple(max(1, round(LOW_RES_FACTOR * v)) for v in crop)


def seed_epoch(seed: int, epoch: int, data: TrainData, rank: int = 0) -> None:
    """Seed every stream epoch ``epoch`` draws from by :func:`epoch_seed` alone: torch (CPU and
    CUDA: dropout), numpy, ``random``, the loader's shuffle (under torchrun the
    ``DistributedSampler``'s, from ``(seed, epoch)``, the same permutation on every rank) and the
    augmentation (rank ``rank``'s own stream). So the batches and augmentations of an epoch do not
    depend on what ran before it, and a resumed run sees exactly those of the uninterrupted run."""
    s = epoch_seed(seed, epoch, rank)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
    data.loader.generator.manual_seed(s)
    if data.sampler is not None:
        data.sampler.set_epoch(epoch)
    reseed(data.transform, s)
    if data.transform_low is not None:
        reseed(data.transform_low, s)
