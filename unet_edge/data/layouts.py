"""Segmentation dataset layouts, auto-detected from the folder.

``carla``
    ``CameraRGB/*.png`` + ``CameraSeg/*.png`` (or ``CameraMask/``), class id in the red channel,
    the 13 classes of CARLA 0.9's semantic camera with its palette (CARLA docs, "Semantic
    segmentation camera", 0.9.0-0.9.9 tags). Split folders ``train/``, ``val/``, ``test/`` each
    in that layout, or one flat folder split deterministically (every 5th frame is val).
``camvid``
    SegNet layout: ``train/``, ``trainannot/``, ``val/``, ``valannot/``, ``test/``, ``testannot/``;
    11 classes, label 11 is void (Brostow et al. 2009; Badrinarayanan et al., SegNet, 2017).
``folder``
    ``images/`` + ``masks/`` with matching stems (optionally inside ``train/``, ``val/``).
    Masks are index masks (0..K-1, 255 = ignore), binary 0/255 masks (Carvana) or
    Oxford-IIIT-Pet trimaps (1 = pet, 2 = background, 3 = border -> ignored). Optional
    ``classes.txt`` (one name a line) names index-mask classes.

Every dataset yields ``(image, mask)``: image RGB uint8 (H, W, 3), mask uint8 (H, W) of class
ids with ``info.ignore_index`` for void.

Label ids are checked on every read (:func:`read_mask`), 8- and 16-bit masks alike: an id the
layout neither names as a class nor declares void is a :class:`~unet_edge.errors.DataError` naming
the file, the ids and their pixel counts; it is never wrapped, clipped or dropped. Declared void
ids (CamVid 11 and 255, folder 255, trimap 3) become ``info.ignore_index`` and are counted. A
``folder`` dataset without ``classes.txt`` infers its classes from (up to 64) masks sampled over all
its splits: the ids seen must run 0..K-1 without gaps and K <= 64, else ``classes.txt`` is required.
"""
from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import ClassMismatchWarning, DataError, UsageError

if TYPE_CHECKING:
    from ..metadata import ModelMeta

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
FORMATS = ("carla", "camvid", "folder")
SPLITS = ("train", "val", "test")

CARLA_CLASSES = [
    "Unlabeled", "Building", "Fence", "Other", "Pedestrian", "Pole", "RoadLine",
    "Road", "Sidewalk", "Vegetation", "Vehicle", "Wall", "TrafficSign",
]
CARLA_PALETTE = [
    [0, 0, 0], [70, 70, 70], [190, 153, 153], [250, 170, 160], [220, 20, 60], [153, 153, 153],
    [157, 234, 50], [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142], [102, 102, 156],
    [220, 220, 0],
]
CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
]
CAMVID_PALETTE = [
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
    [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
]
CAMVID_VOID = 11
IGNORE_INDEX = 255
#: Most classes a ``folder`` dataset may infer from its masks; more need a ``classes.txt``.
MAX_INFERRED_CLASSES = 64
_INFER_SAMPLE = 64


@dataclass
class DatasetInfo:
    """What a dataset says about its labels.

    Attributes:
        name: short name (``camvid``, ``carla``, folder name).
        format: one of :data:`FORMATS`.
        class_names: label names, void excluded. A binary dataset has ``["background", fg]``.
        palette: RGB colour per class.
        ignore_index: mask value excluded from loss and metrics.
        binary: True when masks are foreground/background (the model gets a 1-channel head).
        mask_kind: for ``folder``: ``index``, ``binary`` or ``trimap``.
        root: the dataset folder.
        classes_file: for ``folder`` index masks, the ``classes.txt`` that named the classes;
            empty when they were inferred from the masks.
    """

    name: str
    format: str
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int = IGNORE_INDEX
    binary: bool = False
    mask_kind: str = "index"
    root: str = ""
    classes_file: str = ""

    @property
    def num_logits(self) -> int:
        """K channels the model needs: 1 for binary, else the number of classes."""
        return 1 if self.binary else len(self.class_names)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3).

    Raises:
        DataError: the file is missing or not a decodable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode image {path} (corrupt or not an image); remove or replace it")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_raw_mask(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"mask not found: {path}")
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise DataError(f"cannot decode mask {path} (corrupt or not an image); remove or replace it")
    return m


def _label_table(info: DatasetInfo) -> tuple[dict[int, int], set[int]]:
    """(raw id -> class id, raw ids declared void) of a dataset's masks."""
    if info.format == "folder" and info.mask_kind == "binary":
        return {0: 0, 1: 1, 255: 1}, set()
    if info.format == "folder" and info.mask_kind == "trimap":
        return {1: 1, 2: 0}, {3}
    classes = {i: i for i in range(len(info.class_names))}
    if info.format == "carla":
        return classes, set()
    if info.format == "camvid":
        return classes, {CAMVID_VOID, IGNORE_INDEX}
    return classes, {IGNORE_INDEX}


def _label_rule(info: DatasetInfo) -> str:
    """What a dataset's masks may hold and how to fix one that holds something else."""
    if info.format == "carla":
        return (f"CARLA masks hold ids 0..{len(info.class_names) - 1} in the red channel (the 13 classes of "
                "CARLA 0.9.0-0.9.9; newer CARLA versions have more): fix or remove the mask")
    if info.format == "camvid":
        return (f"CamVid masks hold ids 0..{CAMVID_VOID - 1}, {CAMVID_VOID} = void (255 is read as void too): "
                "fix or remove the mask")
    if info.mask_kind == "binary":
        return "binary masks hold 0 (background) and 255 or 1 (foreground): re-threshold the mask"
    if info.mask_kind == "trimap":
        return "trimap masks hold 1 (pet), 2 (background), 3 (border, ignored): fix or remove the mask"
    k = len(info.class_names)
    if info.classes_file:
        return (f"{info.classes_file} names {k} classes (ids 0..{k - 1}, {IGNORE_INDEX} = ignore): add the "
                "missing names to it (line i names id i) or fix the mask")
    return (f"the {k} classes (ids 0..{k - 1}, {IGNORE_INDEX} = ignore) were inferred from sampled masks: "
            f"declare the classes in {Path(info.root) / 'classes.txt'} (one name a line, line i names id i)")


def _describe_ids(values: np.ndarray, counts: np.ndarray, most: int = 8) -> str:
    shown = ", ".join(f"{v} ({c} px)" for v, c in zip(values[:most].tolist(), counts[:most].tolist()))
    more = f" and {len(values) - most} more" if len(values) > most else ""
    return f"{shown}{more}"


def decode_ids(ids: np.ndarray, info: DatasetInfo, source: str | Path = "mask",
               void_counts: Counter | None = None) -> np.ndarray:
    """Map raw label ids to class ids per the dataset's layout, refusing ids it does not define.

    Args:
        ids: (H, W) unsigned integer array (uint8 or uint16) of raw mask values.
        info: the dataset's labels; :func:`_label_table` gives the ids it accepts.
        source: the mask's path, named in errors.
        void_counts: if given, ``{raw id: pixels}`` of declared void ids mapped to
            ``info.ignore_index`` is added to it.

    Returns:
        uint8 (H, W) class ids, ``info.ignore_index`` for void.

    Raises:
        DataError: ``ids`` is not an unsigned integer array, or holds ids that are neither a class
            nor declared void (the message names ``source``, the ids and their pixel counts).
    """
    if ids.dtype.kind != "u":
        raise DataError(f"mask {source} holds {ids.dtype} values; masks must be 8- or 16-bit integer class ids")
    table, void = _label_table(info)
    counts = np.bincount(ids.reshape(-1))
    present = np.flatnonzero(counts)
    bad = np.array([v for v in present.tolist() if v not in table and v not in void], dtype=np.int64)
    if bad.size:
        raise DataError(f"mask {source} holds class id(s) the {info.format} layout does not define: "
                        f"{_describe_ids(bad, counts[bad])} of {ids.size} pixels; {_label_rule(info)}")
    lut = np.full(counts.size, info.ignore_index, dtype=np.uint8)
    for raw, cls in table.items():
        if raw < lut.size:
            lut[raw] = cls
    if void_counts is not None:
        for v in void:
            if v < counts.size and counts[v]:
                void_counts[v] += int(counts[v])
    return lut[ids]


def _mask_ids(m: np.ndarray, info: DatasetInfo, path: Path) -> np.ndarray:
    """The raw id channel of a decoded mask file (still uint8 or uint16)."""
    if info.format == "carla":
        if m.ndim != 3:
            raise DataError(f"CARLA mask {path} should be RGB with the class id in the red channel")
        return m[..., 2]  # OpenCV reads BGR: red is channel 2
    return _gray_ids(m, path)


def _gray_ids(m: np.ndarray, path: Path) -> np.ndarray:
    """The ids of a single-channel mask, or of a grey one saved with equal B, G, R channels."""
    if m.ndim == 2:
        return m
    if m.shape[2] >= 3 and not (np.array_equal(m[..., 0], m[..., 1]) and np.array_equal(m[..., 0], m[..., 2])):
        raise DataError(f"mask {path} is a colour image (its channels differ); masks of this layout are "
                        "single-channel class ids: convert colour-coded labels to an index mask")
    return m[..., 0]


def read_mask(path: str | Path, info: DatasetInfo, void_counts: Counter | None = None) -> np.ndarray:
    """Read a label file (8- or 16-bit) and decode it to class ids uint8 (H, W) per the dataset's format.

    Args:
        void_counts: if given, ``{raw id: pixels}`` mapped to ``info.ignore_index`` is added to it.

    Raises:
        DataError: the mask is missing, corrupt, has an unexpected number of channels, or holds ids
            the layout does not define (see :func:`decode_ids`).
    """
    path = Path(path)
    return decode_ids(_mask_ids(_read_raw_mask(path), info, path), info, path, void_counts)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def detect_format(root: str | Path) -> str:
    """Guess the layout of a dataset folder.

    Raises:
        DataError: the folder is missing or matches no known layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    if any((root / f"{s}annot").is_dir() for s in SPLITS):
        return "camvid"
    for base in [root] + [root / s for s in SPLITS]:
        if (base / "CameraRGB").is_dir():
            return "carla"
        if (base / "images").is_dir() and (base / "masks").is_dir():
            return "folder"
    raise DataError(
        f"{root} is not a known dataset layout: expected CamVid (train/ + trainannot/), CARLA "
        f"(CameraRGB/ + CameraSeg/) or folder (images/ + masks/); pass --data-format to force one"
    )


def _split_dir(root: Path, split: str, marker: str) -> tuple[Path, bool]:
    """Return (base folder, needs_deterministic_split) for a split in CARLA/folder layouts."""
    if (root / split / marker).is_dir():
        return root / split, False
    if (root / marker).is_dir():
        return root, True
    raise DataError(f"no {split!r} split under {root}: expected {root / split / marker} or {root / marker}")


def _holdout(items: list, split: str) -> list:
    """Deterministic split of a flat folder: every 5th item is val (and test), the rest train."""
    if split == "train":
        return [x for i, x in enumerate(items) if i % 5 != 4]
    return [x for i, x in enumerate(items) if i % 5 == 4]


def _pair(images: list[Path], mask_dir: Path) -> list[tuple[Path, Path]]:
    masks = {p.stem: p for p in _list_images(mask_dir)} if mask_dir.is_dir() else {}
    pairs, missing = [], []
    for img in images:
        if img.stem in masks:
            pairs.append((img, masks[img.stem]))
        else:
            missing.append(img.name)
    if missing:
        raise DataError(f"{len(missing)} image(s) have no mask in {mask_dir} (first: {missing[0]}); every image needs one")
    return pairs


def _spread(items: list, k: int) -> list:
    """Up to ``k`` items evenly spread over ``items`` (first and last included), in order."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in sorted(set(np.linspace(0, len(items) - 1, k).round().astype(int).tolist()))]


def _folder_masks(root: Path, base: Path, flat: bool) -> list[Path]:
    """Every mask of a folder dataset, all splits, so that each split infers the same classes."""
    if flat:
        return _list_images(base / "masks")
    return [m for s in SPLITS if (root / s / "masks").is_dir() for m in _list_images(root / s / "masks")]


def _sample_ids(masks: list[Path]) -> dict[Path, np.ndarray]:
    """Sorted raw ids (channel 0) of up to ``_INFER_SAMPLE`` masks spread over ``masks``."""
    out = {}
    for p in _spread(masks, _INFER_SAMPLE):
        out[p] = np.unique(_gray_ids(_read_raw_mask(p), p))
    return out


def _sniff_mask_kind(sample: dict[Path, np.ndarray]) -> str:
    values: set[int] = set()
    for ids in sample.values():
        values |= set(ids.tolist())
    if values <= {0, 255}:
        return "binary"
    if values <= {1, 2, 3}:
        return "trimap"
    return "index"


class SegDataset:
    """A list of (image path, mask path) pairs with their :class:`DatasetInfo`.

    ``ds[i]`` returns ``(image RGB uint8 (H, W, 3), mask uint8 (H, W))``.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], info: DatasetInfo, split: str):
        self.pairs = pairs
        self.info = info
        self.split = split
        #: ``{raw id: pixels}`` of declared void ids mapped to the ignore index, over every read in this process.
        self.void_counts: Counter = Counter()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        image, mask = read_image(img_path), read_mask(mask_path, self.info, self.void_counts)
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(f"image {img_path} is {image.shape[:2]} but its mask {mask_path} is {mask.shape[:2]}")
        return image, mask

    def image_paths(self) -> list[Path]:
        return [p for p, _ in self.pairs]


def load_dataset(root: str | Path, split: str = "train", data_format: str | None = None) -> SegDataset:
    """Open one split of a dataset folder.

    Args:
        root: dataset folder.
        split: ``train``, ``val`` or ``test``.
        data_format: one of :data:`FORMATS`, or None to auto-detect.

    Raises:
        UsageError: unknown split or format name (a typo in the command, exit 2).
        DataError: missing folder, undetectable layout, images without masks, or an empty split.
    """
    root = Path(root)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if data_format is not None and data_format not in FORMATS:
        raise UsageError(f"unknown dataset format {data_format!r}; choose one of {', '.join(FORMATS)}")
    fmt = data_format or detect_format(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")

    if fmt == "camvid":
        img_dir, ann_dir = root / split, root / f"{split}annot"
        if not img_dir.is_dir() or not ann_dir.is_dir():
            raise DataError(f"CamVid split {split!r} not found: need {img_dir} and {ann_dir}")
        info = DatasetInfo("camvid", "camvid", CAMVID_CLASSES, CAMVID_PALETTE, IGNORE_INDEX, root=str(root))
        pairs = _pair(_list_images(img_dir), ann_dir)
    elif fmt == "carla":
        base, flat = _split_dir(root, split, "CameraRGB")
        seg = base / "CameraSeg" if (base / "CameraSeg").is_dir() else base / "CameraMask"
        if not seg.is_dir():
            raise DataError(f"CARLA layout at {base} has CameraRGB/ but no CameraSeg/ or CameraMask/")
        images = _list_images(base / "CameraRGB")
        pairs = _pair(_holdout(images, split) if flat else images, seg)
        info = DatasetInfo(root.name or "carla", "carla", CARLA_CLASSES, CARLA_PALETTE, IGNORE_INDEX, root=str(root))
    else:
        base, flat = _split_dir(root, split, "images")
        if not (base / "masks").is_dir():
            raise DataError(f"folder layout at {base} has images/ but no masks/")
        images = _list_images(base / "images")
        pairs = _pair(_holdout(images, split) if flat else images, base / "masks")
        info = _folder_info(root, base, _sample_ids(_folder_masks(root, base, flat)))
    if not pairs:
        raise DataError(f"split {split!r} of {root} ({fmt}) holds no images")
    return SegDataset(pairs, info, split)


def _folder_info(root: Path, base: Path, sample: dict[Path, np.ndarray]) -> DatasetInfo:
    """Labels of a folder dataset from ``classes.txt`` or the sampled masks' ids.

    Raises:
        DataError: no ``classes.txt`` and the sampled ids have gaps or exceed
            :data:`MAX_INFERRED_CLASSES` classes (the message says how to declare them).
    """
    kind = _sniff_mask_kind(sample) if sample else "index"
    if kind in ("binary", "trimap"):
        fg = "pet" if kind == "trimap" else "foreground"
        return DatasetInfo(root.name, "folder", ["background", fg], [[0, 0, 0], [255, 255, 255]],
                           IGNORE_INDEX, binary=True, mask_kind=kind, root=str(root))
    names_file = next((p for p in (base / "classes.txt", root / "classes.txt") if p.is_file()), None)
    if names_file:
        names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        if not names:
            raise DataError(f"{names_file} names no classes; write one class name a line (line i names id i)")
        if len(names) > IGNORE_INDEX:
            raise DataError(f"{names_file} names {len(names)} classes; masks are read as 8-bit class ids with "
                            f"{IGNORE_INDEX} = ignore, so at most {IGNORE_INDEX} classes fit")
    else:
        names = [f"class{i}" for i in range(_infer_class_count(root, sample))]
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(len(names), 3)).tolist()
    return DatasetInfo(root.name, "folder", names, palette, IGNORE_INDEX, mask_kind="index", root=str(root),
                       classes_file=str(names_file) if names_file else "")


def _infer_class_count(root: Path, sample: dict[Path, np.ndarray]) -> int:
    seen: dict[int, Path] = {}
    for p, ids in sample.items():
        for v in ids.tolist():
            if v != IGNORE_INDEX:
                seen.setdefault(v, p)
    if not seen:
        return 1
    hi = max(seen)
    declare = (f"declare the classes in {root / 'classes.txt'} (one name a line, line i names id i; "
               f"{IGNORE_INDEX} = ignore) or fix the masks")
    if hi >= MAX_INFERRED_CLASSES:
        big = sorted(v for v in seen if v >= MAX_INFERRED_CLASSES)
        where = ", ".join(f"{v} in {seen[v]}" for v in big[:4])
        raise DataError(f"folder dataset {root} has no classes.txt and its masks hold id(s) {where}: that would "
                        f"infer {hi + 1} classes, more than the {MAX_INFERRED_CLASSES} inferred from masks at most; "
                        f"{declare}")
    missing = [v for v in range(hi + 1) if v not in seen]
    if missing:
        raise DataError(f"folder dataset {root} has no classes.txt and its masks hold ids "
                        f"{sorted(seen)} (up to {hi} in {seen[hi]}) but never {missing[:8]}"
                        f"{' ...' if len(missing) > 8 else ''} in {len(sample)} sampled masks, so the class "
                        f"count cannot be inferred; {declare}")
    return hi + 1


_GENERIC_NAME = re.compile(r"class\d+")


def _names(names: list[str], most: int = 16) -> str:
    shown = ", ".join(names[:most])
    return f"[{shown}{f', ... ({len(names)} in all)' if len(names) > most else ''}]"


def check_classes(meta: "ModelMeta", info: DatasetInfo) -> None:
    """Check that a model and a dataset use the same classes, before scoring or calibrating.

    Same count and names (in id order) pass. Same count where one side has only generic names
    (``class0``, ``class1``, ... of a folder dataset without ``classes.txt``) warns
    :class:`~unet_edge.errors.ClassMismatchWarning` and assumes the ids mean the same classes.

    Raises:
        DataError: the class counts differ, the names differ (neither side generic), or the ignore
            indices differ; the message names both class lists.
    """
    model, data = list(meta.class_names), list(info.class_names)
    where = f"dataset {info.root or info.name} ({info.format})"
    trained = meta.dataset.get("name") or meta.dataset.get("path")
    model_desc = f"the model{f' (trained on {trained})' if trained else ''}"
    both = f"{model_desc} has {len(model)} classes {_names(model)}, {where} has {len(data)} {_names(data)}"
    fix = "score or calibrate the model on data with its classes, or retrain it on this dataset"
    if len(model) != len(data):
        raise DataError(f"class count mismatch: {both}; {fix}")
    if meta.ignore_index != info.ignore_index:
        raise DataError(f"ignore index mismatch: the model ignores {meta.ignore_index}, {where} marks void "
                        f"with {info.ignore_index}; {fix}")
    if model == data:
        return
    generic = [all(_GENERIC_NAME.fullmatch(n) for n in side) for side in (model, data)]
    if any(generic):
        warnings.warn(ClassMismatchWarning(f"class names differ but one side is unnamed: {both}; assuming the "
                                           "ids mean the same classes"), stacklevel=2)
        return
    diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(model, data)) if a != b]
    raise DataError(f"class name mismatch ({'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}): {both}; {fix}")
