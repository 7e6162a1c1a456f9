"""OpenVINO IR export (FP32 + NNCF INT8) and the OpenVINO backend, on the tiny export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'unet-edge[openvino]')")
nncf = pytest.importorskip("nncf", reason="nncf is not installed (pip install 'unet-edge[openvino]')")

from calibration.images import calibration_images  # noqa: E402
from unet_edge import openvino_ir  # noqa: E402
from unet_edge.artifacts import artifact_kind, read_meta  # noqa: E402
from unet_edge.data.layouts import load_dataset  # noqa: E402
from unet_edge.errors import ArtifactError, BackendUnavailableError, DataError, ExportError, UsageError  # noqa: E402
from unet_edge.export import openvino as ov_export  # noqa: E402
from unet_edge.formats import EXPORT_REPORT, artifact, export_files  # noqa: E402
from unet_edge.io_utils import sha256  # noqa: E402
from unet_edge.preprocess import preprocess  # noqa: E402
from unet_edge.provenance import SHA_KEY  # noqa: E402
from unet_edge.runtime import loader, openvino_backend  # noqa: E402
from unet_edge.runtime.openvino_backend import OpenVinoBackend, ir_weights_path, read_ir_meta  # noqa: E402
from unet_edge.runtime.ort_backend import OrtBackend  # noqa: E402

CALIB_IMAGES = 4


@pytest.fixture(scope="module")
def irs(tiny_export, folder_dataset, tmp_path_factory) -> dict:
    """Both IRs of the tiny export, plus the images NNCF was fed (recorded on the way)."""
    fed: list[list[Path]] = []
    real = ov_export.calibration_batches

    def spy(paths, meta, batch_size=1):
        fed.append(list(paths))
        return real(paths, meta, batch_size)

    out = tmp_path_factory.mktemp("openvino")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ov_export, "calibration_batches", spy)
        made = ov_export.export_openvino(tiny_export, calib_data=folder_dataset, calib_images=CALIB_IMAGES,
                                         out_dir=out)
    return {**made, "fed": fed, "out": out}


@pytest.fixture(scope="module")
def val_batch(folder_dataset, tiny_export) -> np.ndarray:
    meta = read_meta(tiny_export / "model_fp32.onnx")
    ds = load_dataset(folder_dataset, "val")
    return np.stack([preprocess(ds[i][0], meta) for i in range(min(4, len(ds)))])


def test_export_writes_ir_pairs_and_sidecars_without_temporaries(irs):
    names = sorted(p.name for p in irs["out"].iterdir())
    assert names == ["model_openvino_fp32.bin", "model_openvino_fp32.xml", "model_openvino_fp32.xml.json",
                     "model_openvino_int8.bin", "model_openvino_int8.xml", "model_openvino_int8.xml.json"]


def test_fp32_ir_logits_match_onnx_runtime(irs, tiny_export, val_batch):
    onnx_path = tiny_export / "model_fp32.onnx"
    ref = OrtBackend(str(onnx_path), read_meta(onnx_path), threads=1).infer(val_batch)
    with OpenVinoBackend(irs["openvino_fp32"], threads=1) as be:
        out = be.infer(val_batch)  # static batch 1: runs in chunks
        assert be.static_batch == 1
    assert out.dtype == np.float32 and out.shape == ref.shape == (len(val_batch), 3, *val_batch.shape[2:])
    assert float(np.abs(out - ref).max()) < 1e-4


def test_int8_ir_is_quantized_on_the_ort_calibration_images(irs, folder_dataset, val_batch):
    model = ov.Core().read_model(str(irs["openvino_int8"]))
    ops = ov_export.ir_op_counts(model)
    convs = ops["Convolution"]
    assert ops["FakeQuantize"] >= convs  # every convolution's input is quantized
    assert ops["int8_constants"] == convs  # and every convolution's weights are int8
    q = read_ir_meta(irs["openvino_int8"]).extra["quantization"]
    assert (q["scheme"], q["preset"], q["images"], q["subset_size"]) == ("openvino-nncf", "performance", 4, 4)
    assert q["fake_quantize_nodes"] == ops["FakeQuantize"]
    # the same images ONNX Runtime's INT8 export calibrates on, for each pass NNCF makes over them
    assert irs["fed"] and all(p == calibration_images(folder_dataset, CALIB_IMAGES) for p in irs["fed"])

    with OpenVinoBackend(irs["openvino_fp32"], threads=1) as f, OpenVinoBackend(irs["openvino_int8"], threads=1) as i:
        a, b = f.infer(val_batch), i.infer(val_batch)
        assert (f.precision, i.precision) == ("fp32", "int8")
        assert i.label == "openvino int8 nncf-performance (cpu)" and f.label == "openvino fp32 (cpu)"
    agreement = float((a.argmax(1) == b.argmax(1)).mean())
    assert agreement >= 0.90, agreement
    assert not np.array_equal(a, b)  # really another model, not the FP32 one again


def test_metadata_round_trips_via_sidecar_and_rt_info(irs, tiny_export, tmp_path):
    src = read_meta(tiny_export / "model_fp32.onnx")
    for key, precision in (("openvino_fp32", "fp32"), ("openvino_int8", "int8")):
        meta = read_ir_meta(irs[key])
        assert meta.precision == precision
        assert (meta.class_names, meta.arch, meta.input_size, meta.palette) == (
            src.class_names, src.arch, src.input_size, src.palette)
        assert meta.extra["source_checkpoint"] == src.extra["source_checkpoint"]
        assert meta.extra["openvino"]["source_onnx"] == "model_fp32.onnx"
    # without the sidecar, the copy inside the IR's rt_info is read
    xml = tmp_path / "copy.xml"
    shutil.copy(irs["openvino_int8"], xml)
    shutil.copy(ir_weights_path(irs["openvino_int8"]), ir_weights_path(xml))
    assert read_ir_meta(xml).to_dict() == read_ir_meta(irs["openvino_int8"]).to_dict()
    (tmp_path / "bare.xml").write_text("<net><rt_info/></net>")
    with pytest.raises(ArtifactError, match="no unet-edge metadata"):
        read_ir_meta(tmp_path / "bare.xml")


def test_ir_input_shape_is_read_without_openvino(irs, tiny_export):
    meta = read_meta(tiny_export / "model_fp32.onnx")
    for key in ("openvino_fp32", "openvino_int8"):
        assert openvino_ir.ir_input_shape(irs[key]) == [1, 3, *meta.input_size]


def test_artifact_kind_and_read_meta_recognise_the_irs(irs, tmp_path):
    for key, precision in (("openvino_fp32", "fp32"), ("openvino_int8", "int8")):
        assert artifact_kind(irs[key]) == "openvino"
        meta = read_meta(irs[key])
        assert meta.to_dict() == read_ir_meta(irs[key]).to_dict() and meta.precision == precision
    xml = tmp_path / "copied.xml"  # copied without its sidecar: read_meta falls back to the IR's rt_info
    shutil.copy(irs["openvino_int8"], xml)
    assert read_meta(xml).to_dict() == read_ir_meta(irs["openvino_int8"]).to_dict()


def test_load_backend_opens_the_irs_and_names_the_missing_package(irs, monkeypatch):
    with loader.load_backend(irs["openvino_fp32"], threads=1) as f, loader.load_backend(irs["openvino_int8"], threads=1) as i:
        assert isinstance(f, OpenVinoBackend) and isinstance(i, OpenVinoBackend)
        assert (f.label, i.label) == ("openvino fp32 (cpu)", "openvino int8 nncf-performance (cpu)")
        assert f.inference_precision == "f32" and f.threads == 1
    with pytest.raises(BackendUnavailableError, match="--precision fp16 does not apply"):
        loader.load_backend(irs["openvino_fp32"], precision="fp16")
    with pytest.raises(BackendUnavailableError, match="CPU only"):
        loader.load_backend(irs["openvino_fp32"], device="cuda")
    real = loader.importlib.util.find_spec
    monkeypatch.setattr(loader.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(BackendUnavailableError, match=r"needs openvino.*pip install 'unet-edge\[openvino\]'"):
        loader.load_backend(irs["openvino_fp32"])


def test_precision_hint_is_f32_unless_bf16_is_asked_for(irs, monkeypatch):
    with OpenVinoBackend(irs["openvino_fp32"], threads=1) as be:
        assert be.inference_precision == "f32" and be.precision == "fp32" and be.threads == 1
        assert be.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert str(be.compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    with OpenVinoBackend(irs["openvino_int8"], threads=1, precision="auto") as be:
        assert be.inference_precision == "f32"
    if openvino_backend.probe_host().native_bf16:
        with OpenVinoBackend(irs["openvino_fp32"], threads=1, precision="bf16") as be:
            assert (be.inference_precision, be.precision, be.label) == ("bf16", "bf16", "openvino fp32 bf16-hint (cpu)")

    class NoBf16:
        native_bf16, cpu_class = False, "x86-avx2"

    monkeypatch.setattr(openvino_backend, "probe_host", lambda: NoBf16())
    with pytest.raises(BackendUnavailableError, match="no native bf16"):
        OpenVinoBackend(irs["openvino_fp32"], precision="bf16")
    for precision in ("fp16", "int8"):
        with pytest.raises(BackendUnavailableError, match=f"--precision {precision}"):
            OpenVinoBackend(irs["openvino_fp32"], precision=precision)
    with pytest.raises(BackendUnavailableError, match="--precision fp32"):
        OpenVinoBackend(irs["openvino_int8"], precision="fp32")


def test_capabilities_describe_the_compiled_ir(irs, tiny_export):
    meta = read_meta(tiny_export / "model_fp32.onnx")
    be = OpenVinoBackend(irs["openvino_int8"], threads=1)
    caps = be.capabilities()
    h, w = meta.input_size
    assert (caps.kind, caps.device, caps.precision, caps.threads, caps.static_batch) == ("openvino", "cpu", "int8", 1, 1)
    assert (caps.input_name, caps.input_shape, caps.output_name, caps.output_shape) == (
        meta.input_name, (1, 3, h, w), meta.output_name, (1, meta.num_classes, h, w))
    assert caps.details["inference_precision"] == "f32" and caps.details["variant"] == "nncf-performance"
    assert caps.details["performance_hint"] == "LATENCY"
    with pytest.raises(DataError, match="dtype"):
        be.infer(np.zeros((1, 3, h, w), np.float64))
    be.close()
    with pytest.raises(ArtifactError, match="closed"):
        be.infer(np.zeros((1, 3, h, w), np.float32))


def test_backend_errors(irs, tmp_path):
    with pytest.raises(BackendUnavailableError, match="CPU only"):
        OpenVinoBackend(irs["openvino_fp32"], device="cuda")
    xml = tmp_path / "m.xml"
    shutil.copy(irs["openvino_fp32"], xml)
    shutil.copy(ov_export.sidecar_path(irs["openvino_fp32"]), ov_export.sidecar_path(xml))
    with pytest.raises(ArtifactError, match="no weights file m.bin"):
        OpenVinoBackend(xml)
    ir_weights_path(xml).write_bytes(b"\0" * 16)  # truncated weights
    with pytest.raises(ArtifactError, match="OpenVINO cannot load"):
        OpenVinoBackend(xml)


def test_failed_save_keeps_the_old_ir_and_leaves_no_temporaries(irs, tmp_path, monkeypatch):
    xml = tmp_path / "model_openvino_fp32.xml"
    model, meta = ov.Core().read_model(str(irs["openvino_fp32"])), read_ir_meta(irs["openvino_fp32"])
    ov_export.save_ir(model, meta, xml)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(model, path, compress_to_fp16=True):
        Path(path).write_text("partial")
        ir_weights_path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ov, "save_model", broken)
    with pytest.raises(ExportError, match="disk full"):
        ov_export.save_ir(model, meta.with_(train_command="changed"), xml)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(ExportError, match="unknown NNCF preset"):
        ov_export.quantize_int8(xml, tmp_path / "q.xml", tmp_path, preset="fast")


# --- the export pipeline (`unet-edge export --openvino`) and bench --------------------------------

def _invoke(*args):
    from typer.testing import CliRunner

    from cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cli_export(tiny_run, folder_dataset, tmp_path_factory) -> dict:
    """``cli.py export --openvino`` on the tiny checkpoint (scored on the folder dataset's val split)."""
    out = tmp_path_factory.mktemp("ov_cli") / "exp"
    r = _invoke("export", tiny_run["best"], "--out", out, "--openvino", "--calib-data", folder_dataset,
                "--calib-images", CALIB_IMAGES, "--allow-int8-drop", "--threads", "1", "--json")
    assert r.exit_code == 0, r.output
    return {"out": out, "report": json.loads(r.stdout)}


def test_cli_export_openvino_writes_the_table_files_with_provenance(cli_export, tiny_run):
    out, report = cli_export["out"], cli_export["report"]
    models = export_files(options=("--openvino",))
    irs = [n for n in models if n.endswith(".xml")]
    assert irs == ["model_openvino_fp32.xml", "model_openvino_int8.xml"]
    assert {p.name for p in out.iterdir()} == {*models, *(n[:-4] + ".bin" for n in irs), *(f"{n}.json" for n in irs),
                                               "model_fp32.onnx.json", EXPORT_REPORT}
    want = sha256(tiny_run["best"])
    for key, precision in (("openvino_fp32", "fp32"), ("openvino_int8", "int8")):
        path = out / artifact(key).file
        entry = report["artifacts"][key]
        meta = read_meta(path)
        assert (meta.precision, meta.extra[SHA_KEY]) == (precision, want)
        assert entry["sha256"] == sha256(path) and entry["weights"]["sha256"] == sha256(ir_weights_path(path))
        assert entry["size_mb"] == round((path.stat().st_size + ir_weights_path(path).stat().st_size) / 1e6, 3)
        assert entry["backend"] == ("openvino fp32 (cpu)" if precision == "fp32" else "openvino int8 nncf-performance (cpu)")
    assert report["artifacts"]["openvino_fp32"]["parity_vs_pytorch"]["max_abs_error"] < 1e-4
    # scored like the ONNX files; the INT8 IR checked against the FP32 IR on its kernel run (no fake-quant run)
    assert set(report["eval"]) == {"pytorch_fp32", "onnx_fp32", "openvino_fp32", "openvino_int8"}
    assert report["eval"]["openvino_fp32"]["miou"] == pytest.approx(report["eval"]["onnx_fp32"]["miou"], abs=1e-3)
    check = report["int8_check"]["openvino_int8"]
    assert (check["gated"], check["reference"], check["fake_quant_drop"], check["kernel_effect"]) == (
        "kernel", "openvino_fp32", None, None)
    drop = round((report["eval"]["openvino_fp32"]["miou"] - report["eval"]["openvino_int8"]["miou"]) * 100, 3)
    assert check["miou_drop"] == drop and check["status"] == ("passed" if check["passed"] else "failed")
    assert set(report["int8_check"]) == {"openvino_int8"}


def test_bench_plans_the_openvino_rows(cli_export, tiny_export, monkeypatch):
    from benchmarks import plan

    out = cli_export["out"]
    rows = {r.id: r for r in plan.plan_rows([str(out)], device="cpu").rows}
    fp32, int8 = rows["openvino/fp32/cpu"], rows["openvino/int8/cpu/nncf-performance"]
    assert (fp32.status, int8.status, fp32.static_batch, int8.static_batch) == ("planned", "planned", 1, 1)
    assert Path(int8.path).name == "model_openvino_int8.xml" and int8.label == "OpenVINO INT8 nncf-performance (cpu)"
    other = {r.id: r for r in plan.plan_rows([str(out)], device="cpu", input_size=(32, 64)).rows}
    assert other["openvino/fp32/cpu"].reason == "static input 48x64, benchmark input 32x64"
    none = {r.id: r for r in plan.plan_rows([str(tiny_export)], device="cpu").rows}
    assert none["openvino/int8/cpu"].status == "skipped"
    assert none["openvino/int8/cpu"].reason == "no OpenVINO INT8 IR given (unet-edge export --openvino --calib-data DIR)"
    real = plan.importlib.util.find_spec
    monkeypatch.setattr(plan.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    missing = {r.id: r for r in plan.plan_rows([str(out)], device="cpu").rows}
    assert missing["openvino/fp32/cpu"].status == "skipped" and missing["openvino/fp32/cpu"].reason == plan.OPENVINO_MISSING


def test_export_options_and_folder_ownership_for_openvino(tiny_run, tmp_path, monkeypatch):
    from unet_edge.export.pipeline import ExportOptions, export_all, owned_by_export

    # a re-export may replace a folder holding IRs: the .bin beside a table .xml is the export's, no other
    assert owned_by_export("model_openvino_int8.bin") and owned_by_export("model_openvino_int8.xml.json")
    assert not owned_by_export("model_fp32.bin") and not owned_by_export("weights.bin")
    with pytest.raises(UsageError, match="--openvino needs --calib-data"):
        ExportOptions(openvino=True).validate()
    with pytest.raises(UsageError, match="unknown --openvino-preset 'fast'"):
        ExportOptions(openvino=True, calib_data=str(tmp_path), openvino_preset="fast").validate()
    real = ov_export.importlib.util.find_spec
    monkeypatch.setattr(ov_export.importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(BackendUnavailableError, match=r"--openvino needs nncf.*pip install 'unet-edge\[openvino\]'"):
        export_all(tiny_run["best"], tmp_path / "exp", ExportOptions(openvino=True, calib_data=str(tmp_path), progress=False),
                   log=lambda *a: None)
    assert not (tmp_path / "exp").exists()  # refused before anything was made
