"""The runtime video pipeline: sources, overlay and the threaded stream (tiny model, tiny frames)."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from unet_edge.errors import ArtifactError, DataError, SourceError, UnetEdgeWarning, UsageError
from unet_edge.metadata import ModelMeta
from unet_edge.model import UNet, config_from_preset
from unet_edge.runtime.base import Backend
from unet_edge.runtime.overlay import draw_overlay
from unet_edge.runtime.sources import FrameError, FrameSource, gstreamer_available, open_source
from unet_edge.runtime.stream import (STAGES, RollingStats, StreamInterrupted, VideoSink, check_output,
                                      stream)
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

    def capabilities(self):
        return self.inner.capabilities()

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
    with pytest.raises(UsageError, match=r"\.mkv.*\.mp4"):
        stream(backend, video, out=tmp_path / "x.mkv", progress=False)


# --- output checks (before the first frame) ---------------------------------------------------------

def test_check_output_rejects_unusable_paths_naming_them(tmp_path):
    (tmp_path / "adir.mp4").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [(tmp_path / "adir.mp4", r"adir\.mp4 is a directory; give a video file name"),
             (tmp_path / "afile" / "o.mp4", r"afile/o\.mp4 is under .*afile, which is a file"),
             (tmp_path / "afile" / "deeper" / "o.mp4", r"is under .*afile, which is a file"),
             (tmp_path / "o.mkv", r"o\.mkv has an unsupported extension '\.mkv'.*\*\.mp4 or \*\.avi"),
             (tmp_path / "o", r"unsupported extension '\(none\)'")]
    for path, pattern in cases:
        with pytest.raises(UsageError, match=pattern):
            check_output(path)
    assert check_output(tmp_path / "new" / "sub" / "o.MP4") == tmp_path / "new" / "sub" / "o.MP4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.mp4", "afile"]  # the probe left nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_check_output_rejects_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match=r"ro/o\.mp4: cannot create files in .*ro \(Permission denied\)"):
            check_output(ro / "o.mp4")
    finally:
        ro.chmod(0o700)


def test_check_output_reports_a_folder_it_cannot_write(tmp_path, monkeypatch):
    import unet_edge.runtime.stream as st

    def denied(folder, name):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(st, "_probe_writable", denied)
    with pytest.raises(UsageError, match=r"o\.mp4: cannot create files in .* \(Permission denied\); choose a folder"):
        check_output(tmp_path / "o.mp4")


def test_stream_checks_out_before_opening_the_source(backend, tmp_path):
    (tmp_path / "d.mp4").mkdir()
    # the source does not exist either: the output error comes first, no frame is ever read
    with pytest.raises(UsageError, match="is a directory"):
        stream(backend, tmp_path / "missing.mp4", out=tmp_path / "d.mp4", progress=False)


# --- failures never replace a good output -----------------------------------------------------------

def test_backend_error_keeps_partial_and_leaves_existing_out_untouched(backend, video, tmp_path):
    out = tmp_path / "overlay.mp4"
    stream(backend, video, out=out, progress=False)
    good = out.read_bytes()
    warned = r"failed after 5 frames; .*overlay\.mp4 was left untouched.*overlay\.partial\.mp4"
    with pytest.warns(UnetEdgeWarning, match=warned):
        with pytest.raises(RuntimeError, match="boom") as ei:
            stream(FailingBackend(backend, 5, RuntimeError("boom")), video, out=out, progress=False)
    assert out.read_bytes() == good
    partial = tmp_path / "overlay.partial.mp4"
    assert any("overlay.partial.mp4" in n for n in ei.value.__notes__)
    decoded, reported, size, _ = _probe(partial)
    assert decoded == reported == 5 and size == (H, W)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4", "overlay.partial.mp4"]


def test_failure_before_any_frame_creates_nothing(backend, video, tmp_path):
    out = tmp_path / "o.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        stream(FailingBackend(backend, 0, RuntimeError("boom")), video, out=out, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_finalizes_output_then_reraises_with_stats(backend, video, tmp_path):
    out = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt) as ei:
        stream(FailingBackend(backend, 5, KeyboardInterrupt()), video, out=out, progress=False)
    assert isinstance(ei.value, StreamInterrupted)
    assert ei.value.stats.interrupted and ei.value.stats.frames == 5
    assert (ei.value.signal, ei.value.exit_code, ei.value.stats.signal) == ("SIGINT", 130, "SIGINT")
    decoded, reported, size, _ = _probe(out)
    assert decoded == reported == 5 and size == (H, W)
    assert [p.name for p in tmp_path.iterdir()] == ["interrupted.mp4"]


class SignallingBackend(Backend):
    """Sends ``signals`` to this process on infer call ``at`` (0-based)."""

    name = "signalling"

    def __init__(self, inner: Backend, at: int, signals):
        super().__init__(inner.meta)
        self.inner, self.at, self.signals, self.calls = inner, at, signals, 0

    def capabilities(self):
        return self.inner.capabilities()

    def infer(self, batch):
        if self.calls == self.at:
            for sig in self.signals:
                os.kill(os.getpid(), sig)
        self.calls += 1
        return self.inner.infer(batch)


@pytest.fixture
def sentinel_handlers():
    """Previous SIGINT/SIGTERM handlers that fail the test if a signal ever reaches them."""
    def previous(signum, frame):
        raise RuntimeError(f"signal {signum} reached the previous handler")

    saved = {s: signal.signal(s, previous) for s in (signal.SIGINT, signal.SIGTERM)}
    yield previous
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("signals,name,code", [([signal.SIGTERM], "SIGTERM", 143),
                                               ([signal.SIGINT, signal.SIGINT, signal.SIGINT], "SIGINT", 130)])
def test_signals_stop_the_stream_cleanly_and_handlers_are_restored(backend, video, tmp_path, sentinel_handlers,
                                                                   signals, name, code):
    out = tmp_path / "o.mp4"
    with pytest.raises(StreamInterrupted) as ei:
        stream(SignallingBackend(backend, 3, signals), video, out=out, progress=False)
    st = ei.value.stats
    assert (ei.value.signal, ei.value.exit_code, st.signal, st.interrupted) == (name, code, name, True)
    assert 1 <= st.frames < N_FRAMES and st.out == str(out)
    assert _probe(out)[0] == st.frames and [p.name for p in tmp_path.iterdir()] == ["o.mp4"]
    assert signal.getsignal(signal.SIGINT) is sentinel_handlers
    assert signal.getsignal(signal.SIGTERM) is sentinel_handlers


def test_ctrl_c_during_finalisation_is_deferred(backend, video, tmp_path, sentinel_handlers, monkeypatch):
    real_commit = VideoSink.commit

    def commit_under_fire(self):
        os.kill(os.getpid(), signal.SIGINT)  # lands between release and rename
        return real_commit(self)

    monkeypatch.setattr(VideoSink, "commit", commit_under_fire)
    out = tmp_path / "o.mp4"
    with pytest.raises(StreamInterrupted) as ei:
        stream(backend, video, out=out, progress=False)
    assert ei.value.stats.frames == N_FRAMES and _probe(out)[0] == N_FRAMES
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]


class ListSource(FrameSource):
    """Frames from a list; ``fail_at``: raise a fatal SourceError there; ``live``: a camera-like source."""

    def __init__(self, frames, live=False, fail_at=None):
        self._frames, self._i, self.fail_at = list(frames), 0, fail_at
        self.name, self.live, self.size = "list", live, frames[0].shape[:2]
        self.frame_count = None if live else len(self._frames)

    def __next__(self):
        if self._i == self.fail_at:
            raise SourceError("camera 7 stopped delivering frames")
        if self._i >= len(self._frames):
            raise StopIteration
        self._i += 1
        return self._frames[self._i - 1]


def test_fatal_source_error_keeps_frames_so_far_as_partial(backend, tmp_path):
    out = tmp_path / "seg.mp4"
    with pytest.warns(UnetEdgeWarning, match=r"seg\.partial\.mp4"):
        with pytest.raises(SourceError, match="camera 7 stopped"):
            stream(backend, ListSource(_frames(6), fail_at=3), out=out, progress=False)
    assert not out.exists()
    assert _probe(tmp_path / "seg.partial.mp4")[0] == 3


def test_corrupt_frames_mid_stream_are_dropped_counted_and_named(backend, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(4)
    cv2.imwrite(str(folder / "a.png"), frames[0])
    (folder / "b.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(folder / "c.png"), cv2.resize(frames[2], (W // 2, H // 2)))
    cv2.imwrite(str(folder / "d.png"), frames[3])
    out = tmp_path / "seg.mp4"
    stats = stream(backend, folder, out=out, progress=False)
    assert (stats.frames_read, stats.frames_decoded, stats.frames_written, stats.frames_unfinished) == (4, 3, 2, 0)
    assert (stats.dropped.decode, stats.dropped.corrupt, stats.dropped.queue) == (1, 1, 0)
    assert _probe(out)[0] == 2
    assert len(stats.drop_examples) == 2
    assert "b.png" in stats.drop_examples[0] and "corrupt or not an image" in stats.drop_examples[0]
    assert "c.png is 64x48 (WxH)" in stats.drop_examples[1]
    msg = stats.drop_message()
    assert msg.startswith("2 of 4 frames read were dropped (1 undecodable, 1 corrupt)") and "b.png" in msg
    d = json.loads(json.dumps(stats.to_dict()))
    assert d["frames_dropped"] == {"decode": 1, "corrupt": 1, "queue": 0, "total": 2}
    assert (d["frames_read"], d["frames_decoded"], d["frames_written"], d["frames"]) == (4, 3, 2, 2)
    assert stream(backend, folder, out=None, progress=False).drop_message() is not None
    clean = stream(backend, folder, out=None, max_frames=1, progress=False)
    assert clean.drop_message() is None and clean.dropped.total == 0


class SlowBackend(Backend):
    name = "slow"

    def __init__(self, inner: Backend, sleep_s: float):
        super().__init__(inner.meta)
        self.inner, self.sleep_s = inner, sleep_s

    def capabilities(self):
        return self.inner.capabilities()

    def infer(self, batch):
        time.sleep(self.sleep_s)
        return self.inner.infer(batch)


def test_live_source_drops_frames_when_the_queue_is_full(backend, tmp_path):
    n = 40
    stats = stream(SlowBackend(backend, 0.01), ListSource(_frames(4) * (n // 4), live=True), out=None,
                   queue_size=1, progress=False)
    assert stats.frames_read == n and stats.dropped.decode == stats.dropped.corrupt == 0
    assert stats.dropped.queue >= n // 2  # the reader never waits for the 10 ms/frame model
    assert stats.frames + stats.dropped.queue == n and stats.frames_unfinished == 0
    assert "queue full" in stats.drop_message()
    # a file source is never dropped from: the reader waits
    files = stream(SlowBackend(backend, 0.002), ListSource(_frames(8)), out=None, queue_size=1, progress=False)
    assert files.frames == 8 and files.dropped.total == 0


# --- bounded statistics -----------------------------------------------------------------------------

def test_rolling_stats_keep_a_window_and_exact_running_mean():
    st = RollingStats(window=100)
    for v in range(300):  # 3x the window
        st.add(float(v))
    assert len(st) == 100 and list(st)[0] == 200.0 and list(st)[-1] == 299.0
    assert st.count == 300 and st.mean == 149.5 and st.total == 44850.0 and st.max == 299.0
    assert st.percentile(50) == 249.5 and st.percentile(0) == 200.0
    s = st.summary()
    assert s["p99_ms"] == pytest.approx(298.01) and s["p90_ms"] == pytest.approx(289.1) and s["count"] == 300
    assert RollingStats(3).summary()["p50_ms"] == 0.0
    with pytest.raises(UsageError, match="window"):
        RollingStats(0)


def test_stream_stats_window_bounds_per_frame_times(backend, video):
    stats = stream(backend, video, out=None, progress=False, stats_window=4)
    assert stats.frames == N_FRAMES == 3 * 4
    for s in STAGES:
        st = stats.stage_ms[s]
        assert len(st) == 4 and st.count == N_FRAMES
    infer = stats.stage_ms["infer"]
    assert infer.mean == pytest.approx(infer.total / N_FRAMES)
    d = stats.to_dict(per_frame=True)
    assert d["stats_window"] == 4 and d["stages"]["infer"]["count"] == N_FRAMES
    assert all(len(v) == 4 for v in d["stage_ms"].values())
    assert d["stages"]["infer"]["p99_ms"] >= d["stages"]["infer"]["p50_ms"] > 0


def test_logits_with_wrong_class_count_raise(backend, video):
    other = ModelMeta(arch=config_from_preset("tiny", 5).to_dict(), class_names=list("abcde"),
                      palette=[[i * 40, 0, 0] for i in range(5)], input_size=(64, 96))
    wrong = TorchBackend(UNet(config_from_preset("tiny", K)), other)
    with pytest.raises(ArtifactError, match="expected"):
        stream(wrong, video, progress=False)


def test_a_backend_that_does_not_take_the_input_size_fails_before_any_frame(backend, video, tmp_path):
    class Fixed(FailingBackend):  # says it takes 32x32 only; infer must never be reached
        def capabilities(self):
            return replace(self.inner.capabilities(), input_shape=(1, 3, 32, 32), static_batch=1, artifact="m.onnx")

    fixed, out = Fixed(backend, 0, AssertionError("infer was called")), tmp_path / "o.mp4"
    with pytest.raises(DataError, match=r"^m\.onnx \(pytorch\): input 64x96 \(HxW\) does not fit the fixed input 32x32;"):
        stream(fixed, video, out=out, progress=False)
    assert fixed.calls == 0 and list(tmp_path.iterdir()) == []


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
    cv2.imwrite(str(tmp_path / "2.png"), _frames(1)[0])
    src = open_source(str(tmp_path))
    next(src)
    with pytest.raises(FrameError, match=r"1\.jpg") as ei:
        next(src)
    assert (ei.value.reason, ei.value.index) == ("decode", 1)
    assert next(src).shape == (H, W, 3)  # the bad frame is skipped, not read again
    with pytest.raises(StopIteration):
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
