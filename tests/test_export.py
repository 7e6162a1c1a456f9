"""Export parity, metadata that travels with every artifact, FP16 typing and the Q/DQ contract."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from calibration.cache import read_calibration_cache
from unet_edge.artifacts import artifact_kind, model_from_checkpoint, read_meta
from unet_edge.errors import ArtifactError, ExportError
from unet_edge.export.int8 import activation_scales, check_qdq
from unet_edge.export.onnx_export import export_onnx
from unet_edge.metadata import METADATA_KEY, sidecar_path
from unet_edge.runtime.loader import load_backend


def _inits(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_export_folder_contents_and_metadata(tiny_export, tiny_run):
    names = {p.name for p in tiny_export.iterdir()}
    assert {"model.ts", "model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx", "model_int8_cpu.onnx",
            "calib.cache", "export_report.json"} <= names
    _, ckpt_meta, _ = model_from_checkpoint(tiny_run["best"])
    for f, prec in [("model.ts", "fp32"), ("model_fp32.onnx", "fp32"), ("model_fp16.onnx", "fp16"),
                    ("model_int8.onnx", "int8"), ("model_int8_cpu.onnx", "int8")]:
        meta = read_meta(tiny_export / f)
        assert meta.class_names == ckpt_meta.class_names and meta.palette == ckpt_meta.palette
        assert meta.input_size == ckpt_meta.input_size and meta.mean == ckpt_meta.mean
        assert meta.precision == prec
    for f in ("model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(tiny_export / f)).metadata_props}
        assert json.loads(props[METADATA_KEY]) == json.loads(sidecar_path(tiny_export / f).read_text())
    assert artifact_kind(tiny_export / "model.ts") == "torchscript"
    assert artifact_kind(tiny_run["best"]) == "checkpoint"


def test_onnx_fp32_parity_below_1e_4(tiny_run, tmp_path, folder_dataset):
    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    path = export_onnx(model, meta, tmp_path / "m.onnx")
    g = onnx.load(str(path)).graph
    assert [i.name for i in g.input] == ["images"] and [o.name for o in g.output] == ["logits"]
    assert onnx.load(str(path)).opset_import[0].version >= 17
    assert not any(n.op_type == "BatchNormalization" for n in g.node)  # folded by onnxsim
    x = np.random.default_rng(0).standard_normal((1, 3, *meta.input_size)).astype(np.float32) * 2
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    with load_backend(path) as b:
        out = b.infer(x)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-4


def test_dynamic_export_runs_other_sizes_and_batches(tiny_run, tmp_path):
    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    path = export_onnx(model, meta, tmp_path / "dyn.onnx", dynamic=True)
    m = model.multiple
    # the export size, a multiple of 2**depth, and sizes that need padding other than the export size's
    for shape in [(1, 3, *meta.input_size), (2, 3, 5 * m, 7 * m), (2, 3, 5 * m + 1, 7 * m - 3), (1, 3, m - 1, 3 * m + 5)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        with load_backend(path) as b:
            assert b.static_batch is None
            out = b.infer(x)
        assert out.shape == ref.shape == (shape[0], meta.num_classes, *shape[2:])
        assert np.abs(out - ref).max() < 1e-4


def test_export_report_parity(tiny_export):
    rep = json.loads((tiny_export / "export_report.json").read_text())
    arts = rep["artifacts"]
    assert arts["onnx_fp32"]["parity_vs_pytorch"]["max_abs_error"] < 1e-4
    assert arts["torchscript"]["parity_vs_pytorch"]["max_abs_error"] < 1e-4
    assert arts["onnx_fp16"]["parity_vs_pytorch"]["argmax_agreement"] > 0.99
    assert arts["onnx_int8"]["parity_vs_pytorch"]["argmax_agreement"] > 0.8
    assert arts["onnx_int8_cpu"]["parity_vs_pytorch"]["argmax_agreement"] > 0.8
    assert rep["qdq"]["quantized_weights"] > 0


def test_fp16_graph_has_fp16_weights_and_fp32_io(tiny_export):
    m = onnx.load(str(tiny_export / "model_fp16.onnx"))
    f32 = onnx.TensorProto.FLOAT
    assert m.graph.input[0].type.tensor_type.elem_type == f32
    assert m.graph.output[0].type.tensor_type.elem_type == f32
    conv_weights = {n.input[1] for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    dtypes = {t.data_type for t in m.graph.initializer if t.name in conv_weights}
    assert dtypes == {onnx.TensorProto.FLOAT16}


def test_int8_qdq_structure_symmetric_per_channel(tiny_export):
    m = onnx.load(str(tiny_export / "model_int8.onnx"))
    inits = _inits(m)
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert q and dq
    for n in q + dq:
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()  # int8, symmetric: zero points all 0
    producers = {o: n for n in m.graph.node for o in n.output}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    head = [c for c in convs if producers.get(c.input[1]) is None]
    assert len(head) == 1 and "logits" in {o for n in m.graph.node for o in n.output}  # FP32 1x1 head
    convs = [c for c in convs if c not in head]
    assert convs
    for conv in convs:
        wdq = producers[conv.input[1]]
        assert wdq.op_type == "DequantizeLinear"
        w, scale = inits[wdq.input[0]], inits[wdq.input[1]]
        axis = {a.name: a.i for a in wdq.attribute}.get("axis", 1)
        assert w.dtype == np.int8 and axis == 0
        assert scale.shape == (w.shape[0],)  # one scale per output channel
        xdq = producers[conv.input[0]]
        assert xdq.op_type == "DequantizeLinear" and inits[xdq.input[1]].size == 1  # per-tensor activations
    assert check_qdq(m)["quantized_weights"] >= len(convs)


def test_check_qdq_rejects_nonzero_zero_point(tiny_export):
    m = onnx.load(str(tiny_export / "model_int8.onnx"))
    q = next(n for n in m.graph.node if n.op_type == "QuantizeLinear")
    for t in m.graph.initializer:
        if t.name == q.input[2]:
            t.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), t.name))
    with pytest.raises(ExportError, match="zero point"):
        check_qdq(m)


def test_calibration_cache_matches_qdq_scales(tiny_export):
    header, scales = read_calibration_cache(tiny_export / "calib.cache")
    assert header.startswith("TRT-") and header.endswith("EntropyCalibration2")
    expected = activation_scales(onnx.load(str(tiny_export / "model_int8.onnx")))
    assert "images" in scales and set(scales) == set(expected)
    for k, v in expected.items():
        assert scales[k] == pytest.approx(np.float32(v), rel=0, abs=0)
    fp32_names = {o for n in onnx.load(str(tiny_export / "model_fp32.onnx")).graph.node for o in n.output} | {"images"}
    assert set(scales) <= fp32_names  # usable for an implicit TensorRT 10.x build of the FP32 ONNX


def test_bad_export_options_are_usage_errors_before_any_work(tiny_run, tmp_path):
    from unet_edge.errors import UsageError
    from unet_edge.export.pipeline import ExportOptions, export_all

    for opts, needle in ((ExportOptions(int8=True), "--int8 needs --calib-data"),
                         (ExportOptions(calib_method="foo"), "unknown --calib-method 'foo'"),
                         (ExportOptions(int8_target="nope"), "unknown --int8-target 'nope'; choose one of x86-vnni"),
                         (ExportOptions(int8_cpu_scheme="nope"), "unknown --int8-cpu-scheme 'nope'; choose one of u8s8"),
                         (ExportOptions(calib_images=0), "--calib-images must be an integer >= 1")):
        with pytest.raises(UsageError, match=needle):
            export_all(tiny_run["best"], tmp_path / "exp", opts, log=lambda *a: None)
    assert not list(tmp_path.iterdir())  # refused before the folder, its lock or a staging folder exist


def test_corrupt_artifacts_raise_artifact_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ArtifactError):
        read_meta(bad)
    pt = tmp_path / "bad.pt"
    pt.write_bytes(b"garbage")
    with pytest.raises(ArtifactError):
        load_backend(pt)
    with pytest.raises(ArtifactError, match="not found"):
        load_backend(tmp_path / "missing.onnx")


def test_deployment_rewrite_is_exact_and_removes_conv_transpose(tiny_run, tiny_export):
    from unet_edge.export.rewrite import for_deployment

    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    x = torch.randn(2, 3, *meta.input_size)
    with torch.no_grad():
        assert (model(x) - for_deployment(model)(x)).abs().max() < 1e-5
    ops = {n.op_type for n in onnx.load(str(tiny_export / "model_fp32.onnx")).graph.node}
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())  # the trained module is untouched


def test_int8_cpu_scheme_follows_the_host_and_is_labelled(tiny_export):
    from unet_edge.export.int8 import CPU_SCHEMES, CPU_TARGETS
    from unet_edge.host import probe_host

    m = onnx.load(str(tiny_export / "model_int8_cpu.onnx"))
    inits = _inits(m)
    act_zp = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert act_zp and all(z.dtype == np.uint8 for z in act_zp)
    meta = read_meta(tiny_export / "model_int8_cpu.onnx")
    family = probe_host().int8_family
    first = CPU_TARGETS[family]["schemes"][0]  # the fixture exports without eval data: no second try
    assert meta.extra["quantization"]["target"] == family
    assert meta.extra["quantization"]["variant"] == CPU_SCHEMES[first]["variant"]
    assert read_meta(tiny_export / "model_int8.onnx").extra["quantization"]["variant"] == "tensorrt-qdq"
    with load_backend(tiny_export / "model_int8_cpu.onnx") as b:
        assert CPU_SCHEMES[first]["variant"] in b.label


def _conv_d2s_model(mode: str, c_out: int, block: int = 2) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    w = rng.standard_normal((block * block * c_out, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(block * block * c_out).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("DepthToSpace", ["y"], ["z"], blocksize=block, mode=mode, name="d2s")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", c_out, "hb", "wb"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("mode,c_out,block", [("CRD", 5, 2), ("DCR", 4, 2), ("CRD", 2, 3)])
def test_interleave_depth_to_space_is_exact_for_dynamic_shapes(mode, c_out, block):
    import onnxruntime as ort

    from unet_edge.export.rewrite import interleave_depth_to_space

    before = _conv_d2s_model(mode, c_out, block)
    after = interleave_depth_to_space(_conv_d2s_model(mode, c_out, block))
    onnx.checker.check_model(after, full_check=True)
    ops = [n.op_type for n in after.graph.node]
    assert "DepthToSpace" not in ops and ops.count("Transpose") == 3
    sessions = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (before, after)]
    for shape in [(1, 3, 6, 10), (2, 3, 7, 5)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        ref, out = (s.run(None, {"x": x})[0] for s in sessions)
        assert out.shape == ref.shape == (shape[0], c_out, shape[2] * block, shape[3] * block)
        assert np.abs(out - ref).max() < 1e-5


def test_interleave_leaves_a_shared_conv_output_alone():
    from onnx import helper

    from unet_edge.export.rewrite import interleave_depth_to_space

    model = _conv_d2s_model("CRD", 2)
    model.graph.output.append(helper.make_tensor_value_info("y2", onnx.TensorProto.FLOAT, ["n", 8, "h", "w"]))
    model.graph.node.append(helper.make_node("Identity", ["y"], ["y2"]))
    w = _inits(model)["w"].copy()
    ops = [n.op_type for n in interleave_depth_to_space(model).graph.node]
    assert "DepthToSpace" in ops and np.array_equal(_inits(model)["w"], w)


def test_int8_cpu_decoder_stays_nhwc_in_onnxruntime(tiny_export, tmp_path):
    """ONNX Runtime's optimized graph of the CPU INT8 file: no DepthToSpace and no NHWC<->NCHW
    round trips around the decoder, only the input and output transposes plus one row interleave
    per upsampling (the DepthToSpace form needed 3 more transposes per upsampling)."""
    import onnxruntime as ort

    src = onnx.load(str(tiny_export / "model_int8_cpu.onnx"))
    assert "DepthToSpace" not in {n.op_type for n in src.graph.node}
    assert "DepthToSpace" in {n.op_type for n in onnx.load(str(tiny_export / "model_int8.onnx")).graph.node}
    depth = read_meta(tiny_export / "model_int8_cpu.onnx").arch["depth"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(tiny_export / "model_int8_cpu.onnx"), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert "DepthToSpace" not in ops and ops.count("QLinearConv") > 2 * depth
    assert ops.count("Transpose") == depth + 2


def test_every_artifact_records_its_source_checkpoint(tiny_export, tiny_run):
    """model.ts, every ONNX (embedded and sidecar), calib.cache's sidecar and the report name the
    checkpoint and its sha256; the folder check finds one source."""
    from unet_edge.io_utils import sha256
    from unet_edge.provenance import NAME_KEY, SHA_KEY, check_consistent, folder_sources

    want = sha256(tiny_run["best"])
    for f in ("model.ts", "model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx", "model_int8_cpu.onnx"):
        extra = read_meta(tiny_export / f).extra
        assert extra[SHA_KEY] == want and extra[NAME_KEY] == str(tiny_run["best"].resolve()), f
    for f in ("model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx", "model_int8_cpu.onnx", "calib.cache"):
        assert json.loads(sidecar_path(tiny_export / f).read_text())["extra"][SHA_KEY] == want, f
    rep = json.loads((tiny_export / "export_report.json").read_text())
    assert rep[SHA_KEY] == want and rep["status"] == "ok"
    assert rep["artifacts"]["calib_cache"]["sha256"] == sha256(tiny_export / "calib.cache")
    sources = folder_sources(tiny_export)
    assert {p.name for p in sources} == {"model.ts", "model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx",
                                         "model_int8_cpu.onnx", "calib.cache"}
    assert set(sources.values()) == {want}
    assert check_consistent(sources) == want


def test_parity_agreement_is_metrics_label_agreement():
    from unet_edge.export.onnx_export import parity
    from unet_edge.metrics import label_agreement

    ref = np.zeros((1, 3, 2, 5), np.float32)
    ref[0, 1] = 1.0  # class 1 everywhere
    cand = ref.copy()
    cand[0, 2, 0, :3] = 2.0  # class 2 at 3 of 10 pixels
    p = parity(ref, cand)
    assert p["argmax_agreement"] == label_agreement(ref.argmax(1), cand.argmax(1))[0] == 0.7
    assert p["max_abs_error"] == 2.0 and p["mean_abs_error"] == pytest.approx(6.0 / 30)
    assert label_agreement(ref.argmax(1), cand.argmax(1)) == (0.7, 10)
    for bad in ((ref, cand[:, :, :1]), (ref[:0], cand[:0])):
        with pytest.raises(ValueError):
            parity(*bad)
    with pytest.raises(ValueError, match="non-empty"):
        label_agreement(np.zeros((0, 2), np.uint8), np.zeros((0, 2), np.uint8))


def test_preprocess_batch_is_preprocess_per_image():
    from unet_edge.errors import DataError
    from unet_edge.metadata import ModelMeta
    from unet_edge.preprocess import preprocess, preprocess_batch

    meta = ModelMeta(arch={"num_classes": 2}, class_names=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]],
                     input_size=(8, 12))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((8, 12), (20, 30))]
    batch = preprocess_batch(images, meta)
    assert batch.shape == (2, 3, 8, 12) and batch.dtype == np.float32
    assert np.array_equal(batch, np.stack([preprocess(im, meta) for im in images]))
    assert preprocess_batch(images, meta, size=(4, 6)).shape == (2, 3, 4, 6)
    with pytest.raises(DataError, match="at least one"):
        preprocess_batch([], meta)
    with pytest.raises(DataError, match="RGB uint8"):
        preprocess_batch([images[0].astype(np.float32)], meta)
