"""The deployment artifacts, one row each, and the defaults every stage shares (defined here once).

In the spirit of Ultralytics' ``export_formats()``: :data:`ARTIFACTS` says for every file the
project makes its table key, file name, precision, which stage makes it (``export``, ``build`` or
the ``jetson bundle``, with the option that asks for it), which backends consume it (the one it is
made for first), whether it needs calibration images, and on which TensorRT major versions it
builds an engine. Export, build, trtexec recipes, the Jetson bundle, ``bench`` and ``run`` read
their file names here; :func:`artifact_table_markdown` renders the table for the README.

TensorRT facts behind the ``trt`` column (TensorRT 10.x-to-11.x migration guide; the bindings in
``../shared/tensorrt-api/``; :mod:`unet_edge.trt.version`): 10.x builds both ways, explicit
(precision from the graph: FP16 tensors, Q/DQ nodes) and implicit (``BuilderFlag.FP16``/``INT8`` on
the FP32 graph, INT8 through a calibrator and its cache); 11.x is strongly typed only, so an FP16
engine needs ``model_fp16.onnx``, an INT8 engine the Q/DQ ``model_int8.onnx``, and the calibration
cache is of no use there.

Core layer: imports only the standard library, so any stage (``doctor`` and ``run`` without PyTorch
included) can read it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


# --- defaults shared by several stages -------------------------------------------------------------

#: Calibration images drawn from the training split (``export --calib-images``, ``build --calib-images``).
DEFAULT_CALIB_IMAGES = 64
#: Calibration methods of the INT8 export; the first is the default (``export --calib-method``).
CALIB_METHODS = ("entropy", "minmax", "percentile")
DEFAULT_CALIB_METHOD = CALIB_METHODS[0]
#: TensorRT ``MemoryPoolType.WORKSPACE`` limit in MiB (``build --workspace-mib``, trtexec ``--memPoolSize``).
DEFAULT_WORKSPACE_MIB = 1024
#: Precision ``build`` and ``build_engine.sh`` make without ``--precision``.
DEFAULT_BUILD_PRECISION = "fp16"
#: Defaults of ``export --max-int8-drop`` / ``--max-int8-class-drop``, in mIoU / IoU points (1 point = 0.01).
MAX_INT8_MIOU_DROP = 1.0
MAX_INT8_CLASS_DROP = 3.0
#: The export folder's report; its presence marks a folder as an export's.
EXPORT_REPORT = "export_report.json"
#: GStreamer pipeline of a Jetson CSI camera (``nvarguscamerasrc``; ``sensor-id=N`` picks the camera)
#: delivering BGR frames to OpenCV's ``appsink``.
JETSON_CSI_PIPELINE = (
    "nvarguscamerasrc ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! nvvidconv ! "
    "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=1"
)

# --- ``demo`` defaults (read by ``cli.py demo`` and :func:`unet_edge.demo.run_demo`) ---------------

#: Scene, drive video and model input size (H, W) pixels.
DEMO_SIZE = (240, 320)
#: Upper bound of the training epochs (the training time budget decides how many run).
DEMO_EPOCHS = 12
#: Synthetic training scenes (validation: a fifth as many) and frames of the synthetic drive video.
DEMO_SCENES, DEMO_DRIVE_FRAMES = 160, 90
#: Timed runs per benchmark row (at most; fewer when the total budget is short).
DEMO_BENCH_ITERS = 30
#: Everything, synth to bench (seconds): the demo ends within 10 minutes on 2 CPU cores.
DEMO_TOTAL_BUDGET_S = 480.0
#: The training stage's time budget (seconds), capped by what the total budget leaves.
DEMO_TRAIN_BUDGET_S = 240.0
#: The least training budget the total budget can leave (seconds): below it the time budget's
#: calibration (warm-up steps, a validation pass) would eat the whole stage and train no epoch,
#: so a small ``--total-budget`` overruns by up to this much rather than skip training.
DEMO_MIN_TRAIN_S = 30.0

# --- CPU INT8 (ONNX Runtime) schemes and the INT8 kernel families they are made for ----------------

#: CPU INT8 weight schemes (activations are uint8 asymmetric in all). ``u8s8-w7`` quantizes
#: weights to 7 bits ([-64, 64], ONNX Runtime's ``reduce_range``) and ``u8u8`` to uint8: ONNX
#: Runtime's documented remedies for x86 CPUs without VNNI, whose U8S8 kernels (``VPMADDUBSW``)
#: add two u8 x s8 products into an int16 and saturate (255 * 127 * 2 = 64770 > 32767). With
#: |w| <= 64 a pair is at most 255 * 64 * 2 = 32640; U8U8 kernels widen to 16 bits first
#: (``VPMADDWD``) and accumulate in int32 (ONNX Runtime docs, "Quantize ONNX models": "When and why
#: do I need to try U8U8?"). Neither saturates anywhere, so their accuracy does not depend on the CPU.
CPU_SCHEMES = {
    "u8s8": {"variant": "cpu-u8s8", "weight_type": "int8", "reduce_range": False,
             "weights": "int8 per channel, full range"},
    "u8s8-w7": {"variant": "cpu-u8s8-w7", "weight_type": "int8", "reduce_range": True,
                "weights": "int8 per channel, 7-bit range [-64, 64] (reduce_range)"},
    "u8u8": {"variant": "cpu-u8u8", "weight_type": "uint8", "reduce_range": False,
             "weights": "uint8 per channel, symmetric (zero point 128)"},
}

#: Per INT8 kernel family (:data:`unet_edge.host.INT8_FAMILIES`): the CPU schemes in the order the
#: export tries them (fastest first; the next one only when the INT8 accuracy check fails), and why.
CPU_TARGETS = {
    "x86-vnni": {"schemes": ("u8s8",),
                 "why": "VNNI/AMX add u8 x s8 products in int32 (VPDPBUSD): nothing saturates, full 8-bit weights"},
    "x86-avx2": {"schemes": ("u8s8-w7", "u8u8"),
                 "why": "no VNNI: VPMADDUBSW saturates u8 x s8 pair sums at int16 (full-range U8S8 on an AVX2-only "
                        "EPYC: camvid-edge v4 val mIoU 0.551 vs FP32 0.645, Sky IoU 0.94 -> 0.15); 7-bit weights cannot "
                        "saturate, and U8U8 (1.8x slower there, full 8 bits) is taken when they lose too much accuracy"},
    "arm64": {"schemes": ("u8s8",),
              "why": "Arm int8 kernels (SDOT/UDOT, SMMLA) accumulate in int32: no saturation (not measured yet)"},
    "generic": {"schemes": ("u8u8",),
                "why": "unknown integer kernels: a scheme that saturates on no ISA"},
}

# --- the artifact table ----------------------------------------------------------------------------

PRODUCERS = ("export", "build", "jetson bundle", "triton repository")
BACKENDS = ("torch", "onnxruntime", "tensorrt", "openvino", "torch.export", "aotinductor", "triton")
#: Suffixes of TensorRT plan files (engines), whatever their name.
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
#: Precisions of TensorRT builds, and the build modes (see :mod:`unet_edge.trt.builder`).
TRT_PRECISIONS = ("fp32", "fp16", "int8")
BUILD_MODES = ("explicit", "implicit")


@dataclass(frozen=True)
class Artifact:
    """One deployment artifact.

    Attributes:
        key: table key, also the artifact's key in ``export_report.json`` (``artifacts``).
        file: file name inside its folder (export folder, or beside the engine for ``build``).
        precision: ``fp32``, ``fp16`` or ``int8``; None for files that are no model (a script).
        producer: the stage that makes it, one of :data:`PRODUCERS`.
        option: what asks that stage for it (e.g. ``--int8``); ``""``: always made.
        backends: consumer backends (:data:`BACKENDS`), the one it is made for first.
        needs_calibration: made from calibration images (``--calib-data``).
        trt_majors: TensorRT major versions that build an engine from it (for an engine: that can
            build it); ``()``: not a TensorRT input.
        description: one line, for the README table.
    """

    key: str
    file: str
    precision: str | None
    producer: str
    option: str
    backends: tuple[str, ...]
    needs_calibration: bool
    trt_majors: tuple[int, ...]
    description: str


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("torchscript", "model.ts", "fp32", "export", "", ("torch",), False, (),
             "traced and frozen TorchScript, metadata in its extra files: PyTorch without the model's code"),
    Artifact("onnx_fp32", "model_fp32.onnx", "fp32", "export", "", ("onnxruntime", "tensorrt"), False, (10, 11),
             "FP32 ONNX (opset 17, BatchNorm folded): ONNX Runtime, TensorRT FP32 engines, and FP16/INT8 engines "
             "by builder flags on TensorRT 10.x (--mode implicit)"),
    Artifact("onnx_fp16", "model_fp16.onnx", "fp16", "export", "--fp16", ("tensorrt", "onnxruntime"), False, (10, 11),
             "FP16 weights and activations, FP32 I/O: the FP16 engine of a strongly typed build (the only way on "
             "TensorRT 11.x)"),
    Artifact("onnx_int8", "model_int8.onnx", "int8", "export", "--int8", ("tensorrt", "onnxruntime"), True, (10, 11),
             "Q/DQ INT8 with symmetric activations (zero point 0) and an FP32 head: TensorRT explicit quantization"),
    Artifact("onnx_int8_cpu", "model_int8_cpu.onnx", "int8", "export", "--int8", ("onnxruntime",), True, (),
             "U8S8/U8U8 Q/DQ for ONNX Runtime's CPU integer kernels, made for one INT8 kernel family; TensorRT "
             "refuses its non-zero zero points"),
    Artifact("calib_cache", "calib.cache", "int8", "export", "--int8", ("tensorrt",), True, (10,),
             "activation scales of model_int8.onnx as a TensorRT calibration cache, for implicit INT8 on 10.x "
             "(TensorRT 11 removed implicit calibration)"),
    Artifact("engine_fp32", "model_fp32.engine", "fp32", "build", "--precision fp32", ("tensorrt",), False, (10, 11),
             "TensorRT plan + .json sidecar for one GPU and TensorRT version, from model_fp32.onnx"),
    Artifact("engine_fp16", "model_fp16.engine", "fp16", "build", "--precision fp16", ("tensorrt",), False, (10, 11),
             "from model_fp16.onnx (explicit); or model_fp32.onnx + the FP16 builder flag (implicit, 10.x only)"),
    Artifact("engine_int8", "model_int8.engine", "int8", "build", "--precision int8", ("tensorrt",), True, (10, 11),
             "from the Q/DQ model_int8.onnx (explicit); or model_fp32.onnx + calib.cache (implicit, 10.x only)"),
    Artifact("jetson_script", "build_engine.sh", None, "jetson bundle", "export/build --jetson DIR", ("tensorrt",),
             False, (10, 11),
             "builds model_<precision>.engine on the Jetson (unet-edge build, else trtexec) from the bundle's "
             "ONNX files and calib.cache"),
    Artifact("openvino_fp32", "model_openvino_fp32.xml", "fp32", "export", "--openvino", ("openvino",), False, (),
             "OpenVINO IR (+ .bin) converted from model_fp32.onnx, run with an explicit f32 inference-precision hint"),
    Artifact("openvino_int8", "model_openvino_int8.xml", "int8", "export", "--openvino", ("openvino",), True, (),
             "NNCF post-training INT8 IR (+ .bin) on the same calibration images as the ONNX INT8 files: "
             "OpenVINO's own INT8 path (it runs Q/DQ ONNX files poorly)"),
    Artifact("pt2_exported", "model_exported.pt2", "fp32", "export", "--pt2", ("torch.export",), False, (),
             "torch.export ExportedProgram with dynamic batch/H/W, metadata inside: TorchScript's successor"),
    Artifact("pt2_aoti_cpu", "model_aoti_cpu.pt2", "fp32", "export", "--pt2", ("aotinductor",), False, (),
             "AOTInductor package compiled for this CPU (or --pt2-march x86-64-v3/v4): loads without a "
             "compiler, in the PyTorch version that built it"),
    Artifact("triton_config", "config.pbtxt", None, "triton repository", "export/build --triton DIR", ("triton",), False,
             (), "Triton model configuration DIR/<name>/config.pbtxt (Triton's schema): names, dims and types from the "
             "metadata, max_batch_size, dynamic batching, instance group, the metadata JSON as a parameter"),
    Artifact("triton_model", "model.onnx", "fp32", "triton repository", "export --triton DIR", ("triton",), False, (),
             "DIR/<name>/1/model.onnx: the FP32 ONNX with a variable batch dim (checked at batch 2), or with "
             "--triton-argmax a uint8 (N, H, W) mask output; build --triton writes 1/model.plan"),
)

_BY_KEY = {a.key: a for a in ARTIFACTS}
_BY_FILE = {a.file: a for a in ARTIFACTS}


def artifact(key: str) -> Artifact:
    """The row of ``key`` (e.g. ``onnx_int8``).

    Raises:
        KeyError: no such row (a programming error: keys are this module's, not user input).
    """
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no artifact {key!r} in unet_edge.formats.ARTIFACTS; known: {', '.join(_BY_KEY)}") from None


def by_file(name: str) -> Artifact | None:
    """The row whose file name is ``name`` (a bare name, e.g. ``model_fp16.onnx``), or None."""
    return _BY_FILE.get(name)


def export_files(models_only: bool = False, options: Iterable[str] | None = None) -> tuple[str, ...]:
    """File names ``unet-edge export`` writes into its folder, in table order (besides
    :data:`EXPORT_REPORT`, the ``.json`` sidecars and an OpenVINO IR's ``.bin`` beside its ``.xml``).

    Args:
        models_only: only files a backend loads (not ``calib.cache``).
        options: only the rows an export with these options writes (e.g. ``("--int8",)``: the
            default rows and the ``--int8`` ones); None: every export row, opt-in ones included.
    """
    wanted = None if options is None else {"", *options}
    return tuple(a.file for a in ARTIFACTS
                 if a.producer == "export" and not (models_only and a.key == "calib_cache")
                 and (wanted is None or a.option in wanted))


def onnx_file(precision: str) -> str:
    """The export's ONNX for a TensorRT build of ``precision`` (:data:`TRT_PRECISIONS`): ``model_<precision>.onnx``.

    Raises:
        KeyError: not one of :data:`TRT_PRECISIONS`.
    """
    return artifact(f"onnx_{precision}").file


def engine_file(precision: str) -> str:
    """``model_<precision>.engine``, the engine file name of ``precision`` (KeyError as :func:`onnx_file`)."""
    return artifact(f"engine_{precision}").file


def build_source(precision: str, mode: str) -> Artifact:
    """The export artifact a TensorRT build of ``precision`` in ``mode`` starts from: explicit builds
    read ``model_<precision>.onnx`` (the graph is the precision), implicit ones ``model_fp32.onnx``
    (builder flags lower it; INT8 also reads :func:`artifact` ``("calib_cache")``).

    Raises:
        KeyError: unknown precision or mode.
    """
    if mode not in BUILD_MODES:
        raise KeyError(f"unknown build mode {mode!r}; known: {', '.join(BUILD_MODES)}")
    return artifact("onnx_fp32" if mode == "implicit" else f"onnx_{precision}")


def parse_dims(text: str, ndim: int | None = None, example: str = "1x3x360x480") -> tuple[int, ...]:
    """``"1x3x360x480"`` -> (1, 3, 360, 480): positive integers separated by ``x`` (any case).

    Args:
        ndim: the number of dimensions required (None: any number >= 1).
        example: shown in the error message.

    Raises:
        ValueError: anything else; the message names the text and the expected form, for callers
            to raise as their own error type.
    """
    parts = str(text).strip().lower().split("x")
    dims = tuple(int(p) for p in parts) if all(re.fullmatch(r"\d+", p) for p in parts) else ()
    if not dims or any(d <= 0 for d in dims) or (ndim is not None and len(dims) != ndim):
        form = "x".join("NCHW"[-ndim:]) if ndim in (1, 2, 3, 4) else "AxBx..."
        raise ValueError(f"must look like {form} (positive integers), e.g. {example}; got {text!r}")
    return dims


def _majors(majors: tuple[int, ...]) -> str:
    return ", ".join(f"{m}.x" for m in majors) or "-"


def artifact_table_markdown() -> str:
    """:data:`ARTIFACTS` as a Markdown table (for README.md between ``<!-- artifacts -->`` markers),
    ending with a newline."""
    lines = ["| file | key | precision | made by | runs on | calibration | TensorRT | what |",
             "|---|---|---|---|---|---|---|---|"]
    for a in ARTIFACTS:
        made_by = f"{a.producer} `{a.option}`" if a.option else a.producer
        lines.append(f"| `{a.file}` | `{a.key}` | {a.precision or '-'} | {made_by} | {', '.join(a.backends)} | "
                     f"{'yes' if a.needs_calibration else 'no'} | {_majors(a.trt_majors)} | {a.description} |")
    return "\n".join(lines) + "\n"
