"""TensorRT runtime backend: run a serialized engine (``.engine``) with the named-tensor API.

TensorRT 10+ has no binding indices (``execute_async_v2``, ``get_binding_*`` are gone): I/O is found
with ``engine.num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``, shapes are set with
``context.set_input_shape`` (dynamic inputs), buffers with ``context.set_tensor_address`` and work
is enqueued with ``context.execute_async_v3(stream_handle)`` (TensorRT 10.3/10.16/11.4 Python
docstrings of ``IExecutionContext``; a non-default stream is recommended there).

Memory: one page-locked host buffer and one device buffer per I/O tensor (pycuda), sized for the
current input shape and reallocated only when it changes, plus one CUDA stream. Everything is
released in :meth:`TensorRTBackend.close` (also via ``with``), in dependency order: buffers, then
the execution context, engine and runtime, then the retained primary context.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, DataError
from ..metadata import ModelMeta
from ..trt.cuda_utils import device_index, gpu_info, import_pycuda, primary_context
from ..trt.dtypes import to_numpy
from ..trt.sidecar import check_engine_compat, read_sidecar
from ..trt.version import import_tensorrt, installed_version
from .base import Backend, Capabilities, DimRange, dims


class TensorRTBackend(Backend):
    """Inference on a TensorRT engine built by ``unet-edge build``.

    Args:
        engine_path: the plan file; its ``<engine>.json`` sidecar is required.
        meta: model metadata (default: read from the sidecar).
        device: ``cuda`` or ``cuda:N``.

    Attributes:
        name: ``tensorrt``.
        warnings: compatibility warnings found when loading (e.g. built on another GPU model).

    What it runs is :meth:`capabilities` (engine I/O names, shapes with None for -1 dims, input
    dtype, the sidecar's precision, ``cuda:N``, profile ranges, TensorRT versions).

    ``infer`` takes float32 (N, 3, H, W) and returns float32 (N, K, H, W). A static engine (batch 1,
    the export default) runs a batch of N (a multiple of its batch) in executions of its batch; a
    dynamic one runs it in executions of up to the profile's maximum batch, H and W having to lie
    within the profile (else DataError, from :meth:`Capabilities.check_input`).

    Raises:
        BackendUnavailableError: TensorRT, pycuda or a GPU is missing, or the device is not CUDA.
        ArtifactError: the sidecar is missing, the engine was built for another TensorRT version or
            GPU ("rebuild with: unet-edge build ..."), or it cannot be deserialized / has unexpected I/O.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, meta: ModelMeta | None = None, device: str = "cuda"):
        engine_path = Path(engine_path)
        index = device_index(device)
        if not engine_path.is_file():
            raise ArtifactError(f"engine not found: {engine_path}")
        sidecar = read_sidecar(engine_path)
        super().__init__(meta or ModelMeta.from_dict(sidecar), str(engine_path))
        self._caps: Capabilities | None = None
        self._closed = True
        trt = import_tensorrt()
        self._cuda = cuda = import_pycuda()
        if index >= cuda.Device.count():
            raise ArtifactError(f"device {device!r} does not exist: this host has {cuda.Device.count()} GPU(s)")
        gpu = gpu_info(index)
        self.warnings = check_engine_compat(sidecar, installed_version(trt), gpu, engine_path)
        self._ctx = cuda.Device(index).retain_primary_context()
        self._closed = False
        self._runtime = self._engine = self._context = self._stream = None
        self._host: dict[str, np.ndarray] = {}
        self._device_mem: dict = {}
        self._shape: tuple[int, ...] | None = None
        try:
            with primary_context(cuda, self._ctx):
                self._load(trt, engine_path, sidecar)
            self._caps = self._describe(trt, sidecar, index, gpu)
        except BaseException:
            self.close()
            raise

    def _load(self, trt, engine_path: Path, sidecar: dict) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        if sidecar["engine"].get("version_compatible"):
            runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise ArtifactError(f"TensorRT could not deserialize {engine_path} (corrupt, or built for another "
                                f"TensorRT/GPU); rebuild with: {sidecar['engine'].get('build_command', 'unet-edge build')}")
        self._logger, self._runtime, self._engine = logger, runtime, engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{engine_path}: expected one input and one output tensor, found inputs {inputs} "
                                f"and outputs {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        if self._input != self.meta.input_name or self._output != self.meta.output_name:
            raise ArtifactError(f"{engine_path}: tensors {self._input!r} -> {self._output!r} do not match the "
                                f"metadata ({self.meta.input_name!r} -> {self.meta.output_name!r}); rebuild the engine")
        self._in_dtype = to_numpy(trt, engine.get_tensor_dtype(self._input))
        self._out_dtype = to_numpy(trt, engine.get_tensor_dtype(self._output))
        if self._in_dtype != np.float32:
            raise ArtifactError(f"{engine_path}: input {self._input!r} is {self._in_dtype}, expected float32 "
                                "(export FP16/INT8 ONNX with FP32 I/O)")
        self._engine_shape = tuple(int(d) for d in engine.get_tensor_shape(self._input))
        if len(self._engine_shape) != 4:
            raise ArtifactError(f"{engine_path}: input {self._input!r} has shape {self._engine_shape}, expected "
                                "(N, 3, H, W); rebuild the engine")
        self._dynamic = any(d < 0 for d in self._engine_shape)
        self._range = None
        if self._dynamic:
            lo, _, hi = engine.get_tensor_profile_shape(self._input, 0)
            self._range = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
        self._context = engine.create_execution_context()
        if self._context is None:
            raise ArtifactError(f"TensorRT could not create an execution context for {engine_path} (GPU memory?)")
        self._stream = self._cuda.Stream()

    def _describe(self, trt, sidecar: dict, index: int, gpu: dict) -> Capabilities:
        """The :class:`Capabilities` of the loaded engine: I/O from the engine (-1 dims -> None),
        batch and H/W ranges from optimization profile 0, precision from the sidecar."""
        info = sidecar["engine"]
        in_shape = dims(self._engine_shape)
        out_shape = dims(int(d) for d in self._engine.get_tensor_shape(self._output))
        static = in_shape[0]
        batch_range: tuple[int, int | None] = (static or 1, None)
        spatial = (DimRange(), DimRange())
        details = {"tensorrt": str(installed_version(trt)), "built_with": str(info.get("tensorrt_version", "")),
                   "gpu": dict(gpu), "mode": info.get("mode", ""), "version_compatible": bool(info.get("version_compatible"))}
        if self._range is not None:
            lo, hi = self._range
            batch_range = (static or lo[0], None)  # batches over the profile's maximum run in chunks of it
            spatial = (DimRange(min=lo[2], max=hi[2]), DimRange(min=lo[3], max=hi[3]))
            details["profile"] = {"min": list(lo), "max": list(hi)}
        return Capabilities(
            kind=self.name, device=f"cuda:{index}", precision=info.get("precision", self.meta.precision),
            input_name=self._input, input_shape=in_shape, output_name=self._output, output_shape=out_shape,
            input_dtype=np.dtype(self._in_dtype).name, static_batch=static, batch_range=batch_range,
            spatial=spatial, threads=None, providers=(), details=details, artifact=self.path)

    def capabilities(self) -> Capabilities:
        """Engine I/O names and shapes (None for dynamic dims), input dtype, static batch, batch and
        H/W ranges of profile 0, ``cuda:N``, the sidecar's precision; ``details``: ``tensorrt``
        (installed) and ``built_with`` versions, ``gpu``, build ``mode``, ``version_compatible``,
        ``profile`` (min/max shapes, dynamic engines)."""
        if self._caps is None:
            raise ArtifactError(f"TensorRTBackend for {self.path} did not load")
        return self._caps

    def _step(self, n: int) -> int:
        """Images per execution for a checked batch of ``n``."""
        if not self._dynamic:
            return self._engine_shape[0]
        return min(n, self._range[1][0])  # larger batches run in chunks of the profile's maximum

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Set the input shape and (re)allocate host/device buffers when the shape changes."""
        if shape == self._shape:
            return
        cuda, context = self._cuda, self._context
        self._free_buffers()
        if self._dynamic and not context.set_input_shape(self._input, shape):
            raise DataError(f"TensorRT rejected input shape {shape} for {self._input!r}")
        out_shape = tuple(int(d) for d in context.get_tensor_shape(self._output))
        for name, shp, dt in ((self._input, shape, self._in_dtype), (self._output, out_shape, self._out_dtype)):
            self._host[name] = cuda.pagelocked_empty(shp, dt)
            self._device_mem[name] = cuda.mem_alloc(max(1, self._host[name].nbytes))
            context.set_tensor_address(name, int(self._device_mem[name]))
        self._shape = shape

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, H, W) -> float32 (N, K, H, W) logits.

        Raises:
            DataError, UsageError: an input :meth:`Capabilities.check_input` refuses.
            ArtifactError: the backend is closed, or TensorRT fails to execute.
        """
        if self._closed:
            raise ArtifactError("TensorRTBackend is closed")
        batch = self._caps.check_input(batch)
        step = self._step(batch.shape[0])
        outs = []
        with primary_context(self._cuda, self._ctx):
            for start in range(0, batch.shape[0], step):
                chunk = batch[start:start + step]
                self._bind(self._engine_shape if not self._dynamic else chunk.shape)
                outs.append(self._execute(chunk))
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _execute(self, chunk: np.ndarray) -> np.ndarray:
        cuda, context, stream = self._cuda, self._context, self._stream
        h_in, h_out = self._host[self._input], self._host[self._output]
        np.copyto(h_in, chunk)
        cuda.memcpy_htod_async(self._device_mem[self._input], h_in, stream)
        if not context.execute_async_v3(stream.handle):
            raise ArtifactError(f"TensorRT execution failed for {self.path}")
        cuda.memcpy_dtoh_async(h_out, self._device_mem[self._output], stream)
        stream.synchronize()
        return h_out.astype(np.float32, copy=True)

    def _free_buffers(self) -> None:
        for mem in self._device_mem.values():
            mem.free()
        self._device_mem.clear()
        self._host.clear()
        self._shape = None

    def close(self) -> None:
        """Synchronize, free device and page-locked memory, destroy context/engine/runtime, release
        the primary context. Idempotent."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            with primary_context(self._cuda, self._ctx):
                if self._stream is not None:
                    self._stream.synchronize()
                self._free_buffers()
                self._context = None  # the execution context before its engine, the engine before its runtime
                self._engine = None
                self._runtime = None
                self._stream = None
        finally:
            self._ctx.detach()
            self._ctx = None

    def __del__(self):  # a safety net only: call close() (or use `with`) for deterministic release
        try:
            self.close()
        except Exception:
            pass
