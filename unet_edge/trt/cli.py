"""``unet-edge build``: TensorRT engines and Jetson bundles from an export folder or an ONNX file.

The root ``cli.py`` calls :func:`register` (passing its ``handle_errors`` as ``wrap`` so library
errors become exit codes); ``export --jetson`` goes through :func:`unet_edge.trt.jetson.export_step`.
Library errors are raised as :class:`~unet_edge.errors.UnetEdgeError` subclasses, never printed here.
An export folder given as SOURCE is checked to hold artifacts of one checkpoint before anything is
built (:func:`unet_edge.provenance.check_consistent`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from ..errors import ExportError, UsageError
from ..formats import DEFAULT_BUILD_PRECISION, DEFAULT_CALIB_IMAGES, DEFAULT_WORKSPACE_MIB, artifact
from .builder import BuildOptions, build_engine, parse_shape


def make_options(precision: str = DEFAULT_BUILD_PRECISION, mode: str = "explicit",
                 workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                 min_shape: str | None = None, opt_shape: str | None = None, max_shape: str | None = None,
                 timing_cache: str | Path | None = None, opt_level: int | None = None,
                 dla_core: int | None = None, gpu_fallback: bool = True, version_compatible: bool = False,
                 calib_images: int = DEFAULT_CALIB_IMAGES, calib_cache: str | Path | None = None,
                 verbose: bool = False) -> BuildOptions:
    """:class:`BuildOptions` from CLI-style values (shapes as ``NxCxHxW`` strings); validated.

    Raises:
        ExportError: a bad value.
    """
    return BuildOptions(
        precision=precision, mode=mode, workspace_mib=workspace_mib, min_shape=parse_shape(min_shape),
        opt_shape=parse_shape(opt_shape), max_shape=parse_shape(max_shape),
        timing_cache=str(timing_cache) if timing_cache else None, builder_optimization_level=opt_level,
        dla_core=dla_core, gpu_fallback=gpu_fallback, version_compatible=version_compatible,
        calib_images=calib_images, calib_cache=str(calib_cache) if calib_cache else None, verbose=verbose,
    ).validate()


def jetson_bundle(export_dir: str | Path, out_dir: str | Path, options: BuildOptions | None = None,
                  default_precision: str = DEFAULT_BUILD_PRECISION) -> Path:
    """Write the Jetson bundle for ``export_dir`` into ``out_dir`` (for ``build --jetson``).

    See :func:`unet_edge.trt.jetson.write_jetson_bundle` (which refuses an export folder of mixed
    checkpoints). Needs no TensorRT on this host.
    """
    from .jetson import write_jetson_bundle

    return write_jetson_bundle(export_dir, out_dir, options=options, default_precision=default_precision,
                               log=typer.echo)


def register(app: typer.Typer, wrap: Optional[Callable] = None) -> None:
    """Add the ``build`` command to ``app``; ``wrap`` (e.g. cli.handle_errors) decorates it."""
    cache, script = artifact("calib_cache").file, artifact("jetson_script").file

    def build(
        source: Path = typer.Argument(..., help="Export folder (model_<precision>.onnx) or an ONNX file."),
        out: Optional[Path] = typer.Option(None, "--out", help="Engine file to write (plus <engine>.json)."),
        precision: str = typer.Option(DEFAULT_BUILD_PRECISION, help="fp32, fp16 or int8."),
        mode: str = typer.Option("explicit", help="explicit: precision from the ONNX graph (FP16 ONNX / Q/DQ INT8 ONNX; "
                                                  "TensorRT 10 and 11). implicit: TensorRT 10.x builder flags on the "
                                                  f"FP32 ONNX, INT8 via calibration ({cache})."),
        workspace_mib: int = typer.Option(DEFAULT_WORKSPACE_MIB, min=1, help="TensorRT workspace memory pool limit, MiB."),
        min_shape: Optional[str] = typer.Option(None, help="Dynamic ONNX: minimum input shape NxCxHxW."),
        opt_shape: Optional[str] = typer.Option(None, help="Dynamic ONNX: optimal input shape NxCxHxW."),
        max_shape: Optional[str] = typer.Option(None, help="Dynamic ONNX: maximum input shape NxCxHxW."),
        timing_cache: Optional[Path] = typer.Option(None, help="Timing cache file (read if present, then saved)."),
        opt_level: Optional[int] = typer.Option(None, min=0, max=5, help="Builder optimization level 0-5 (TensorRT default 3)."),
        dla_core: Optional[int] = typer.Option(None, min=0, help="Build for this DLA core (Jetson; 10.x: --mode implicit)."),
        gpu_fallback: bool = typer.Option(True, help="With --dla-core: run unsupported layers on the GPU."),
        version_compatible: bool = typer.Option(False, help="Engine usable by later TensorRT releases of the same major."),
        calib_data: Optional[Path] = typer.Option(None, help="Implicit INT8: calibration images (dataset or folder)."),
        calib_images: int = typer.Option(DEFAULT_CALIB_IMAGES, min=1, help="Implicit INT8: number of calibration images."),
        calib_cache: Optional[Path] = typer.Option(None, help=f"Implicit INT8: calibration cache (default: {cache} beside the ONNX)."),
        jetson: Optional[Path] = typer.Option(None, help=f"Also write a Jetson bundle (ONNX + {script}) to this folder."),
        triton: Optional[Path] = typer.Option(None, help="Also put the built engine into this Triton model repository: "
                                              "DIR/<name>/config.pbtxt + 1/model.plan (needs --out; batching needs a dynamic "
                                              "profile --min-shape 1x3xHxW --max-shape Nx3xHxW)."),
        triton_name: Optional[str] = typer.Option(None, help="Triton model name (default unet_edge_trt_<precision>)."),
        triton_max_batch: Optional[int] = typer.Option(None, min=0, help="Triton max_batch_size (default: the --max-shape batch, else 0)."),
        triton_count: int = typer.Option(1, min=1, help="Triton model instances per GPU."),
        verbose: bool = typer.Option(False, help="Verbose TensorRT log."),
    ) -> None:
        """Build a TensorRT engine for this GPU, and/or a Jetson bundle to build one on the device."""
        if out is None and jetson is None:
            raise UsageError("nothing to do: give --out ENGINE (build here) and/or --jetson DIR (bundle for a Jetson)")
        if triton is not None and out is None:
            raise UsageError("--triton puts the built engine into a Triton repository: give --out ENGINE too")
        options = make_options(precision, mode, workspace_mib, min_shape, opt_shape, max_shape, timing_cache,
                               opt_level, dla_core, gpu_fallback, version_compatible, calib_images, calib_cache, verbose)
        max_batch = triton_max_batch if triton_max_batch is not None else (options.max_shape[0] if options.max_shape else 0)
        if triton is not None:
            from ..triton import check_options

            check_options(triton_name, max_batch, "gpu", triton_count)
        if jetson is not None:
            export_dir = source if source.is_dir() else source.parent
            path = jetson_bundle(export_dir, jetson, options, default_precision=precision)
            typer.echo(f"Jetson bundle: {path} (copy it to the device and run ./{script} {precision})")
        if out is not None:
            path = build_engine(source, out, options, calib_data=calib_data)
            typer.echo(f"engine: {path} (+ {path.name}.json)")
            if triton is not None:
                from ..triton import write_triton_repo

                model = write_triton_repo(path, triton, name=triton_name, max_batch_size=max_batch, instance="gpu",
                                          count=triton_count, log=typer.echo)
                typer.echo(f"Triton model: {model}")

    app.command("build")(wrap(build) if wrap else build)
