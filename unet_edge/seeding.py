"""Seeded random streams of a training run: global seeding, the per-epoch seed, and the state of
every stream as checkpoint-safe tensors and lists (``torch.load(weights_only=True)``)."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (torch: CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The 64-bit seed of epoch ``epoch`` of a run seeded ``seed`` on rank ``rank`` (0 for one
    process); depends on nothing else."""
    key = [seed, epoch] + ([rank] if rank else [])
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])


def rng_state(cuda: bool = False) -> dict:
    """The global random streams as tensors and plain lists (loadable with ``weights_only=True``):
    ``{"torch": uint8 tensor, "numpy": [name, [624 ints], pos, has_gauss, cached], "python":
    [version, [625 ints], gauss], "cuda": [uint8 tensor per device] (only when ``cuda``)}``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    d = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
         "python": [version, list(internal), gauss]}
    if cuda:
        d["cuda"] = torch.cuda.get_rng_state_all()
    return d


def set_rng_state(d: dict) -> None:
    """Restore the streams saved by :func:`rng_state` (the CUDA ones only where this host has as
    many CUDA devices as the saving one)."""
    torch.set_rng_state(d["torch"])
    name, keys, pos, has_gauss, cached = d["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = d["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = d.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
