"""TensorRT 10.x implicit INT8 calibration: ``IInt8EntropyCalibrator2`` over the shared batches.

Two parts:

* :class:`CalibrationStream` (no TensorRT needed): the batch iterator and cache file handling. Its
  batches come from :func:`calibration.images.calibration_batches`, i.e. the runtime's own
  :func:`unet_edge.preprocess.preprocess`, so TensorRT calibrates on exactly the tensors the runtime
  feeds and ONNX Runtime's INT8 export sees.
* :func:`make_entropy_calibrator`: builds the ``trt.IInt8EntropyCalibrator2`` subclass around a
  stream. The class is defined inside the factory because ``tensorrt`` can only be imported where
  its libraries are installed; the caller passes the imported module.

TensorRT 11 removed implicit calibration (``IInt8EntropyCalibrator2``, ``IBuilderConfig.int8_calibrator``
are absent from its bindings); on 11.x INT8 comes only from Q/DQ ONNX (TensorRT 10.x-to-11.x
migration guide, "Removed Python APIs"). The factory is therefore gated to TensorRT 10.

Calibrator contract (TensorRT 10.3 Python docstrings of ``IInt8Calibrator``): ``get_batch_size()``
returns the batch size; ``get_batch(names)`` returns a list of device pointers (``int``), one per
input name, or an empty list when there are no more batches; ``read_calibration_cache()`` returns
the cache bytes or ``None`` (when it returns data, TensorRT uses it and asks for no batch);
``write_calibration_cache(cache)`` receives the cache buffer to persist.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.cache import parse_calibration_cache
from calibration.images import calibration_batches

from ..errors import ArtifactError, BackendUnavailableError, DataError
from ..io_utils import atomic_path
from ..metadata import ModelMeta
from .version import only_trt


class CalibrationStream:
    """Fixed-size float32 batches for a calibrator, plus its cache file.

    Args:
        paths: calibration images (from :func:`calibration.images.calibration_images`). May be
            empty when ``cache_path`` already holds a cache: then no batch is needed.
        meta: model metadata; batches are (B, 3, H, W) with (H, W) = ``meta.input_size``.
        batch_size: B >= 1. TensorRT needs every batch to have exactly B images, so the last
            ``len(paths) % B`` images are left out.
        cache_path: calibration cache to reuse (read) and to write after calibrating; None: none.

    Attributes:
        shape: (B, 3, H, W). ``nbytes``: bytes of one batch (float32). ``num_batches``: batches
        :meth:`next_batch` yields. ``batches_read``: batches handed out so far.

    Raises:
        DataError: ``batch_size`` < 1, or not enough images for one batch and no cache to reuse.
    """

    def __init__(self, paths: list[Path], meta: ModelMeta, batch_size: int = 8, cache_path: str | Path | None = None):
        if batch_size < 1:
            raise DataError(f"calibration batch size must be >= 1, got {batch_size}")
        self.paths = [Path(p) for p in paths]
        self.meta = meta
        self.batch_size = int(batch_size)
        self.cache_path = Path(cache_path) if cache_path is not None else None
        h, w = meta.input_size
        self.shape = (self.batch_size, 3, int(h), int(w))
        self.nbytes = int(np.prod(self.shape)) * np.dtype(np.float32).itemsize
        self.num_batches = len(self.paths) // self.batch_size
        self.batches_read = 0
        if self.num_batches == 0 and not self.has_cache:
            raise DataError(
                f"INT8 calibration needs at least {self.batch_size} images (got {len(self.paths)}) or an "
                f"existing calibration cache{f' at {self.cache_path}' if self.cache_path else ''}; "
                "pass --calib-data with more images or lower the calibration batch size")
        self._it = None

    @property
    def has_cache(self) -> bool:
        """True when ``cache_path`` exists: TensorRT will take the scales from it, no batches."""
        return self.cache_path is not None and self.cache_path.is_file()

    def reset(self) -> None:
        """Start again from the first batch."""
        self._it = None
        self.batches_read = 0

    def next_batch(self) -> np.ndarray | None:
        """The next batch: float32 (B, 3, H, W), C-contiguous, preprocessed exactly as the runtime
        does; None after :attr:`num_batches` batches. Images are read lazily, one batch at a time."""
        if self.batches_read >= self.num_batches:
            return None
        if self._it is None:
            used = self.paths[: self.num_batches * self.batch_size]
            self._it = calibration_batches(used, self.meta, self.batch_size)
        batch = next(self._it, None)
        if batch is None:
            return None
        self.batches_read += 1
        return np.ascontiguousarray(batch, dtype=np.float32)

    def __iter__(self):
        self.reset()
        while (batch := self.next_batch()) is not None:
            yield batch

    def __len__(self) -> int:
        return self.num_batches

    def read_cache(self) -> bytes | None:
        """The cache file's bytes, or None when there is none (TensorRT then calibrates).

        Raises:
            ArtifactError: the file exists but is not a TensorRT calibration cache (TensorRT would
                silently ignore or misread it).
        """
        if not self.has_cache:
            return None
        data = self.cache_path.read_bytes()
        parse_calibration_cache(data, source=str(self.cache_path))
        return data

    def write_cache(self, data: bytes) -> None:
        """Persist the cache TensorRT produced (atomically); no-op without ``cache_path``."""
        if self.cache_path is None:
            return
        with atomic_path(self.cache_path) as tmp:
            tmp.write_bytes(bytes(data))


@only_trt(10)
def make_entropy_calibrator(trt, paths: list[Path], meta: ModelMeta, batch_size: int = 8,
                            cache_path: str | Path | None = None):
    """A ``trt.IInt8EntropyCalibrator2`` for TensorRT 10.x builds (``config.int8_calibrator``).

    Args:
        trt: the imported ``tensorrt`` module (10.x; the decorator refuses 11.x).
        paths, meta, batch_size, cache_path: see :class:`CalibrationStream`.

    Returns:
        The calibrator. It owns one pycuda device buffer of ``stream.nbytes`` bytes, allocated on the
        first ``get_batch``; call its ``free()`` after the build (within the same CUDA context).
        ``error`` holds an exception raised inside a callback (TensorRT swallows those and only
        logs "Exception caught in get_batch()"), so the builder can re-raise it.

    Raises:
        BackendUnavailableError: pycuda is missing or TensorRT is not 10.x.
        DataError: see :class:`CalibrationStream`.
    """
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise BackendUnavailableError(
            f"INT8 calibration with TensorRT needs pycuda ({e}); install it with `pip install pycuda` "
            "(needs the CUDA toolkit), or build from the Q/DQ ONNX with --mode explicit") from e

    stream = CalibrationStream(paths, meta, batch_size, cache_path)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Entropy calibration v2 over :class:`CalibrationStream` batches (one input tensor)."""

        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by the bindings (see docstring)
            self.stream = stream
            self.error: BaseException | None = None
            self._device = None

        def get_batch_size(self):
            return self.stream.batch_size

        def get_batch(self, names):
            try:
                if list(names) != [meta.input_name]:
                    raise ArtifactError(f"calibrator feeds one input {meta.input_name!r}; the network asks for {list(names)}")
                batch = self.stream.next_batch()
                if batch is None:
                    return []
                if self._device is None:
                    self._device = cuda.mem_alloc(self.stream.nbytes)
                cuda.memcpy_htod(self._device, batch)
                return [int(self._device)]
            except Exception as e:  # TensorRT would swallow it; keep it for the builder
                self.error = e
                return []

        def read_calibration_cache(self):
            try:
                return self.stream.read_cache()
            except Exception as e:
                self.error = e
                return None

        def write_calibration_cache(self, cache):
            try:
                self.stream.write_cache(bytes(cache))
            except Exception as e:
                self.error = e

        def free(self) -> None:
            """Release the device buffer (idempotent)."""
            if self._device is not None:
                self._device.free()
                self._device = None

    return EntropyCalibrator()
