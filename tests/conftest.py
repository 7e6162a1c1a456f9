"""Shared fixtures: tiny datasets written by the tests, a tiny trained checkpoint, real CamVid."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Two xdist workers (and their subprocesses) share 2 cores: libgomp's threads spinning after each
# parallel region burn the other worker's CPU. Sleeping at once (libgomp reads this when torch
# loads it, so before the import) saved about 10 % of the suite (4 interleaved pairs, README).
if "OMP_WAIT_POLICY" not in os.environ:  # a value the user exported is theirs, and libgomp has read it
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    if "torch" in sys.modules:
        import warnings

        warnings.warn("torch was imported before tests/conftest.py set OMP_WAIT_POLICY=PASSIVE: its OpenMP threads "
                      "spin (slower suite on shared cores); export OMP_WAIT_POLICY=PASSIVE before pytest")

import cv2
import numpy as np
import pytest
import torch

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "camvid"

torch.set_num_threads(2)


def write_folder_dataset(root: Path, n: int = 10, size=(48, 64), classes: int = 3, seed: int = 0) -> Path:
    """images/ + masks/ (index masks): class 1 = bright square, class 2 = dark stripe, 0 = noise."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        img = rng.integers(60, 140, size=(h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        mask[y : y + h // 3, x : x + w // 3] = 1
        img[mask == 1] = (230, 220, 40)
        if classes > 2:
            c = rng.integers(0, w - 8)
            mask[:, c : c + 6] = 2
            img[mask == 2] = (20, 30, 200)
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), img)
        cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), mask)
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread (small models: threads only add overhead)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def folder_dataset(tmp_path_factory) -> Path:
    return write_folder_dataset(tmp_path_factory.mktemp("folder_ds"))


@pytest.fixture(scope="session")
def tiny_run(folder_dataset, tmp_path_factory) -> dict:
    """A 'tiny' U-Net trained for 2 epochs on the folder dataset (seconds)."""
    from unet_edge.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(data=str(folder_dataset), out=str(out), preset="tiny", epochs=2, batch_size=4, crop=(48, 64),
                      lr=5e-3, progress=False, command="pytest")
    summary = train(cfg, log=lambda *a: None)
    return {"out": out, "best": Path(summary["best"]), "last": Path(summary["last"]), "summary": summary}


@pytest.fixture(scope="session")
def tiny_export(tiny_run, folder_dataset, tmp_path_factory) -> Path:
    """TorchScript + ONNX FP32/FP16/INT8 + calib.cache of the tiny model."""
    from unet_edge.export.pipeline import ExportOptions, export_all

    out = tmp_path_factory.mktemp("tiny_export")
    export_all(tiny_run["best"], out, ExportOptions(fp16=True, int8=True, calib_data=str(folder_dataset), calib_images=4,
                                                     calib_method="minmax", progress=False), log=lambda *a: None)
    return out


@pytest.fixture(scope="session")
def camvid() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID}")
    return CAMVID
