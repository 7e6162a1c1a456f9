"""OpenVINO IR export: the FP32 ONNX converted to an FP32 IR, and an INT8 IR made from it by NNCF
post-training quantization.

OpenVINO runs ONNX Runtime's Q/DQ files poorly (its CPU plugin wants FakeQuantize at the places
its own transformations fuse), so the INT8 IR is NNCF's own: ``nncf.quantize`` on the OpenVINO
FP32 model, calibrated on the same images and tensors as ONNX Runtime's INT8 files
(:func:`calibration.images.calibration_images` with the same count and seed, fed through
:func:`calibration.images.calibration_batches`, the runtime's preprocessing). NNCF inserts
FakeQuantize on activations and stores the weights as int8 constants; the CPU plugin runs those
convolutions with integer kernels (VNNI/AMX where the CPU has them).

An IR is two files: ``<name>.xml`` (graph) and ``<name>.bin`` (weights). The metadata travels in
both the IR's ``<rt_info>`` (key ``unet_edge``) and a ``<name>.xml.json`` sidecar, which
:func:`unet_edge.artifacts.read_meta` reads and which needs no OpenVINO to parse.

Needs ``pip install 'unet-edge[openvino]'`` (openvino, nncf); both are imported only when used.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
from pathlib import Path

from calibration.images import calibration_batches, calibration_images

from ..artifacts import read_meta
from ..errors import ArtifactError, BackendUnavailableError, ExportError
from ..formats import DEFAULT_CALIB_IMAGES, artifact
from ..io_utils import atomic_path, sha256, write_json_atomic
from ..metadata import METADATA_KEY, ModelMeta, sidecar_path
from ..openvino_ir import ir_weights_path, read_ir_meta

#: Table keys of the IRs (file names: :func:`unet_edge.formats.artifact` ``(key).file``; each IR
#: has a ``.bin`` and a ``.xml.json`` sidecar beside it).
KEYS = ("openvino_fp32", "openvino_int8")
#: The FP32 ONNX of an export folder.
FP32_ONNX = artifact("onnx_fp32").file
#: NNCF presets (``nncf.QuantizationPreset``): ``performance`` quantizes activations
#: symmetrically (NNCF's default for CNNs), ``mixed`` asymmetrically.
PRESETS = ("performance", "mixed")


def check_installed() -> None:
    """Raise before an export starts when OpenVINO or NNCF is missing (found, not imported).

    Raises:
        BackendUnavailableError: ``openvino`` or ``nncf`` cannot be found; the message says what to install.
    """
    missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError(f"--openvino needs {' and '.join(missing)}, which this install does not have: "
                                      "pip install 'unet-edge[openvino]'")


def _openvino():
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError("OpenVINO export needs openvino: pip install 'unet-edge[openvino]'") from e
    return ov


def save_ir(model, meta: ModelMeta, xml_path: str | Path, compress_to_fp16: bool = False) -> Path:
    """Save an ``openvino.Model`` as IR at ``xml_path`` (+ ``.bin``) with ``meta`` in its
    ``rt_info['unet_edge']`` and in the sidecar ``<xml>.json``.

    Atomic per file: both files are written under temporary names beside the destination, then
    the ``.bin`` is renamed into place before the ``.xml`` (a reader finds the graph only once its
    weights are there), then the sidecar is written. On an error the old files stay as they were.

    Args:
        model: the ``openvino.Model`` (its rt_info is updated in place).
        compress_to_fp16: ``openvino.save_model``'s option; False keeps float weights in FP32.

    Raises:
        ExportError: OpenVINO cannot serialize the model.
    """
    ov = _openvino()
    xml_path = Path(xml_path)
    model.set_rt_info(meta.to_json(), [METADATA_KEY])
    with atomic_path(xml_path) as tmp_xml:
        tmp_bin = ir_weights_path(tmp_xml)
        try:
            ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
            os.replace(tmp_bin, ir_weights_path(xml_path))
        except RuntimeError as e:
            raise ExportError(f"OpenVINO cannot save the IR {xml_path}: {str(e).strip().splitlines()[0]}") from e
        finally:
            tmp_bin.unlink(missing_ok=True)
    write_json_atomic(sidecar_path(xml_path), meta.to_dict())
    return xml_path


def ir_op_counts(model) -> dict[str, int]:
    """{op type: count} of an ``openvino.Model``, plus ``int8_constants`` (i8/u8 Constant nodes:
    the quantized weights NNCF stores)."""
    counts: dict[str, int] = {}
    for op in model.get_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in ("i8", "u8"):
            counts["int8_constants"] = counts.get("int8_constants", 0) + 1
    return dict(sorted(counts.items()))


def convert_fp32(onnx_path: str | Path, xml_path: str | Path, meta: ModelMeta | None = None) -> Path:
    """Convert an FP32 ONNX (``model_fp32.onnx`` of an export) to an FP32 IR at ``xml_path``
    (``openvino.convert_model``, saved with ``compress_to_fp16=False``).

    Input/output names, shapes (static or dynamic as exported) and dtypes (float32 NCHW in, float32
    (N, K, H, W) logits out) are the ONNX file's.

    Args:
        meta: the ONNX file's metadata (None: read from it). The IR's records
            ``extra.openvino`` (OpenVINO version, source ONNX name and sha256).

    Raises:
        ArtifactError: the ONNX file is missing or has no metadata. ExportError: conversion fails or
        the ONNX file is not FP32. BackendUnavailableError: openvino is not installed.
    """
    ov = _openvino()
    onnx_path = Path(onnx_path)
    meta = meta or read_meta(onnx_path)
    if meta.precision != "fp32":
        raise ExportError(f"{onnx_path} is a {meta.precision} ONNX; convert the FP32 one (model_fp32.onnx)")
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as e:  # OpenVINO's frontends raise several types
        raise ExportError(f"openvino.convert_model failed on {onnx_path}: {str(e).strip().splitlines()[0]}") from e
    info = {"version": ov.get_version(), "source_onnx": onnx_path.name, "source_onnx_sha256": sha256(onnx_path)}
    return save_ir(model, meta.with_(precision="fp32", extra={"openvino": info}), xml_path, compress_to_fp16=False)


class _CalibrationSource:
    """Re-iterable float32 (1, 3, H, W) calibration batches (NNCF walks them more than once)."""

    def __init__(self, paths: list[Path], meta: ModelMeta):
        self.paths, self.meta = paths, meta

    def __iter__(self):
        return calibration_batches(self.paths, self.meta, batch_size=1)

    def __len__(self) -> int:
        return len(self.paths)


def quantize_int8(fp32_xml: str | Path, xml_path: str | Path, calib_data: str | Path, calib_images: int = DEFAULT_CALIB_IMAGES,
                  data_format: str | None = None, seed: int = 0, preset: str = "performance",
                  log=None) -> Path:
    """NNCF post-training INT8 quantization of the FP32 IR ``fp32_xml`` into ``xml_path``.

    ``nncf.quantize(model, nncf.Dataset(batches), preset=..., target_device=CPU,
    subset_size=<number of images>, model_type=None)``: every calibration image is used once for the
    statistics, then NNCF's fast bias correction runs. The images and tensors are those ONNX
    Runtime's INT8 export uses for the same ``calib_data``, ``calib_images`` and ``seed``.

    Args:
        calib_data: a dataset folder (its ``train`` split) or a plain image folder.
        calib_images: number of calibration images.
        preset: ``performance`` or ``mixed`` (:data:`PRESETS`).
        log: called with NNCF's progress text (None: dropped).

    Returns:
        ``xml_path``; its metadata has ``precision`` int8 and ``extra.quantization`` (scheme
        ``openvino-nncf``, preset, images, FakeQuantize count, NNCF version).

    Raises:
        ExportError: an unknown preset, a quantization failure, or a result without FakeQuantize.
        DataError: bad calibration data. BackendUnavailableError: openvino/nncf not installed.
    """
    if preset not in PRESETS:
        raise ExportError(f"unknown NNCF preset {preset!r}; choose one of {', '.join(PRESETS)}")
    ov = _openvino()
    try:
        import nncf
    except ImportError as e:
        raise BackendUnavailableError("OpenVINO INT8 export needs nncf: pip install 'unet-edge[openvino]'") from e
    meta = read_ir_meta(fp32_xml)
    paths = calibration_images(calib_data, calib_images, data_format, seed, meta=meta)
    model = ov.Core().read_model(str(fp32_xml))
    out = io.StringIO()
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    try:
        # NNCF draws progress bars on stdout, which holds results (--json)
        nncf_logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(out):
            qmodel = nncf.quantize(model, nncf.Dataset(_CalibrationSource(paths, meta)),
                                   preset=nncf.QuantizationPreset(preset), target_device=nncf.TargetDevice.CPU,
                                   subset_size=len(paths), model_type=None)
    except Exception as e:  # NNCF raises its own and OpenVINO's types
        raise ExportError(f"NNCF quantization of {fp32_xml} failed: {type(e).__name__}: {e}") from e
    finally:
        nncf_logger.setLevel(level)
    if log is not None and out.getvalue().strip():
        log(out.getvalue().rstrip())
    ops = ir_op_counts(qmodel)
    if not ops.get("FakeQuantize"):
        raise ExportError(f"NNCF returned a model of {fp32_xml} without FakeQuantize nodes: nothing was quantized")
    info = {"scheme": "openvino-nncf", "variant": f"nncf-{preset}", "engine": "OpenVINO CPU plugin",
            "preset": preset, "target_device": "CPU", "images": len(paths), "subset_size": len(paths),
            "seed": seed, "data": str(calib_data), "fast_bias_correction": True,
            "fake_quantize_nodes": ops["FakeQuantize"], "int8_constants": ops.get("int8_constants", 0),
            "nncf_version": nncf.__version__, "source_ir": Path(fp32_xml).name}
    int8_meta = meta.with_(precision="int8", extra={"quantization": info})
    return save_ir(qmodel, int8_meta, xml_path, compress_to_fp16=False)


def export_openvino(export_dir: str | Path, calib_data: str | Path | None = None, calib_images: int = DEFAULT_CALIB_IMAGES,
                    data_format: str | None = None, seed: int = 0, preset: str = "performance",
                    out_dir: str | Path | None = None, log=None) -> dict[str, Path]:
    """The OpenVINO IRs of an export folder (:func:`unet_edge.export.pipeline.export_all` output).

    Args:
        export_dir: holds ``model_fp32.onnx``.
        calib_data: when given, the NNCF INT8 IR is made too (see :func:`quantize_int8`).
        out_dir: where the IRs go (default ``export_dir``); names from the table (:data:`KEYS`).

    Returns:
        {``openvino_fp32``: path[, ``openvino_int8``: path]}.

    Raises:
        ArtifactError: no ``model_fp32.onnx`` in ``export_dir``; see :func:`convert_fp32` and
        :func:`quantize_int8`.
    """
    export_dir = Path(export_dir)
    onnx_path = export_dir / FP32_ONNX
    if not onnx_path.is_file():
        raise ArtifactError(f"{export_dir} has no {FP32_ONNX}; run `unet-edge export` first")
    out = Path(out_dir) if out_dir else export_dir
    made = {"openvino_fp32": convert_fp32(onnx_path, out / artifact("openvino_fp32").file)}
    if calib_data is not None:
        made["openvino_int8"] = quantize_int8(made["openvino_fp32"], out / artifact("openvino_int8").file, calib_data,
                                              calib_images, data_format, seed, preset, log=log)
    return made
