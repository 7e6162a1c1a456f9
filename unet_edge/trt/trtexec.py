"""``trtexec`` command lines for building the same engines without Python (e.g. on a Jetson).

Flags per TensorRT major version (:data:`TRTEXEC_FLAGS`), from NVIDIA's trtexec documentation and
the 10.x-to-11.x trtexec migration guide:

* 10.x: ``--fp16``, ``--int8`` and ``--calib=<cache>`` (implicit, weakly typed), ``--stronglyTyped``
  (explicit: precision from the ONNX graph), ``--memPoolSize=workspace:<N>M`` (10.x replaced
  ``--workspace``), ``--minShapes/--optShapes/--maxShapes=<input>:NxCxHxW``, ``--timingCacheFile``,
  ``--builderOptimizationLevel``, ``--useDLACore``, ``--allowGPUFallback``, ``--versionCompatible``,
  ``--skipInference``.
* 11.x: "TensorRT 11.x removes all precision flags (--fp16, --int8, --bf16, --fp8, --int4, --best)"
  and "the --int8 and --calib flags"; "--stronglyTyped is no longer needed: it is always enabled"
  (so it is never emitted for 11.x). Precision comes from ``model_fp16.onnx`` / ``model_int8.onnx``.

``trtexec --version`` prints ``[TensorRT v100300]`` but, on 10.3, exits with status 1 (it still wants
a model), so scripts must parse its output rather than trust its status.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import BackendUnavailableError, ExportError
from ..formats import TRT_PRECISIONS, artifact, build_source, engine_file, onnx_file
from ..metadata import ModelMeta
from .builder import BuildOptions

_COMMON = frozenset({
    "--onnx", "--saveEngine", "--memPoolSize", "--minShapes", "--optShapes", "--maxShapes",
    "--timingCacheFile", "--builderOptimizationLevel", "--useDLACore", "--allowGPUFallback",
    "--versionCompatible", "--skipInference", "--verbose",
})
#: Flags this project emits, known valid for each trtexec major version.
TRTEXEC_FLAGS: dict[int, frozenset[str]] = {
    10: _COMMON | {"--fp16", "--int8", "--calib", "--stronglyTyped"},
    11: _COMMON,
}
#: Flags that TensorRT 11's trtexec removed (precision flags, implicit calibration); never valid for 11.
REMOVED_IN_11 = frozenset({"--fp16", "--int8", "--bf16", "--fp8", "--int4", "--best", "--calib",
                           "--precisionConstraints", "--layerPrecisions", "--layerOutputTypes"})


def flag_name(arg: str) -> str:
    """``--memPoolSize=workspace:512M`` -> ``--memPoolSize``."""
    return arg.split("=", 1)[0]


def trtexec_argv(onnx_path: str | Path, engine_path: str | Path, trt_major: int, options: BuildOptions,
                 calib_cache: str | Path | None = None, meta: ModelMeta | None = None,
                 dynamic: bool = False, trtexec: str = "trtexec") -> list[str]:
    """argv of one trtexec build.

    Args:
        onnx_path: the ONNX for this build (explicit: ``model_<precision>.onnx``; implicit:
            ``model_fp32.onnx``).
        engine_path: ``--saveEngine`` target.
        trt_major: 10 or 11.
        options: precision, mode, workspace (MiB), shapes, timing cache, opt level, DLA, version compat.
        calib_cache: implicit INT8 (10.x): the cache for ``--calib``.
        meta: model metadata: input tensor name and default (1, 3, H, W) shapes for a dynamic ONNX.
        dynamic: the ONNX input has dynamic dimensions (profile shapes are then always passed).

    Raises:
        ExportError: impossible combination (e.g. implicit INT8 without a cache).
        BackendUnavailableError: implicit mode on 11.x, or an unsupported major version.
    """
    if trt_major not in TRTEXEC_FLAGS:
        raise BackendUnavailableError(f"no trtexec recipe for TensorRT {trt_major}.x (supported: 10, 11)")
    options.validate(trt_major)
    argv = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}", f"--memPoolSize=workspace:{int(options.workspace_mib)}M"]
    if trt_major == 10:
        if options.mode == "explicit":
            argv.append("--stronglyTyped")
        elif options.precision == "fp16":
            argv.append("--fp16")
        elif options.precision == "int8":
            if calib_cache is None:
                raise ExportError("implicit INT8 with trtexec needs the calibration cache (calib.cache) for --calib")
            argv += ["--int8", "--fp16", f"--calib={calib_cache}"]
    input_name = meta.input_name if meta else "images"
    shapes = None
    if options.opt_shape is not None:
        shapes = (options.min_shape, options.opt_shape, options.max_shape)
    elif dynamic:
        if meta is None:
            raise ExportError("a dynamic ONNX needs profile shapes (options or metadata)")
        shapes = ((1, 3, *meta.input_size),) * 3
    if shapes is not None:
        for flag, shape in zip(("--minShapes", "--optShapes", "--maxShapes"), shapes):
            argv.append(f"{flag}={input_name}:{'x'.join(str(int(d)) for d in shape)}")
    if options.timing_cache:
        argv.append(f"--timingCacheFile={options.timing_cache}")
    if options.builder_optimization_level is not None:
        argv.append(f"--builderOptimizationLevel={int(options.builder_optimization_level)}")
    if options.dla_core is not None:
        argv.append(f"--useDLACore={int(options.dla_core)}")
        if options.gpu_fallback:
            argv.append("--allowGPUFallback")
    if options.version_compatible:
        argv.append("--versionCompatible")
    argv.append("--skipInference")
    bad = [a for a in argv[1:] if flag_name(a) not in TRTEXEC_FLAGS[trt_major]]
    if bad:  # a programming error: the recipe above must only use flags of the table
        raise ExportError(f"internal: trtexec {trt_major}.x flags {bad} are not in TRTEXEC_FLAGS")
    return argv


def trtexec_commands(onnx_paths: Mapping[str, str | Path] | str | Path, trt_major: int,
                     precision: str | Sequence[str], options: BuildOptions | None = None,
                     engine_dir: str | Path = ".", calib_cache: str | Path | None = None,
                     meta: ModelMeta | None = None, dynamic: bool = False, trtexec: str = "trtexec") -> list[str]:
    """Shell command lines (one per precision) that build ``model_<precision>.engine``
    (:func:`unet_edge.formats.engine_file`).

    Args:
        onnx_paths: {"fp32"/"fp16"/"int8": ONNX path}, or an export folder with the names of
            :func:`unet_edge.formats.onnx_file`.
        trt_major: 10 or 11.
        precision: one precision or several (one line each).
        options: the rest of the build options (``precision`` in it is replaced per line; ``mode``
            explicit by default; implicit is 10.x only).
        engine_dir: where the engines go (``<engine_dir>/model_<precision>.engine``).
        calib_cache: implicit INT8 on 10.x: cache for ``--calib`` (default ``calib.cache`` next to the FP32 ONNX).
        meta, dynamic, trtexec: see :func:`trtexec_argv`.

    Returns:
        Command lines, shell-quoted.

    Raises:
        ExportError / BackendUnavailableError: see :func:`trtexec_argv`; a needed ONNX is not in ``onnx_paths``.
    """
    if isinstance(onnx_paths, (str, Path)):
        folder = Path(onnx_paths)
        onnx_paths = {p: folder / onnx_file(p) for p in TRT_PRECISIONS}
    base = options or BuildOptions()
    lines = []
    for prec in [precision] if isinstance(precision, str) else list(precision):
        opts = BuildOptions(**{**base.__dict__, "precision": prec}).validate()
        key = build_source(prec, opts.mode).precision
        if key not in onnx_paths:
            raise ExportError(f"no {key} ONNX given for a {opts.mode} {prec} build")
        cache = calib_cache
        if cache is None and opts.mode == "implicit" and prec == "int8":
            cache = Path(onnx_paths["fp32"]).parent / artifact("calib_cache").file
        engine_path = Path(engine_dir) / engine_file(prec)
        argv = trtexec_argv(onnx_paths[key], engine_path, trt_major, opts, cache, meta, dynamic, trtexec)
        lines.append(shlex.join(argv))
    return lines
