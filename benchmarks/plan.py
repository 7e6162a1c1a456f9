"""Which rows a benchmark has: one per backend x precision x device for one trained model.

:func:`plan_rows` expands export folders, checks that every artifact is the same model, finds the
checkpoint for the PyTorch rows (given, or ``extra.source_checkpoint`` of the ONNX/TorchScript
metadata when that file exists) and lists every row of the matrix: runnable rows, and rows that
cannot run here as ``skipped`` with the reason. No backend ever stands in for another.

The host (:func:`unet_edge.host.probe_host`, or a :class:`~unet_edge.host.HostInfo` passed in)
decides two more things: a precision the hardware only emulates (PyTorch bf16 on a CPU without
bf16 arithmetic, bf16 on a GPU below compute capability 8.0) is listed as ``skipped`` with its
cost unless ``emulated=True``; and a CPU INT8 ONNX quantized for another INT8 kernel family
(``quantization.target`` of its metadata) than the host's gets a note saying so.

OpenVINO IRs (``.xml``) get CPU rows (skipped when openvino is not installed); ``.pt2`` files get
a torch.export row and an AOTInductor row on the device they were made for, skipped when the
benchmark size is not one their graph serves or (AOTInductor) when this host's CPU cannot run the
package.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from unet_edge.artifacts import artifact_kind, read_meta
from unet_edge.errors import ArtifactError, BackendUnavailableError
from unet_edge.formats import ENGINE_SUFFIXES, artifact, export_files
from unet_edge.host import INT8_FAMILIES, HostInfo, probe_host
from unet_edge.metadata import ModelMeta
from unet_edge.openvino_ir import ir_input_shape, ir_weights_path
from unet_edge.precision import EMULATED_BF16_COST, cuda_native_bf16
from unet_edge.pt2_archive import aoti_package_metadata, host_can_run_aoti, rule_accepts, stored_shape_rule
from unet_edge.runtime.ort_backend import int8_target, tensorrt_file_saturates
from unet_edge.zoo import resolve_artifact

#: Model files of an export folder in row order (:func:`unet_edge.formats.export_files`).
EXPORT_FILES = export_files(models_only=True)
#: Precisions each artifact family is expected to offer; missing ones become skipped rows.
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
TRT_PRECISIONS = ("fp32", "fp16", "int8")
OPENVINO_PRECISIONS = ("fp32", "int8")
#: Backend display names.
BACKEND_NAMES = {"pytorch": "PyTorch eager", "torchscript": "TorchScript", "onnxruntime": "ONNX Runtime",
                 "tensorrt": "TensorRT", "openvino": "OpenVINO", "torch.export": "torch.export",
                 "aotinductor": "AOTInductor"}
#: Why OpenVINO rows cannot run on an install without it.
OPENVINO_MISSING = "openvino not installed (pip install 'unet-edge[openvino]')"


@dataclass
class RowSpec:
    """One planned row.

    Attributes:
        backend: ``pytorch``, ``torchscript``, ``torch.export``, ``aotinductor``, ``onnxruntime``,
            ``openvino`` or ``tensorrt``.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``int8``.
        device: ``cpu`` or ``cuda``.
        path: the artifact (None for a skipped row without one).
        load_precision: precision passed to ``load_backend`` (PyTorch/TorchScript rows), else None.
        status: ``planned`` (to measure), ``skipped``; the runner sets ``ok`` or ``failed``.
        reason: why a row is skipped or failed.
        variant: distinguishes two rows of one backend/precision/device (e.g. ``dynamic``).
        notes: short remarks shown in the notes column (static batch chunking, emulated bf16, ...).
        static_batch: batch size of a static-batch ONNX graph or OpenVINO IR (None: dynamic, or neither).
    """

    backend: str
    precision: str
    device: str
    path: str | None = None
    load_precision: str | None = None
    status: str = "planned"
    reason: str = ""
    variant: str = ""
    notes: list[str] = field(default_factory=list)
    static_batch: int | None = None

    @property
    def id(self) -> str:
        """Unique row key, ``backend/precision/device[/variant]``, e.g. ``onnxruntime/int8/cpu``."""
        return "/".join([self.backend, self.precision, self.device] + ([self.variant] if self.variant else []))

    @property
    def label(self) -> str:
        """Human label, e.g. ``ONNX Runtime INT8 (cpu)``."""
        v = f" {self.variant}" if self.variant else ""  # no [brackets]: rich would read them as markup
        return f"{BACKEND_NAMES.get(self.backend, self.backend)} {self.precision.upper()}{v} ({self.device})"


@dataclass
class Plan:
    """The rows, the model's metadata, the checkpoint used for PyTorch rows and planning notes."""

    rows: list[RowSpec]
    meta: ModelMeta
    checkpoint: str | None
    input_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)


def expand_artifacts(paths: list[str]) -> list[Path]:
    """Files to benchmark: files as given; a folder expands to the export files it holds
    (:data:`EXPORT_FILES`: ONNX, TorchScript, OpenVINO IRs, ``.pt2``; then TensorRT engines ``*.engine``/``*.plan``/``*.trt``, then
    ``best.pt`` for a training run folder). Duplicates are dropped.

    Raises:
        ArtifactError: a path does not exist or a folder holds none of these files.
    """
    out: list[Path] = []
    for p in map(resolve_artifact, paths):
        if p.is_dir():
            found = [p / n for n in EXPORT_FILES if (p / n).is_file()]
            found += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in ENGINE_SUFFIXES)
            if (p / "best.pt").is_file():
                found.append(p / "best.pt")
            if not found:
                raise ArtifactError(f"{p} is a folder without export artifacts ({', '.join(EXPORT_FILES)}, "
                                    "*.engine) or best.pt; pass the files or an `unet-edge export` folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ArtifactError(f"artifact not found: {p}")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def onnx_input_shape(path: str | Path) -> list:
    """Input dims of an ONNX graph: ints for static dims, strings for symbolic ones."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def tensorrt_installed() -> bool:
    """True when the ``tensorrt`` Python package can be found (not imported here)."""
    return importlib.util.find_spec("tensorrt") is not None


def _same_model(metas: dict[Path, ModelMeta]) -> None:
    items = list(metas.items())
    p0, m0 = items[0]
    for p, m in items[1:]:
        if m.arch != m0.arch or list(m.class_names) != list(m0.class_names):
            raise ArtifactError(
                f"{p} is a different model than {p0} (architecture {m.arch} vs {m0.arch}, "
                f"{len(m.class_names)} vs {len(m0.class_names)} classes); a benchmark compares the artifacts of "
                "one trained model: bench each model separately and use `bench --compare`")


def int8_host_note(meta: ModelMeta, host: HostInfo) -> str | None:
    """The note of a CPU INT8 ONNX quantized for another INT8 kernel family than ``host``'s
    (``quantization.target``, :func:`unet_edge.runtime.ort_backend.int8_target`), or of the TensorRT
    Q/DQ file on a CPU whose ONNX Runtime int8 kernels saturate on it (:func:`tensorrt_file_saturates`);
    None when the families match or the file is neither."""
    target = int8_target(meta)
    if tensorrt_file_saturates(meta, host):
        return (f"the TensorRT Q/DQ file: ONNX Runtime's int8 kernels on this {host.int8_family} CPU saturate on its "
                f"full-range weights; {artifact('onnx_int8_cpu').file} is the INT8 file for ONNX Runtime here")
    if target not in INT8_FAMILIES or target == host.int8_family:
        return None
    here = host.int8_family if host.cpu_class == host.int8_family else f"{host.int8_family} ({host.cpu_class})"
    return (f"quantized for {target} CPUs, this host is {here}: its int8 kernels may lose accuracy or speed; "
            "re-export here (unet-edge export --int8)")


@dataclass
class _Inputs:
    """What the rows are planned from: the files, their kinds and metadata, the checkpoint for the
    PyTorch rows, the benchmark input size and the host."""

    files: list[Path]
    kinds: dict[Path, str]
    metas: dict[Path, ModelMeta]
    checkpoint: str | None
    size: tuple[int, int]
    host: HostInfo
    emulated: bool
    cpu_skip: str | None  #: why every CPU row is skipped (None: CPU rows run)
    gpu_skip: str | None  #: why every GPU row is skipped (None: GPU rows run)

    def of_kind(self, kind: str) -> list[Path]:
        return [p for p in self.files if self.kinds[p] == kind]


NO_CHECKPOINT = ("no checkpoint given (and no source_checkpoint in the exported metadata exists here); "
                 "pass best.pt for the PyTorch rows")


def plan_rows(artifacts: list[str], device: str = "auto", input_size: tuple[int, int] | None = None,
              emulated: bool = False, host: HostInfo | None = None) -> Plan:
    """Plan the benchmark matrix.

    Args:
        artifacts: checkpoints, TorchScript, ONNX, OpenVINO IRs, ``.pt2``, engines and/or export folders.
        device: ``cpu`` (CPU rows only), ``cuda`` (GPU rows only), ``auto`` (CPU rows, plus GPU rows
            when CUDA is available).
        input_size: (H, W) to benchmark at (None: the metadata's).
        emulated: also plan the rows of precisions the host only emulates (PyTorch bf16 on a CPU
            without bf16 arithmetic or a GPU below compute capability 8.0); by default they are
            ``skipped`` with the cost as the reason.
        host: the host to plan for (default :func:`unet_edge.host.probe_host`): its CUDA devices,
            ONNX Runtime providers, bf16 support and INT8 kernel family.

    Returns:
        a :class:`Plan`; the baseline (PyTorch eager FP32) is the first row of its device group.

    Raises:
        ArtifactError: unknown/corrupt artifacts, artifacts of different models, two checkpoints.
        BackendUnavailableError: ``device="cuda"`` without a CUDA device.
    """
    host = host or probe_host()
    _check_device(device, host)
    files = expand_artifacts(artifacts)
    kinds = {p: artifact_kind(p) for p in files}
    metas = {p: read_meta(p) for p in files}
    _same_model(metas)
    checkpoint, notes = _find_checkpoint(files, kinds, metas)
    meta = metas[Path(checkpoint)] if checkpoint else next(iter(metas.values()))
    size = tuple(input_size) if input_size else tuple(meta.input_size)
    src = _Inputs(files, kinds, metas, checkpoint, size, host, emulated, cpu_skip=_cpu_skip(device),
                  gpu_skip=_gpu_skip(device, host))
    pt2 = _pt2_rows(src)
    rows = (_pytorch_cpu_rows(src) + _torchscript_rows(src) + [r for r in pt2 if r.device == "cpu"]
            + _onnx_cpu_rows(src) + _openvino_rows(src)
            + _pytorch_cuda_rows(src) + [r for r in pt2 if r.device == "cuda"] + _onnx_cuda_rows(src)
            + _tensorrt_rows(src))
    _dedupe(rows)
    if not any(r.status == "planned" for r in rows):
        notes.append("no row can run on this host")
    return Plan(rows=rows, meta=meta, checkpoint=checkpoint, input_size=size, notes=notes,
                artifacts=[str(p) for p in files])


def _check_device(device: str, host: HostInfo) -> None:
    if device not in ("cpu", "cuda", "auto"):
        raise BackendUnavailableError(f"--device must be cpu, cuda or auto; got {device!r}")
    if device == "cuda" and not host.cuda_available:
        raise BackendUnavailableError("--device cuda but this PyTorch has no CUDA device "
                                      "(torch.cuda.is_available() is False); use --device cpu or auto")


def _cpu_skip(device: str) -> str | None:
    return None if device in ("cpu", "auto") else "not requested (--device cuda)"


def _gpu_skip(device: str, host: HostInfo) -> str | None:
    if not host.cuda_available:
        return "no CUDA device (torch.cuda.is_available() is False)"
    if device not in ("cuda", "auto"):
        return "not requested (--device cpu)"
    return None


def _find_checkpoint(files: list[Path], kinds: dict, metas: dict) -> tuple[str | None, list[str]]:
    """(the checkpoint of the PyTorch rows, notes): the one given, else an existing
    ``source_checkpoint`` of the exported metadata (its metadata is added to ``metas``, checked
    to be the same model). Raises ArtifactError for more than one checkpoint."""
    notes: list[str] = []
    ckpts = [p for p in files if kinds[p] == "checkpoint"]
    if len(ckpts) > 1:
        raise ArtifactError(f"{len(ckpts)} checkpoints given ({', '.join(map(str, ckpts))}); give one: the "
                            "benchmark compares the artifacts of one trained model")
    checkpoint = str(ckpts[0]) if ckpts else None
    sources = {str(m.extra.get("source_checkpoint")) for p, m in metas.items()
               if kinds[p] != "checkpoint" and m.extra.get("source_checkpoint")}
    if checkpoint is None:
        existing = [s for s in sorted(sources) if Path(s).is_file()]
        if existing and not _torch_available():
            notes.append(f"PyTorch is not installed: no PyTorch rows (the recorded source checkpoint {existing[0]} needs it)")
        elif existing:
            checkpoint = existing[0]
            notes.append(f"PyTorch rows use {checkpoint}, the source_checkpoint recorded in the exported metadata")
            metas[Path(checkpoint)] = read_meta(checkpoint)
            _same_model(metas)
    elif sources and all(Path(s).resolve() != Path(checkpoint).resolve() for s in sources):
        notes.append(f"the exported artifacts record source checkpoint(s) {', '.join(sorted(sources))}, not "
                     f"{checkpoint}: argmax agreement shows whether the weights match")
    return checkpoint, notes


def _static_shape(r: RowSpec, shape: list, size) -> str | None:
    """Apply a file's (N, C, H, W) input shape to row ``r`` (static batch, or a "dynamic batch" note);
    return why the row cannot run at the benchmark ``size`` (a static H x W that differs), else None."""
    if len(shape) != 4:
        return None
    b, h, w = shape[0], shape[2], shape[3]
    if isinstance(b, int) and b > 0:
        r.static_batch = b
    else:
        r.notes.append("dynamic batch")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 and (h, w) != tuple(size):
        return f"static input {h}x{w}, benchmark input {size[0]}x{size[1]}"
    return None


def _torch_available() -> bool:
    """Whether PyTorch can be imported here (a runtime-only install has no PyTorch rows)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:
        return False


def _pytorch_cpu_rows(src: _Inputs) -> list[RowSpec]:
    """PyTorch eager FP32 and BF16 on the CPU (BF16 skipped where only emulated, unless asked)."""
    host, rows = src.host, []
    for prec in ("fp32", "bf16"):
        r = RowSpec("pytorch", prec, "cpu", src.checkpoint, load_precision=prec)
        if src.cpu_skip:
            r.status, r.reason = "skipped", src.cpu_skip
        elif not src.checkpoint:
            r.status, r.reason = "skipped", NO_CHECKPOINT
        elif prec == "bf16" and not host.native_bf16 and not src.emulated:
            r.status, r.reason = "skipped", f"not timed: {EMULATED_BF16_COST} (--emulated times it anyway)"
        elif prec == "bf16":
            r.notes.append("autocast bf16" + ("" if host.native_bf16 else
                                              f"; emulated on this {host.cpu_class} CPU (no bf16 arithmetic): slow"))
        rows.append(r)
    return rows


def _torchscript_rows(src: _Inputs) -> list[RowSpec]:
    """One TorchScript FP32 row per file (skipped when traced at another size), or one skipped row."""
    size, rows = src.size, []
    for p in src.of_kind("torchscript"):
        r = RowSpec("torchscript", "fp32", "cpu", str(p), load_precision="fp32")
        traced = tuple(src.metas[p].input_size)
        if src.cpu_skip:
            r.status, r.reason = "skipped", src.cpu_skip
        elif traced != size:
            r.status, r.reason = "skipped", (f"traced at {traced[0]}x{traced[1]}, "
                                             f"benchmark input {size[0]}x{size[1]}")
        rows.append(r)
    if not rows:
        rows.append(RowSpec("torchscript", "fp32", "cpu", status="skipped",
                            reason=src.cpu_skip or "no TorchScript given (unet-edge export writes model.ts)"))
    return rows


def _pt2_rows(src: _Inputs) -> list[RowSpec]:
    """One FP32 row per ``.pt2`` (torch.export program, AOTInductor package) on the device it was
    made for (``extra.pt2.device``), skipped when the benchmark size is not one its graph serves or,
    for a CPU package, when this host cannot run it (:func:`unet_edge.pt2_archive.host_can_run_aoti`);
    one skipped AOTInductor row when no package is given."""
    rows = []
    torch_missing = None if _torch_available() else "PyTorch not installed (a .pt2 runs in PyTorch)"
    for kind, backend in (("exported_program", "torch.export"), ("aoti", "aotinductor")):
        for p in src.of_kind(kind):
            meta = src.metas[p]
            info = meta.extra.get("pt2") if isinstance(meta.extra.get("pt2"), dict) else {}
            device = "cuda" if str(info.get("device", "cpu")).startswith("cuda") else "cpu"
            r = RowSpec(backend, "fp32", device, str(p))
            reason = (src.cpu_skip if device == "cpu" else src.gpu_skip) or torch_missing or _pt2_size_reason(src, p)
            if not reason and kind == "aoti" and device == "cpu":
                try:
                    host_can_run_aoti(aoti_package_metadata(p), meta, p)
                except (BackendUnavailableError, ArtifactError) as e:
                    reason = str(e)
            if reason:
                r.status, r.reason = "skipped", reason
            rows.append(r)
    if not src.of_kind("aoti"):
        rows.append(RowSpec("aotinductor", "fp32", "cpu", status="skipped",
                            reason=src.cpu_skip or f"no AOTInductor package given (unet-edge export --pt2 writes "
                                                   f"{artifact('pt2_aoti_cpu').file})"))
    return rows


def _pt2_size_reason(src: _Inputs, path: Path) -> str | None:
    """Why the benchmark size is not one the ``.pt2`` graph serves (None: it is)."""
    rule = stored_shape_rule(src.metas[path], path)
    if rule_accepts(rule, src.size):
        return None
    h, w = rule["height"], rule["width"]
    return (f"benchmark input {src.size[0]}x{src.size[1]} is not served: exported for H = {h['multiple']}*k + "
            f"{h['offset']} in [{h['min']}, {h['max']}], W = {w['multiple']}*k + {w['offset']} in [{w['min']}, {w['max']}]")


def _openvino_rows(src: _Inputs) -> list[RowSpec]:
    """One CPU row per OpenVINO IR (INT8 ones with their quantization variant), skipped where
    openvino is not installed or the IR's static H x W is not the benchmark size; a skipped row for
    each of :data:`OPENVINO_PRECISIONS` without an IR."""
    irs = src.of_kind("openvino")
    missing = None if importlib.util.find_spec("openvino") else OPENVINO_MISSING
    rows = []
    for p in irs:
        m = src.metas[p]
        variant = m.extra.get("quantization", {}).get("variant", "") if m.precision == "int8" else ""
        r = RowSpec("openvino", m.precision, "cpu", str(p), variant=variant)
        reason = src.cpu_skip or missing
        try:
            shape = ir_input_shape(p)
        except ArtifactError as e:
            shape = []
            reason = reason or str(e)
        reason = reason or _static_shape(r, shape, src.size)
        weights = ir_weights_path(p)
        if weights.is_file():
            r.notes.append(f"size is the .xml; weights {weights.name} {weights.stat().st_size / 1e6:.1f} MB")
        if reason:
            r.status, r.reason = "skipped", reason
        rows.append(r)
    have = {src.metas[p].precision for p in irs}
    for prec in OPENVINO_PRECISIONS:
        if prec not in have:
            rows.append(RowSpec("openvino", prec, "cpu", status="skipped",
                                reason=src.cpu_skip or f"no OpenVINO {prec.upper()} IR given (unet-edge export "
                                                       "--openvino --calib-data DIR)"))
    return rows


def _onnx_cpu_rows(src: _Inputs) -> list[RowSpec]:
    """ONNX Runtime rows on the CPU; a CPU INT8 file made for another INT8 kernel family is noted."""
    rows = _onnx_rows(src.of_kind("onnx"), src.metas, "cpu", src.size, src.cpu_skip)
    for r in rows:
        note = int8_host_note(src.metas[Path(r.path)], src.host) if r.path else None
        if note:
            r.notes.append(note)
    return rows


def _pytorch_cuda_rows(src: _Inputs) -> list[RowSpec]:
    """PyTorch eager FP32, FP16 and BF16 on the GPU (BF16 below compute capability 8.0 is emulated)."""
    cc = src.host.cuda_capability(0)
    cc_name = f"compute capability {cc[0]}.{cc[1]}" if cc else "unknown compute capability"
    bf16_native = cuda_native_bf16(cc)
    rows = []
    for prec in ("fp32", "fp16", "bf16"):
        r = RowSpec("pytorch", prec, "cuda", src.checkpoint, load_precision=prec)
        if src.gpu_skip:
            r.status, r.reason = "skipped", src.gpu_skip
        elif not src.checkpoint:
            r.status, r.reason = "skipped", NO_CHECKPOINT
        elif prec == "bf16" and not bf16_native and not src.emulated:
            r.status, r.reason = "skipped", (f"not timed: {cc_name} has no bf16 tensor cores (from 8.0), so bf16 "
                                             "autocast is emulated and slow (--emulated times it anyway)")
        elif prec != "fp32":
            r.notes.append(f"autocast {prec}" + ("" if prec == "fp16" or bf16_native else f"; emulated on {cc_name}: slow"))
        rows.append(r)
    return rows


def _onnx_cuda_rows(src: _Inputs) -> list[RowSpec]:
    """ONNX Runtime rows on the GPU, only for the files given and only when GPU rows run."""
    onnx_files = src.of_kind("onnx")
    if src.gpu_skip or not onnx_files:
        return []
    if "CUDAExecutionProvider" not in src.host.ort_providers:
        return [RowSpec("onnxruntime", "fp32", "cuda", status="skipped",
                        reason="ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu)")]
    return [r for r in _onnx_rows(onnx_files, src.metas, "cuda", src.size, None) if r.path]


def _tensorrt_rows(src: _Inputs) -> list[RowSpec]:
    """One row per engine given, and a skipped row for each of :data:`TRT_PRECISIONS` without one."""
    engines = src.of_kind("engine")
    blockers = [x for x in (src.gpu_skip, None if tensorrt_installed() else "TensorRT not installed") if x]
    rows = []
    for p in engines:
        r = RowSpec("tensorrt", src.metas[p].precision, "cuda", str(p))
        if blockers:
            r.status, r.reason = "skipped", "; ".join(blockers)
        rows.append(r)
    have = {src.metas[p].precision for p in engines}
    for prec in TRT_PRECISIONS:
        if prec not in have:
            rows.append(RowSpec("tensorrt", prec, "cuda", status="skipped",
                                reason="; ".join(blockers + [f"no {prec.upper()} engine given"])))
    return rows


def _onnx_rows(onnx_files: list[Path], metas: dict, device: str, size: tuple[int, int], skip: str | None) -> list[RowSpec]:
    rows = []
    for p in onnx_files:
        m = metas[p]
        r = RowSpec("onnxruntime", m.precision, device, str(p),
                    variant=m.extra.get("quantization", {}).get("variant", ""))
        try:
            shape = onnx_input_shape(p)
        except Exception as e:  # noqa: BLE001 - reported as a failed row at load time anyway
            shape = []
            r.notes.append(f"cannot read input shape ({type(e).__name__})")
        mismatch = _static_shape(r, shape, size)
        if mismatch:
            r.status, r.reason = "skipped", mismatch
        if skip:
            r.status, r.reason = "skipped", skip
        rows.append(r)
    have = {metas[p].precision for p in onnx_files}
    for prec in ONNX_PRECISIONS:
        if prec not in have:
            hint = {"fp32": "unet-edge export writes model_fp32.onnx", "fp16": "unet-edge export --fp16",
                    "int8": "unet-edge export --int8 --calib-data DIR"}[prec]
            rows.append(RowSpec("onnxruntime", prec, device, status="skipped",
                                reason=skip or f"no {prec.upper()} ONNX given ({hint})"))
    order = {p: i for i, p in enumerate(ONNX_PRECISIONS)}
    rows.sort(key=lambda r: order.get(r.precision, 9))
    return rows


def _dedupe(rows: list[RowSpec]) -> None:
    """Give rows sharing backend/precision/device a variant: ``dynamic``/``static`` or the file stem."""
    groups: dict[str, list[RowSpec]] = {}
    for r in rows:
        groups.setdefault(r.id, []).append(r)
    for rs in groups.values():
        if len(rs) < 2:
            continue
        kinds = ["dynamic" if (r.path and r.static_batch is None and r.backend == "onnxruntime") else "static" for r in rs]
        if len(set(kinds)) == len(rs):
            for r, k in zip(rs, kinds):
                r.variant = k
        else:
            for r in rs:
                r.variant = Path(r.path).stem if r.path else "missing"
