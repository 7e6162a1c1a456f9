"""Jetson bundle from a small trained-shape export: complete, consistent, and a valid bash script.

No TensorRT is needed (nor faked): the script's trtexec recipes are checked against the per-version
flag table, its engine-sidecar templates are filled the way the script fills them and read back with
the real sidecar reader, and the script itself is syntax-checked (``bash -n``) and run only down the
paths that need no TensorRT (bad arguments, trtexec absent).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from unet_edge.errors import ArtifactError, ExportError
from unet_edge.metadata import ModelMeta
from unet_edge.trt.builder import BuildOptions
from unet_edge.trt.jetson import PLACEHOLDERS, SCRIPT_NAME, SIDECAR_DIR, write_jetson_bundle
from unet_edge.trt.sidecar import check_engine_compat, read_sidecar
from unet_edge.trt.trtexec import REMOVED_IN_11, TRTEXEC_FLAGS, flag_name

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the repository
CAMVID_TRAIN = SHARED / "datasets" / "camvid" / "train"
BASH = shutil.which("bash")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """model_fp32/fp16/int8.onnx + sidecars + calib.cache from the project's own export code, for a
    tiny U-Net at 64x96 (the ONNX/TensorRT contract does not depend on the weights)."""
    torch = pytest.importorskip("torch")
    from unet_edge.export.fp16 import export_fp16
    from unet_edge.export.int8 import export_int8
    from unet_edge.export.onnx_export import export_onnx
    from unet_edge.model import UNet, config_from_preset

    if not CAMVID_TRAIN.is_dir():
        pytest.skip(f"CamVid images not found at {CAMVID_TRAIN}")
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("export")
    cfg = config_from_preset("tiny", 3)
    meta = ModelMeta(arch=cfg.to_dict(), class_names=["sky", "road", "car"],
                     palette=[[128, 128, 128], [128, 64, 128], [64, 0, 128]], input_size=(64, 96))
    fp32 = export_onnx(UNet(cfg).eval(), meta, d / "model_fp32.onnx")
    export_fp16(fp32, meta, d / "model_fp16.onnx")
    export_int8(fp32, meta, d / "model_int8.onnx", CAMVID_TRAIN, calib_images=4, cache_path=d / "calib.cache")
    return d


@pytest.fixture(scope="module")
def bundle(export_dir, tmp_path_factory):
    return write_jetson_bundle(export_dir, tmp_path_factory.mktemp("bundle") / "jetson",
                               BuildOptions(workspace_mib=512, builder_optimization_level=4))


def test_bundle_is_complete(bundle, export_dir):
    expected = {"model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx", "model_fp32.onnx.json", "model_fp16.onnx.json",
                "model_int8.onnx.json", "calib.cache", "metadata.json", "README.md", SCRIPT_NAME}
    assert expected <= {p.name for p in bundle.iterdir()}
    assert {p.name for p in (bundle / SIDECAR_DIR).iterdir()} == {f"model_{p}.engine.json.in" for p in ("fp32", "fp16", "int8")}
    assert os.access(bundle / SCRIPT_NAME, os.X_OK)
    for name in ("model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx", "calib.cache"):
        assert (bundle / name).read_bytes() == (export_dir / name).read_bytes()
    info = json.loads((bundle / "metadata.json").read_text())
    for name, digest in info["bundle"]["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest
    assert info["bundle"]["precisions"] == ["fp32", "fp16", "int8"] and info["bundle"]["calibration_cache"]
    assert ModelMeta.from_dict(info["model"]).class_names == ["sky", "road", "car"]
    assert not list(bundle.glob(".*.tmp*"))  # atomic writes left no temporaries


def test_artifacts_keep_their_metadata(bundle):
    from unet_edge.artifacts import read_meta

    for p in ("fp32", "fp16", "int8"):
        meta = read_meta(bundle / f"model_{p}.onnx")
        assert meta.precision == p and meta.input_size == (64, 96)


def test_build_script_is_valid_bash(bundle):
    if BASH is None:
        pytest.skip("bash not installed")
    res = subprocess.run([BASH, "-n", str(bundle / SCRIPT_NAME)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = (bundle / SCRIPT_NAME).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    for needle in ("--version", "dpkg-query", "import tensorrt", "unet-edge build", "/usr/src/tensorrt/bin/trtexec"):
        assert needle in text


def test_build_script_runs_without_tensorrt(bundle, tmp_path):
    """Argument errors exit 2; without trtexec (and without unet-edge) it exits 6 and says so."""
    if BASH is None:
        pytest.skip("bash not installed")
    env = {"PATH": "/usr/bin:/bin", "USE_TRTEXEC": "1", "HOME": str(tmp_path)}
    if Path("/usr/src/tensorrt/bin/trtexec").exists() or shutil.which("trtexec", path=env["PATH"]):
        pytest.skip("trtexec is installed here")
    res = subprocess.run([BASH, str(bundle / SCRIPT_NAME), "bf16"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "precision must be" in res.stderr
    res = subprocess.run([BASH, str(bundle / SCRIPT_NAME), "fp16", "weak"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "mode must be" in res.stderr
    res = subprocess.run([BASH, str(bundle / SCRIPT_NAME), "fp16"], capture_output=True, text=True, env=env)
    assert res.returncode == 6 and "trtexec not found" in res.stderr
    assert not (bundle / "model_fp16.engine.json").exists()


def test_recipes_use_valid_flags_per_version(bundle):
    recipes = json.loads((bundle / "metadata.json").read_text())["bundle"]["trtexec"]
    assert set(recipes) == {f"{m}:{p}:explicit" for m in (10, 11) for p in ("fp32", "fp16", "int8")} | {
        "10:fp16:implicit", "10:int8:implicit"}
    script = (bundle / SCRIPT_NAME).read_text()
    for key, line in recipes.items():
        major, prec, mode = key.split(":")
        argv = line.split()
        flags = {flag_name(a) for a in argv[1:]}
        assert argv[0] == "trtexec" and flags <= TRTEXEC_FLAGS[int(major)], key
        assert "--memPoolSize=workspace:512M" in argv and "--builderOptimizationLevel=4" in argv
        if major == "11":
            assert not flags & REMOVED_IN_11 and "--stronglyTyped" not in flags
        onnx = "model_fp32.onnx" if mode == "implicit" else f"model_{prec}.onnx"
        assert f"--onnx={onnx}" in argv and f"--saveEngine=model_{prec}.engine" in argv
        assert (bundle / onnx).is_file()
        if key == "10:int8:implicit":
            assert "--calib=calib.cache" in argv and "--int8" in flags
        assert f'{key}) "$TRTEXEC_BIN" {line[len("trtexec "):]} ;;' in script


def test_sidecar_templates_fill_to_valid_engine_sidecars(bundle, tmp_path):
    """Fill the templates as build_engine.sh does (sed) and read them with the real sidecar reader."""
    values = {"@TRT_VERSION@": "10.3.0", "@GPU_NAME@": "Orin", "@GPU_CC@": "8.7", "@MODE@": "explicit",
              "@STRONGLY_TYPED@": "true"}
    assert set(values) == set(PLACEHOLDERS)
    for prec in ("fp32", "fp16", "int8"):
        text = (bundle / SIDECAR_DIR / f"model_{prec}.engine.json.in").read_text()
        for k, v in values.items():
            text = text.replace(k, v)
        engine = tmp_path / f"model_{prec}.engine"
        engine.write_bytes(b"plan")
        (tmp_path / f"model_{prec}.engine.json").write_text(text)
        side = read_sidecar(engine)
        assert side["precision"] == prec and side["engine"]["strongly_typed"] is True
        assert side["engine"]["io"][0] == {"name": "images", "mode": "input", "shape": [1, 3, 64, 96], "dtype": "float32"}
        assert side["engine"]["io"][1]["shape"] == [1, 3, 64, 96]
        assert check_engine_compat(side, "10.3.0.30", {"name": "Orin", "compute_capability": "8.7"}) == []
        with pytest.raises(ArtifactError, match=f"rebuild with: ./build_engine.sh {prec} explicit"):
            check_engine_compat(side, "10.16.1", {"name": "Orin", "compute_capability": "8.7"})


def test_readme_covers_the_target(bundle):
    text = (bundle / "README.md").read_text()
    for needle in ("JetPack 6", "TensorRT 10.3", "./build_engine.sh", "not portable", "nvarguscamerasrc",
                   "GStreamer", "opencv-python", "unet-edge run model_fp16.engine --source", "int8 implicit"):
        assert needle in text, needle


def test_bundle_errors(export_dir, tmp_path):
    with pytest.raises(ArtifactError, match="model_fp32.onnx"):
        write_jetson_bundle(tmp_path / "empty", tmp_path / "b")
    with pytest.raises(ExportError):
        write_jetson_bundle(export_dir, export_dir)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(export_dir / "model_fp32.onnx", partial)
    shutil.copy(export_dir / "model_fp32.onnx.json", partial)
    with pytest.raises(ExportError, match="model_fp16.onnx"):
        write_jetson_bundle(partial, tmp_path / "b")
    out = write_jetson_bundle(partial, tmp_path / "b", default_precision="fp32")
    recipes = json.loads((out / "metadata.json").read_text())["bundle"]["trtexec"]
    assert set(recipes) == {"10:fp32:explicit", "11:fp32:explicit", "10:fp16:implicit"}
    assert "calib.cache" not in {p.name for p in out.iterdir()}


def test_dynamic_export_gets_profile_shapes(tmp_path):
    torch = pytest.importorskip("torch")
    from unet_edge.export.onnx_export import export_onnx
    from unet_edge.model import UNet, config_from_preset

    cfg = config_from_preset("tiny", 2)
    meta = ModelMeta(arch=cfg.to_dict(), class_names=["bg", "fg"], palette=[[0, 0, 0], [255, 255, 255]], input_size=(64, 96))
    d = tmp_path / "exp"
    export_onnx(UNet(cfg).eval(), meta, d / "model_fp32.onnx", dynamic=True)
    out = write_jetson_bundle(d, tmp_path / "b", default_precision="fp32")
    recipes = json.loads((out / "metadata.json").read_text())["bundle"]["trtexec"]
    for key in ("10:fp32:explicit", "11:fp32:explicit"):
        assert "--optShapes=images:1x3x64x96" in recipes[key] and "--maxShapes=images:1x3x64x96" in recipes[key]
    tmpl = json.loads((out / SIDECAR_DIR / "model_fp32.engine.json.in").read_text()
                      .replace("@STRONGLY_TYPED@", "true"))
    assert tmpl["engine"]["profile"] == {"images": {"min": [1, 3, 64, 96], "opt": [1, 3, 64, 96], "max": [1, 3, 64, 96]}}
    assert tmpl["engine"]["io"][0]["shape"][0] == -1


def test_bundle_of_an_export_without_provenance_warns_and_records_none(export_dir, tmp_path):
    """The fixture's files were written without a source checkpoint (as by an older unet-edge):
    the bundle is made, with a warning, and says it does not know the source."""
    from unet_edge.provenance import ProvenanceWarning

    with pytest.warns(ProvenanceWarning, match="no source-checkpoint record"):
        out = write_jetson_bundle(export_dir, tmp_path / "b", default_precision="fp32", log=lambda *_: None)
    bundle = json.loads((out / "metadata.json").read_text())["bundle"]
    assert bundle["source_checkpoint_sha256"] is None and bundle["source_checkpoint"] is None
    assert (out / "calib.cache.json").is_file()


def test_bundle_and_engine_sidecars_carry_the_source_checkpoint(tiny_export, tiny_run, tmp_path):
    """From a real export: metadata.json, the copied calib.cache.json and every engine-sidecar
    template (filled as build_engine.sh fills it) name the checkpoint's sha256."""
    from unet_edge.io_utils import sha256
    from unet_edge.provenance import SHA_KEY, folder_sources

    out = write_jetson_bundle(tiny_export, tmp_path / "b", default_precision="fp32", log=lambda *_: None)
    want = sha256(tiny_run["best"])
    assert json.loads((out / "metadata.json").read_text())["bundle"][SHA_KEY] == want
    assert set(folder_sources(out).values()) == {want}  # ONNX files and calib.cache (via its sidecar)
    values = {"@TRT_VERSION@": "10.3.0", "@GPU_NAME@": "Orin", "@GPU_CC@": "8.7", "@MODE@": "explicit",
              "@STRONGLY_TYPED@": "true"}
    for prec in ("fp32", "fp16", "int8"):
        text = (out / SIDECAR_DIR / f"model_{prec}.engine.json.in").read_text()
        for k, v in values.items():
            text = text.replace(k, v)
        (tmp_path / f"model_{prec}.engine").write_bytes(b"plan")
        (tmp_path / f"model_{prec}.engine.json").write_text(text)
        assert read_sidecar(tmp_path / f"model_{prec}.engine")["extra"][SHA_KEY] == want
