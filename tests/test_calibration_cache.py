"""TensorRT calibration cache format and the calibration batch stream (no TensorRT needed).

The TensorRT calibrator itself (``make_entropy_calibrator``) needs TensorRT and a GPU: its tests are
skipped where TensorRT is not installed.
"""
from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from calibration.cache import (decode_scale, encode_scale, format_calibration_cache, parse_header,
                               read_calibration_cache, trt_version_int, version_from_int,
                               write_calibration_cache)
from calibration.images import calibration_images
from unet_edge.trt.calibrator import CalibrationStream
from unet_edge.data.layouts import read_image
from unet_edge.errors import ArtifactError, DataError, ExportError
from unet_edge.metadata import ModelMeta
from unet_edge.preprocess import preprocess

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the repository
CAMVID_TRAIN = SHARED / "datasets" / "camvid" / "train"
needs_camvid = pytest.mark.skipif(not CAMVID_TRAIN.is_dir(), reason=f"CamVid images not found at {CAMVID_TRAIN}")
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="TensorRT not installed (libnvinfer unavailable on this host)")


def _meta(size=(64, 96)) -> ModelMeta:
    return ModelMeta(arch={"num_classes": 3, "base_channels": 8, "depth": 3}, class_names=["a", "b", "c"],
                     palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], input_size=size)


# --- format -------------------------------------------------------------------------------------

def test_version_int_both_schemes():
    assert trt_version_int("10.3") == 100300
    assert trt_version_int("10.3.0.30") == 100300
    assert trt_version_int("10.16.1") == 101601
    assert trt_version_int("11.4") == 110400
    assert trt_version_int("8.6.1") == 8601  # pre-10 scheme: major*1000 + minor*100 + patch
    assert version_from_int(100300) == "10.3.0" and version_from_int(8601) == "8.6.1"
    with pytest.raises(ValueError):
        trt_version_int("ten")


def test_scale_encoding_is_big_endian_float32_bits():
    assert encode_scale(0.0078125) == "3c000000"  # 2**-7
    assert encode_scale(1.0) == "3f800000"
    assert decode_scale("3c000000") == 0.0078125
    assert decode_scale("0") == 0.0  # writers that drop leading zeros
    s = 1 / 127
    assert encode_scale(s) == struct.pack(">f", s).hex()


def test_header_and_lines(tmp_path):
    path = write_calibration_cache(tmp_path / "calib.cache", {"images": 0.5, "/conv/Conv_output_0": 0.25})
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert lines[1] == "images: 3f000000"
    assert lines[2] == "/conv/Conv_output_0: 3e800000"
    assert parse_header(lines[0]) == (100300, "EntropyCalibration2")
    assert format_calibration_cache({"x": 1.0}, trt_version="8.6.1").startswith("TRT-8601-EntropyCalibration2\n")


def test_round_trip_exact_to_float32(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(1e-6, 10, 200), [1e-30, 3.4e38, 0.0, 1 / 127, 0.1]])
    scales = {f"t{i}:{'x' * (i % 3)}": float(v) for i, v in enumerate(values)}  # names may contain ':'
    header, back = read_calibration_cache(write_calibration_cache(tmp_path / "c.cache", scales, trt_version="10.16"))
    assert header == "TRT-101600-EntropyCalibration2"
    assert list(back) == list(scales)
    for name, v in scales.items():
        assert back[name] == float(np.float32(v))
        assert np.float32(back[name]).tobytes() == np.float32(v).tobytes()


def test_invalid_inputs(tmp_path):
    with pytest.raises(ExportError):
        write_calibration_cache(tmp_path / "a", {"x": float("nan")})
    with pytest.raises(ExportError):
        write_calibration_cache(tmp_path / "a", {"x": -1.0})
    with pytest.raises(ExportError):
        write_calibration_cache(tmp_path / "a", {"x\ny": 1.0})
    with pytest.raises(ExportError):
        write_calibration_cache(tmp_path / "a", {"x": 1.0}, algorithm="Nope")
    assert not (tmp_path / "a").exists()
    bad = tmp_path / "bad.cache"
    bad.write_text("hello\nx: 3f800000\n")
    with pytest.raises(ArtifactError, match="header"):
        read_calibration_cache(bad)
    bad.write_text("TRT-100300-EntropyCalibration2\nx 3f800000\n")
    with pytest.raises(ArtifactError, match="line 2"):
        read_calibration_cache(bad)
    with pytest.raises(ArtifactError, match="not found"):
        read_calibration_cache(tmp_path / "missing.cache")


@needs_camvid
def test_cache_written_by_ort_export_reads_back(tmp_path):
    """The ONNX Runtime INT8 export writes calib.cache with this module: re-read it and compare with
    the Q/DQ model's activation scales and the FP32 graph's tensor names."""
    onnx = pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    from unet_edge.export.int8 import activation_scales, export_int8
    from unet_edge.export.onnx_export import export_onnx
    from unet_edge.model import UNet, config_from_preset

    torch.manual_seed(0)
    cfg = config_from_preset("tiny", 3)
    meta = _meta().with_(arch=cfg.to_dict())
    fp32 = export_onnx(UNet(cfg).eval(), meta, tmp_path / "model_fp32.onnx")
    export_int8(fp32, meta, tmp_path / "model_int8.onnx", CAMVID_TRAIN, calib_images=4, cache_path=tmp_path / "calib.cache")
    header, scales = read_calibration_cache(tmp_path / "calib.cache")
    assert parse_header(header)[1] == "EntropyCalibration2"
    expected = activation_scales(onnx.load(str(tmp_path / "model_int8.onnx")))
    assert scales == {k: float(np.float32(v)) for k, v in expected.items()}
    assert meta.input_name in scales
    graph = onnx.load(str(fp32)).graph
    fp32_tensors = {i.name for i in graph.input} | {o for n in graph.node for o in n.output}
    assert set(scales) <= fp32_tensors  # names TensorRT will find in the parsed FP32 network
    assert all(0 < s < 1 for s in scales.values())


# --- CalibrationStream --------------------------------------------------------------------------

@needs_camvid
def test_stream_batches_match_runtime_preprocessing():
    meta = _meta()
    paths = calibration_images(CAMVID_TRAIN, n=5, seed=0)
    stream = CalibrationStream(paths, meta, batch_size=2)
    assert stream.num_batches == len(stream) == 2  # 5 // 2: TensorRT needs full batches
    assert stream.shape == (2, 3, 64, 96) and stream.nbytes == 2 * 3 * 64 * 96 * 4
    batches = list(stream)
    assert len(batches) == 2 and stream.batches_read == 2
    for i, batch in enumerate(batches):
        assert batch.shape == (2, 3, 64, 96) and batch.dtype == np.float32 and batch.flags.c_contiguous
        want = np.stack([preprocess(read_image(p), meta) for p in paths[2 * i: 2 * i + 2]])
        np.testing.assert_array_equal(batch, want)
    assert stream.next_batch() is None
    stream.reset()
    np.testing.assert_array_equal(stream.next_batch(), batches[0])


@needs_camvid
def test_stream_cache_reuse_needs_no_images(tmp_path):
    meta = _meta()
    cache = write_calibration_cache(tmp_path / "calib.cache", {"images": 0.02})
    stream = CalibrationStream([], meta, batch_size=4, cache_path=cache)
    assert stream.has_cache and stream.num_batches == 0
    assert stream.read_cache() == cache.read_bytes()
    assert stream.next_batch() is None and stream.batches_read == 0
    # a stream with images but an existing cache: TensorRT reads the cache first and asks for no batch
    paths = calibration_images(CAMVID_TRAIN, n=4, seed=1)
    stream = CalibrationStream(paths, meta, batch_size=2, cache_path=cache)
    assert stream.read_cache() is not None and stream.batches_read == 0
    # writing replaces the file atomically
    new = format_calibration_cache({"images": 0.5}).encode()
    stream.write_cache(new)
    assert cache.read_bytes() == new


def test_stream_errors(tmp_path):
    meta = _meta()
    with pytest.raises(DataError, match="at least 2 images"):
        CalibrationStream([], meta, batch_size=2)
    with pytest.raises(DataError):
        CalibrationStream([], meta, batch_size=0)
    bad = tmp_path / "calib.cache"
    bad.write_bytes(b"\x00\xff garbage")
    with pytest.raises(ArtifactError):
        CalibrationStream([], meta, batch_size=1, cache_path=bad).read_cache()
    no_cache = CalibrationStream([Path("a.png")], meta, batch_size=1, cache_path=tmp_path / "none.cache")
    assert no_cache.read_cache() is None
    no_cache.write_cache(b"TRT-100300-EntropyCalibration2\n")
    assert (tmp_path / "none.cache").is_file()


# --- the TensorRT calibrator (real TensorRT only) ----------------------------------------------

@needs_trt
@needs_camvid
def test_entropy_calibrator_feeds_device_batches(tmp_path):
    from unet_edge.trt.calibrator import make_entropy_calibrator
    from unet_edge.trt.cuda_utils import import_pycuda, primary_context
    from unet_edge.trt.version import import_tensorrt, installed_version

    trt = import_tensorrt()
    if installed_version(trt).major >= 11:
        pytest.skip("TensorRT 11 has no implicit INT8 calibration")
    cuda = import_pycuda()
    ctx = cuda.Device(0).retain_primary_context()
    try:
        with primary_context(cuda, ctx):
            calib = make_entropy_calibrator(trt, calibration_images(CAMVID_TRAIN, n=4), _meta(), 2, tmp_path / "c.cache")
            assert isinstance(calib, trt.IInt8EntropyCalibrator2)
            assert calib.get_batch_size() == 2
            assert calib.read_calibration_cache() is None
            ptrs = calib.get_batch(["images"])
            assert len(ptrs) == 1 and ptrs[0] != 0
            host = np.empty((2, 3, 64, 96), np.float32)
            cuda.memcpy_dtoh(host, ptrs[0])
            np.testing.assert_array_equal(host, next(iter(CalibrationStream(calibration_images(CAMVID_TRAIN, n=4), _meta(), 2))))
            assert calib.get_batch(["images"]) != [] and calib.get_batch(["images"]) == []
            calib.write_calibration_cache(format_calibration_cache({"images": 0.1}).encode())
            assert calib.read_calibration_cache() is not None and calib.error is None
            calib.free()
    finally:
        ctx.detach()


@needs_camvid
def test_ort_reader_chunks_cover_the_images_once():
    """``set_range`` chunks (ONNX Runtime's CalibStridedMinMax) feed each image once, in order."""
    from calibration.images import OrtCalibrationReader
    from unet_edge.export.int8 import _chunk

    meta = _meta()
    paths = calibration_images(CAMVID_TRAIN, n=6, seed=0)
    reader = OrtCalibrationReader(paths, meta)
    step = _chunk(len(reader), most=4)
    assert step == 3 and _chunk(64) == 8 and _chunk(13) == 1
    fed = []
    for start in range(0, len(reader), step):
        reader.set_range(start_index=start, end_index=start + step)
        while (item := reader.get_next()) is not None:
            fed.append(item[meta.input_name])
    want = [preprocess(read_image(p), meta)[None] for p in paths]
    assert len(fed) == 6 and all(np.array_equal(a, b) for a, b in zip(fed, want))
