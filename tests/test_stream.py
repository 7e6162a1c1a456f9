"""The runtime video pipeline: sources, overlay and the threaded stream (tiny model, tiny frames)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from unet_edge.errors import ArtifactError, SourceError
from unet_edge.metadata import ModelMeta
from unet_edge.model import UNet, config_from_preset
from unet_edge.runtime.base import Backend
from unet_edge.runtime.overlay import draw_overlay
from unet_edge.runtime.sources import gstreamer_available, open_source
from unet_edge.runtime.stream import STAGES, StreamInterrupted, stream
from unet_edge.runtime.torch_backend import TorchBackend

K = 3
H, W = 96, 128  # source frames
N_FRAMES = 12
FPS = 10.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def meta() -> ModelMeta:
    cfg = config_from_preset("tiny", K)
    return ModelMeta(arch=cfg.to_dict(), class_names=["background", "road", "car"],
                     palette=[[0, 0, 0], [128, 64, 128], [0, 0, 142]], input_size=(64, 96))


@pytest.fixture(scope="module")
def backend(meta) -> TorchBackend:
    torch.manual_seed(0)
    return TorchBackend(UNet(config_from_preset("tiny", K)), meta)


def _frames(n: int = N_FRAMES) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.zeros((H, W, 3), np.uint8)
        f[:] = (40 + 10 * i, 90, 160)
        cv2.rectangle(f, (5 + 6 * i, 20), (45 + 6 * i, 70), (255, 255, 255), -1)
        out.append(f)
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "in.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    assert vw.isOpened()
    for f in _frames():
        vw.write(f)
    vw.release()
    return path


def _probe(path) -> tuple[int, int, tuple[int, int], float]:
    """(frames decoded, frames reported, (H, W), fps) of a video file."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2 cannot open {path}"
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    n, size = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        size = f.shape[:2]
    cap.release()
    return n, reported, size, fps


class FailingBackend(Backend):
    """Wraps a backend; ``infer`` raises ``exc`` on call number ``fail_at`` (0-based)."""

    name = "fake"

    def __init__(self, inner: Backend, fail_at: int, exc: BaseException):
        super().__init__(inner.meta)
        self.inner, self.fail_at, self.exc, self.calls = inner, fail_at, exc, 0

    def infer(self, batch):
        if self.calls == self.fail_at:
            raise self.exc
        self.calls += 1
        return self.inner.infer(batch)


# --- stream ---------------------------------------------------------------------------------------

def test_stream_mp4_same_frames_size_fps_and_timings(backend, video, tmp_path):
    out = tmp_path / "out" / "seg.mp4"
    stats = stream(backend, str(video), out=out, progress=False)
    assert out.is_file() and not list(out.parent.glob(".*tmp*"))
    decoded, reported, size, fps = _probe(out)
    assert decoded == reported == N_FRAMES
    assert size == (H, W)
    assert fps == pytest.approx(FPS, rel=0.05)

    assert stats.frames == N_FRAMES and stats.frame_size == (H, W) and stats.input_size == (64, 96)
    assert stats.wall_s > 0 and stats.fps > 0 and stats.infer_fps > 0
    for s in STAGES:
        assert len(stats.stage_ms[s]) == N_FRAMES
        assert all(v > 0 for v in stats.stage_ms[s]), s
    summary = stats.to_dict()["stages"]
    assert set(summary) == set(STAGES)
    assert all(row["mean_ms"] > 0 and row["p90_ms"] >= row["p50_ms"] > 0 for row in summary.values())
    json.dumps(stats.to_dict(per_frame=True))
    assert not stats.interrupted and not stats.stopped_by_user


def test_stream_folder_to_avi_and_max_frames(backend, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(_frames(5)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "seg.avi"
    stats = stream(backend, folder, out=out, progress=False)
    assert stats.frames == 5
    decoded, _, size, fps = _probe(out)
    assert decoded == 5 and size == (H, W) and fps == pytest.approx(30.0, rel=0.05)

    stats = stream(backend, folder, out=None, max_frames=2, progress=False)
    assert stats.frames == 2 and stats.out is None


def test_stream_rejects_unknown_output_extension(backend, video, tmp_path):
    with pytest.raises(SourceError, match=r"\.mkv.*\.mp4"):
        stream(backend, video, out=tmp_path / "x.mkv", progress=False)


def test_backend_error_propagates_and_output_stays_playable(backend, video, tmp_path):
    out = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        stream(FailingBackend(backend, 5, RuntimeError("boom")), video, out=out, progress=False)
    decoded, reported, size, _ = _probe(out)
    assert decoded == reported == 5 and size == (H, W)
    assert not list(tmp_path.glob(".*tmp*"))


def test_ctrl_c_finalizes_output_then_reraises_with_stats(backend, video, tmp_path):
    out = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt) as ei:
        stream(FailingBackend(backend, 5, KeyboardInterrupt()), video, out=out, progress=False)
    assert isinstance(ei.value, StreamInterrupted)
    assert ei.value.stats.interrupted and ei.value.stats.frames == 5
    decoded, reported, size, _ = _probe(out)
    assert decoded == reported == 5 and size == (H, W)


def test_reader_error_propagates_with_frames_so_far(backend, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(3)
    cv2.imwrite(str(folder / "a.png"), frames[0])
    (folder / "b.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(folder / "c.png"), frames[2])
    out = tmp_path / "seg.mp4"
    with pytest.raises(SourceError, match=r"b\.png.*corrupt"):
        stream(backend, folder, out=out, progress=False)
    assert _probe(out)[0] == 1


def test_logits_with_wrong_class_count_raise(backend, video):
    other = ModelMeta(arch=config_from_preset("tiny", 5).to_dict(), class_names=list("abcde"),
                      palette=[[i * 40, 0, 0] for i in range(5)], input_size=(64, 96))
    wrong = TorchBackend(UNet(config_from_preset("tiny", K)), other)
    with pytest.raises(ArtifactError, match="expected"):
        stream(wrong, video, progress=False)


# --- sources --------------------------------------------------------------------------------------

def test_video_source_attributes(video):
    with open_source(str(video)) as src:
        assert src.size == (H, W) and src.frame_count == N_FRAMES and not src.live
        assert src.fps == pytest.approx(FPS, rel=0.05)
        frames = list(src)
    assert len(frames) == N_FRAMES and frames[0].dtype == np.uint8 and frames[0].shape == (H, W, 3)


def test_missing_path_raises(tmp_path):
    with pytest.raises(SourceError, match="not found.*camera index"):
        open_source(str(tmp_path / "nope.mp4"))


def test_empty_folder_raises(tmp_path):
    with pytest.raises(SourceError, match="contains no .*png"):
        open_source(tmp_path)


def test_corrupt_image_in_folder_is_named(tmp_path):
    cv2.imwrite(str(tmp_path / "0.png"), _frames(1)[0])
    (tmp_path / "1.jpg").write_bytes(b"\xff\xd8garbage")
    src = open_source(str(tmp_path))
    next(src)
    with pytest.raises(SourceError, match=r"1\.jpg"):
        next(src)
    (tmp_path / "0.png").write_bytes(b"")
    with pytest.raises(SourceError, match=r"0\.png"):
        open_source(str(tmp_path))


def test_undecodable_video_raises(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match="bad.mp4"):
        open_source(bad)


@pytest.mark.parametrize("index", [9, "9"])
def test_absent_camera_raises(index):
    with pytest.raises(SourceError, match=r"camera 9 could not be opened.*v4l2-ctl --list-devices"):
        open_source(index)


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer")
def test_gstreamer_without_support_explains_jetson_opencv():
    pipe = "videotestsrc ! videoconvert ! video/x-raw,format=BGR ! appsink"
    with pytest.raises(SourceError, match=r"(?s)no GStreamer.*pip.*python3-opencv.*nvarguscamerasrc"):
        open_source(pipe)


# --- overlay --------------------------------------------------------------------------------------

def test_overlay_colours_only_labelled_pixels(meta):
    frame = np.full((H, W, 3), 100, np.uint8)
    labels = np.zeros((24, 32), np.uint8)  # a quarter of the frame size: resized nearest
    labels[:12, :16] = 1
    labels[12:, 16:] = 2
    out = draw_overlay(frame, labels, meta, alpha=0.5, hud=None, legend=False)
    assert out.shape == frame.shape and out.dtype == np.uint8
    changed = np.any(out != frame, axis=2)
    assert changed[: H // 2, : W // 2].all() and changed[H // 2 :, W // 2 :].all()
    assert not changed[: H // 2, W // 2 :].any()  # background (black palette) stays untouched
    # palette is RGB; road = (128, 64, 128) blended 50/50 with grey 100 -> BGR (114, 82, 114)
    assert tuple(int(v) for v in out[0, 0]) == pytest.approx((114, 82, 114), abs=1)
    assert np.array_equal(frame, np.full((H, W, 3), 100, np.uint8))  # input not modified


@pytest.mark.parametrize("size", [(240, 320), (720, 1280)])
def test_overlay_legend_and_hud_draw(meta, size):
    frame = np.full((*size, 3), 100, np.uint8)
    labels = np.zeros((24, 32), np.uint8)
    plain = draw_overlay(frame, labels, meta, legend=False)
    assert np.array_equal(plain, frame)
    with_all = draw_overlay(frame, labels, meta, hud={"": "pytorch fp32 (cpu)", "fps": "30.0", "infer": "4.2 ms"},
                            legend=True, legend_all=True)
    assert with_all.shape == frame.shape
    assert np.any(with_all[:20, :60] != frame[:20, :60])  # HUD top-left
    assert np.any(with_all[-20:, -60:] != frame[-20:, -60:])  # legend bottom-right


def test_overlay_rejects_bad_inputs(meta):
    from unet_edge.errors import DataError

    with pytest.raises(DataError):
        draw_overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8), meta)
    with pytest.raises(DataError):
        draw_overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 1), np.uint8), meta)
