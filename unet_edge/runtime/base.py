"""The interface every inference backend implements, and what a backend says it can run.

A backend is asked what it accepts through :meth:`Backend.capabilities` (a frozen
:class:`Capabilities`: input/output names and shapes, input dtype, static batch, batch range,
H/W rules, device, precision, kind, threads, provider details), in the spirit of Polygraphy's
runners (``get_input_metadata``), instead of callers reading one-off attributes. Every backend's
``infer`` checks its input with :meth:`Capabilities.check_input`, so a wrong shape, dtype or batch
fails the same way, naming the mismatch, whichever backend runs it.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from ..errors import DataError, UsageError
from ..metadata import ModelMeta

DEVICES = ("auto", "cpu", "cuda")
#: values of :attr:`Capabilities.precision`.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def check_device(device: str) -> str:
    """Return ``device`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        UsageError: any other value (e.g. ``tpu``), naming it.
    """
    if not isinstance(device, str) or not (device in DEVICES or re.fullmatch(r"cuda:\d+", device)):
        raise UsageError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


def canonical_device(device: str) -> str:
    """``cpu`` -> ``cpu``; ``cuda`` -> ``cuda:0``; ``cuda:N`` -> ``cuda:N`` (a resolved device, not ``auto``).

    Raises:
        UsageError: ``auto`` or an unknown device.
    """
    check_device(device)
    if device == "auto":
        raise UsageError("device 'auto' must be resolved to cpu or cuda before it is reported")
    return "cuda:0" if device == "cuda" else device


def device_label(device: str) -> str:
    """The device as backend labels show it: ``cpu``, ``cuda`` (for ``cuda:0``) or ``cuda:N``."""
    return "cuda" if device == "cuda:0" else device


def dims(shape) -> tuple[int | None, ...]:
    """A runtime's declared shape as ints, with None for dynamic dims (ONNX Runtime's ``'batch'``
    strings and None, TensorRT's and OpenVINO's -1)."""
    return tuple(int(d) if isinstance(d, (int, np.integer)) and int(d) >= 0 else None for d in shape)


@dataclass(frozen=True)
class DimRange:
    """Sizes a dynamic H or W dimension accepts: ``min <= v``, ``v <= max`` (None: no upper bound)
    and ``v % multiple == offset``, in pixels."""

    min: int = 1
    max: int | None = None
    multiple: int = 1
    offset: int = 0

    def accepts(self, v: int) -> bool:
        """True when size ``v`` is in the range."""
        return self.min <= v and (self.max is None or v <= self.max) and v % self.multiple == self.offset

    def describe(self) -> str:
        """The rule in words, e.g. ``8*k + 0 between 16 and 4096`` or ``between 32 and 512``."""
        span = f"between {self.min} and {self.max}" if self.max is not None else f"at least {self.min}"
        return f"{self.multiple}*k + {self.offset} {span}" if self.multiple > 1 else span


@dataclass(frozen=True)
class Capabilities:
    """What a loaded backend runs: its answer to "what may I feed you, and where does it run?".

    Attributes:
        kind: the backend (its row name): ``pytorch``, ``torchscript``, ``onnxruntime``,
            ``tensorrt``, ``openvino``, ``aotinductor``, ``torch.export``.
        device: where it computes: ``cpu`` or ``cuda:N``.
        precision: ``fp32``, ``fp16``, ``bf16`` or ``int8`` (autocast for PyTorch; the artifact's own otherwise).
        input_name, output_name: the model's I/O tensor names.
        input_shape: (N, C, H, W) the artifact declares; None for a dim it leaves dynamic (any N
            for a dynamic batch; H and W then follow :attr:`spatial`).
        output_shape: (N, K, H, W) likewise (K: the classes, or 1 for a binary model).
        input_dtype: NumPy dtype name ``infer`` takes (``float32``: normalized NCHW, see
            :func:`unet_edge.preprocess.preprocess_batch`). ``infer`` always returns float32.
        static_batch: the batch the artifact is fixed to (None: dynamic). ``infer`` takes any
            multiple of it and runs it in chunks of that size.
        batch_range: (min, max) images one ``infer`` call accepts; max None: no bound (larger
            batches run in chunks, e.g. of a TensorRT profile's maximum).
        spatial: (H rule, W rule), :class:`DimRange`, for the dims of ``input_shape`` that are None.
        threads: CPU threads it computes with (None when a GPU computes).
        providers: execution details in order, e.g. ONNX Runtime's session providers
            (``CPUExecutionProvider``); empty where there is no such notion.
        details: backend-specific facts (read-only mapping), e.g. ``onnxruntime`` /
            ``tensorrt`` version, INT8 ``variant``, ``graph_optimization``, TensorRT profile.
        artifact: the file the backend runs ("" for an in-memory model); named in errors.
    """

    kind: str
    device: str
    precision: str
    input_name: str
    input_shape: tuple[int | None, ...]
    output_name: str
    output_shape: tuple[int | None, ...]
    input_dtype: str = "float32"
    static_batch: int | None = None
    batch_range: tuple[int, int | None] = (1, None)
    spatial: tuple[DimRange, DimRange] = (DimRange(), DimRange())
    threads: int | None = None
    providers: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)
    artifact: str = ""

    def __post_init__(self):
        # the invariants below are facts every backend must report consistently: a failure is a bug
        if len(self.input_shape) != 4 or len(self.output_shape) != 4:
            raise ValueError(f"input/output shapes must be (N, C, H, W), got {self.input_shape} / {self.output_shape}")
        if self.static_batch is not None and self.input_shape[0] not in (None, self.static_batch):
            raise ValueError(f"static batch {self.static_batch} but input shape {self.input_shape}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "output_shape", tuple(self.output_shape))
        object.__setattr__(self, "providers", tuple(self.providers))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def device_type(self) -> str:
        """``cpu`` or ``cuda``."""
        return self.device.split(":")[0]

    @property
    def dynamic_spatial(self) -> bool:
        """True when other H/W than the export size are accepted (within :attr:`spatial`)."""
        return self.input_shape[2] is None or self.input_shape[3] is None

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists, ``details`` as a plain dict)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(input_shape=list(self.input_shape), output_shape=list(self.output_shape),
                 batch_range=list(self.batch_range), spatial=[asdict(r) for r in self.spatial],
                 providers=list(self.providers), details=dict(self.details))
        return d

    def _where(self) -> str:
        return f"{self.artifact} ({self.kind})" if self.artifact else self.kind

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise unless one ``infer`` call accepts an input of ``shape``.

        Raises:
            DataError: not 4-D, other channels, or H/W that are not the fixed ones / outside
                :attr:`spatial` (named, with the accepted rule).
            UsageError: a batch size outside :attr:`batch_range`, or not a multiple of
                :attr:`static_batch`.
        """
        shape = tuple(int(s) for s in shape)
        where = self._where()
        c = self.input_shape[1]
        if len(shape) != 4 or (c is not None and shape[1] != c):
            raise DataError(f"{where}: input of shape {shape} is not (N, {c if c is not None else 'C'}, H, W); "
                            "infer takes batches from unet_edge.preprocess.preprocess_batch")
        n = shape[0]
        lo, hi = self.batch_range
        if n < lo or (hi is not None and n > hi):
            bound = f"[{lo}, {hi}]" if hi is not None else f"[{lo}, ...)"
            raise UsageError(f"{where}: batch {n} is outside {bound}; "
                             + ("split the batch" if hi is not None and n > hi else f"feed at least {lo} image(s)"))
        if self.static_batch and n % self.static_batch:
            raise UsageError(f"{where}: batch {n} is not a multiple of the static batch {self.static_batch}; feed "
                             f"multiples of it (they run in chunks of {self.static_batch}) or export with --dynamic")
        fixed = self.input_shape[2:]
        for key, v, want, rule in zip(("height", "width"), shape[2:], fixed, self.spatial):
            if want is not None and v != want:
                raise DataError(f"{where}: input {shape[2]}x{shape[3]} (HxW) does not fit the fixed input "
                                f"{fixed[0]}x{fixed[1]}; preprocess frames to the model's input size or export with "
                                "--dynamic")
            if want is None and not rule.accepts(v):
                raise DataError(f"{where}: input {key} {v} is not served: it must be {rule.describe()}; resize "
                                "frames to the model's input size")

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """Check a batch before ``infer`` runs it; return it C-contiguous (no copy when it is).

        Args:
            x: ``input_dtype`` (float32) array (N, 3, H, W).

        Raises:
            DataError: not a NumPy array, another dtype (e.g. uint8 pixels not yet preprocessed,
                float64), or a shape :meth:`check_shape` refuses.
            UsageError: a batch size :meth:`check_shape` refuses.
        """
        where = self._where()
        if not isinstance(x, np.ndarray):
            raise DataError(f"{where}: input is a {type(x).__name__}, expected a NumPy {self.input_dtype} array "
                            "(N, 3, H, W)")
        if x.dtype != np.dtype(self.input_dtype):
            raise DataError(f"{where}: input dtype is {x.dtype}, expected {self.input_dtype}; preprocess frames with "
                            f"unet_edge.preprocess (normalized {self.input_dtype} NCHW) or cast with "
                            f".astype(np.{self.input_dtype})")
        self.check_shape(x.shape)
        return np.ascontiguousarray(x)


class Backend(ABC):
    """Runs a model on preprocessed batches.

    The interface: :meth:`infer`, :meth:`capabilities`, :attr:`meta`, :attr:`label`, :meth:`close`
    and the context manager (``with`` closes). ``name`` (class attribute) is the backend kind.

    Attributes:
        meta: the artifact's :class:`ModelMeta`.
        path: the artifact file ("" for an in-memory model).

    ``precision``, ``device``, ``threads`` and ``static_batch`` are read-only shorthands for the
    same fields of :meth:`capabilities`, kept because tests and scripts read them.
    """

    name: str = "?"

    def __init__(self, meta: ModelMeta, path: str = ""):
        self.meta = meta
        self.path = str(path)

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend runs (fixed once it is loaded)."""

    @property
    def precision(self) -> str:
        """``capabilities().precision``."""
        return self.capabilities().precision

    @property
    def device(self) -> str:
        """``capabilities().device`` (``cpu`` or ``cuda:N``)."""
        return self.capabilities().device

    @property
    def threads(self) -> int | None:
        """``capabilities().threads``."""
        return self.capabilities().threads

    @property
    def static_batch(self) -> int | None:
        """``capabilities().static_batch``."""
        return self.capabilities().static_batch

    @property
    def label(self) -> str:
        """Row label for reports, e.g. ``onnxruntime int8 (cpu)``."""
        caps = self.capabilities()
        return f"{caps.kind} {caps.precision} ({device_label(caps.device)})"

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the model.

        Args:
            batch: float32 (N, 3, H, W), normalized by :func:`unet_edge.preprocess.preprocess`;
                checked with :meth:`Capabilities.check_input`.

        Returns:
            logits float32 (N, K, H, W).

        Raises:
            DataError, UsageError: see :meth:`Capabilities.check_input`.
        """

    def close(self) -> None:
        """Release resources; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
