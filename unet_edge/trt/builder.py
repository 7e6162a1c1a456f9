"""Build a TensorRT engine from an exported ONNX with the TensorRT Python API.

Which ONNX and which switches, per TensorRT major version and ``BuildOptions.mode``:

=========  ==========================================  ===========================================
           explicit (precision from the graph)          implicit (builder flags, 10.x only)
=========  ==========================================  ===========================================
10.x       ``model_<precision>.onnx`` (FP16 tensors or  ``model_fp32.onnx`` + ``BuilderFlag.FP16``
           Q/DQ nodes), network created with            (fp16) or ``INT8`` + ``FP16`` and the
           ``NetworkDefinitionCreationFlag.STRONGLY_     entropy calibrator reading/writing
           TYPED``; no precision flags (not allowed     ``calib.cache`` (int8)
           for strongly typed networks)
11.x       ``model_<precision>.onnx``, ``create_network  refused: TensorRT 11 removed the precision
           (0)`` (strongly typed always; the flag is    flags and implicit calibration
           deprecated and ignored in 11.x)
=========  ==========================================  ===========================================

Sources: TensorRT 10.3/11.4 Python docstrings (``create_network``, ``set_memory_pool_limit``,
``create_timing_cache``, ``set_timing_cache``, ``builder_optimization_level``), the 10.x-to-11.x
migration guide ("Migrating from Weak Typing to Strong Typing", "Removed Python APIs").

The engine and its sidecar (:mod:`unet_edge.trt.sidecar`) are written atomically; so is the timing
cache. TensorRT objects follow the naming convention in :mod:`unet_edge.trt`.
"""
from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..artifacts import read_meta
from ..errors import ArtifactError, BackendUnavailableError, ExportError
from ..formats import (BUILD_MODES, DEFAULT_BUILD_PRECISION, DEFAULT_CALIB_IMAGES, DEFAULT_WORKSPACE_MIB,
                       TRT_PRECISIONS, artifact, build_source, parse_dims)
from ..io_utils import atomic_path, sha256, write_json_atomic
from ..metadata import ModelMeta, sidecar_path
from ..provenance import check_consistent, folder_artifacts
from .dtypes import dtype_name
from .sidecar import make_sidecar, write_sidecar
from .version import TrtVersion, import_tensorrt, installed_version, is_strongly_typed_only, only_trt

PRECISIONS = TRT_PRECISIONS
MODES = BUILD_MODES


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1x3x360x480"`` -> (1, 3, 360, 480) (:func:`unet_edge.formats.parse_dims`); None stays None.

    Raises:
        ExportError: not four positive integers separated by ``x``.
    """
    if text is None:
        return None
    try:
        return parse_dims(text, 4)
    except ValueError as e:
        raise ExportError(f"shape {e}") from None


def _calib_cache(onnx_path: Path, options: "BuildOptions") -> Path:
    """The implicit INT8 build's calibration cache: ``options.calib_cache``, else ``calib.cache`` beside the ONNX."""
    return Path(options.calib_cache) if options.calib_cache else onnx_path.parent / artifact("calib_cache").file


def _fmt_shape(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


@dataclass
class BuildOptions:
    """How to build an engine.

    Attributes:
        precision: ``fp32``, ``fp16`` or ``int8``.
        mode: ``explicit`` (precision from the ONNX graph; the only mode on TensorRT 11) or
            ``implicit`` (TensorRT 10.x builder flags on the FP32 ONNX, INT8 via the entropy
            calibrator and ``calib.cache``).
        workspace_mib: limit of ``MemoryPoolType.WORKSPACE`` in MiB (scratch memory of layers).
        min_shape, opt_shape, max_shape: (N, C, H, W) optimization profile for an ONNX exported
            with dynamic batch/H/W; default: the metadata's (1, 3, H, W) for all three. Must be
            None (or equal to the static shape) for a static ONNX.
        timing_cache: file of the builder timing cache: loaded when present, saved after the build
            (speeds up rebuilds on the same GPU and TensorRT version).
        builder_optimization_level: 0-5 (TensorRT default 3); higher searches longer.
        dla_core: DLA core index (Jetson Orin) or None for the GPU.
        gpu_fallback: with ``dla_core``: run layers DLA cannot run on the GPU (``GPU_FALLBACK``).
        version_compatible: ``BuilderFlag.VERSION_COMPATIBLE``: the engine runs on later TensorRT
            releases of the same major (embeds the lean runtime; loading it requires
            ``engine_host_code_allowed``, which the backend sets from the sidecar).
        calib_images: implicit INT8: number of calibration images drawn from ``calib_data``.
        calib_cache: implicit INT8: calibration cache to reuse/write; default ``calib.cache`` beside
            the ONNX. An existing cache is used as is (no images needed); delete it to recalibrate.
        verbose: TensorRT logger at VERBOSE instead of WARNING.
    """

    precision: str = DEFAULT_BUILD_PRECISION
    mode: str = "explicit"
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    timing_cache: str | None = None
    builder_optimization_level: int | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    calib_images: int = DEFAULT_CALIB_IMAGES
    calib_cache: str | None = None
    verbose: bool = False
    extra: dict = field(default_factory=dict)

    def validate(self, trt_major: int | None = None) -> "BuildOptions":
        """Check values (and, given the TensorRT major version, what that version allows).

        Raises:
            ExportError: a bad value. BackendUnavailableError: something this TensorRT version
                cannot do (implicit mode on 11.x; DLA without FP16/INT8 builder flags on 10.x).
        """
        if self.precision not in PRECISIONS:
            raise ExportError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.mode not in MODES:
            raise ExportError(f"unknown build mode {self.mode!r}; choose explicit or implicit")
        if self.workspace_mib < 1:
            raise ExportError(f"--workspace-mib must be >= 1, got {self.workspace_mib}")
        if self.builder_optimization_level is not None and not 0 <= self.builder_optimization_level <= 5:
            raise ExportError(f"--opt-level must be 0-5, got {self.builder_optimization_level}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ExportError(f"--dla-core must be >= 0, got {self.dla_core}")
        shapes = [s for s in (self.min_shape, self.opt_shape, self.max_shape) if s is not None]
        if shapes and len(shapes) != 3:
            raise ExportError("give all of --min-shape, --opt-shape and --max-shape, or none")
        if shapes:
            if any(len(s) != 4 for s in shapes):
                raise ExportError("profile shapes must be NxCxHxW (4 dimensions)")
            if not all(a <= b <= c for a, b, c in zip(self.min_shape, self.opt_shape, self.max_shape)):
                raise ExportError(f"need min <= opt <= max in every dimension; got {self.min_shape}, "
                                  f"{self.opt_shape}, {self.max_shape}")
        if trt_major is not None:
            if is_strongly_typed_only(trt_major) and self.mode == "implicit":
                raise BackendUnavailableError(
                    f"TensorRT {trt_major}.x removed implicit precision (BuilderFlag.FP16/INT8 and INT8 "
                    "calibrators); use --mode explicit, which builds from model_fp16.onnx / model_int8.onnx (Q/DQ)")
            if not is_strongly_typed_only(trt_major) and self.dla_core is not None and (
                    self.mode != "implicit" or self.precision == "fp32"):
                raise BackendUnavailableError(
                    "DLA on TensorRT 10.x runs FP16/INT8 layers selected by builder flags: use --mode implicit "
                    "with --precision fp16 or int8 together with --dla-core")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("min_shape", "opt_shape", "max_shape"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d


def resolve_onnx(source: str | Path, options: BuildOptions) -> Path:
    """The ONNX to build from: ``source`` itself, or in an export folder ``model_<precision>.onnx``
    (explicit) / ``model_fp32.onnx`` (implicit).

    Raises:
        ArtifactError: missing file, with the export command that creates it.
    """
    source = Path(source)
    if source.is_dir():
        src = build_source(options.precision, options.mode)
        path = source / src.file
        if not path.is_file():
            flag = (f" {src.option}" if src.option else "") + (" --calib-data <dataset>" if src.needs_calibration else "")
            raise ArtifactError(f"{path} not found; create it with: unet-edge export <checkpoint> --out {source}{flag}")
        return path
    if not source.is_file():
        raise ArtifactError(f"ONNX model not found: {source}")
    return source


def check_onnx_precision(meta: ModelMeta, options: BuildOptions, onnx_path: Path) -> None:
    """Explicit mode needs the ONNX of the requested precision (the graph *is* the precision);
    implicit mode needs the FP32 ONNX (the builder flags lower it).

    Raises:
        ArtifactError: mismatch, naming the file to use instead.
    """
    want = build_source(options.precision, options.mode)
    if meta.precision != want.precision:
        raise ArtifactError(
            f"{onnx_path} is a {meta.precision} ONNX; --mode {options.mode} --precision {options.precision} "
            f"builds from the {want.precision} ONNX ({want.file}): pass it or the export folder")


def build_command(source: str | Path, engine_path: str | Path, options: BuildOptions,
                  calib_data: str | Path | None = None) -> str:
    """The ``unet-edge build`` command line that reproduces this build (stored in the sidecar)."""
    args = ["unet-edge", "build", str(source), "--out", str(engine_path), "--precision", options.precision,
            "--mode", options.mode, "--workspace-mib", str(options.workspace_mib)]
    if options.opt_shape is not None:
        args += ["--min-shape", _fmt_shape(options.min_shape), "--opt-shape", _fmt_shape(options.opt_shape),
                 "--max-shape", _fmt_shape(options.max_shape)]
    if options.timing_cache:
        args += ["--timing-cache", str(options.timing_cache)]
    if options.builder_optimization_level is not None:
        args += ["--opt-level", str(options.builder_optimization_level)]
    if options.dla_core is not None:
        args += ["--dla-core", str(options.dla_core)]
        if not options.gpu_fallback:
            args += ["--no-gpu-fallback"]
    if options.version_compatible:
        args += ["--version-compatible"]
    if calib_data is not None:
        args += ["--calib-data", str(calib_data), "--calib-images", str(options.calib_images)]
    if options.calib_cache:
        args += ["--calib-cache", str(options.calib_cache)]
    return shlex.join(args)


def check_build_sources(source: str | Path, onnx_path: Path, options: BuildOptions) -> str | None:
    """Refuse to build from artifacts of different checkpoints (:func:`unet_edge.provenance.check_consistent`):
    an export folder is checked as a whole; a single ONNX together with the calibration cache an
    implicit INT8 build would read. Needs no TensorRT. Returns the common source sha256 (or None).

    Raises:
        ArtifactError: mixed sources, naming every file and its checkpoint.
    """
    source = Path(source)
    if source.is_dir():
        return check_consistent(folder_artifacts(source), where=source)
    files = [onnx_path]
    cache = _calib_cache(onnx_path, options)
    if options.mode == "implicit" and options.precision == "int8" and cache.is_file():
        files.append(cache)
    return check_consistent(files)


# --- TensorRT steps (each takes the tensorrt module first; see tests/test_trt_api.py) -------------

def _create_network(trt, builder, strongly_typed: bool):
    """An empty network. 11.x: always strongly typed (flag deprecated and ignored, pass 0);
    10.x: ``STRONGLY_TYPED`` for explicit builds, 0 (weakly typed) for implicit ones."""
    version = installed_version(trt)
    if version.major >= 11:
        return builder.create_network(0)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    return builder.create_network(flags)


def _parse_onnx(trt, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            parse_error = parser.get_error(i)
            errors.append(parse_error.desc())
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: " + "; ".join(errors or ["no detail"]))


def _io(trt, network) -> list[dict]:
    """[{"name", "mode", "shape", "dtype"}] of the network inputs then outputs (-1 = dynamic)."""
    out = []
    for i in range(network.num_inputs):
        net_tensor = network.get_input(i)
        out.append({"name": net_tensor.name, "mode": "input", "shape": [int(d) for d in net_tensor.shape],
                    "dtype": dtype_name(trt, net_tensor.dtype)})
    for i in range(network.num_outputs):
        net_tensor = network.get_output(i)
        out.append({"name": net_tensor.name, "mode": "output", "shape": [int(d) for d in net_tensor.shape],
                    "dtype": dtype_name(trt, net_tensor.dtype)})
    return out


def _profile_shapes(io: list[dict], meta: ModelMeta, options: BuildOptions) -> dict:
    """{input name: {"min", "opt", "max"}} for dynamic inputs; {} when all inputs are static.

    Raises:
        ExportError: shapes given for a static ONNX (with another shape), or incompatible with the
            input's fixed dimensions.
    """
    profiles = {}
    for entry in (e for e in io if e["mode"] == "input"):
        shape = entry["shape"]
        dynamic = any(d < 0 for d in shape)
        given = options.opt_shape is not None
        if not dynamic:
            if given and (list(options.min_shape) != shape or list(options.max_shape) != shape):
                raise ExportError(f"input {entry['name']!r} has the static shape {_fmt_shape(shape)}; profile "
                                  "shapes need an ONNX exported with --dynamic")
            continue
        default = (1, 3, *meta.input_size)
        lo, mid, hi = (options.min_shape, options.opt_shape, options.max_shape) if given else (default,) * 3
        for s in (lo, mid, hi):
            if len(s) != len(shape) or any(d >= 0 and d != v for d, v in zip(shape, s)):
                raise ExportError(f"profile shape {_fmt_shape(s)} does not fit input {entry['name']!r} "
                                  f"of shape {shape} (-1 = dynamic)")
        profiles[entry["name"]] = {"min": list(lo), "opt": list(mid), "max": list(hi)}
    return profiles


def _add_profile(trt, builder, config, profiles: dict):
    """Create the optimization profile for the dynamic inputs; returns it (or None)."""
    if not profiles:
        return None
    profile = builder.create_optimization_profile()
    for name, s in profiles.items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)
    return profile


def _configure_common(trt, builder, config, options: BuildOptions):
    """Workspace, optimization level, DLA, version compatibility, timing cache (all versions).
    Returns the attached timing cache or None."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = int(options.builder_optimization_level)
    if options.dla_core is not None:
        if builder.num_DLA_cores <= options.dla_core:
            raise BackendUnavailableError(f"--dla-core {options.dla_core} requested; this device has "
                                          f"{builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if not options.timing_cache:
        return None
    path = Path(options.timing_cache)
    timing_cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        raise ExportError(f"timing cache {path} does not match this GPU/TensorRT; delete it to start a new one")
    return timing_cache


@only_trt(10)
def _configure_implicit(trt, config, options: BuildOptions, profile, calibrator) -> None:
    """TensorRT 10.x weak typing: FP16 flag, or INT8 (+FP16 fallback) with the entropy calibrator.
    With a dynamic input, calibration runs at the profile's OPT shape (``set_calibration_profile``)."""
    if options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)


def _save_timing_cache(config, options: BuildOptions) -> None:
    timing_cache = config.get_timing_cache()
    if timing_cache is None:
        return
    with atomic_path(options.timing_cache) as tmp:
        with open(tmp, "wb") as f:
            f.write(timing_cache.serialize())


def _calibration_shape(io: list[dict], profiles: dict, meta: ModelMeta) -> tuple[int, ...]:
    """Shape the calibrator must feed: the static input shape or the profile's OPT shape."""
    entry = next(e for e in io if e["mode"] == "input")
    shape = tuple(profiles[entry["name"]]["opt"]) if entry["name"] in profiles else tuple(entry["shape"])
    if tuple(shape[2:]) != tuple(meta.input_size):
        raise ExportError(f"INT8 calibration runs at {_fmt_shape(shape)}; it must match the model input size "
                          f"{meta.input_size[0]}x{meta.input_size[1]} (use it as --opt-shape H and W)")
    return shape


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions | None = None,
                 calib_data: str | Path | None = None) -> Path:
    """Parse an ONNX, build a serialized engine, write it and its sidecar atomically.

    Args:
        onnx_path: an ONNX file with unet-edge metadata, or an export folder (the ONNX is then
            chosen by :func:`resolve_onnx`).
        engine_path: output plan file (``.engine``); ``<engine>.json`` is written beside it.
        options: :class:`BuildOptions` (default: explicit FP16).
        calib_data: implicit INT8 only: dataset or image folder for calibration (not needed when
            the calibration cache exists).

    Returns:
        ``engine_path``.

    The engine's sidecar carries the ONNX's metadata, so its provenance too
    (``extra.source_checkpoint_sha256``); a calibration cache TensorRT writes gets a ``<cache>.json``
    sidecar with it.

    Raises:
        BackendUnavailableError: TensorRT (or, for implicit INT8, pycuda) missing; an option this
            TensorRT version cannot do. ArtifactError: missing/mismatched ONNX; an export folder (or
            ONNX + calibration cache) whose artifacts come from different checkpoints, checked
            before TensorRT is needed (:func:`check_build_sources`). ExportError: the parser
            or the builder failed (TensorRT's messages included). DataError: bad calibration data.
    """
    options = options or BuildOptions()
    options.validate()
    source = onnx_path
    onnx_path = resolve_onnx(onnx_path, options)
    meta = read_meta(onnx_path)
    check_onnx_precision(meta, options, onnx_path)
    check_build_sources(source, onnx_path, options)
    trt = import_tensorrt()
    version = installed_version(trt)
    options.validate(version.major)
    strongly_typed = options.mode == "explicit" or version.major >= 11

    logger = trt.Logger(trt.Logger.VERBOSE if options.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _create_network(trt, builder, strongly_typed)
    _parse_onnx(trt, network, logger, onnx_path)
    io = _io(trt, network)
    profiles = _profile_shapes(io, meta, options)
    config = builder.create_builder_config()
    profile = _add_profile(trt, builder, config, profiles)
    _configure_common(trt, builder, config, options)

    calibration = None
    if options.mode == "implicit" and options.precision == "int8":
        plan, calibration = _build_calibrated(trt, builder, network, config, options, meta, io, profiles,
                                              profile, onnx_path, calib_data)
    else:
        if options.mode == "implicit":
            _configure_implicit(trt, config, options, profile, None)
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above; "
                          "try --verbose, a larger --workspace-mib, or another precision)")
    return _write(trt, plan, config, engine_path, options, meta, io, profiles, onnx_path, source, calib_data,
                  strongly_typed, version, calibration)


def _build_calibrated(trt, builder, network, config, options, meta, io, profiles, profile, onnx_path, calib_data):
    """Implicit INT8 (TensorRT 10.x): build under a pycuda context with the entropy calibrator."""
    from calibration.images import calibration_images
    from .calibrator import make_entropy_calibrator

    from .cuda_utils import import_pycuda, primary_context

    cache_path = _calib_cache(onnx_path, options)
    reused = cache_path.is_file()
    paths = [] if reused or calib_data is None else calibration_images(calib_data, options.calib_images)
    shape = _calibration_shape(io, profiles, meta)
    cuda = import_pycuda()
    ctx = cuda.Device(0).retain_primary_context()
    try:
        with primary_context(cuda, ctx):
            calibrator = make_entropy_calibrator(trt, paths, meta, shape[0], cache_path)
            try:
                _configure_implicit(trt, config, options, profile, calibrator)
                plan = builder.build_serialized_network(network, config)
            finally:
                calibrator.free()
            if calibrator.error is not None:
                raise ExportError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
    finally:
        ctx.detach()
    if not reused and cache_path.is_file():  # TensorRT wrote it: record its provenance as the export does
        write_json_atomic(sidecar_path(cache_path), meta.with_(
            precision="int8", extra={"calibration_cache": {"onnx": onnx_path.name, "written_by": "tensorrt"}}).to_dict())
    calibration = {"cache": str(cache_path), "reused_cache": reused, "images": len(paths),
                   "batch_size": shape[0], "data": str(calib_data) if calib_data else None,
                   "sha256": sha256(cache_path) if cache_path.is_file() else None}
    return plan, calibration


def _write(trt, plan, config, engine_path, options, meta, io, profiles, onnx_path, source, calib_data,
           strongly_typed, version: TrtVersion, calibration) -> Path:
    from .cuda_utils import gpu_info

    engine_path = Path(engine_path)
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(plan)
    if options.timing_cache:
        _save_timing_cache(config, options)
    sidecar = make_sidecar(
        meta, precision=options.precision, mode=options.mode, trt_version=str(version), gpu=gpu_info(0), io=io,
        onnx_path=str(onnx_path), onnx_sha256=sha256(onnx_path), strongly_typed=strongly_typed,
        build_options=options.to_dict(), build_command=build_command(source, engine_path, options, calib_data),
        profiles=profiles, calibration=calibration)
    write_sidecar(engine_path, sidecar)
    return engine_path
