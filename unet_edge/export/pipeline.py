"""The export stage: checkpoint -> TorchScript + ONNX FP32 [+ FP16] [+ INT8 Q/DQ for TensorRT, its
calibration cache, and INT8 U8S8 for ONNX Runtime on CPU] [+ OpenVINO FP32 and NNCF INT8 IRs]
[+ torch.export program and AOTInductor CPU package], with parity against the PyTorch model for
every artifact and optional validation mIoU per precision.

The ONNX graphs are exported from :func:`unet_edge.export.rewrite.for_deployment` (2x2 transposed
convolutions as 1x1 conv + DepthToSpace, numerically the same); the parity check compares against
the original trained module.

The folder is built beside ``OUT`` and replaces it in one step (:mod:`unet_edge.transaction`), and
every artifact records the checkpoint it comes from (:mod:`unet_edge.provenance`)."""
from __future__ import annotations

import functools
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..artifacts import model_from_checkpoint, read_meta
from ..data.layouts import load_dataset
from ..errors import ArtifactError, DataError, HostMismatchWarning, Int8AccuracyError, UnetEdgeError, UsageError
from ..evaluate import evaluate
from ..formats import (CALIB_METHODS, CPU_SCHEMES, CPU_TARGETS, DEFAULT_CALIB_IMAGES, DEFAULT_CALIB_METHOD,
                       ENGINE_SUFFIXES, EXPORT_REPORT, artifact, export_files)
from ..host import probe_host, resolve_threads
from ..io_utils import sha256, write_json_atomic
from ..openvino_ir import IR_SUFFIX, WEIGHTS_SUFFIX, ir_weights_path, read_ir_meta
from ..preprocess import preprocess_batch
from ..provenance import SHA_KEY, source_record
from ..pt2_archive import MARCH_FLAGS, shape_rule
from ..runtime.openvino_backend import OpenVinoBackend
from ..runtime.ort_backend import OrtBackend, is_tensorrt_qdq
from ..runtime.pt2_backend import AotiBackend, ExportedProgramBackend
from ..runtime.torch_backend import TorchBackend, TorchScriptBackend
from ..transaction import StagedFolder
from ..zoo import resolve_artifact
from . import openvino as ov_export
from .accuracy import MAX_CLASS_DROP, MAX_MIOU_DROP, check_int8
from .fp16 import export_fp16
from .int8 import cpu_target, export_int8
from .onnx_export import export_onnx, parity
from .pt2 import check_aoti_toolchain, compile_aoti, export_program, save_exported_program
from .pt2 import parity as pt2_parity  # onnx_export's parity (logits vs logits) is the other one
from .rewrite import for_deployment
from .torchscript import export_torchscript, load_torchscript


@dataclass
class ExportOptions:
    """Options of :func:`export_all`; see ``unet-edge export --help``."""

    fp16: bool = False
    int8: bool = False
    calib_data: str | None = None
    calib_images: int = DEFAULT_CALIB_IMAGES
    calib_method: str = DEFAULT_CALIB_METHOD
    data_format: str | None = None
    dynamic: bool = False
    parity_images: int = 4
    eval_data: str | None = None
    eval_split: str = "val"
    eval_limit: int | None = None
    threads: int = 0
    int8_target: str | None = None
    int8_cpu_scheme: str | None = None
    allow_int8_drop: bool = False
    max_int8_drop: float = MAX_MIOU_DROP
    max_int8_class_drop: float = MAX_CLASS_DROP
    openvino: bool = False
    openvino_preset: str = ov_export.PRESETS[0]
    pt2: bool = False
    pt2_march: str = "native"
    progress: bool = True

    def validate(self) -> "ExportOptions":
        """Check option values and combinations before anything is exported.

        Raises:
            UsageError: ``int8`` or ``openvino`` without ``calib_data``; an unknown ``calib_method``,
                ``int8_target``, ``int8_cpu_scheme``, ``openvino_preset`` or ``pt2_march``; a count below 1.
        """
        if self.int8 and not self.calib_data:
            raise UsageError("--int8 needs --calib-data DIR (a dataset or image folder to calibrate on)")
        if self.openvino and not self.calib_data:
            raise UsageError("--openvino needs --calib-data DIR: the NNCF INT8 IR calibrates on the same images as "
                             "the ONNX INT8 files")
        for flag, value, known in (("--calib-method", self.calib_method, CALIB_METHODS),
                                   ("--int8-target", self.int8_target, CPU_TARGETS),
                                   ("--int8-cpu-scheme", self.int8_cpu_scheme, CPU_SCHEMES),
                                   ("--openvino-preset", self.openvino_preset, ov_export.PRESETS),
                                   ("--pt2-march", self.pt2_march, ("native", *MARCH_FLAGS))):
            if value is not None and value not in known:
                raise UsageError(f"unknown {flag} {value!r}; choose one of {', '.join(known)}")
        for flag, value in (("--calib-images", self.calib_images), ("parity images", self.parity_images),
                            ("--eval-limit", self.eval_limit if self.eval_limit is not None else 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{flag} must be an integer >= 1, got {value!r}")
        return self


#: INT8 report keys -> which run of the file the accuracy check gates (see :mod:`.accuracy`).
INT8_GATES = {"onnx_int8": "fake_quant", "onnx_int8_cpu": "kernel"}
#: OpenVINO IR report keys; the INT8 IR is checked against the FP32 IR (its kernel run: no fake-quant run).
OPENVINO_KEYS = ov_export.KEYS


def _parity_batch(meta, opts: ExportOptions) -> np.ndarray:
    """Real images when a dataset is at hand (val split of eval/calib data), else a fixed random batch."""
    for root in (opts.eval_data, opts.calib_data, meta.dataset.get("path")):
        if root and Path(root).is_dir():
            try:
                ds = load_dataset(root, "val", opts.data_format)
            except DataError:
                continue
            n = min(opts.parity_images, len(ds))
            return preprocess_batch([ds[i][0] for i in range(n)], meta)
    return np.random.default_rng(0).standard_normal((opts.parity_images, 3, *meta.input_size)).astype(np.float32)


def export_all(checkpoint: str | Path, out_dir: str | Path, opts: ExportOptions, log: Callable[[str], None] = print,
               finish: Callable[[Path, dict], None] | None = None) -> dict:
    """Export a checkpoint into ``out_dir`` (file names and report keys from
    :data:`unet_edge.formats.ARTIFACTS`) and return the report (also written to
    :data:`~unet_edge.formats.EXPORT_REPORT`): per artifact its path, size MB, sha256, parity vs
    PyTorch FP32 (max abs logit error, argmax agreement), the host it was made on and, with
    ``eval_data``, validation metrics per precision plus the INT8 accuracy check
    (``int8_check``: INT8 vs FP32 per class, and the fake-quant run that separates scale and
    kernel effects, :mod:`unet_edge.export.accuracy`).

    Opt-in: ``openvino`` adds the OpenVINO FP32 IR and the NNCF INT8 IR (scored like the ONNX files
    with ``eval_data``; the INT8 IR is checked against the FP32 IR, its kernel run gated);
    ``pt2`` adds the torch.export program and the AOTInductor CPU package (parity, ``export_s``,
    ``compile_s``).

    Every artifact records the checkpoint it comes from (:func:`unet_edge.provenance.source_record`:
    ``extra.source_checkpoint`` and ``extra.source_checkpoint_sha256``); so does the report.

    The export is transactional (:class:`~unet_edge.transaction.StagedFolder`): everything is made in
    ``.<out>.staging-<pid>`` beside ``out_dir``, the report is written there last, and the folder
    then replaces ``out_dir`` in one step, so ``out_dir`` holds either the previous export or the
    complete new one, even after a ``kill -9``. A failed export leaves ``out_dir`` as it was and
    keeps the attempt (files and a report with ``status: failed``) in ``<out>.failed/``, named in
    the error. ``out_dir`` is locked against a second export meanwhile.

    Args:
        finish: called as ``finish(staging_folder, report)`` once every artifact is made and
            checked, before the report is written and the folder is put in place: it may write
            elsewhere (e.g. a Jetson bundle from the staged files) and add keys to ``report``; an
            exception from it fails the export.

    Raises:
        ArtifactError: bad checkpoint. ExportError: export/quantization/compilation failure.
        BackendUnavailableError: ``openvino`` without openvino/nncf installed, ``pt2`` without a C++
        compiler (both checked before anything is made).
        Int8AccuracyError: an INT8 file lost more than ``max_int8_drop`` mIoU points or
        ``max_int8_class_drop`` points on a class (unless ``allow_int8_drop``); the report is kept
        in ``<out>.failed/``. DataError: bad calibration/eval data. UsageError: bad options
        (:meth:`ExportOptions.validate`, checked first); ``out_dir`` is a file, a folder that is
        not an export's (or holds files an export did not write), or is being written by another
        export.
    """
    opts.validate()
    checkpoint = resolve_artifact(checkpoint)  # a reference model's name works too
    out = Path(out_dir)
    report: dict = {}
    with StagedFolder(out, marker=EXPORT_REPORT, owns=owned_by_export, log=log, what="export") as stage:
        try:
            _export_into(stage.path, out, checkpoint, opts, report, log)
            failed = [c for c in report.get("int8_check", {}).values() if isinstance(c, dict) and c.get("passed") is False]
            if failed and not opts.allow_int8_drop:
                raise Int8AccuracyError(" | ".join(c["message"] for c in failed))
            if finish is not None:
                finish(stage.path, report)
        except Exception as e:
            if any(stage.path.iterdir()):  # keep a report beside what was made, for inspection
                report.update(status="failed", error=f"{type(e).__name__}: {e}")
                _write_report(report, stage.path, stage.failed_path)
            kept = stage.keep_failed()
            if kept is None or not isinstance(e, UnetEdgeError):
                if kept is not None:
                    log(f"  the failed export is kept in {kept}/ ({out} is unchanged)")
                raise
            raise _with_note(e, f"{out} is unchanged; the failed export and its report are kept in {kept}/ "
                                f"({kept / EXPORT_REPORT})") from e
        report["status"] = "ok"
        final = _write_report(report, stage.path, out)
        stage.commit()
    return final


def owned_by_export(name: str) -> bool:
    """True for top-level names an export folder may hold: the files of
    :func:`unet_edge.formats.export_files` and the report, their ``.json`` sidecars, the ``.bin``
    weights beside an OpenVINO IR, TensorRT engines built from it (and their sidecars), hidden
    temporaries."""
    base = name[:-5] if name.endswith(".json") else name
    known = (*export_files(), EXPORT_REPORT)
    ir_weights = name.endswith(WEIGHTS_SUFFIX) and Path(name).with_suffix(IR_SUFFIX).name in known
    return (name.startswith(".") or name in known or base in known or ir_weights
            or Path(base).suffix.lower() in ENGINE_SUFFIXES)


def _write_report(report: dict, stage: Path, dest: Path) -> dict:
    """Write ``report`` into ``stage`` with its artifact paths as they will be under ``dest``; returns that copy."""
    final = json.loads(json.dumps(report))
    final["export_dir"] = str(dest)
    for entry in final.get("artifacts", {}).values():
        if isinstance(entry, dict) and "path" in entry:
            entry["path"] = str(dest / Path(entry["path"]).name)
    write_json_atomic(stage / EXPORT_REPORT, final)
    return final


def _with_note(e: UnetEdgeError, note: str) -> UnetEdgeError:
    """``e`` with ``note`` appended to its message (same type, so the same exit code)."""
    try:
        return type(e)(f"{e}; {note}")
    except Exception:  # an error type with another constructor: keep it as it is
        return e


def _export_into(out: Path, final: Path, checkpoint: str | Path, opts: ExportOptions, report: dict, log) -> None:
    """Make every artifact in ``out`` (the staging folder) and fill ``report`` (paths under ``out``)."""
    if opts.openvino:
        ov_export.check_installed()  # before any work: a missing package is no reason to export twice
    if opts.pt2:
        check_aoti_toolchain()
    host = probe_host()
    threads = resolve_threads(opts.threads)
    torch.set_num_threads(threads)
    source = source_record(checkpoint)
    model, meta, _ = model_from_checkpoint(checkpoint)
    if sha256(checkpoint) != source[SHA_KEY]:
        raise ArtifactError(f"{checkpoint} changed while it was being read (is a training still writing it?); "
                            "export it again once it is finished")
    meta = meta.with_(extra={**source, "export_host": {"cpu_model": host.cpu_model, "cpu_class": host.cpu_class,
                                                       "int8_family": host.int8_family}})
    batch = _parity_batch(meta, opts)
    with torch.inference_mode():
        ref = model(torch.from_numpy(batch)).numpy()

    report.update({"checkpoint": str(checkpoint), **source, "artifacts": {}, "host": host.to_dict(), "threads": threads})
    scorer = _Scorer(opts, threads, meta) if opts.eval_data else None

    def record(key: str, path: Path, backend) -> None:
        logits = np.concatenate([backend.infer(batch[i : i + 1]) for i in range(len(batch))])
        size = path.stat().st_size
        entry = {"path": str(path), "size_mb": 0.0, "sha256": sha256(path), "parity_vs_pytorch": parity(ref, logits),
                 "backend": backend.label}
        if path.suffix == IR_SUFFIX:  # an IR is two files: the size counts both, the weights get their own hash
            weights = ir_weights_path(path)
            size += weights.stat().st_size
            entry["weights"] = {"file": weights.name, "sha256": sha256(weights)}
        entry["size_mb"] = round(size / 1e6, 3)
        report["artifacts"][key] = entry
        p = entry["parity_vs_pytorch"]
        log(f"  {key:<12} {path.name:<18} {entry['size_mb']:7.2f} MB  max|dlogit| {p['max_abs_error']:.2e}  "
            f"argmax agreement {p['argmax_agreement'] * 100:.3f}%")

    log(f"exporting {checkpoint} -> {final}/ (input {meta.input_size[0]}x{meta.input_size[1]}, parity on {len(batch)} "
        f"images, {threads} threads, host {host.cpu_class})")
    def file(key: str) -> Path:
        return out / artifact(key).file

    ts = export_torchscript(model, meta, file("torchscript"))
    record("torchscript", ts, TorchScriptBackend(load_torchscript(ts), meta))
    if opts.pt2:
        _pt2(model, meta, file("pt2_exported"), file("pt2_aoti_cpu"), opts, threads, record, report)
    fp32 = export_onnx(for_deployment(model), meta, file("onnx_fp32"), dynamic=opts.dynamic)
    record("onnx_fp32", fp32, OrtBackend(str(fp32), read_meta(fp32), threads=threads))
    if opts.fp16:
        fp16 = export_fp16(fp32, meta, file("onnx_fp16"))
        record("onnx_fp16", fp16, OrtBackend(str(fp16), read_meta(fp16), threads=threads))
    if opts.int8:
        cache = file("calib_cache")
        int8 = export_int8(fp32, meta, file("onnx_int8"), opts.calib_data, opts.calib_images, opts.calib_method,
                           opts.data_format, cache_path=cache, scheme="tensorrt")
        int8_meta = read_meta(int8)
        report["qdq"] = int8_meta.extra["quantization"]["qdq"]
        record("onnx_int8", int8, OrtBackend(str(int8), int8_meta, threads=threads))
        report["artifacts"]["calib_cache"] = {"path": str(cache), "size_mb": round(cache.stat().st_size / 1e6, 3),
                                              "sha256": sha256(cache)}
        int8_cpu = _cpu_int8(fp32, meta, file("onnx_int8_cpu"), opts, report, scorer, log)
        cpu_meta = read_meta(int8_cpu)
        record("onnx_int8_cpu", int8_cpu, OrtBackend(str(int8_cpu), cpu_meta, threads=threads))
    if opts.openvino:
        ov32 = ov_export.convert_fp32(fp32, file("openvino_fp32"))
        record("openvino_fp32", ov32, OpenVinoBackend(ov32, read_ir_meta(ov32), threads=threads))
        ov8 = ov_export.quantize_int8(ov32, file("openvino_int8"), opts.calib_data, opts.calib_images, opts.data_format,
                                      preset=opts.openvino_preset)
        record("openvino_int8", ov8, OpenVinoBackend(ov8, read_ir_meta(ov8), threads=threads))

    if opts.eval_data:
        _evaluate_all(model, meta, report, opts, scorer, log)
    elif opts.int8 or opts.openvino:
        report["int8_check"] = {"status": "not run", "reason": "no evaluation data (--no-eval)"}
        log("  warning: INT8 accuracy against FP32 was not checked (no evaluation data)")


def _pt2(model, meta, ep_file: Path, aoti_file: Path, opts: ExportOptions, threads: int, record, report: dict) -> None:
    """The ExportedProgram and the AOTInductor CPU package (``--pt2``), each recorded with its parity;
    the report entries add ``export_s`` / ``compile_s`` (seconds), the accepted ``shapes``, the
    ExportedProgram's parity at a second accepted size and batch (``parity_other_size``: the
    dynamic dims work) and the package's ``march``."""
    rule = shape_rule(meta)
    t0 = time.perf_counter()
    ep = export_program(model, meta)
    ep_path = save_exported_program(ep, meta, ep_file, rule)
    export_s = round(time.perf_counter() - t0, 2)
    backend = ExportedProgramBackend(ep_path, threads=threads)
    record("pt2_exported", ep_path, backend)
    other = tuple(r["min"] + r["multiple"] for r in (rule["height"], rule["width"]))
    other_parity = pt2_parity(model, lambda x: torch.from_numpy(backend.infer(x.numpy())), meta, batch=3, size=other)
    report["artifacts"]["pt2_exported"].update(export_s=export_s, shapes=rule, parity_other_size=other_parity)
    t0 = time.perf_counter()
    pkg = compile_aoti(ep, meta, aoti_file, march=opts.pt2_march, rule=rule)
    compile_s = round(time.perf_counter() - t0, 1)
    record("pt2_aoti_cpu", pkg, AotiBackend(pkg, threads=threads))
    report["artifacts"]["pt2_aoti_cpu"].update(compile_s=compile_s, march=opts.pt2_march)


class _Scorer:
    """Metrics of ONNX files on the eval split (loaded once), each (file, optimize) scored once."""

    def __init__(self, opts: ExportOptions, threads: int, meta):
        self.opts, self.threads, self.meta = opts, threads, meta
        self.ds = load_dataset(opts.eval_data, opts.eval_split, opts.data_format)
        self._done: dict = {}

    def __call__(self, path, optimize: bool = True) -> dict:
        """:func:`~unet_edge.evaluate.evaluate` metrics of ``path`` (``optimize=False``: fake-quant)."""
        key = (str(path), optimize)
        if key not in self._done:
            meta = read_meta(path)
            with warnings.catch_warnings():
                if is_tensorrt_qdq(meta):
                    # its CPU-kernel run is scored on purpose: the INT8 check reports that effect apart
                    # from the scales' (fake-quant), so the runtime's warning would only repeat it
                    warnings.simplefilter("ignore", HostMismatchWarning)
                backend = OrtBackend(str(path), meta, threads=self.threads, optimize=optimize)
            name = Path(path).name + ("" if optimize else " fake-quant")
            self._done[key] = self.evaluate(backend.infer, f"mIoU {name}")
        return self._done[key]

    def openvino(self, path) -> dict:
        """:func:`~unet_edge.evaluate.evaluate` metrics of an OpenVINO IR (f32 inference hint), scored once."""
        key = (str(path), "openvino")
        if key not in self._done:
            with OpenVinoBackend(path, threads=self.threads) as backend:
                self._done[key] = self.evaluate(backend.infer, f"mIoU {Path(path).name}")
        return self._done[key]

    def evaluate(self, infer, description: str) -> dict:
        return evaluate(infer, self.ds, self.meta, limit=self.opts.eval_limit, progress=self.opts.progress,
                        description=description)

    def forget(self, path) -> None:
        """Drop the scores of ``path`` (the file is about to be overwritten)."""
        self._done = {k: v for k, v in self._done.items() if k[0] != str(path)}


def _cpu_int8(fp32: Path, meta, path: Path, opts: ExportOptions, report: dict, scorer: _Scorer | None, log) -> Path:
    """The CPU INT8 file: the target family's schemes (:data:`~unet_edge.formats.CPU_TARGETS`)
    are tried fastest first, and the next one is made only when the INT8 check on the eval split
    fails (each try is logged and listed in ``report["int8_cpu_tries"]``); without eval data the
    first is kept (the check then says it did not run)."""
    target = cpu_target(opts.int8_target)
    schemes = (opts.int8_cpu_scheme,) if opts.int8_cpu_scheme else CPU_TARGETS[target]["schemes"]
    tries = report.setdefault("int8_cpu_tries", [])
    for i, scheme in enumerate(schemes):
        export_int8(fp32, meta, path, opts.calib_data, opts.calib_images, opts.calib_method, opts.data_format,
                    scheme="cpu", target=target, cpu_scheme=scheme)
        q = read_meta(path).extra["quantization"]
        log(f"  CPU INT8 for {target} CPUs: {scheme}, {q['weights']} ({q['target_why']})")
        if scorer is None or i == len(schemes) - 1:
            tries.append({"scheme": scheme, "checked": False})
            return path
        c = check_int8("onnx_int8_cpu", scorer(fp32), scorer(path), scorer(path, optimize=False),
                       max_miou_drop=opts.max_int8_drop, max_class_drop=opts.max_int8_class_drop)
        tries.append({"scheme": scheme, "checked": True, "passed": c.passed, "miou_drop": c.miou_drop,
                      "worst_class": c.worst_class, "worst_class_drop": c.worst_class_drop})
        if c.passed:
            return path
        scorer.forget(path)  # the next try overwrites the file
        log(f"  {scheme} fails the INT8 check ({-c.miou_drop:+.2f} mIoU points, {c.worst_class} "
            f"{-c.worst_class_drop:+.1f}): trying {schemes[i + 1]}")
    return path


def _evaluate_all(model, meta, report: dict, opts: ExportOptions, scorer: _Scorer, log) -> None:
    """Score every precision on the eval split (plus fake-quant runs of the INT8 files) into
    ``report["eval"]`` and the INT8 verdicts into ``report["int8_check"]``."""
    torch_fp32 = TorchBackend(model, meta, precision="fp32")
    rows = {"pytorch_fp32": lambda: scorer.evaluate(torch_fp32.infer, "mIoU pytorch_fp32")}
    for key in ("onnx_fp32", "onnx_fp16", "onnx_int8", "onnx_int8_cpu"):
        if key in report["artifacts"]:
            path = report["artifacts"][key]["path"]
            rows[key] = functools.partial(scorer, path)
            if key in INT8_GATES:
                rows[f"{key}_fakequant"] = functools.partial(scorer, path, optimize=False)
    for key in OPENVINO_KEYS:
        if key in report["artifacts"]:
            rows[key] = functools.partial(scorer.openvino, report["artifacts"][key]["path"])
    ev = report.setdefault("eval", {})
    for key, score in rows.items():
        m = score()
        ev[key] = {k: m[k] for k in ("miou", "pixel_accuracy", "dice", "per_class_iou", "images")}
        log(f"  {opts.eval_split} mIoU {key:<22} {m['miou']:.4f}  pixel acc {m['pixel_accuracy']:.4f}")
    report["eval_split"] = opts.eval_split
    host = probe_host()
    # (INT8 key, its FP32 reference, fake-quant run or None, gated run)
    checks = [(key, "onnx_fp32", f"{key}_fakequant", gate) for key, gate in INT8_GATES.items()]
    checks.append(("openvino_int8", "openvino_fp32", None, "kernel"))
    for key, ref, fake_quant, gate in checks:
        if key not in ev:
            continue
        c = check_int8(key, ev[ref], ev[key], ev[fake_quant] if fake_quant else None, gate=gate,
                       max_miou_drop=opts.max_int8_drop, max_class_drop=opts.max_int8_class_drop)
        entry = c.to_dict()
        entry.update(host=host.cpu_class, status="passed" if c.passed else "failed", reference=ref,
                     message=c.message(Path(report["artifacts"][key]["path"]).name, opts.eval_split, host.int8_family))
        report.setdefault("int8_check", {})[key] = entry
        verdict = "ok" if c.passed else ("FAILED (allowed by --allow-int8-drop)" if opts.allow_int8_drop else "FAILED")
        split = ("" if c.fake_quant_drop is None or c.kernel_effect is None else
                 f"; of which scales (fake-quant) {-c.fake_quant_drop:+.2f}, integer kernels {-c.kernel_effect:+.2f}")
        log(f"  INT8 check {key} vs {ref}: {verdict}: {-c.miou_drop:+.2f} mIoU points ({c.gated} run), worst class "
            f"{c.worst_class} {-c.worst_class_drop:+.1f}{split}")
