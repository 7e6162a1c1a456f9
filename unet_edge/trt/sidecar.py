"""The JSON sidecar of a TensorRT engine (``model.engine`` -> ``model.engine.json``).

A plan file carries no unet-edge metadata, and it only runs with the TensorRT version and GPU
architecture it was built for ("engines are not portable across platforms or TensorRT versions",
TensorRT developer guide, "Serializing a Model"; version-compatible engines relax the version part
only). The sidecar therefore holds:

* every :class:`~unet_edge.metadata.ModelMeta` field at top level (``precision`` = the engine's), so
  :func:`unet_edge.artifacts.read_meta` reads an engine like any other artifact;
* an ``engine`` object: ``tensorrt_version``, ``gpu`` (name, compute capability), ``precision``,
  ``mode`` (explicit/implicit), ``strongly_typed``, ``io`` (name, mode, shape, dtype per tensor; -1
  for dynamic dimensions), ``profile`` (min/opt/max per dynamic input), ``onnx`` (path, sha256),
  ``build_options``, ``build_command`` (the command that rebuilds it), ``calibration``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArtifactError
from ..host import probe_host
from ..io_utils import write_json_atomic
from ..metadata import ModelMeta, sidecar_path
from .cuda_utils import UNKNOWN
from .version import TrtVersion

ENGINE_SIDECAR_FORMAT = 1


def make_sidecar(meta: ModelMeta, *, precision: str, mode: str, trt_version: str, gpu: dict, io: list[dict],
                 onnx_path: str, onnx_sha256: str, strongly_typed: bool, build_options: dict,
                 build_command: str, profiles: dict | None = None, calibration: dict | None = None,
                 built_by: str = "tensorrt-python") -> dict:
    """Assemble the sidecar dict (see module docstring). ``io`` entries: {"name", "mode"
    ("input"/"output"), "shape" (list[int], -1 = dynamic), "dtype" (numpy name, e.g. "float32")}."""
    top = meta.with_(precision=precision).to_dict()
    top["engine"] = {
        "format": ENGINE_SIDECAR_FORMAT,
        "built_by": built_by,
        "tensorrt_version": str(trt_version),
        "gpu": {"name": gpu.get("name", UNKNOWN), "compute_capability": gpu.get("compute_capability", UNKNOWN)},
        "precision": precision,
        "mode": mode,
        "strongly_typed": bool(strongly_typed),
        "version_compatible": bool(build_options.get("version_compatible", False)),
        "io": io,
        "profile": profiles or {},
        "onnx": {"path": str(onnx_path), "sha256": onnx_sha256},
        "build_options": build_options,
        "build_command": build_command,
        "calibration": calibration,
        "build_host": {k: v for k, v in probe_host().to_dict().items()
                       if k in ("cpu_model", "arch", "cpu_class", "cuda", "tensorrt", "versions")},
    }
    return top


def write_sidecar(engine_path: str | Path, sidecar: dict) -> Path:
    """Write ``<engine>.json`` atomically; returns its path."""
    return write_json_atomic(sidecar_path(engine_path), sidecar)


def read_sidecar(engine_path: str | Path) -> dict:
    """Read and validate an engine's sidecar.

    Raises:
        ArtifactError: missing, not JSON, without model metadata or without the ``engine`` object.
    """
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ArtifactError(f"{engine_path} has no sidecar {side.name}: an engine is only usable with it; "
                            "rebuild with: unet-edge build <export dir or ONNX> --out " + str(engine_path))
    try:
        data = json.loads(side.read_bytes())
    except OSError as e:
        raise ArtifactError(f"cannot read engine sidecar {side}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"engine sidecar {side} is not valid JSON ({e}); rebuild the engine or restore the file") from e
    if not isinstance(data, dict) or not isinstance(data.get("engine"), dict):
        raise ArtifactError(f"{side} is not a unet-edge engine sidecar (no 'engine' object); rebuild the engine")
    ModelMeta.from_dict(data, source=side)  # ArtifactError naming the field when the model metadata is invalid
    info = data["engine"]
    for key in ("tensorrt_version", "gpu", "precision", "io"):
        if key not in info:
            raise ArtifactError(f"{side}: engine info lacks {key!r}; rebuild the engine")
    if not isinstance(info["tensorrt_version"], str):
        raise ArtifactError(f"{side}: engine field 'tensorrt_version' must be a string, got {info['tensorrt_version']!r}; "
                            "rebuild the engine")
    if not isinstance(info["gpu"], dict):
        raise ArtifactError(f"{side}: engine field 'gpu' must be an object, got {info['gpu']!r}; rebuild the engine")
    if not isinstance(info["io"], list) or not all(
            isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("shape"), list) for t in info["io"]):
        raise ArtifactError(f"{side}: engine field 'io' must be a list of {{name, mode, shape, dtype}} objects; "
                            "rebuild the engine")
    return data


def rebuild_hint(sidecar: dict, engine_path: str | Path | None = None) -> str:
    """The ``unet-edge build ...`` command recorded in the sidecar (or a generic one)."""
    cmd = sidecar.get("engine", {}).get("build_command")
    if cmd:
        return cmd
    return f"unet-edge build <export dir or ONNX> --out {engine_path or '<engine>'}"


def check_engine_compat(sidecar: dict, trt_version: str | TrtVersion, gpu: dict,
                        engine_path: str | Path | None = None) -> list[str]:
    """Check that an engine can run on this host before deserializing it.

    Rules: the TensorRT version must equal the build's ``major.minor.patch`` (a version-compatible
    engine may run on the same or a newer release of the same major); the GPU compute capability
    must be equal. A different GPU name with the same compute capability only warns (TensorRT runs
    it, possibly slower, having tuned tactics on another device). Fields recorded as ``unknown``
    on either side are not compared.

    Returns:
        Warnings (strings) for the caller to show.

    Raises:
        ArtifactError: incompatible, with "rebuild with: unet-edge build ..." in the message.
    """
    info = sidecar.get("engine", {})
    hint = rebuild_hint(sidecar, engine_path)
    what = str(engine_path or "engine")
    built = TrtVersion.parse(info.get("tensorrt_version", "0.0"))
    here = trt_version if isinstance(trt_version, TrtVersion) else TrtVersion.parse(str(trt_version))
    problems = []
    if info.get("version_compatible"):
        if here.major != built.major or here < built:
            problems.append(f"it is version-compatible from TensorRT {built} within {built.major}.x, this host has {here}")
    elif here != built:
        problems.append(f"it was built with TensorRT {built}, this host has {here}")
    warnings = []
    b_gpu, h_gpu = info.get("gpu", {}), gpu or {}
    b_cc, h_cc = b_gpu.get("compute_capability", UNKNOWN), h_gpu.get("compute_capability", UNKNOWN)
    if UNKNOWN not in (b_cc, h_cc) and b_cc != h_cc:
        problems.append(f"it was built for compute capability {b_cc} ({b_gpu.get('name')}), this GPU is "
                        f"{h_cc} ({h_gpu.get('name')})")
    b_name, h_name = b_gpu.get("name", UNKNOWN), h_gpu.get("name", UNKNOWN)
    if not problems and UNKNOWN not in (b_name, h_name) and b_name != h_name:
        warnings.append(f"{what} was built on {b_name}, running on {h_name} (same compute capability): "
                        f"rebuild on this GPU for best speed: {hint}")
    if problems:
        raise ArtifactError(f"{what} cannot run here: {'; '.join(problems)}. TensorRT engines are not "
                            f"portable across GPUs or TensorRT versions; rebuild with: {hint}")
    return warnings
