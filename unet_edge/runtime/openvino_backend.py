"""OpenVINO backend: an OpenVINO IR (``model.xml`` + ``model.bin``, FP32 or NNCF INT8) on the CPU.

OpenVINO's CPU plugin picks its inference precision by itself: bf16 on CPUs with AVX512_BF16 or
AMX (``ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")`` is ``bf16`` on the x86-amx
Xeon of benchmarks/reports/openvino-x86-amx), f32 elsewhere. So the same FP32 IR would give other
numbers on another CPU without a word. This backend always sets the hint: f32 unless bf16 is asked for explicitly (and only where
the CPU computes bf16 natively), and checks that the compiled model reports the precision it was
given.

Only :mod:`openvino` is needed here (not NNCF, not PyTorch); the IR's metadata is read from its
``<model>.xml.json`` sidecar or, without one, from the ``unet_edge`` entry of the IR's
``<rt_info>`` (:func:`unet_edge.openvino_ir.read_ir_meta`, standard-library XML, no OpenVINO needed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError
from ..host import probe_host, resolve_threads
from ..metadata import ModelMeta
from ..openvino_ir import ir_weights_path, read_ir_meta
from .base import Backend, Capabilities, check_device, device_label, dims

#: Inference-precision hints this backend accepts -> OpenVINO element type name.
HINTS = {"fp32": "f32", "bf16": "bf16"}


def _hint_for(meta: ModelMeta, precision: str | None, path: str) -> str:
    """The inference-precision hint (a key of :data:`HINTS`) for a requested ``precision``."""
    if precision in (None, "auto", meta.precision):
        return "fp32"
    if precision == "bf16":
        host = probe_host()
        if not host.native_bf16:
            raise BackendUnavailableError(
                f"--precision bf16 for {path}: this {host.cpu_class} CPU has no native bf16 arithmetic "
                "(AVX512_BF16 or AMX); OpenVINO would emulate it; run it in fp32 (the default)")
        return "bf16"
    raise BackendUnavailableError(
        f"{path} is a {meta.precision} OpenVINO IR; --precision {precision} does not apply to it (use auto, "
        f"{meta.precision}, or bf16 on a CPU with native bf16; export another IR for another precision)")


class OpenVinoBackend(Backend):
    """``openvino.Core().compile_model(ir, "CPU", config)`` on an exported IR.

    The config sets, explicitly: ``INFERENCE_NUM_THREADS`` (:func:`unet_edge.host.resolve_threads`),
    ``INFERENCE_PRECISION_HINT`` (f32, or bf16 when asked for) and ``PERFORMANCE_HINT`` LATENCY
    (one stream: one frame at a time, as the runtime feeds it).

    Args:
        path: the IR's ``.xml`` (its ``.bin`` beside it).
        meta: its :class:`ModelMeta` (None: :func:`read_ir_meta`); ``meta.precision`` (fp32 or
            int8) names the row.
        device: ``cpu`` or ``auto`` (both the CPU plugin).
        threads: inference threads; 0: the physical cores.
        precision: None, ``auto`` or the IR's own precision: f32 inference hint. ``bf16``: bf16 hint
            (the FP32 IR then runs in bf16 and reports precision ``bf16``; an INT8 IR runs its
            non-quantized layers in bf16), only on a CPU with native bf16.

    What it runs is :meth:`capabilities`: names and shapes from the compiled model, ``details``
    with the ``openvino`` version, the ``inference_precision`` the compiled model reports (``f32``
    or ``bf16``), ``performance_hint`` and the INT8 ``variant`` (e.g. ``nncf-performance``).

    Raises:
        UsageError: an unknown device.
        BackendUnavailableError: a CUDA device (OpenVINO's GPU plugin is for Intel GPUs, not used
            here), a precision the IR or CPU cannot honour, a compiled model that reports another
            precision than it was given, or openvino not installed.
        ArtifactError: the ``.xml`` or ``.bin`` is missing, OpenVINO cannot read or compile the IR,
            or its I/O is not float32 (N, C, H, W).
    """

    name = "openvino"

    def __init__(self, path: str | Path, meta: ModelMeta | None = None, device: str = "cpu", threads: int = 0,
                 precision: str | None = None):
        check_device(device)
        if device.startswith("cuda"):
            raise BackendUnavailableError(
                f"{path} is an OpenVINO IR: this backend runs it on the CPU only; use --device cpu (or run the "
                "ONNX file / a TensorRT engine on CUDA)")
        meta = meta if meta is not None else read_ir_meta(path)
        super().__init__(meta, str(path))
        hint = _hint_for(meta, precision, self.path)
        weights = ir_weights_path(path)
        if not Path(path).is_file():
            raise ArtifactError(f"OpenVINO IR not found: {path}")
        if not weights.is_file():
            raise ArtifactError(f"{path} has no weights file {weights.name} beside it; copy the .xml and .bin "
                                "together or re-export them")
        try:
            import openvino as ov
            import openvino.properties as props
            import openvino.properties.hint as hints
        except ImportError as e:
            raise BackendUnavailableError(
                f"{path} is an OpenVINO IR but openvino is not installed: pip install 'unet-edge[openvino]'") from e

        n_threads = resolve_threads(threads)
        config = {props.inference_num_threads(): n_threads,
                  hints.inference_precision(): getattr(ov.Type, HINTS[hint]),
                  hints.performance_mode(): hints.PerformanceMode.LATENCY}
        try:
            core = ov.Core()
            model = core.read_model(str(path), str(weights))
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ArtifactError(f"OpenVINO cannot load {path}: {first}; re-export it") from e
        got = self.compiled.get_property(hints.inference_precision())
        got = got.get_type_name() if hasattr(got, "get_type_name") else str(got)
        if got != HINTS[hint]:
            raise BackendUnavailableError(
                f"OpenVINO compiled {path} with inference precision {got}, not the {HINTS[hint]} it was given; "
                "not running it at another precision")
        inp, out = self.compiled.input(0), self.compiled.output(0)
        in_shape, out_shape = (dims(_shape(p.get_partial_shape())) for p in (inp, out))
        if len(in_shape) != 4 or len(out_shape) != 4 or inp.get_element_type() != ov.Type.f32:
            raise ArtifactError(f"{path}: input {inp.get_partial_shape()} {inp.get_element_type()} / output "
                                f"{out.get_partial_shape()} are not float32 (N, C, H, W); not a unet-edge export")
        static = in_shape[0]
        self._caps = Capabilities(
            kind=self.name, device="cpu", precision="bf16" if hint == "bf16" and meta.precision == "fp32" else meta.precision,
            input_name=_name(inp, meta.input_name), input_shape=in_shape, output_name=_name(out, meta.output_name),
            output_shape=out_shape,
            static_batch=static, batch_range=(static or 1, None), threads=n_threads, providers=("CPU",),
            artifact=str(path),
            details={"openvino": ov.get_version(), "inference_precision": got,
                     "performance_hint": str(self.compiled.get_property(hints.performance_mode())),
                     "variant": meta.extra.get("quantization", {}).get("variant", "") if meta.precision == "int8" else ""})
        self._request = self.compiled.create_infer_request()

    def capabilities(self) -> Capabilities:
        """See the class docstring."""
        return self._caps

    @property
    def inference_precision(self) -> str:
        """``capabilities().details["inference_precision"]``: ``f32`` or ``bf16``, as the compiled model reports it."""
        return self._caps.details["inference_precision"]

    @property
    def label(self) -> str:
        """Row label, e.g. ``openvino int8 nncf-performance (cpu)`` (the quantization variant) or
        ``openvino fp32 bf16-hint (cpu)``."""
        caps = self._caps
        v = f" {caps.details['variant']}" if caps.details["variant"] else ""
        hint = " bf16-hint" if caps.details["inference_precision"] == "bf16" else ""
        return f"{caps.kind} {self.meta.precision}{v}{hint} ({device_label(caps.device)})"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits float32 (N, K, H, W) for a float32 (N, 3, H, W) batch; a static-batch IR runs it
        in chunks of its batch size.

        Raises:
            DataError, UsageError: an input :meth:`Capabilities.check_input` refuses.
            ArtifactError: the backend is closed.
        """
        if self._request is None:
            raise ArtifactError(f"{self.label} for {self.path} is closed")
        batch = self._caps.check_input(batch)
        step = self._caps.static_batch or len(batch)
        outs = []
        for i in range(0, len(batch), step):
            self._request.infer({0: batch[i : i + step]})
            # the request reuses its output buffer on the next call: copy
            outs.append(np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True))
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def close(self) -> None:
        self._request = None
        self.compiled = None


def _shape(partial) -> list[int]:
    """An OpenVINO PartialShape as ints, -1 for dynamic dims (:func:`~unet_edge.runtime.base.dims` reads -1 as None)."""
    return [d.get_length() if d.is_static else -1 for d in partial]


def _name(port, wanted: str) -> str:
    """The port's tensor name: ``wanted`` (the metadata's) when the tensor carries it among its
    names (OpenVINO keeps every ONNX name of a tensor, e.g. ``/head/Conv_output_0`` and ``logits``)."""
    names = port.get_names()
    return wanted if wanted in names else port.get_any_name()
