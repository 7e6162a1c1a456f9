"""The interface every inference backend implements."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod

import numpy as np

from ..errors import UsageError
from ..metadata import ModelMeta

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> str:
    """Return ``device`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        UsageError: any other value (e.g. ``tpu``), naming it.
    """
    if not isinstance(device, str) or not (device in DEVICES or re.fullmatch(r"cuda:\d+", device)):
        raise UsageError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


class Backend(ABC):
    """Runs a model on preprocessed batches.

    Attributes:
        name: ``pytorch``, ``torchscript``, ``onnxruntime`` or ``tensorrt``.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        device: ``cpu`` or ``cuda``.
        meta: the artifact's :class:`ModelMeta`.
        path: the artifact file.
        threads: CPU threads it runs with (None on a GPU).

    Backends are context managers; :meth:`close` releases sessions and device memory.
    """

    name: str = "?"
    precision: str = "fp32"
    device: str = "cpu"
    threads: int | None = None

    def __init__(self, meta: ModelMeta, path: str = ""):
        self.meta = meta
        self.path = str(path)

    @property
    def label(self) -> str:
        """Row label for reports, e.g. ``onnxruntime int8 (cpu)``."""
        return f"{self.name} {self.precision} ({self.device})"

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model.

        Args:
            batch: float32 (N, 3, H, W), normalized by :func:`unet_edge.preprocess.preprocess`.

        Returns:
            logits float32 (N, K, H, W).
        """

    def close(self) -> None:
        """Release resources; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
