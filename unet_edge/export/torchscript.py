"""TorchScript export: ``torch.jit.trace`` + ``torch.jit.freeze``, metadata in ``_extra_files``."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..artifacts import TORCHSCRIPT_EXTRA
from ..io_utils import atomic_path
from ..metadata import ModelMeta


def export_torchscript(model: torch.nn.Module, meta: ModelMeta, path: str | Path) -> Path:
    """Trace ``model`` on a (1, 3, H, W) float32 input at ``meta.input_size``, freeze it and save it
    atomically with ``meta`` as ``_extra_files['unet_edge.json']``. Returns the path.

    The traced module serves inputs of ``meta.input_size`` (the runtime resizes frames to it); any batch.
    """
    model = model.eval()
    example = torch.zeros(1, 3, *meta.input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the pad branch is fixed at the traced size
        traced = torch.jit.trace(model, example, check_trace=False)
        frozen = torch.jit.freeze(traced)
    with atomic_path(path) as tmp:
        torch.jit.save(frozen, str(tmp), _extra_files={TORCHSCRIPT_EXTRA: meta.with_(precision="fp32").to_json()})
    return Path(path)


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on CPU."""
    return torch.jit.load(str(path), map_location="cpu")
