"""Jetson deployment bundle: everything needed to build and run the model on a Jetson, no Python
TensorRT required on the export host.

``write_jetson_bundle(export_dir, out_dir)`` copies from an export folder the ONNX models
(``model_fp32.onnx`` required; ``model_fp16.onnx``, ``model_int8.onnx`` and ``calib.cache`` when
present) with their JSON sidecars, and writes ``metadata.json``, ``README.md``, one engine-sidecar
template per precision (``engine_sidecars/``) and an executable ``build_engine.sh`` that, on the
target, detects the TensorRT version (``trtexec --version`` banner, then dpkg, then the Python
bindings), and builds ``model_<precision>.engine`` with ``unet-edge build`` when unet-edge and the
TensorRT Python bindings are installed, otherwise with the trtexec line for that TensorRT major
(:func:`unet_edge.trt.trtexec.trtexec_commands`), then writes the engine's sidecar.

The export folder must hold artifacts of one checkpoint (:func:`unet_edge.provenance.check_consistent`);
``metadata.json`` records it. The bundle is built beside ``out_dir`` and replaces it as a whole
(:class:`unet_edge.transaction.StagedFolder`), so no file of an older bundle stays behind.
``export --jetson`` writes it through :func:`export_step` before the export report is written.

Target: JetPack 6.1/6.2 (TensorRT 10.3); JetPack with TensorRT 11 uses the explicit recipes.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
from pathlib import Path

from typing import Callable

from ..errors import ArtifactError, BackendUnavailableError, ExportError, UsageError
from ..formats import (DEFAULT_BUILD_PRECISION, ENGINE_SUFFIXES, JETSON_CSI_PIPELINE, TRT_PRECISIONS, artifact,
                       engine_file, onnx_file)
from ..io_utils import atomic_path, sha256, write_json_atomic, write_text_atomic
from ..metadata import ModelMeta, sidecar_path
from ..provenance import NAME_KEY, SHA_KEY, check_consistent, folder_artifacts
from ..transaction import StagedFolder
from .builder import BuildOptions
from .trtexec import trtexec_commands
from .version import SUPPORTED_MAJORS, is_strongly_typed_only

SCRIPT_NAME = artifact("jetson_script").file
CALIB_CACHE = artifact("calib_cache").file
BUNDLE_MARKER = "metadata.json"
SIDECAR_DIR = "engine_sidecars"
#: Placeholders of the engine-sidecar templates, filled by build_engine.sh with sed.
PLACEHOLDERS = ("@TRT_VERSION@", "@GPU_NAME@", "@GPU_CC@", "@MODE@", "@STRONGLY_TYPED@")


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _onnx_io(path: Path, meta: ModelMeta) -> tuple[list[dict], bool]:
    """([{"name", "mode", "shape", "dtype"}], dynamic) from the ONNX graph (-1 = dynamic dim)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    types = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}
    inits = {t.name for t in model.graph.initializer}
    io, dynamic = [], False
    for mode, values in (("input", [v for v in model.graph.input if v.name not in inits]), ("output", model.graph.output)):
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            dynamic |= mode == "input" and any(d < 0 for d in shape)
            io.append({"name": v.name, "mode": mode, "shape": shape, "dtype": types.get(t.elem_type, str(t.elem_type))})
    return io, dynamic


def _sidecar_template(meta: ModelMeta, precision: str, io: list[dict], profiles: dict, options: BuildOptions,
                      onnx_name: str, onnx_sha: str) -> str:
    """Engine sidecar JSON with placeholders; valid JSON once build_engine.sh fills them."""
    from .sidecar import make_sidecar

    opts = options.to_dict() | {"precision": precision, "mode": "@MODE@"}
    side = make_sidecar(meta, precision=precision, mode="@MODE@", trt_version="@TRT_VERSION@",
                        gpu={"name": "@GPU_NAME@", "compute_capability": "@GPU_CC@"}, io=io, onnx_path=onnx_name,
                        onnx_sha256=onnx_sha, strongly_typed=True, build_options=opts,
                        build_command=f"./{SCRIPT_NAME} {precision} @MODE@", profiles=profiles,
                        calibration=None, built_by="trtexec (build_engine.sh)")
    return json.dumps(side, indent=2).replace('"strongly_typed": true', '"strongly_typed": @STRONGLY_TYPED@') + "\n"


def _recipes(precisions: list[str], options: BuildOptions, meta: ModelMeta, dynamic: bool, has_cache: bool) -> dict:
    """{"<major>:<precision>:<mode>": trtexec line} for every build this bundle supports."""
    onnx = {p: onnx_file(p) for p in precisions}
    out = {}
    for major in SUPPORTED_MAJORS:
        for prec in precisions:
            opts = BuildOptions(**{**options.__dict__, "precision": prec, "mode": "explicit"})
            out[f"{major}:{prec}:explicit"] = trtexec_commands(onnx, major, prec, opts, meta=meta, dynamic=dynamic)[0]
        if not is_strongly_typed_only(major):  # implicit (builder flags, calibration cache): 10.x only
            for prec in ("fp16", "int8"):
                if prec == "int8" and not has_cache:
                    continue
                opts = BuildOptions(**{**options.__dict__, "precision": prec, "mode": "implicit"})
                out[f"{major}:{prec}:implicit"] = trtexec_commands(onnx, major, prec, opts, calib_cache=CALIB_CACHE,
                                                                   meta=meta, dynamic=dynamic)[0]
    return out


def build_script(recipes: dict, default_precision: str = DEFAULT_BUILD_PRECISION) -> str:
    """The text of build_engine.sh (bash); ``recipes`` from :func:`_recipes`."""
    cases = []
    for key, line in recipes.items():
        assert line.startswith("trtexec ")
        cases.append(f'    {key}) "$TRTEXEC_BIN" {line[len("trtexec "):]} ;;')
    available = " ".join(sorted(recipes))
    engines = " ".join(f"{p}) OUT={engine_file(p)} ;;" for p in TRT_PRECISIONS)
    return f"""#!/usr/bin/env bash
# Build a TensorRT engine for THIS device from the ONNX models in this folder (generated by unet-edge).
# TensorRT engines are not portable: build on the target, rebuild after a JetPack/TensorRT upgrade.
#
# usage: ./{SCRIPT_NAME} [fp16|int8|fp32] [explicit|implicit]     (default: {default_precision} explicit)
#   explicit: precision from the ONNX graph ({onnx_file("fp16")}, Q/DQ {onnx_file("int8")}); TensorRT 10 and 11
#   implicit: TensorRT 10.x only: {onnx_file("fp32")} + --fp16 / --int8 --calib={CALIB_CACHE}
# env: TRTEXEC=/path/to/trtexec   USE_TRTEXEC=1 (skip `unet-edge build`)
set -euo pipefail
cd "$(dirname "${{BASH_SOURCE[0]}}")"

PRECISION="${{1:-{default_precision}}}"
MODE="${{2:-explicit}}"
case "$PRECISION" in {engines} *) echo "error: precision must be {", ".join(TRT_PRECISIONS[:-1])} or {TRT_PRECISIONS[-1]}, got '$PRECISION'" >&2; exit 2 ;; esac
case "$MODE" in explicit|implicit) ;; *) echo "error: mode must be explicit or implicit, got '$MODE'" >&2; exit 2 ;; esac

# 1. unet-edge with the TensorRT Python API (writes the engine and its sidecar itself)
if [ "${{USE_TRTEXEC:-0}}" != "1" ] && command -v unet-edge >/dev/null 2>&1; then
    set +e
    unet-edge build . --out "$OUT" --precision "$PRECISION" --mode "$MODE"
    rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then echo "built $OUT"; exit 0; fi
    if [ "$rc" -ne 6 ]; then exit "$rc"; fi   # 6: TensorRT Python bindings unavailable -> trtexec
    echo "unet-edge cannot use TensorRT here; falling back to trtexec" >&2
fi

# 2. trtexec
TRTEXEC_BIN="${{TRTEXEC:-}}"
if [ -z "$TRTEXEC_BIN" ]; then
    if command -v trtexec >/dev/null 2>&1; then TRTEXEC_BIN="$(command -v trtexec)";
    elif [ -x /usr/src/tensorrt/bin/trtexec ]; then TRTEXEC_BIN=/usr/src/tensorrt/bin/trtexec;
    else echo "error: trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec; set TRTEXEC=...)" >&2; exit 6; fi
fi

trt_version() {{
    local v raw
    # trtexec prints "[TensorRT v100300]" (exits 1 on 10.3 without a model: ignore the status)
    raw="$("$TRTEXEC_BIN" --version 2>&1 || true)"
    v="$(printf '%s\\n' "$raw" | grep -Eo 'TensorRT v[0-9.]+' | head -n 1 | sed 's/TensorRT v//')" || true
    if [ -n "$v" ]; then
        case "$v" in
            *.*) echo "$v"; return 0 ;;
            *) if [ "$v" -ge 100000 ]; then echo "$((v / 10000)).$((v / 100 % 100)).$((v % 100))";
               else echo "$((v / 1000)).$((v / 100 % 10)).$((v % 100))"; fi; return 0 ;;
        esac
    fi
    v="$(dpkg-query -W -f='${{Version}}\\n' tensorrt libnvinfer10 libnvinfer11 libnvinfer8 2>/dev/null | grep -Eo '^[0-9]+\\.[0-9]+\\.[0-9]+' | head -n 1)" || true
    if [ -n "$v" ]; then echo "$v"; return 0; fi
    v="$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null)" || true
    if [ -n "$v" ]; then echo "$v" | grep -Eo '^[0-9]+\\.[0-9]+\\.[0-9]+'; return 0; fi
    return 1
}}

gpu_identity() {{
    # same order as unet_edge.trt.cuda_utils.gpu_info: pycuda, nvidia-smi, Jetson device-tree model
    local out
    out="$(python3 -c 'import pycuda.driver as c; c.init(); d=c.Device(0); print(d.name()); print("%d.%d" % d.compute_capability())' 2>/dev/null)" || true
    if [ -n "$out" ]; then GPU_NAME="$(printf '%s\\n' "$out" | sed -n 1p)"; GPU_CC="$(printf '%s\\n' "$out" | sed -n 2p)"; return; fi
    out="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader -i 0 2>/dev/null)" || true
    if [ -n "$out" ]; then GPU_NAME="${{out%%,*}}"; GPU_CC="$(echo "${{out#*,}}" | tr -d ' ')"; return; fi
    if [ -r /proc/device-tree/model ]; then GPU_NAME="$(tr -d '\\0' < /proc/device-tree/model)"; GPU_CC=unknown; return; fi
    GPU_NAME=unknown; GPU_CC=unknown
}}

TRT_VERSION="$(trt_version)" || {{ echo "error: cannot tell the TensorRT version (trtexec, dpkg, python)" >&2; exit 6; }}
MAJOR="${{TRT_VERSION%%.*}}"
echo "TensorRT $TRT_VERSION ($TRTEXEC_BIN)"
if [ "$MAJOR" -lt 10 ]; then
    echo "error: TensorRT $TRT_VERSION is too old: unet-edge needs 10.x (JetPack 6.1+) or 11.x" >&2; exit 6
fi
if [ "$MAJOR" -ge 11 ] && [ "$MODE" = "implicit" ]; then
    echo "error: TensorRT $MAJOR removed implicit INT8/FP16 (builder flags, --calib); use: ./{SCRIPT_NAME} $PRECISION explicit" >&2; exit 6
fi

KEY="$MAJOR:$PRECISION:$MODE"
rm -f "$OUT.json"   # never leave an old sidecar next to a new engine
case "$KEY" in
{chr(10).join(cases)}
    *) echo "error: no build recipe for $KEY (major:precision:mode); available: {available}" >&2; exit 2 ;;
esac

gpu_identity
GPU_NAME="$(printf '%s' "$GPU_NAME" | tr -cd 'A-Za-z0-9 ._()-')"
GPU_CC="$(printf '%s' "$GPU_CC" | tr -cd '0-9.a-z')"
if [ "$MODE" = "explicit" ] || [ "$MAJOR" -ge 11 ]; then STRONGLY=true; else STRONGLY=false; fi
sed -e "s|@TRT_VERSION@|$TRT_VERSION|g" -e "s|@GPU_NAME@|$GPU_NAME|g" -e "s|@GPU_CC@|$GPU_CC|g" \\
    -e "s|@MODE@|$MODE|g" -e "s|@STRONGLY_TYPED@|$STRONGLY|g" \\
    "{SIDECAR_DIR}/$OUT.json.in" > "$OUT.json.tmp"
mv "$OUT.json.tmp" "$OUT.json"
echo "built $OUT (+ $OUT.json) for $GPU_NAME with TensorRT $TRT_VERSION"
"""


def _readme(meta: ModelMeta, precisions: list[str], has_cache: bool, dynamic: bool, options: BuildOptions) -> str:
    h, w = meta.input_size
    fp16_engine = engine_file("fp16")
    files = "\n".join(f"| `{onnx_file(p)}` (+ `.json`) | {p.upper()} ONNX, input `{meta.input_name}` float32 "
                      f"(N, 3, {h}, {w}), output `{meta.output_name}` (N, {meta.num_classes}, {h}, {w}) |"
                      for p in precisions)
    cache = (f"| `{CALIB_CACHE}` | INT8 calibration cache (TensorRT text format) for implicit INT8 on TensorRT 10.x |\n"
             if has_cache else "")
    int8 = (f"./{SCRIPT_NAME} int8            # INT8 from the Q/DQ ONNX (explicit quantization)\n"
            if "int8" in precisions else "")
    implicit = (f"./{SCRIPT_NAME} int8 implicit   # TensorRT 10.x only: FP32 ONNX + --int8 --calib={CALIB_CACHE}\n"
                if has_cache else "")
    return f"""# unet-edge Jetson bundle: {", ".join(meta.class_names[:6])}{", ..." if len(meta.class_names) > 6 else ""}

U-Net semantic segmentation ({meta.num_classes} classes, input {h}x{w}) ready to be built into a TensorRT
engine on an NVIDIA Jetson.

| file | what |
|---|---|
{files}
{cache}| `{BUNDLE_MARKER}` | model metadata (classes, palette, normalization) and SHA-256 of every file |
| `{SCRIPT_NAME}` | builds `model_<precision>.engine` + its `.json` sidecar on the device |
| `{SIDECAR_DIR}/` | sidecar templates filled in by `{SCRIPT_NAME}` |

## Target

* **JetPack 6.1 / 6.2 (L4T r36.4) = TensorRT 10.3** on Jetson Orin. JetPack 6.0 ships TensorRT 8.6,
  which unet-edge does not support: upgrade JetPack.
* TensorRT 11 (newer JetPack): only the explicit recipes (FP16 ONNX, Q/DQ INT8 ONNX) exist; TensorRT 11
  removed `--fp16`, `--int8` and `--calib`.

## Build the engine (on the Jetson)

```bash
./{SCRIPT_NAME}                 # FP16 (default): builds {fp16_engine}
{int8}{implicit}./{SCRIPT_NAME} fp32
```

The script detects the TensorRT version (`trtexec --version`, then dpkg, then the Python bindings).
If `unet-edge` is installed and can import `tensorrt`, it runs `unet-edge build` (TensorRT Python API);
otherwise it runs `trtexec` (`/usr/src/tensorrt/bin/trtexec` on JetPack; override with `TRTEXEC=...`).
Each engine gets a `<engine>.json` sidecar (TensorRT version, GPU, precision, I/O) that `unet-edge`
checks before loading it.
Workspace limit: {options.workspace_mib} MiB{"; the ONNX has dynamic batch/H/W, built for (1, 3, " + f"{h}, {w})" if dynamic else ""}.
For DLA: `unet-edge build . --out model_dla.engine --mode implicit --precision fp16 --dla-core 0`.

**Engines are not portable.** A plan only runs with the TensorRT version and GPU it was built with:
do not copy `.engine` files between devices or across JetPack upgrades. Build on each device; rebuild
after upgrading JetPack/TensorRT (unet-edge refuses a mismatched engine and prints the rebuild command).

## Run

```bash
# on the Jetson: install unet-edge and pycuda in a Python environment that sees JetPack's tensorrt
# bindings and system OpenCV (e.g. python3 -m venv --system-site-packages ~/unet-edge-env)
unet-edge run {fp16_engine} --source 0                         # USB camera
unet-edge run {fp16_engine} --source video.mp4
unet-edge run {fp16_engine} --source "{JETSON_CSI_PIPELINE}"
```

**CSI cameras** are read through GStreamer's `nvarguscamerasrc` (the pipeline above; `sensor-id=N`
selects the camera). That needs an OpenCV built with GStreamer: use the **system OpenCV** that JetPack
installs (`sudo apt install python3-opencv`; check with
`python3 -c "import cv2; print(cv2.getBuildInformation())" | grep GStreamer`). The `opencv-python` wheels
from pip have **no GStreamer**: uninstall them (`pip uninstall opencv-python opencv-python-headless`)
in the environment that runs unet-edge, or create it with `--system-site-packages`.

For stable timings: `sudo nvpmodel -m 0 && sudo jetson_clocks`.
"""


def write_jetson_bundle(export_dir: str | Path, out_dir: str | Path, options: BuildOptions | None = None,
                        default_precision: str = DEFAULT_BUILD_PRECISION, log: Callable[[str], None] = print) -> Path:
    """Write a self-contained Jetson bundle (see module docstring).

    Args:
        export_dir: output folder of ``unet-edge export`` (``model_fp32.onnx`` required).
        out_dir: bundle folder. Built beside it and put in place in one step (a previous bundle
            there is replaced as a whole, :class:`~unet_edge.transaction.StagedFolder`). Must differ
            from ``export_dir``.
        options: build options baked into the recipes (workspace MiB, shapes, opt level, version
            compatibility); ``precision``/``mode`` are chosen when running ``build_engine.sh``;
            ``dla_core``, ``timing_cache`` and ``calib_cache`` are dropped (DLA engines are built on
            the device with ``unet-edge build --dla-core``; host cache paths mean nothing there).
        default_precision: precision ``build_engine.sh`` builds without arguments.
        log: receives progress lines (stale staging folders removed).

    ``metadata.json`` records the checkpoint the artifacts come from (``bundle.source_checkpoint``,
    ``bundle.source_checkpoint_sha256``; None for an export older than provenance records).

    Returns:
        ``out_dir``.

    Raises:
        ArtifactError: ``model_fp32.onnx`` (or a sidecar) is missing; a calibration cache is malformed;
            the export folder's artifacts come from different checkpoints
            (:func:`unet_edge.provenance.check_consistent`, naming them).
        ExportError: ``out_dir`` is ``export_dir``; the default precision has no ONNX.
        UsageError: ``out_dir`` exists and is not a bundle folder, or holds files a bundle does not.
    """
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    # DLA engines are built on the target with `unet-edge build --dla-core`; host paths (timing and
    # calibration caches) mean nothing on the device
    options = dataclasses.replace(options or BuildOptions(), dla_core=None, timing_cache=None, calib_cache=None)
    if not (export_dir / onnx_file("fp32")).is_file():
        raise ArtifactError(f"{export_dir / onnx_file('fp32')} not found; run `unet-edge export <checkpoint> "
                            f"--out {export_dir} --fp16 --int8 --calib-data <dataset>` first")
    if out_dir.resolve() == export_dir.resolve():
        raise ExportError("the Jetson bundle folder must differ from the export folder")
    precisions = [p for p in TRT_PRECISIONS if (export_dir / onnx_file(p)).is_file()]
    if default_precision not in precisions:
        raise ExportError(f"default precision {default_precision} has no {onnx_file(default_precision)} in {export_dir}")
    source = check_consistent(folder_artifacts(export_dir), where=export_dir)
    with StagedFolder(out_dir, marker=BUNDLE_MARKER, owns=owned_by_bundle, log=log, what="Jetson bundle") as stage:
        _write_bundle(export_dir, stage.path, precisions, options, default_precision, source)
        stage.commit()
    return out_dir


def owned_by_bundle(name: str) -> bool:
    """True for top-level names a Jetson bundle folder may hold (what :func:`write_jetson_bundle`
    writes, the engines ``build_engine.sh`` builds there and their sidecars, hidden temporaries)."""
    base = name.split(".json")[0] if ".json" in name else name
    return (name.startswith(".") or name in (BUNDLE_MARKER, "README.md", SCRIPT_NAME, SIDECAR_DIR)
            or base in (*map(onnx_file, TRT_PRECISIONS), CALIB_CACHE) or Path(base).suffix.lower() in ENGINE_SUFFIXES)


def _write_bundle(export_dir: Path, out_dir: Path, precisions: list[str], options: BuildOptions,
                  default_precision: str, source: str | None) -> None:
    """Write the bundle's files into ``out_dir`` (the staging folder of :func:`write_jetson_bundle`)."""
    from calibration.cache import read_calibration_cache

    from ..artifacts import read_meta

    files, metas = {}, {}
    for p in precisions:
        src = export_dir / onnx_file(p)
        metas[p] = read_meta(src)
        _copy(src, out_dir / src.name)
        if sidecar_path(src).is_file():
            _copy(sidecar_path(src), sidecar_path(out_dir / src.name))
        else:
            write_json_atomic(sidecar_path(out_dir / src.name), metas[p].to_dict())
        files[src.name] = sha256(out_dir / src.name)
    has_cache = (export_dir / CALIB_CACHE).is_file()
    if has_cache:
        read_calibration_cache(export_dir / CALIB_CACHE)  # refuse a malformed cache early
        _copy(export_dir / CALIB_CACHE, out_dir / CALIB_CACHE)
        files[CALIB_CACHE] = sha256(out_dir / CALIB_CACHE)
        if sidecar_path(export_dir / CALIB_CACHE).is_file():
            _copy(sidecar_path(export_dir / CALIB_CACHE), sidecar_path(out_dir / CALIB_CACHE))
    meta = metas["fp32"]
    io, dynamic = _onnx_io(out_dir / onnx_file("fp32"), meta)
    profiles = {}
    if dynamic or options.opt_shape is not None:
        shapes = (options.min_shape, options.opt_shape, options.max_shape) if options.opt_shape else ((1, 3, *meta.input_size),) * 3
        profiles = {meta.input_name: dict(zip(("min", "opt", "max"), (list(s) for s in shapes)))}
    for p in precisions:
        text = _sidecar_template(metas[p], p, io, profiles, options, onnx_file(p), files[onnx_file(p)])
        write_text_atomic(out_dir / SIDECAR_DIR / f"{engine_file(p)}.json.in", text)
    recipes = _recipes(precisions, options, meta, dynamic, has_cache)
    script = out_dir / SCRIPT_NAME
    write_text_atomic(script, build_script(recipes, default_precision))
    os.chmod(script, 0o755)
    write_text_atomic(out_dir / "README.md", _readme(meta, precisions, has_cache, dynamic, options))
    write_json_atomic(out_dir / BUNDLE_MARKER, {
        "model": meta.to_dict(),
        "bundle": {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "target": "Jetson, JetPack 6.1/6.2 (TensorRT 10.3); TensorRT 11: explicit recipes only",
            "precisions": precisions,
            "calibration_cache": has_cache,
            "dynamic": dynamic,
            "build_options": options.to_dict(),
            "trtexec": recipes,
            "files": files,
            SHA_KEY: source,
            NAME_KEY: meta.extra.get(NAME_KEY) if source else None,
        },
    })


def export_step(jetson_dir: str | Path, export_dir: str | Path, precision: str,
                log: Callable[[str], None] = print) -> Callable[[Path, dict], None]:
    """The ``finish`` step of ``export --jetson`` for :func:`unet_edge.export.pipeline.export_all`:
    writes the Jetson bundle from the staged export and, where TensorRT is installed, builds
    ``model_<precision>.engine`` into the bundle; records ``jetson_bundle`` and ``engine`` (None
    without TensorRT) in the report before it is written, so ``export_report.json`` is the final one.

    Args:
        jetson_dir: the bundle folder; must lie outside ``export_dir`` (and not contain it), since
            each is replaced as a whole.
        export_dir: the export's ``--out``.
        precision: the bundle's default precision and the engine's.

    Raises:
        UsageError: ``jetson_dir`` is inside ``export_dir`` or contains it (raised here, before
            the export starts). ExportError: a bad precision.
    """
    jetson_dir, export_dir = Path(jetson_dir), Path(export_dir)
    j, e = jetson_dir.resolve(), export_dir.resolve()
    if j == e or e in j.parents or j in e.parents:
        raise UsageError(f"--jetson {jetson_dir} and --out {export_dir} must be separate folders, neither inside the "
                         "other: each is replaced as a whole when written again")
    options = BuildOptions(precision=precision).validate()

    def step(stage: Path, report: dict) -> None:
        bundle = write_jetson_bundle(stage, jetson_dir, options=options, default_precision=precision, log=log)
        report["jetson_bundle"] = str(bundle)
        log(f"Jetson bundle: {bundle} (copy it to the target and run {SCRIPT_NAME})")
        from .version import import_tensorrt

        try:
            import_tensorrt()
        except BackendUnavailableError:
            report["engine"] = None
            log(f"TensorRT is not installed here: the engine is built on the target by {SCRIPT_NAME}")
            return
        from .builder import build_engine

        engine = build_engine(bundle, bundle / engine_file(precision), options)
        report["engine"] = str(engine)
        log(f"TensorRT found: built {engine} on this host")

    return step
