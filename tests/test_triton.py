"""Triton model repository (unet_edge.triton): config.pbtxt against Triton's own schema,
the batchable ONNX, the argmax mask, engines, refusals, the folder replaced whole."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from unet_edge.artifacts import read_meta
from unet_edge.errors import ExportError, UsageError
from unet_edge.triton import Enum, config_text, model_config, model_config_pb2, pbtxt, write_triton_repo
from unet_edge.metadata import ModelMeta
from unet_edge.preprocess import preprocess_batch
from unet_edge.provenance import SHA_KEY

quiet = lambda *a: None  # noqa: E731


def _pb2():
    pb2 = model_config_pb2()
    if pb2 is None:
        pytest.skip("tritonclient[grpc] is not installed: Triton's model_config_pb2 schema is needed to validate "
                    "config.pbtxt (pip install 'tritonclient[grpc]')")
    return pb2


def _config(model_dir: Path):
    from google.protobuf import text_format

    return text_format.Parse((model_dir / "config.pbtxt").read_text(), _pb2().ModelConfig())


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _images(folder: Path, meta: ModelMeta, n: int) -> np.ndarray:
    """The first ``n`` images of the folder dataset as the model's input batch (N, 3, H, W) float32."""
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((folder / "images").iterdir())[:n]]
    return preprocess_batch(frames, meta)


@pytest.fixture(scope="module")
def meta(tiny_export) -> ModelMeta:
    return read_meta(tiny_export / "model_fp32.onnx")


@pytest.fixture(scope="module")
def repo(tiny_export, tmp_path_factory) -> Path:
    """A repository with the logits model (CPU) and the argmax model (GPU, 2 instances)."""
    root = tmp_path_factory.mktemp("triton") / "models"
    write_triton_repo(tiny_export, root, log=quiet)
    write_triton_repo(tiny_export, root, argmax=True, instance="gpu", count=2, max_batch_size=4, log=quiet)
    return root


def test_logits_config_matches_metadata(repo, meta):
    cfg = _config(repo / "unet_edge")
    h, w = meta.input_size
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == ("unet_edge", "onnxruntime_onnx", 8)
    (inp,), (out,) = cfg.input, cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("images", _pb2().TYPE_FP32, [3, h, w])
    assert (out.name, out.data_type, list(out.dims)) == ("logits", _pb2().TYPE_FP32, [meta.num_classes, h, w])
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = cfg.instance_group
    assert (group.kind, group.count) == (_pb2().ModelInstanceGroup.KIND_CPU, 1)
    served = ModelMeta.from_json(cfg.parameters["unet_edge"].string_value)
    assert served.class_names == meta.class_names and served.input_size == meta.input_size
    assert cfg.parameters[SHA_KEY].string_value == meta.extra[SHA_KEY]
    assert read_meta(repo / "unet_edge" / "1" / "model.onnx").extra[SHA_KEY] == meta.extra[SHA_KEY]


def test_logits_model_runs_at_batch_2_like_batch_1_twice(repo, tiny_export, folder_dataset, meta):
    x = _images(folder_dataset, meta, 2)
    src = onnx.load(str(tiny_export / "model_fp32.onnx"))
    assert src.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # the export's static batch
    got = _run(repo / "unet_edge" / "1" / "model.onnx", x)
    want = np.concatenate([_run(tiny_export / "model_fp32.onnx", x[i : i + 1]) for i in range(2)])
    assert got.shape == (2, meta.num_classes, *meta.input_size)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_argmax_model_outputs_the_uint8_mask_of_the_fp32_logits(repo, tiny_export, folder_dataset, meta):
    x = _images(folder_dataset, meta, 3)
    mask = _run(repo / "unet_edge_mask" / "1" / "model.onnx", x)
    logits = np.concatenate([_run(tiny_export / "model_fp32.onnx", x[i : i + 1]) for i in range(3)])
    assert mask.dtype == np.uint8 and mask.shape == (3, *meta.input_size)
    np.testing.assert_array_equal(mask, logits.argmax(axis=1).astype(np.uint8))
    assert len(np.unique(mask)) > 1  # a real segmentation, not a constant


def test_argmax_config(repo, meta):
    cfg = _config(repo / "unet_edge_mask")
    (out,) = cfg.output
    assert (cfg.name, cfg.max_batch_size) == ("unet_edge_mask", 4)
    assert (out.name, out.data_type, list(out.dims)) == ("mask", _pb2().TYPE_UINT8, list(meta.input_size))
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    (group,) = cfg.instance_group
    assert (group.kind, group.count) == (_pb2().ModelInstanceGroup.KIND_GPU, 2)
    assert ModelMeta.from_json(cfg.parameters["unet_edge"].string_value).output_name == "mask"


def test_plain_writer_parses_to_the_schema_message():
    from google.protobuf import json_format, text_format

    pb2 = _pb2()
    cfg = model_config("m", "onnxruntime_onnx", 4,
                       [{"name": "images", "data_type": Enum("TYPE_FP32"), "dims": [3, -1, -1]}],
                       [{"name": "mask", "data_type": Enum("TYPE_UINT8"), "dims": [-1, -1]}],
                       "KIND_CPU", 2, [2, 4], 250,
                       {"unet_edge": {"string_value": json.dumps({"names": ["Sky", "Straße", 'a"b\\c']})}})
    plain = text_format.Parse(pbtxt(cfg), pb2.ModelConfig())
    assert plain == json_format.ParseDict(cfg, pb2.ModelConfig())
    assert plain == text_format.Parse(config_text(cfg), pb2.ModelConfig())
    assert json.loads(plain.parameters["unet_edge"].string_value)["names"][1:] == ["Straße", 'a"b\\c']
    assert "dims: [ 3, -1, -1 ]" in pbtxt(cfg)


def _toy_onnx(path: Path, kind: str) -> Path:
    """An images (1, 3, 4, 4) -> logits graph whose batch cannot vary: ``fixed`` reshapes to a
    constant batch-1 shape; ``mixes`` runs a softmax over the whole flattened batch."""
    from unet_edge.export.onnx_export import save_onnx

    h = onnx.helper
    shape = lambda name, v: onnx.numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    if kind == "fixed":
        nodes = [h.make_node("Reshape", ["images", "flat"], ["t"]), h.make_node("Reshape", ["t", "back"], ["logits"])]
        inits = [shape("flat", [1, 48]), shape("back", [1, 3, 4, 4])]
    else:
        nodes = [h.make_node("Reshape", ["images", "flat"], ["t"]), h.make_node("Softmax", ["t"], ["s"], axis=1),
                 h.make_node("Shape", ["images"], ["shp"]), h.make_node("Reshape", ["s", "shp"], ["logits"])]
        inits = [shape("flat", [1, -1])]
    graph = h.make_graph(nodes, kind, [h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                              [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, 3, 4, 4])], inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMeta(arch={"num_classes": 3, "in_channels": 3}, class_names=["a", "b", "c"],
                     palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], input_size=(4, 4))
    return save_onnx(model, meta, path)


@pytest.mark.parametrize("kind, says", [("fixed", "fails in ONNX Runtime"), ("mixes", "mixes the images")])
def test_onnx_whose_batch_cannot_vary_is_refused(tmp_path, kind, says):
    src = _toy_onnx(tmp_path / f"{kind}.onnx", kind)
    root = tmp_path / "models"
    with pytest.raises(ExportError, match=says) as e:
        write_triton_repo(src, root, log=quiet)
    assert "unet-edge export --dynamic" in str(e.value) and "--triton-max-batch 0" in str(e.value)
    assert not root.exists()  # refused before anything is written
    # Without batching the same graph is served as it is: dims with the batch, no dynamic_batching.
    model_dir = write_triton_repo(src, root, max_batch_size=0, log=quiet)
    saved = onnx.load(str(model_dir / "1" / "model.onnx"))
    assert saved.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    cfg = _config(model_dir)
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 3, 4, 4]
    assert not cfg.HasField("dynamic_batching")


def test_model_folder_is_replaced_whole_and_foreign_files_are_kept(tiny_export, tmp_path):
    root = tmp_path / "models"
    model_dir = write_triton_repo(tiny_export, root, log=quiet)
    (model_dir / "1" / "model.plan").write_bytes(b"stale")
    before = (model_dir / "config.pbtxt").read_text()
    write_triton_repo(tiny_export, root, max_batch_size=2, log=quiet)
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx"]
    assert "max_batch_size: 2" in (model_dir / "config.pbtxt").read_text() != before
    assert sorted(p.name for p in root.iterdir()) == ["unet_edge"]  # Triton loads every folder, hidden ones too
    (model_dir / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"--triton .*notes\.txt"):
        write_triton_repo(tiny_export, root, log=quiet)
    assert (model_dir / "notes.txt").read_text() == "mine" and (model_dir / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["unet_edge"]


def _fake_engine(tmp_path: Path, meta: ModelMeta, batch: int, profile: dict | None) -> Path:
    from unet_edge.trt.sidecar import make_sidecar, write_sidecar

    h, w = meta.input_size
    engine = tmp_path / "model_fp16.engine"
    engine.write_bytes(b"plan bytes")
    io = [{"name": "images", "mode": "input", "shape": [batch, 3, h, w], "dtype": "float32"},
          {"name": "logits", "mode": "output", "shape": [batch, meta.num_classes, h, w], "dtype": "float32"}]
    write_sidecar(engine, make_sidecar(meta, precision="fp16", mode="explicit", trt_version="10.13.0", io=io,
                                       gpu={"name": "NVIDIA H200", "compute_capability": "9.0"},
                                       onnx_path="model_fp16.onnx", onnx_sha256="0" * 64, strongly_typed=True,
                                       build_options={}, build_command="unet-edge build ...", profiles=profile))
    return engine


def test_engine_repo(tmp_path, meta):
    h, w = meta.input_size
    engine = _fake_engine(tmp_path, meta, -1, {"images": {"min": [1, 3, h, w], "opt": [4, 3, h, w],
                                                          "max": [8, 3, h, w]}})
    model_dir = write_triton_repo(engine, tmp_path / "models", instance="gpu", log=quiet)
    assert model_dir.name == "unet_edge_trt_fp16"
    assert (model_dir / "1" / "model.plan").read_bytes() == b"plan bytes"
    assert read_meta(model_dir / "1" / "model.plan").extra[SHA_KEY] == meta.extra[SHA_KEY]
    cfg = _config(model_dir)
    assert (cfg.platform, cfg.max_batch_size, list(cfg.input[0].dims)) == ("tensorrt_plan", 8, [3, h, w])
    assert cfg.instance_group[0].kind == _pb2().ModelInstanceGroup.KIND_GPU
    assert cfg.parameters["tensorrt_version"].string_value == "10.13.0"


@pytest.mark.parametrize("batch, profile, options, says", [
    (1, None, {"instance": "gpu"}, "batch dim is static"),
    (-1, {"images": {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}}, {"instance": "gpu"},
     "batch profile is 1..4"),
    (-1, None, {"instance": "cpu"}, "GPU only"),
    (-1, None, {"instance": "gpu", "argmax": True}, "compiled already"),
])
def test_engine_refusals(tmp_path, meta, batch, profile, options, says):
    engine = _fake_engine(tmp_path, meta, batch, profile)
    with pytest.raises(UsageError, match=says):
        write_triton_repo(engine, tmp_path / "models", log=quiet, **options)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("options, says", [
    ({"name": "../up"}, "--triton-name"), ({"name": ".hidden"}, "--triton-name"), ({"name": "a/b"}, "--triton-name"),
    ({"max_batch_size": -1}, "--triton-max-batch"), ({"instance": "tpu"}, "--triton-instance"),
    ({"count": 0}, "--triton-count"), ({"preferred_batch_sizes": [16]}, "outside 1..max_batch_size"),
])
def test_bad_options(tiny_export, tmp_path, options, says):
    with pytest.raises(UsageError, match=says):
        write_triton_repo(tiny_export, tmp_path / "models", log=quiet, **options)


def test_dynamic_export_keeps_its_symbolic_dims(tiny_run, tmp_path, folder_dataset):
    from unet_edge.artifacts import model_from_checkpoint
    from unet_edge.export.onnx_export import export_onnx
    from unet_edge.export.rewrite import for_deployment

    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    src = export_onnx(for_deployment(model), meta, tmp_path / "dyn.onnx", dynamic=True)
    model_dir = write_triton_repo(src, tmp_path / "models", argmax=True, log=quiet)
    served = read_meta(model_dir / "1" / "model.onnx")
    assert served.extra["triton"]["batch_dim_rewritten"] is False
    x = _images(folder_dataset, meta, 2)[:, :, :32, :32]  # another H x W than the metadata's: still runs
    assert _run(model_dir / "1" / "model.onnx", x).shape == (2, 32, 32)
    cfg = _config(model_dir)
    assert list(cfg.input[0].dims) == [3, -1, -1] and list(cfg.output[0].dims) == [-1, -1]


def test_cli_export_writes_the_triton_repository_and_records_it(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    out, repo = tmp_path / "export", tmp_path / "triton"
    r = CliRunner().invoke(app, ["export", str(tiny_run["best"]), "--out", str(out), "--triton", str(repo),
                                 "--triton-argmax", "--no-eval"])
    assert r.exit_code == 0, r.output
    model = repo / "unet_edge_mask"
    assert (model / "config.pbtxt").is_file() and (model / "1" / "model.onnx").is_file()
    report = json.loads((out / "export_report.json").read_text())
    assert report["triton_model"] == str(model)
    r = CliRunner().invoke(app, ["export", str(tiny_run["best"]), "--out", str(tmp_path / "e2"), "--triton",
                                 str(repo), "--triton-name", "../x"])
    assert r.exit_code == 2 and "--triton-name" in r.output and not (tmp_path / "e2").exists()
