"""Host probe, precision policy, CPU INT8 per ISA, the INT8 accuracy check and `doctor`."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from unet_edge.errors import (BackendUnavailableError, EmulatedPrecisionWarning, HostMismatchWarning,
                              Int8AccuracyError, UsageError)
from unet_edge.host import CudaDevice, HostInfo, _normalize_flags, int8_family, probe_host
from unet_edge.precision import choose_precision

AVX2 = frozenset({"avx2", "fma", "f16c"})
AMX = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"})


def host(flags=AVX2, arch="x86_64", phys=2, logical=2, affinity=2, cuda=()) -> HostInfo:
    return HostInfo(cpu_model="test cpu", arch=arch, cores_physical=phys, cores_logical=logical, affinity=affinity,
                    flags=frozenset(flags), cuda=tuple(cuda))


@pytest.mark.parametrize("flags,arch,cls,family,bf16", [
    (AVX2, "x86_64", "x86-avx2", "x86-avx2", False),
    (AVX2 | {"avx512f", "avx512bw"}, "x86_64", "x86-avx512", "x86-avx2", False),
    (AVX2 | {"avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "x86-avx512-vnni", "x86-vnni", False),
    (AVX2 | {"avx_vnni"}, "x86_64", "x86-avx-vnni", "x86-vnni", False),
    (AMX, "x86_64", "x86-amx", "x86-vnni", True),
    ({"asimd", "asimddp"}, "aarch64", "arm64-dotprod", "arm64", False),
    ({"asimd", "asimddp", "i8mm", "bf16"}, "aarch64", "arm64-i8mm", "arm64", True),
    (set(), "riscv64", "other", "generic", False),
])
def test_cpu_class_int8_family_and_bf16(flags, arch, cls, family, bf16):
    h = host(flags, arch)
    assert (h.cpu_class, h.int8_family, h.native_bf16) == (cls, family, bf16)
    d = h.to_dict()
    assert d["cpu_class"] == cls and d["int8_family"] == family and json.dumps(d)


def test_flag_aliases_and_unknown_class():
    assert _normalize_flags(["AVX512VNNI", "avx2", "dotprod", "nonsense"]) == {"avx512_vnni", "avx2", "asimddp"}
    with pytest.raises(ValueError, match="unknown CPU class"):
        int8_family("x86-avx1024")


def test_default_threads_are_physical_cores_within_affinity():
    assert host(phys=4, logical=8, affinity=8).default_threads == 4
    assert host(phys=4, logical=8, affinity=4).default_threads == 2   # taskset to 4 hyper-threads = 2 cores
    assert host(phys=2, logical=2, affinity=2).default_threads == 2


@pytest.mark.skipif(bool(__import__("os").environ.get("UNET_EDGE_CPU_FLAGS")), reason="UNET_EDGE_CPU_FLAGS overrides the probe")
def test_probe_of_this_host_is_consistent():
    h = probe_host()
    assert h.cpu_class in h.to_dict()["cpu_class"] and h.default_threads >= 1
    text = open("/proc/cpuinfo").read() if h.is_x86 else ""
    if h.is_x86:
        assert ("avx512_vnni" in text) == ("avx512_vnni" in h.flags)
        assert h.native_bf16 == ("avx512_bf16" in text or "amx_bf16" in text)


def test_precision_auto_never_emulated():
    assert choose_precision("cpu", host=host(AVX2)).precision == "fp32"
    assert choose_precision("cpu", host=host(AMX)).precision == "bf16"
    for cc, want in (((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((6, 1), "fp32")):
        h = host(cuda=[CudaDevice(0, "gpu", cc, 16.0)])
        assert choose_precision("cuda", host=h).precision == want
        assert choose_precision("cuda:0", host=h).precision == want


def test_explicit_emulated_precision_runs_with_a_warning():
    with pytest.warns(EmulatedPrecisionWarning, match="4-5x slower"):
        c = choose_precision("cpu", "bf16", host=host(AVX2))
    assert c.precision == "bf16" and c.emulated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not choose_precision("cpu", "bf16", host=host(AMX)).emulated
    with pytest.raises(BackendUnavailableError, match="needs CUDA"):
        choose_precision("cpu", "fp16", host=host(AMX))
    with pytest.raises(UsageError, match="unknown precision"):
        choose_precision("cpu", "fp8", host=host(AMX))


def _weights(path) -> list[np.ndarray]:
    """int8 weight initializers of Conv weights in a Q/DQ model."""
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return [inits[n.input[0]] for n in m.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8
            and inits[n.input[0]].ndim == 4]


@pytest.fixture(scope="module")
def cpu_int8_pair(tiny_export, folder_dataset, tmp_path_factory):
    from unet_edge.artifacts import read_meta
    from unet_edge.export.int8 import export_int8

    out = tmp_path_factory.mktemp("int8_targets")
    fp32 = tiny_export / "model_fp32.onnx"
    meta = read_meta(fp32)
    return {t: export_int8(fp32, meta, out / f"{t}.onnx", folder_dataset, 4, "minmax", scheme="cpu", target=t)
            for t in ("x86-vnni", "x86-avx2")}


def test_avx2_target_uses_7bit_weights_that_cannot_saturate(cpu_int8_pair):
    from unet_edge.artifacts import read_meta

    full, reduced = (_weights(cpu_int8_pair[t]) for t in ("x86-vnni", "x86-avx2"))
    assert len(full) == len(reduced) > 5
    assert max(int(np.abs(w).max()) for w in full) == 127
    worst = max(int(np.abs(w).max()) for w in reduced)
    assert worst <= 64 and 255 * worst * 2 <= 32767        # VPMADDUBSW pair sum stays inside int16
    q = read_meta(cpu_int8_pair["x86-avx2"]).extra["quantization"]
    assert q["target"] == "x86-avx2" and q["reduce_range"] is True and q["variant"] == "cpu-u8s8-w7"
    assert q["built_on"] == probe_host().cpu_class
    assert read_meta(cpu_int8_pair["x86-vnni"]).extra["quantization"]["reduce_range"] is False


def test_u8u8_scheme_has_uint8_weights_centred_at_128(tiny_export, folder_dataset, tmp_path):
    from unet_edge.artifacts import read_meta
    from unet_edge.export.int8 import export_int8

    fp32 = tiny_export / "model_fp32.onnx"
    path = export_int8(fp32, read_meta(fp32), tmp_path / "u8u8.onnx", folder_dataset, 4, "minmax", scheme="cpu",
                       target="x86-avx2", cpu_scheme="u8u8")
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    w_dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].ndim == 4]
    assert w_dq and all(inits[n.input[0]].dtype == np.uint8 for n in w_dq)
    assert all(np.all(inits[n.input[2]] == 128) for n in w_dq)


def test_unknown_int8_target_is_an_export_error(tiny_export, folder_dataset, tmp_path):
    from unet_edge.artifacts import read_meta
    from unet_edge.errors import ExportError
    from unet_edge.export.int8 import export_int8

    fp32 = tiny_export / "model_fp32.onnx"
    with pytest.raises(ExportError, match="--int8-target"):
        export_int8(fp32, read_meta(fp32), tmp_path / "x.onnx", folder_dataset, 4, scheme="cpu", target="x86-sse")


def test_cpu_int8_file_warns_on_another_int8_family(cpu_int8_pair, monkeypatch):
    import unet_edge.runtime.ort_backend as ob
    from unet_edge.artifacts import read_meta

    meta = read_meta(cpu_int8_pair["x86-vnni"])
    with pytest.warns(HostMismatchWarning, match="quantized for x86-vnni CPUs but this host is x86-avx2"):
        msg = ob.check_int8_host(meta, "m.onnx", host(AVX2))
    assert "--int8-target x86-avx2" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ob.check_int8_host(meta, "m.onnx", host(AMX)) is None
        trt_meta = read_meta(cpu_int8_pair["x86-vnni"]).with_(extra={"quantization": {"scheme": "tensorrt"}})
        assert ob.check_int8_host(trt_meta, "m.onnx", host(AMX)) is None
        assert ob.check_int8_host(meta.with_(extra={"quantization": {}}), "m.onnx", host(AVX2)) is None  # not INT8
    # the TensorRT Q/DQ file lost 10 mIoU points on ONNX Runtime's AVX2 int8 kernels
    with pytest.warns(HostMismatchWarning, match="TensorRT Q/DQ file .* saturate"):
        msg = ob.check_int8_host(trt_meta, "m.onnx", host(AVX2))
    assert "run model_int8_cpu.onnx, made for x86-avx2" in msg
    monkeypatch.setattr(ob, "probe_cpu", lambda: host(AVX2))
    with pytest.warns(HostMismatchWarning):
        backend = ob.OrtBackend(str(cpu_int8_pair["x86-vnni"]), meta, threads=1)
    assert backend.host_warning and backend.int8_target == "x86-vnni"


def test_export_scores_the_tensorrt_file_on_avx2_kernels_without_the_runtime_warning(tiny_export, folder_dataset,
                                                                                     monkeypatch):
    """A user's ONNX Runtime session of the TensorRT Q/DQ file warns on an AVX2 host; the export's
    own scoring of that file (its kernel run, reported apart from the scales) does not repeat it."""
    import unet_edge.runtime.ort_backend as ob
    from unet_edge.artifacts import read_meta
    from unet_edge.export.pipeline import ExportOptions, _Scorer

    monkeypatch.setattr(ob, "probe_cpu", lambda: host(AVX2))
    path = tiny_export / "model_int8.onnx"
    meta = read_meta(path)
    assert meta.extra["quantization"]["scheme"] == "tensorrt"
    with pytest.warns(HostMismatchWarning, match="TensorRT Q/DQ file"):
        ob.OrtBackend(str(path), meta, threads=1)
    scorer = _Scorer(ExportOptions(eval_data=str(folder_dataset), eval_limit=2, progress=False), 1, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HostMismatchWarning)
        m = scorer(path)
    assert m["images"] == 2 and 0.0 <= m["miou"] <= 1.0


def test_fake_quant_session_keeps_qdq_ops_in_float(cpu_int8_pair):
    from unet_edge.artifacts import read_meta
    from unet_edge.runtime.ort_backend import OrtBackend

    path = str(cpu_int8_pair["x86-vnni"])
    meta = read_meta(path)
    x = np.random.default_rng(0).standard_normal((1, 3, *meta.input_size)).astype(np.float32)
    kernel, fq = OrtBackend(path, meta, threads=1), OrtBackend(path, meta, threads=1, optimize=False)
    assert "fake-quant" in fq.label and "fake-quant" not in kernel.label
    a, b = kernel.infer(x), fq.infer(x)
    assert a.shape == b.shape
    # same graph, two arithmetics: close (a few quantization steps) but computed differently
    assert np.abs(a - b).max() < 0.5 * np.abs(a).max() + 1e-3


def _metrics(miou, per_class):
    return {"miou": miou, "per_class_iou": per_class}


def test_int8_check_limits_worst_class_and_cause():
    from unet_edge.export.accuracy import check_int8

    fp32 = _metrics(0.50, {"sky": 0.90, "road": 0.80, "pole": None})
    ok = check_int8("onnx_int8_cpu", fp32, _metrics(0.495, {"sky": 0.89, "road": 0.79, "pole": 0.1}),
                    _metrics(0.497, {"sky": 0.895, "road": 0.795, "pole": None}))
    assert ok.passed and ok.worst_class in ("sky", "road") and "pole" not in ok.per_class_drop
    assert ok.miou_drop == pytest.approx(0.5)
    passed_msg = ok.message("m.onnx", "val", "x86-vnni")
    assert passed_msg.endswith("within the limits") and "--allow-int8-drop" not in passed_msg  # no remedy to apply
    kernel_loss = check_int8("onnx_int8_cpu", fp32, _metrics(0.40, {"sky": 0.31, "road": 0.80}),
                             _metrics(0.499, {"sky": 0.90, "road": 0.80}))
    assert not kernel_loss.passed and kernel_loss.worst_class == "sky"
    assert kernel_loss.worst_class_drop == pytest.approx(59.0)
    assert "integer kernels" in kernel_loss.message("m.onnx", "val", "x86-avx2")
    class_only = check_int8("k", fp32, _metrics(0.499, {"sky": 0.86, "road": 0.82}), None)
    assert not class_only.passed and class_only.miou_drop < 1.0       # one class -4 points fails alone
    # OpenVINO's IR has no fake-quant run: no cause is claimed, the remedies that act on either are named
    ov = check_int8("openvino_int8", fp32, _metrics(0.48, {"sky": 0.84, "road": 0.8}), None)
    ov_msg = ov.message("model_openvino_int8.xml", "val", "x86-avx2")
    assert not ov.passed and "--openvino-preset mixed" in ov_msg and "--calib-images" in ov_msg
    assert "integer kernels" in ov_msg and "so the" not in ov_msg and "--int8-target" not in ov_msg
    assert "--openvino-preset" not in class_only.message("m.onnx", "val", "x86-vnni")
    scales = check_int8("onnx_int8", fp32, _metrics(0.49, {"sky": 0.9, "road": 0.8}),
                        _metrics(0.45, {"sky": 0.80, "road": 0.8}), gate="fake_quant")
    assert not scales.passed and "calibration scales" in scales.message("m.onnx", "val", "x86-vnni")
    # the TensorRT file failed by its fake-quant run: the scales, even when ONNX Runtime's AVX2 kernels
    # lose far more (seen on an under-trained CamVid model: fake-quant -0.45, Pedestrian -4.9, kernels -12)
    trt = check_int8("onnx_int8", fp32, _metrics(0.38, {"sky": 0.3, "road": 0.8}),
                     _metrics(0.496, {"sky": 0.85, "road": 0.8}), gate="fake_quant")
    trt_msg = trt.message("model_int8.onnx", "val", "x86-avx2")
    assert not trt.passed and trt.kernel_effect > 10 and "calibration scales" in trt_msg
    assert "--int8-target" not in trt_msg and "integer kernels" not in trt_msg
    with pytest.raises(ValueError):
        check_int8("k", fp32, fp32, None, gate="fake_quant")


def test_export_fails_loudly_on_int8_drop_and_records_the_host(tiny_run, folder_dataset, tmp_path):
    from unet_edge.artifacts import read_meta
    from unet_edge.export.pipeline import ExportOptions, export_all

    opts = dict(int8=True, calib_data=str(folder_dataset), calib_images=4, calib_method="minmax",
                eval_data=str(folder_dataset), eval_limit=4, progress=False, threads=1)
    # a negative limit makes any INT8 file fail: the check itself must stop the export
    with pytest.raises(Int8AccuracyError, match="allow-int8-drop"):
        export_all(tiny_run["best"], tmp_path / "a", ExportOptions(max_int8_drop=-100.0, **opts), log=lambda *a: None)
    assert not (tmp_path / "a").exists()  # a failed export leaves no OUT behind; the attempt is kept aside
    report = json.loads((tmp_path / "a.failed" / "export_report.json").read_text())
    assert {c["status"] for c in report["int8_check"].values()} == {"failed"}
    assert report["int8_check"]["onnx_int8"]["gated"] == "fake-quant"
    assert report["int8_check"]["onnx_int8_cpu"]["gated"] == "kernel"
    assert "onnx_int8_cpu_fakequant" in report["eval"] and report["host"]["cpu_class"] == probe_host().cpu_class
    kept = export_all(tiny_run["best"], tmp_path / "b", ExportOptions(max_int8_drop=-100.0, allow_int8_drop=True,
                                                                       int8_target="x86-avx2", **opts), log=lambda *a: None)
    assert kept["int8_check"]["onnx_int8_cpu"]["status"] == "failed" and (tmp_path / "b" / "model_int8_cpu.onnx").is_file()
    # x86-avx2: 7-bit weights first; they failed the check, so U8U8 was made and kept
    tries = kept["int8_cpu_tries"]
    assert [t["scheme"] for t in tries] == ["u8s8-w7", "u8u8"] and tries[0]["passed"] is False
    q = read_meta(tmp_path / "b" / "model_int8_cpu.onnx").extra["quantization"]
    assert q["cpu_scheme"] == "u8u8" and q["variant"] == "cpu-u8u8" and q["target"] == "x86-avx2"


def test_doctor_reports_choices_per_host():
    from unet_edge.doctor import diagnose

    avx2 = {c["stage"]: c for c in diagnose(host(AVX2))["choices"]}
    assert avx2["train / validation (CPU)"]["choice"] == "fp32"
    assert "x86-avx2" in avx2["export --int8 (CPU file)"]["choice"] and "7-bit" in avx2["export --int8 (CPU file)"]["choice"]
    assert avx2["bench PyTorch BF16 row"]["choice"] == "skipped"
    amx = {c["stage"]: c for c in diagnose(host(AMX))["choices"]}
    assert amx["train / validation (CPU)"]["choice"] == "bf16 autocast"
    assert "full range" in amx["export --int8 (CPU file)"]["choice"]
    gpu = diagnose(host(AVX2, cuda=[CudaDevice(0, "H200", (9, 0), 141.0)]))
    assert any(c["stage"] == "train / validation (CUDA)" and c["choice"] == "bf16" for c in gpu["choices"])
    # the CPU INT8 engine follows what was measured on the class: OpenVINO where it was, both to compare elsewhere
    assert amx["run / deploy"]["choice"].startswith("model_openvino_int8.xml") and "2x faster" in amx["run / deploy"]["why"]
    # benched on real AVX2-only EPYCs: OpenVINO INT8 1.18x ONNX Runtime INT8 (v7), which keeps more of the mIoU
    assert avx2["run / deploy"]["choice"].startswith("model_openvino_int8.xml")
    assert "1.18x faster" in avx2["run / deploy"]["why"] and "camvid-x86-avx2-v7" in avx2["run / deploy"]["why"]
    avx512 = {c["stage"]: c for c in diagnose(host(frozenset({"avx2", "fma", "avx512f", "avx512bw"})))["choices"]}
    assert avx512["run / deploy"]["choice"].startswith("model_int8_cpu.onnx")
    assert "or model_openvino_int8.xml" in avx512["run / deploy"]["choice"]
    assert "1.18-2x faster on x86-amx" in avx512["run / deploy"]["why"] and "not measured on x86-avx512" in avx512["run / deploy"]["why"]
    arm = {c["stage"]: c for c in diagnose(host(frozenset({"asimddp"}), arch="aarch64"))["choices"]}
    assert arm["run / deploy"]["choice"].startswith("model_int8_cpu.onnx") and "openvino" not in arm["run / deploy"]["choice"]


def test_doctor_cli_json():
    from typer.testing import CliRunner

    from cli import app

    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["host"]["cpu_class"] == probe_host().cpu_class and d["choices"]


def test_forced_cpu_flags_change_the_class(monkeypatch):
    import unet_edge.host as h

    monkeypatch.setenv("UNET_EDGE_CPU_FLAGS", "avx2, fma")
    h.probe_host.cache_clear()
    try:
        forced = h.probe_host()
        assert forced.flags == {"avx2", "fma"} and forced.cpu_class == "x86-avx2" or not forced.is_x86
    finally:
        monkeypatch.delenv("UNET_EDGE_CPU_FLAGS")
        h.probe_host.cache_clear()
