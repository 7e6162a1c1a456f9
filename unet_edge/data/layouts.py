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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError

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
    """

    name: str
    format: str
    class_names: list[str]
    palette: list[list[int]]
    ignore_index: int = IGNORE_INDEX
    binary: bool = False
    mask_kind: str = "index"
    root: str = ""

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


def read_mask(path: str | Path, info: DatasetInfo) -> np.ndarray:
    """Read a label file and decode it to class ids uint8 (H, W) per the dataset's format.

    Raises:
        DataError: the mask is missing, corrupt or has an unexpected number of channels.
    """
    path = Path(path)
    m = _read_raw_mask(path)
    if info.format == "carla":
        if m.ndim != 3:
            raise DataError(f"CARLA mask {path} should be RGB with the class id in the red channel")
        ids = m[..., 2]  # OpenCV reads BGR: red is channel 2
        return ids.astype(np.uint8)
    if m.ndim == 3:
        m = m[..., 0]
    m = m.astype(np.uint8)
    if info.format == "camvid":
        out = m.copy()
        out[m >= CAMVID_VOID] = info.ignore_index
        return out
    if info.mask_kind == "binary":
        out = np.full_like(m, info.ignore_index)
        out[m == 0] = 0
        out[m == 255] = 1
        out[m == 1] = 1  # 0/1 masks too
        return out
    if info.mask_kind == "trimap":
        out = np.full_like(m, info.ignore_index)
        out[m == 1] = 1
        out[m == 2] = 0
        return out
    return m


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


def _sniff_mask_kind(mask_paths: list[Path]) -> str:
    values: set[int] = set()
    for p in mask_paths[:8]:
        m = _read_raw_mask(p)
        values |= set(np.unique(m if m.ndim == 2 else m[..., 0]).tolist())
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

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        image, mask = read_image(img_path), read_mask(mask_path, self.info)
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
        DataError: missing folder, unknown layout/format/split, images without masks, or an empty split.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {SPLITS}")
    fmt = data_format or detect_format(root)
    if fmt not in FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; choose one of {FORMATS}")
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
        kind = _sniff_mask_kind([m for _, m in pairs]) if pairs else "index"
        info = _folder_info(root, base, kind, [m for _, m in pairs])
    if not pairs:
        raise DataError(f"split {split!r} of {root} ({fmt}) holds no images")
    return SegDataset(pairs, info, split)


def _folder_info(root: Path, base: Path, kind: str, masks: list[Path]) -> DatasetInfo:
    if kind in ("binary", "trimap"):
        fg = "pet" if kind == "trimap" else "foreground"
        return DatasetInfo(root.name, "folder", ["background", fg], [[0, 0, 0], [255, 255, 255]],
                           IGNORE_INDEX, binary=True, mask_kind=kind, root=str(root))
    names_file = next((p for p in (base / "classes.txt", root / "classes.txt") if p.is_file()), None)
    if names_file:
        names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
    else:
        hi = 0
        for p in masks[:64]:
            m = _read_raw_mask(p)
            vals = np.unique(m if m.ndim == 2 else m[..., 0])
            vals = vals[vals != IGNORE_INDEX]
            hi = max(hi, int(vals.max()) if vals.size else 0)
        names = [f"class{i}" for i in range(hi + 1)]
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(len(names), 3)).tolist()
    return DatasetInfo(root.name, "folder", names, palette, IGNORE_INDEX, mask_kind="index", root=str(root))
