"""The backend interface: every backend says what it runs (:class:`Capabilities`) and checks its
input with :meth:`Capabilities.check_input` (tiny checkpoint and exports from conftest).

TensorRT is not installed here: its capabilities code is only checked statically against the
TensorRT bindings by tests/test_trt_api.py.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import FrozenInstanceError, replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from unet_edge.artifacts import model_from_checkpoint, read_meta
from unet_edge.errors import ArtifactError, DataError, UsageError
from unet_edge.formats import CPU_TARGETS
from unet_edge.host import probe_host
from unet_edge.runtime.base import Capabilities, DimRange, canonical_device, device_label, dims
from unet_edge.runtime.loader import load_backend
from unet_edge.runtime.ort_backend import OrtBackend


@pytest.fixture
def restore_torch_threads():
    """load_backend sets torch's global thread count: put it back for the other tests."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _load(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU INT8 file made for another INT8 family warns; not tested here
        return load_backend(path, threads=1, **kw)


@pytest.mark.parametrize("which,kind", [("checkpoint", "pytorch"), ("torchscript", "torchscript")])
def test_torch_capabilities_are_exact(tiny_run, tiny_export, restore_torch_threads, which, kind):
    path = tiny_run["best"] if which == "checkpoint" else tiny_export / "model.ts"
    _, meta, _ = model_from_checkpoint(tiny_run["best"])
    with load_backend(path, threads=1) as b:
        caps = b.capabilities()
        assert caps == Capabilities(
            kind=kind, device="cpu", precision="fp32", input_name="images", input_shape=(None, 3, None, None),
            output_name="logits", output_shape=(None, meta.num_classes, None, None), input_dtype="float32",
            static_batch=None, batch_range=(1, None), spatial=(DimRange(), DimRange()), threads=1, providers=(),
            details={"torch": torch.__version__, "precision_reason": "requested (--precision fp32)"},
            artifact=str(path))
        assert caps.dynamic_spatial and caps.device_type == "cpu"
        assert (b.label, b.precision, b.device, b.threads, b.static_batch) == (f"{kind} fp32 (cpu)", "fp32", "cpu", 1, None)
        # any batch and H/W: the U-Net pads internally
        h, w = meta.input_size
        for shape in [(1, 3, h, w), (3, 3, h + 5, w - 3)]:
            assert b.infer(np.zeros(shape, np.float32)).shape == (shape[0], meta.num_classes, *shape[2:])


@pytest.mark.parametrize("name,precision,variant", [("model_fp32.onnx", "fp32", ""), ("model_fp16.onnx", "fp16", ""),
                                                    ("model_int8.onnx", "int8", "tensorrt-qdq"),
                                                    ("model_int8_cpu.onnx", "int8", "cpu")])
def test_onnxruntime_capabilities_are_exact(tiny_export, name, precision, variant):
    path = tiny_export / name
    meta = read_meta(path)
    h, w = meta.input_size
    target = None
    if variant == "cpu":
        # this host's INT8 family picks the scheme: full-range u8s8 on VNNI/AMX, 7-bit u8s8-w7 on AVX2
        q = meta.extra["quantization"]
        family = probe_host().int8_family
        assert (q["target"], q["cpu_scheme"]) == (family, CPU_TARGETS[family]["schemes"][0])
        variant, target = f"cpu-{q['cpu_scheme']}", q["target"]
    with _load(path) as b:
        caps = b.capabilities()
        assert caps == Capabilities(
            kind="onnxruntime", device="cpu", precision=precision, input_name="images", input_shape=(1, 3, h, w),
            output_name="logits", output_shape=(1, meta.num_classes, h, w), input_dtype="float32", static_batch=1,
            batch_range=(1, None), threads=1, providers=("CPUExecutionProvider",),
            details={"onnxruntime": ort.__version__, "graph_optimization": "all", "variant": variant,
                     "int8_target": target},
            artifact=str(path))
        assert not caps.dynamic_spatial and b.static_batch == 1 and b.int8_target == target
        assert b.label == f"onnxruntime {precision}{' ' + variant if variant else ''} (cpu)"
        # static batch 1: a batch of 3 runs as three executions
        assert b.infer(np.zeros((3, 3, h, w), np.float32)).shape == (3, meta.num_classes, h, w)
    assert json.loads(json.dumps(caps.to_dict()))["input_shape"] == [1, 3, h, w]


def test_dynamic_onnx_capabilities_and_fake_quant_details(tiny_run, tiny_export, tmp_path):
    from unet_edge.export.onnx_export import export_onnx

    model, meta, _ = model_from_checkpoint(tiny_run["best"])
    path = export_onnx(model, meta, tmp_path / "dyn.onnx", dynamic=True)
    with OrtBackend(str(path), read_meta(path), threads=1) as b:
        caps = b.capabilities()
        assert (caps.input_shape, caps.output_shape) == ((None, 3, None, None), (None, meta.num_classes, None, None))
        assert (caps.static_batch, caps.batch_range, caps.dynamic_spatial) == (None, (1, None), True)
        assert b.infer(np.zeros((2, 3, 40, 24), np.float32)).shape == (2, meta.num_classes, 40, 24)
    int8 = tiny_export / "model_int8.onnx"
    with OrtBackend(str(int8), read_meta(int8), threads=1, optimize=False) as fq:
        assert fq.capabilities().details["graph_optimization"] == "disabled"
        assert fq.label == "onnxruntime int8 tensorrt-qdq fake-quant (cpu)"


def test_every_backend_checks_its_input_naming_the_mismatch(tiny_run, tiny_export, restore_torch_threads):
    for path in (tiny_run["best"], tiny_export / "model.ts", tiny_export / "model_fp32.onnx"):
        with _load(path) as b:
            kind = b.capabilities().kind
            h, w = b.meta.input_size
            where = f"{path} ({kind}): "
            with pytest.raises(DataError) as e:
                b.infer(np.zeros((1, 3, h, w), np.float64))
            assert str(e.value) == (f"{where}input dtype is float64, expected float32; preprocess frames with "
                                    "unet_edge.preprocess (normalized float32 NCHW) or cast with .astype(np.float32)")
            with pytest.raises(DataError, match=r"input dtype is uint8, expected float32"):
                b.infer(np.zeros((1, 3, h, w), np.uint8))
            with pytest.raises(DataError, match=r"input is a list, expected a NumPy float32 array"):
                b.infer(np.zeros((1, 3, h, w), np.float32).tolist())
            with pytest.raises(DataError) as e:
                b.infer(np.zeros((1, h, w, 3), np.float32))  # NHWC
            assert str(e.value).startswith(f"{where}input of shape (1, {h}, {w}, 3) is not (N, 3, H, W)")
            with pytest.raises(DataError, match=r"input of shape \(3, 48, 64\) is not"):
                b.infer(np.zeros((3, h, w), np.float32))
            with pytest.raises(UsageError, match=r"batch 0 is outside \[1, \.\.\.\)"):
                b.infer(np.zeros((0, 3, h, w), np.float32))
        with pytest.raises(ArtifactError, match="closed"):
            b.infer(np.zeros((1, 3, h, w), np.float32))
    with _load(tiny_export / "model_int8_cpu.onnx") as b:
        with pytest.raises(DataError) as e:
            b.infer(np.zeros((1, 3, 64, 64), np.float32))
        assert str(e.value) == (f"{tiny_export / 'model_int8_cpu.onnx'} (onnxruntime): input 64x64 (HxW) does not fit "
                                "the fixed input 48x64; preprocess frames to the model's input size or export with "
                                "--dynamic")


def _caps(**kw) -> Capabilities:
    base = dict(kind="fake", device="cuda:0", precision="fp16", input_name="images", input_shape=(None, 3, None, None),
                output_name="logits", output_shape=(None, 3, None, None), artifact="m.engine")
    return Capabilities(**(base | kw))


def test_check_input_batches_and_spatial_rules():
    two = _caps(static_batch=2, input_shape=(2, 3, 32, 32), batch_range=(2, None))
    assert two.check_input(np.zeros((4, 3, 32, 32), np.float32)).shape == (4, 3, 32, 32)
    with pytest.raises(UsageError) as e:
        two.check_input(np.zeros((3, 3, 32, 32), np.float32))
    assert str(e.value) == ("m.engine (fake): batch 3 is not a multiple of the static batch 2; feed multiples of it "
                            "(they run in chunks of 2) or export with --dynamic")
    with pytest.raises(UsageError, match=r"^m\.engine \(fake\): batch 1 is outside \[2, \.\.\.\); feed at least 2"):
        two.check_input(np.zeros((1, 3, 32, 32), np.float32))
    capped = _caps(batch_range=(1, 64), spatial=(DimRange(16, 4096, 8, 0), DimRange(32, 512)))
    capped.check_shape((64, 3, 16, 32))
    with pytest.raises(UsageError, match=r"^m\.engine \(fake\): batch 65 is outside \[1, 64\]; split the batch$"):
        capped.check_shape((65, 3, 16, 32))
    with pytest.raises(DataError, match=r"input height 44 is not served: it must be 8\*k \+ 0 between 16 and 4096;"):
        capped.check_shape((1, 3, 44, 64))
    with pytest.raises(DataError, match=r"input width 600 is not served: it must be between 32 and 512;"):
        capped.check_shape((1, 3, 16, 600))
    contiguous = capped.check_input(np.zeros((1, 3, 64, 32), np.float32)[:, :, ::2])
    assert contiguous.flags.c_contiguous and contiguous.shape == (1, 3, 32, 32)


def test_capabilities_are_frozen_and_consistent(tiny_export):
    caps = _caps(details={"tensorrt": "10.3.0"})
    with pytest.raises(FrozenInstanceError):
        caps.device = "cpu"
    with pytest.raises(TypeError):
        caps.details["tensorrt"] = "11.4.0"  # read-only mapping
    assert replace(caps, threads=4).threads == 4 and caps.device_type == "cuda"
    with pytest.raises(ValueError, match="static batch 2 but input shape"):
        _caps(static_batch=2, input_shape=(1, 3, 8, 8))
    with pytest.raises(ValueError, match="precision 'int4'"):
        _caps(precision="int4")
    with _load(tiny_export / "model_fp32.onnx") as b:
        with pytest.raises(AttributeError):
            b.static_batch = 4  # a shorthand of capabilities(), not a settable attribute


def test_device_helpers_and_dims():
    assert (canonical_device("cpu"), canonical_device("cuda"), canonical_device("cuda:1")) == ("cpu", "cuda:0", "cuda:1")
    with pytest.raises(UsageError, match="'auto' must be resolved"):
        canonical_device("auto")
    with pytest.raises(UsageError, match="unknown --device 'tpu'"):
        canonical_device("tpu")
    assert (device_label("cpu"), device_label("cuda:0"), device_label("cuda:1")) == ("cpu", "cuda", "cuda:1")
    assert dims([1, "batch", None, -1, np.int64(64)]) == (1, None, None, None, 64)
