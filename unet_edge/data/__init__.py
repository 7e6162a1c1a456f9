"""Datasets (CARLA, CamVid, folder layouts), the synthetic scene generator and augmentation."""
from .layouts import FORMATS, DatasetInfo, SegDataset, detect_format, load_dataset, read_image, read_mask

__all__ = ["FORMATS", "DatasetInfo", "SegDataset", "detect_format", "load_dataset", "read_image", "read_mask"]
