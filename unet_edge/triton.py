"""A Triton Inference Server model repository: ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/``.

:func:`write_triton_repo` turns an export folder (its ``model_fp32.onnx``), an ONNX file or a TensorRT
engine into one model of a Triton model repository::

    REPO/unet_edge/config.pbtxt        platform, max_batch_size, input/output, dynamic_batching,
                                       instance_group, parameters (the unet-edge metadata JSON)
    REPO/unet_edge/1/model.onnx        platform onnxruntime_onnx (metadata embedded, as in every ONNX)
    REPO/unet_edge_trt_fp16/1/model.plan  platform tensorrt_plan (+ model.plan.json, the engine sidecar)

Names, dims and data types come from the graph (ONNX) or the engine's sidecar, checked against the
model metadata. With ``max_batch_size > 0`` Triton prepends a variable batch dim to the ``dims``
of the config, so the model itself must accept any batch up to it: our default export is a static
1x3xHxW graph, whose batch dim is rewritten to a symbolic one here; the result is run in ONNX
Runtime at batch 2 and must give the logits of two batch-1 runs, else the ONNX is refused
(``ExportError``: re-export with ``export --dynamic`` or write with ``max_batch_size=0``).

``argmax=True`` appends ArgMax + Cast to the graph (a sigmoid head: ``logit > 0``, as
:func:`unet_edge.preprocess.labels_from_logits`), so a client receives the uint8 label mask
(N, H, W) instead of float logits (N, K, H, W): for CamVid at 360x480 a frame's 11-class logits
are 11 * 360 * 480 * 4 B = 7.6 MB on the wire, its mask 360 * 480 B = 173 KB.

The model folder is built beside its target and swapped in whole
(:class:`unet_edge.transaction.StagedFolder`), so Triton (``--model-control-mode=poll``) never
sees half a model and files of an older write (a stale ``model.plan``) never survive. Triton loads
*every* subfolder of a repository as a model, hidden ones included, so the lock folder
StagedFolder leaves beside the target is removed afterwards.

``config.pbtxt`` is rendered from Triton's own protobuf schema (``tritonclient``'s
``model_config_pb2``, :func:`google.protobuf.text_format.MessageToString`) when that is installed,
else by the small text-format writer :func:`pbtxt`; both parse to the same message.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from .artifacts import artifact_kind, read_meta
from .errors import ArtifactError, ExportError, UsageError
from .formats import artifact
from .io_utils import ensure_folder
from .metadata import METADATA_KEY, ModelMeta, sidecar_path
from .preprocess import labels_from_logits
from .provenance import NAME_KEY, SHA_KEY
from .transaction import StagedFolder, lock_for

CONFIG_NAME = artifact("triton_config").file
VERSION = "1"
PLATFORMS = {"onnx": "onnxruntime_onnx", "engine": "tensorrt_plan"}
MODEL_FILES = {"onnx": artifact("triton_model").file, "engine": "model.plan"}
INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
#: Default ``dynamic_batching.max_queue_delay_microseconds``: how long Triton waits for more requests.
DEFAULT_QUEUE_DELAY_US = 100
DEFAULT_MASK_NAME = "mask"
#: Triton data types by numpy dtype name (Triton's ``DataType`` enum).
TRITON_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
                "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_BATCH_DIM = "batch"


class Enum(str):
    """An enum value in a config dict (written bare, ``TYPE_FP32``, not as a quoted string)."""


def write_triton_repo(source: str | os.PathLike, repo_dir: str | os.PathLike, name: str | None = None,
                      max_batch_size: int = 8, instance: str = "cpu", count: int = 1,
                      dynamic_batching: bool = True, argmax: bool = False,
                      preferred_batch_sizes: Sequence[int] | None = None,
                      max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, mask_name: str = DEFAULT_MASK_NAME,
                      log: Callable[[str], None] = print) -> Path:
    """Write one model of a Triton model repository (module docstring: the layout).

    Args:
        source: an export folder (its ``model_fp32.onnx`` is used), an ONNX file with unet-edge
            metadata (platform ``onnxruntime_onnx``) or a TensorRT engine with its ``.json`` sidecar
            (``tensorrt_plan``; Triton must run the TensorRT version it was built with, recorded in
            the config's ``parameters``).
        repo_dir: the model repository (created when missing; other models in it are left alone).
        name: the model's folder and config name; default ``unet_edge`` (``unet_edge_<precision>``
            for a non-FP32 ONNX, ``unet_edge_trt_<precision>`` for an engine), ``_mask`` appended
            with ``argmax``.
        max_batch_size: Triton's ``max_batch_size``; > 0: the model must take a variable batch dim
            (an ONNX's static batch dim is rewritten and checked; an engine needs a dynamic batch
            profile from 1 to at least this); 0: no batching, ``dims`` include the batch dim.
        instance: ``cpu`` or ``gpu``: the ``instance_group`` kind (an engine needs ``gpu``).
        count: model instances per device (``instance_group.count``).
        dynamic_batching: add ``dynamic_batching { preferred_batch_size, max_queue_delay_microseconds }``
            (only with ``max_batch_size > 0``; a log line says when it is left out).
        argmax: ONNX only: append the argmax so the output is ``mask_name``, uint8 (N, H, W) labels.
        preferred_batch_sizes: default: powers of two from 2 up to ``max_batch_size``, and it.
        max_queue_delay_us: microseconds Triton may wait to fill a batch.
        mask_name: output name of the argmax graph.
        log: receives progress lines.

    Returns:
        The model folder ``repo_dir/<name>``.

    Raises:
        UsageError: a bad option (name, sizes, ``instance``), ``argmax`` or ``instance="cpu"``
            with an engine, an engine without a dynamic batch profile for ``max_batch_size``,
            ``repo_dir/<name>`` holding files this writer did not make (nothing is deleted), or
            another writer of the same model.
        ArtifactError: the source is missing, not an ONNX/engine/export folder, lacks metadata,
            or its inputs/outputs disagree with the metadata.
        ExportError: the ONNX's batch dim cannot be made variable (ONNX Runtime fails or gives
            other logits at batch 2 than at batch 1), or the rewritten graph fails ``onnx.checker``.
    """
    check_options(name, max_batch_size, instance, count, max_queue_delay_us)
    kind, path = _resolve_source(source)
    meta = read_meta(path)
    if kind == "engine":
        if argmax:
            raise UsageError("--triton-argmax adds the argmax to an ONNX graph; an engine is compiled already: write "
                             "the repository from the export folder or its ONNX instead")
        if instance != "gpu":
            raise UsageError(f"{path} is a TensorRT engine, which runs on a GPU only: use --triton-instance gpu")
    name = name if name is not None else default_name(kind, meta, argmax)
    sizes = _preferred_sizes(max_batch_size, preferred_batch_sizes)
    model, check, engine_info = None, None, None
    if kind == "onnx":
        model, served, inputs, outputs, check = _onnx_model(path, meta, max_batch_size, argmax, mask_name)
    else:
        served, inputs, outputs, engine_info = _engine_io(path, meta, max_batch_size)
    batching = dynamic_batching and max_batch_size > 0
    if dynamic_batching and not batching:
        log("  triton: no dynamic_batching: max_batch_size is 0 (Triton batches only models with max_batch_size > 0)")
    cfg = model_config(name, PLATFORMS[kind], max_batch_size, inputs, outputs, INSTANCE_KINDS[instance], count,
                       sizes if batching else None, max_queue_delay_us, _parameters(served, engine_info))
    header = (f"# Triton model configuration written by unet-edge from {path.resolve()}\n"
              f"# source checkpoint sha256: {served.extra.get(SHA_KEY) or 'not recorded'}\n")
    target = _write(ensure_folder(repo_dir, "--triton") / name, kind, path, model, header + config_text(cfg), log)
    done = f", batch {check['batch']} checked (max |logit diff| {check['max_abs_diff']:.2g})" if check else ""
    log(f"  triton: wrote {target} ({PLATFORMS[kind]}, max_batch_size {max_batch_size}, {INSTANCE_KINDS[instance]} "
        f"x{count}, output {outputs[0]['name']} {outputs[0]['data_type']}{done})")
    return target


def default_name(kind: str, meta: ModelMeta, argmax: bool = False) -> str:
    """``unet_edge``, ``unet_edge_<precision>`` (non-FP32 ONNX) or ``unet_edge_trt_<precision>``
    (engine), with ``_mask`` appended for an argmax graph."""
    if kind == "engine":
        base = f"unet_edge_trt_{meta.precision}"
    else:
        base = "unet_edge" if meta.precision == "fp32" else f"unet_edge_{meta.precision}"
    return base + ("_mask" if argmax else "")


# --- options and source ----------------------------------------------------------------------------

def check_options(name: str | None = None, max_batch_size: int = 8, instance: str = "cpu", count: int = 1,
                  max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US) -> None:
    """Check the options of :func:`write_triton_repo` (for the CLI, before a long export or build).

    Raises:
        UsageError: a name Triton cannot load (``/``, ``..``, a leading ``.``), ``max_batch_size`` < 0,
            an unknown ``instance``, ``count`` < 1 or a negative queue delay.
    """
    if name is not None and (not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name):
        raise UsageError(f"--triton-name {name!r}: use letters, digits, '_', '.', '-' (no '/', no '..', not starting "
                         "with '.'), e.g. unet_edge")
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 0:
        raise UsageError(f"--triton-max-batch {max_batch_size!r}: give an integer >= 0 (0: no batching)")
    if instance not in INSTANCE_KINDS:
        raise UsageError(f"--triton-instance {instance!r}: give one of {', '.join(INSTANCE_KINDS)}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UsageError(f"--triton-count {count!r}: give an integer >= 1 (model instances per device)")
    if not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise UsageError(f"max_queue_delay_us {max_queue_delay_us!r}: give microseconds >= 0")


def _preferred_sizes(max_batch_size: int, sizes: Sequence[int] | None) -> list[int]:
    if sizes is None:
        out, p = [], 2
        while p < max_batch_size:
            out.append(p)
            p *= 2
        return out + ([max_batch_size] if max_batch_size > 1 else [])
    sizes = sorted(set(int(s) for s in sizes))
    bad = [s for s in sizes if not 1 <= s <= max_batch_size]
    if bad:
        raise UsageError(f"preferred batch sizes {bad} are outside 1..max_batch_size ({max_batch_size})")
    return sizes


def _resolve_source(source) -> tuple[str, Path]:
    """("onnx" | "engine", file) of an export folder, ONNX file or engine."""
    path = Path(source)
    if path.is_dir():
        onnx_path = path / artifact("onnx_fp32").file
        if not onnx_path.is_file():
            raise ArtifactError(f"{path} holds no {onnx_path.name}: give an export folder (unet-edge export), an ONNX "
                                "file or a TensorRT engine")
        return "onnx", onnx_path
    kind = artifact_kind(path)
    if kind not in PLATFORMS:
        raise ArtifactError(f"{path} is a {kind} file; a Triton repository takes an export folder, an ONNX file or a "
                            "TensorRT engine (export the checkpoint first: unet-edge export)")
    return kind, path


# --- ONNX ------------------------------------------------------------------------------------------

def _np_type(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _dims(value: onnx.ValueInfoProto) -> list:
    """Dims of a graph input/output: ints where static, None where symbolic."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _graph_io(model: onnx.ModelProto, meta: ModelMeta, path: Path):
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    if [v.name for v in inputs] != [meta.input_name] or [v.name for v in graph.output] != [meta.output_name]:
        names = [v.name for v in inputs], [v.name for v in graph.output]
        raise ArtifactError(f"{path}: graph inputs {names[0]} / outputs {names[1]} "
                            f"are not the metadata's {meta.input_name!r} -> {meta.output_name!r}; re-export it")
    inp, out = inputs[0], graph.output[0]
    h, w = meta.input_size
    c_in = int(meta.arch.get("in_channels", 3))
    for value, want in ((inp, (c_in, h, w)), (out, (meta.num_classes, h, w))):
        dims = _dims(value)
        if len(dims) != 4 or any(d is not None and d != e for d, e in zip(dims[1:], want)):
            raise ArtifactError(f"{path}: {value.name} has dims {_show(dims)}, the metadata says "
                                f"Nx{'x'.join(map(str, want))} "
                                "(channels, input_size); re-export it")
    return inp, out


def _show(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _variable_batch(model: onnx.ModelProto) -> bool:
    """Make dim 0 of the graph input and output symbolic; True when it was static (rewritten)."""
    values = list(model.graph.input) + list(model.graph.output)
    if all(not v.type.tensor_type.shape.dim[0].HasField("dim_value") for v in values):
        return False
    for v in values:
        v.type.tensor_type.shape.dim[0].dim_param = _BATCH_DIM  # clears dim_value (a oneof)
    # Inferred shapes of inner tensors still say batch 1: drop them and infer again from the new input.
    del model.graph.value_info[:]
    try:
        model.CopyFrom(onnx.shape_inference.infer_shapes(model))
    except Exception as e:  # onnx raises InferenceError and others
        raise ExportError(f"shape inference fails on the graph with a variable batch dim ({e}); re-export with "
                          "`unet-edge export --dynamic`") from e
    return True


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures come back as exceptions, turned into our messages
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, x: np.ndarray, what: str, path: Path, hint: str = "") -> np.ndarray:
    try:
        sess = _session(model)
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as e:  # onnxruntime raises its own pybind types (Fail, InvalidArgument, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{path}: {what} fails in ONNX Runtime ({first})" + (f"; {hint}" if hint else "")) from e


def _check_batch(model: onnx.ModelProto, meta: ModelMeta, path: Path, batch: int) -> tuple[np.ndarray, dict]:
    """Run ``model`` at ``batch`` and one image at a time; the logits must agree.

    Returns:
        (the input used, float (batch, C, H, W), {"batch", "max_abs_diff"}).
    """
    inp = model.graph.input[0] if len(model.graph.input) == 1 else next(
        v for v in model.graph.input if v.name == meta.input_name)
    h, w = meta.input_size
    dtype = _np_type(inp.type.tensor_type.elem_type)
    x = np.random.default_rng(0).standard_normal((batch, int(meta.arch.get("in_channels", 3)), h, w)).astype(dtype)
    hint = ("re-export with `unet-edge export --dynamic` (variable batch, H and W), or write the repository with "
            "--triton-max-batch 0 (no batching)")
    together = _run(model, x, f"the graph with a variable batch dim at batch {batch}", path, hint)
    apart = np.concatenate([_run(model, x[i : i + 1], "the graph at batch 1", path) for i in range(batch)])
    if together.shape != apart.shape:
        raise ExportError(f"{path}: at batch {batch} the graph gives logits of shape {together.shape}, not "
                          f"{apart.shape}: its batch dim cannot vary; {hint}")
    diff = float(np.max(np.abs(together.astype(np.float64) - apart.astype(np.float64))))
    scale = max(1.0, float(np.max(np.abs(apart))))
    if not diff <= 1e-4 * scale:
        raise ExportError(f"{path}: at batch {batch} the graph gives other logits than {batch} batch-1 runs (max "
                          f"|diff| {diff:.3g}, largest logit {scale:.3g}): it mixes the images of a batch; {hint}")
    return x, {"batch": batch, "max_abs_diff": diff}


def add_argmax(model: onnx.ModelProto, meta: ModelMeta, mask_name: str = DEFAULT_MASK_NAME) -> onnx.ModelProto:
    """A copy of ``model`` whose output is the uint8 label mask (N, H, W) named ``mask_name``
    instead of the logits (N, K, H, W): ``ArgMax(axis=1, keepdims=0)`` + ``Cast(to=UINT8)``; a
    binary head (K == 1): ``Cast(Squeeze(logits, 1) > 0)``, the rule of
    :func:`unet_edge.preprocess.labels_from_logits`.

    Raises:
        UsageError: ``mask_name`` is already a tensor of the graph, or K > 256 (not a uint8 label).
    """
    if meta.num_classes > 256:
        raise UsageError(f"{meta.num_classes} classes do not fit a uint8 mask; serve the logits (no --triton-argmax)")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = ({t for n in graph.node for t in (*n.input, *n.output)} | {i.name for i in graph.initializer}
             | {v.name for v in graph.input})
    if mask_name in taken:
        raise UsageError(f"the graph already has a tensor named {mask_name!r}; choose another mask name")
    logits = graph.output[0]
    if meta.binary:
        axes, zero = f"{METADATA_KEY}_axes", f"{METADATA_KEY}_zero"
        graph.initializer.extend([
            onnx.numpy_helper.from_array(np.array([1], np.int64), axes),
            onnx.numpy_helper.from_array(np.zeros((), _np_type(logits.type.tensor_type.elem_type)), zero)])
        graph.node.extend([
            onnx.helper.make_node("Squeeze", [logits.name, axes], [f"{METADATA_KEY}_logit"]),
            onnx.helper.make_node("Greater", [f"{METADATA_KEY}_logit", zero], [f"{METADATA_KEY}_fg"]),
            onnx.helper.make_node("Cast", [f"{METADATA_KEY}_fg"], [mask_name], to=onnx.TensorProto.UINT8)])
    else:
        graph.node.extend([
            onnx.helper.make_node("ArgMax", [logits.name], [f"{METADATA_KEY}_argmax"], axis=1, keepdims=0),
            onnx.helper.make_node("Cast", [f"{METADATA_KEY}_argmax"], [mask_name], to=onnx.TensorProto.UINT8)])
    dims = list(logits.type.tensor_type.shape.dim)
    mask = onnx.helper.make_tensor_value_info(mask_name, onnx.TensorProto.UINT8,
                                              [d.dim_param or d.dim_value or None for d in (dims[0], *dims[2:])])
    graph.value_info.append(logits)
    del graph.output[:]
    graph.output.append(mask)
    return out


def _set_meta(model: onnx.ModelProto, meta: ModelMeta) -> None:
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=METADATA_KEY, value=meta.to_json())


def _onnx_model(path: Path, meta: ModelMeta, max_batch_size: int, argmax: bool, mask_name: str):
    """(model to save, its metadata, input and output config dicts, batch check or None)."""
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ArtifactError(f"cannot parse ONNX file {path} ({type(e).__name__}: {e}); it may be truncated") from e
    _graph_io(model, meta, path)
    check, x = None, None
    rewritten = False
    if max_batch_size > 0:
        rewritten = _variable_batch(model)
        x, check = _check_batch(model, meta, path, batch=2)
    logits_model = model
    if argmax:
        model = add_argmax(model, meta, mask_name)
        if x is None:
            dtype = _np_type(model.graph.input[0].type.tensor_type.elem_type)
            x = np.random.default_rng(0).standard_normal(
                (1, int(meta.arch.get("in_channels", 3)), *meta.input_size)).astype(dtype)
        _check_mask(logits_model, model, x, path)
    triton = {"platform": PLATFORMS["onnx"], "source": path.name, "max_batch_size": max_batch_size,
              "batch_dim_rewritten": rewritten, "output": "labels uint8 (N, H, W)" if argmax else "logits (N, K, H, W)"}
    served = meta.with_(output_name=mask_name if argmax else meta.output_name, extra={"triton": triton})
    _set_meta(model, served)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the Triton graph made from {path} fails onnx.checker: {e}") from e
    inputs = [_tensor(v, max_batch_size) for v in model.graph.input if v.name == meta.input_name]
    outputs = [_tensor(v, max_batch_size) for v in model.graph.output]
    return model, served, inputs, outputs, check


def _check_mask(logits_model, mask_model, x: np.ndarray, path: Path) -> None:
    """The argmax graph's mask must equal the labels of the logits graph's output (ties excluded)."""
    logits = _run(logits_model, x, "the logits graph", path).astype(np.float32)
    mask = _run(mask_model, x, "the argmax graph", path)
    want = labels_from_logits(logits)
    if mask.dtype != np.uint8 or mask.shape != want.shape:
        raise ExportError(f"{path}: the argmax graph gives {mask.dtype} {mask.shape}, not uint8 {want.shape}")
    top = np.sort(logits, axis=1)
    clear = (top[:, -1] - top[:, -2] > 1e-5) if logits.shape[1] > 1 else np.abs(logits[:, 0]) > 1e-5
    wrong = int(np.count_nonzero((mask != want) & clear))
    if wrong:
        raise ExportError(f"{path}: the argmax graph disagrees with the logits' argmax at {wrong} pixels")


def _tensor(value: onnx.ValueInfoProto, max_batch_size: int) -> dict:
    dims = [-1 if d is None else d for d in _dims(value)]
    return {"name": value.name, "data_type": Enum(TRITON_TYPES[_np_type(value.type.tensor_type.elem_type)]),
            "dims": dims[1:] if max_batch_size > 0 else dims}


# --- TensorRT engine -------------------------------------------------------------------------------

def _engine_io(path: Path, meta: ModelMeta, max_batch_size: int):
    """(metadata, input and output config dicts, engine info) from the engine's sidecar."""
    side = sidecar_path(path)
    try:
        info = json.loads(side.read_bytes()).get("engine")
    except (OSError, ValueError, AttributeError) as e:
        raise ArtifactError(f"cannot read the engine sidecar {side} ({e}); rebuild the engine with unet-edge "
                            "build") from e
    io = info.get("io") if isinstance(info, dict) else None
    if not isinstance(io, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                           and isinstance(t.get("shape"), list) for t in io):
        raise ArtifactError(f"{side}: no engine 'io' list of {{name, mode, shape, dtype}}; rebuild the engine")
    inputs = [t for t in io if t.get("mode") == "input"]
    outputs = [t for t in io if t.get("mode") == "output"]
    if [t["name"] for t in inputs] != [meta.input_name] or not outputs:
        raise ArtifactError(f"{side}: engine inputs {[t['name'] for t in inputs]} are not the metadata's "
                            f"[{meta.input_name!r}]; rebuild the engine")
    if max_batch_size > 0:
        _check_engine_batch(side, info, inputs[0], outputs, max_batch_size)
    unknown = [f"{t['name']}: {t.get('dtype')}" for t in inputs + outputs if t.get("dtype") not in TRITON_TYPES]
    if unknown:
        raise ArtifactError(f"{side}: tensor types without a Triton data type: {', '.join(unknown)}")

    def spec(t):
        dims = [int(d) for d in t["shape"]]
        return {"name": t["name"], "data_type": Enum(TRITON_TYPES[t["dtype"]]),
                "dims": dims[1:] if max_batch_size > 0 else dims}

    served = meta.with_(extra={"triton": {"platform": PLATFORMS["engine"], "source": path.name,
                                          "max_batch_size": max_batch_size}})
    return served, [spec(t) for t in inputs], [spec(t) for t in outputs], info


def _check_engine_batch(side: Path, info: dict, inp: dict, outputs: list[dict], max_batch_size: int) -> None:
    hint = (f"build the engine from `unet-edge export --dynamic` with a batch profile, e.g. --min-shape 1x3xHxW "
            f"--max-shape {max_batch_size}x3xHxW, or write the repository with --triton-max-batch 0")
    if any(not t["shape"] or t["shape"][0] != -1 for t in (inp, *outputs)):
        raise UsageError(f"{side}: the engine's batch dim is static ({inp['name']} {inp['shape']}); Triton's "
                         f"max_batch_size {max_batch_size} needs a variable one: {hint}")
    prof = (info.get("profile") or {}).get(inp["name"]) or {}
    lo, hi = (prof.get("min") or [None])[0], (prof.get("max") or [None])[0]
    if lo != 1 or not isinstance(hi, int) or hi < max_batch_size:
        raise UsageError(f"{side}: the engine's batch profile is {lo}..{hi}; max_batch_size {max_batch_size} needs "
                         f"1..{max_batch_size} or more: {hint}")


# --- config ----------------------------------------------------------------------------------------

def _parameters(meta: ModelMeta, engine: dict | None) -> dict:
    params = {METADATA_KEY: json.dumps(meta.to_dict(), separators=(",", ":"), sort_keys=True)}
    for key in (SHA_KEY, NAME_KEY):
        if meta.extra.get(key):
            params[key] = str(meta.extra[key])
    if engine is not None:
        gpu = engine.get("gpu") if isinstance(engine.get("gpu"), dict) else {}
        params["tensorrt_version"] = str(engine.get("tensorrt_version", "unknown"))
        params["gpu"] = f"{gpu.get('name', 'unknown')} (compute capability {gpu.get('compute_capability', 'unknown')})"
    return {k: {"string_value": v} for k, v in params.items()}


def model_config(name: str, platform: str, max_batch_size: int, inputs: list[dict], outputs: list[dict],
                 kind: str, count: int, preferred: list[int] | None, max_queue_delay_us: int,
                 parameters: dict) -> dict:
    """The ``inference.ModelConfig`` as a dict of proto field names (enums as :class:`Enum`);
    ``preferred`` None: no ``dynamic_batching``."""
    cfg = {"name": name, "platform": platform, "max_batch_size": max_batch_size, "input": inputs,
           "output": outputs, "instance_group": [{"kind": Enum(kind), "count": count}]}
    if preferred is not None:
        cfg["dynamic_batching"] = {"preferred_batch_size": preferred,
                                   "max_queue_delay_microseconds": max_queue_delay_us}
    cfg["parameters"] = parameters
    return cfg


def model_config_pb2():
    """Triton's ``model_config_pb2`` module (``tritonclient[grpc]``), or None when not installed."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except Exception:  # ImportError, or protobuf's VersionError when its runtime is older than the gencode
        return None
    return pb2


def config_text(cfg: dict) -> str:
    """``config.pbtxt`` text: Triton's schema renders it when installed, else :func:`pbtxt`."""
    pb2 = model_config_pb2()
    if pb2 is None:
        return pbtxt(cfg)
    from google.protobuf import json_format, text_format

    return text_format.MessageToString(json_format.ParseDict(cfg, pb2.ModelConfig()))


def pbtxt(cfg: dict, indent: int = 0) -> str:
    """Protobuf text format of a config dict (:func:`model_config`), without the protobuf package:
    messages as ``field { ... }``, repeated scalars as ``field: [ a, b ]``, ``parameters`` as the
    map entries ``parameters { key: ... value { string_value: ... } }``."""
    pad = "  " * indent
    lines = []
    for key, value in cfg.items():
        if key == "parameters":
            for k, v in value.items():
                lines.append(f"{pad}{key} {{\n{pad}  key: {_quote(k)}\n{pad}  value {{\n"
                             + pbtxt(v, indent + 2) + f"{pad}  }}\n{pad}}}\n")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n" + pbtxt(value, indent + 1) + f"{pad}}}\n")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.extend(f"{pad}{key} {{\n" + pbtxt(v, indent + 1) + f"{pad}}}\n" for v in value)
        elif isinstance(value, list):
            if value:
                lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]\n")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}\n")
    return "".join(lines)


def _scalar(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return _quote(str(v))


_ESCAPES = {ord('"'): '\\"', ord("\\"): "\\\\", ord("'"): "\\'", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def _quote(s: str) -> str:
    """A text-format string literal: C escapes, other bytes outside printable ASCII as octal (UTF-8)."""
    return '"' + "".join(_ESCAPES.get(b) or (chr(b) if 32 <= b < 127 else f"\\{b:03o}")
                         for b in s.encode("utf-8")) + '"'


# --- writing ---------------------------------------------------------------------------------------

def _owned(name: str) -> bool:
    return name in (CONFIG_NAME, VERSION)


def _write(target: Path, kind: str, source: Path, model: onnx.ModelProto | None, text: str,
           log: Callable[[str], None]) -> Path:
    stage = StagedFolder(target, marker=CONFIG_NAME, owns=_owned, log=log, what="Triton model")
    try:
        try:
            stage.__enter__()
        except UsageError as e:  # its messages name the option --out; ours is --triton
            where = f"--triton {target.parent}: the model folder {target}"
            raise UsageError(str(e).replace(f"--out {target}", where)) from None
        try:
            version = stage.path / VERSION
            version.mkdir()
            dest = version / MODEL_FILES[kind]
            if model is not None:
                onnx.save(model, str(dest))
            else:
                shutil.copyfile(source, dest)
                shutil.copyfile(sidecar_path(source), sidecar_path(dest))
            (stage.path / CONFIG_NAME).write_text(text, encoding="utf-8")
            stage.commit()
        finally:
            stage.__exit__(None, None, None)
    finally:
        _remove_lock_folder(target)
    return target


def _remove_lock_folder(target: Path) -> None:
    """Triton would try to load the (empty, hidden) lock folder beside ``target`` as a model."""
    try:
        lock_for(target).folder.rmdir()
    except OSError:  # gone already, or another writer holds it now
        pass
