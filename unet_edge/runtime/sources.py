"""Frame sources for the runtime: video files, image folders, cameras and GStreamer pipelines.

Every source is an iterator of BGR uint8 (H, W, 3) frames (OpenCV's channel order) with the same
attributes, opened by :func:`open_source`. The first frame is decoded when the source is opened,
so a source that cannot deliver frames fails at once with a :class:`SourceError`, and ``size`` is
the real decoded size rather than what the container claims.

A frame that cannot be decoded, or decodes to something unusable, raises :class:`FrameError`
(a :class:`SourceError`) and the source stays usable: the next ``next()`` goes on with the next
frame, so a consumer may skip it. Any other :class:`SourceError` ends the source.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np

from ..data.layouts import IMAGE_EXTS
from ..errors import SourceError
from ..formats import JETSON_CSI_PIPELINE

#: Frame rate assumed when the container or device reports none.
DEFAULT_FPS = 30.0


class FrameError(SourceError):
    """One frame of a working source is unusable; the source can go on with the next frame.

    Attributes:
        reason: ``"decode"`` (the frame's data could not be read or decoded) or ``"corrupt"`` (it
            decoded to an unusable frame: empty, or not the size of the source's first frame).
        index: 0-based position of the frame in the source.
    """

    def __init__(self, message: str, reason: str, index: int):
        super().__init__(message)
        self.reason = reason
        self.index = index


class FrameSource:
    """An iterator of BGR uint8 (H, W, 3) frames.

    Attributes:
        name: what was opened (path, ``camera 0`` or the pipeline string).
        fps: frames per second reported by the container or device; :data:`DEFAULT_FPS` (30.0)
            when it reports none (image folders, some cameras and pipelines).
        fps_known: False when ``fps`` is the 30.0 default rather than a reported value.
        size: (H, W) pixels of the frames.
        frame_count: number of frames for files and folders (as reported by the container for
            videos); None for live sources (cameras, pipelines).
        live: True for cameras and pipelines.

    Iterating raises :class:`FrameError` for one bad frame (a corrupt image in a folder, a frame
    of another size) and the next ``next()`` continues after it; it raises :class:`SourceError`
    when the source cannot go on (a camera that stops delivering). Sources are context managers;
    :meth:`close` is idempotent.
    """

    name: str = ""
    fps: float = DEFAULT_FPS
    fps_known: bool = False
    size: tuple[int, int] = (0, 0)
    frame_count: int | None = None
    live: bool = False

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file, device or pipeline; idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, size={self.size}, fps={self.fps:g}, "
                f"frame_count={self.frame_count})")


def _valid_fps(v: float) -> float | None:
    return float(v) if v and math.isfinite(v) and 0 < v <= 1000 else None


class VideoCaptureSource(FrameSource):
    """A ``cv2.VideoCapture`` (video file, camera index or GStreamer pipeline)."""

    def __init__(self, cap: cv2.VideoCapture, name: str, live: bool, first: np.ndarray):
        self._cap = cap
        self._pending: np.ndarray | None = first
        self.name = name
        self.live = live
        fps = _valid_fps(cap.get(cv2.CAP_PROP_FPS))
        self.fps_known = fps is not None
        self.fps = fps or DEFAULT_FPS
        self.size = (int(first.shape[0]), int(first.shape[1]))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if not live else 0
        self.frame_count = n if n > 0 else None
        self.frames_read = 0

    def __next__(self) -> np.ndarray:
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            if self._cap is None:
                raise StopIteration
            ok, frame = self._cap.read()
            if not ok or frame is None:
                if self.live and self.name.startswith("camera"):
                    raise SourceError(f"{self.name} stopped delivering frames after {self.frames_read}; "
                                      "check the cable/connection and that no other process took the device")
                raise StopIteration
        index = self.frames_read
        self.frames_read += 1
        if frame.size == 0 or frame.shape[:2] != self.size:
            got = "empty" if frame.size == 0 else f"{frame.shape[1]}x{frame.shape[0]} (WxH)"
            raise FrameError(f"frame {index} of {self.name} is {got} but the stream started at "
                             f"{self.size[1]}x{self.size[0]}", "corrupt", index)
        return _as_bgr(frame, self.name)

    def close(self) -> None:
        cap, self._cap = getattr(self, "_cap", None), None
        if cap is not None:
            cap.release()


class ImageFolderSource(FrameSource):
    """Images of one size read in name order (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``)."""

    def __init__(self, files: list[Path], name: str):
        self._files = files
        self._i = 0
        self.name = name
        self.fps = DEFAULT_FPS
        self.fps_known = False
        self.frame_count = len(files)
        self._pending: np.ndarray | None = self._read(files[0])
        self.size = (int(self._pending.shape[0]), int(self._pending.shape[1]))

    def _read(self, path: Path, index: int = 0) -> np.ndarray:
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
        except OSError as e:
            raise FrameError(f"cannot read image {path}: {e}", "decode", index) from e
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if img is None:
            raise FrameError(f"image {path} in folder source {self.name} is corrupt or not an image OpenCV can "
                             "decode; delete or replace it", "decode", index)
        return img

    def __next__(self) -> np.ndarray:
        if self._i >= len(self._files):
            raise StopIteration
        index, path = self._i, self._files[self._i]
        self._i += 1  # before decoding: a bad file is skipped by the next call, not read again
        if self._pending is not None:
            img, self._pending = self._pending, None
        else:
            img = self._read(path, index)
        if img.shape[:2] != self.size:
            raise FrameError(f"image {path} is {img.shape[1]}x{img.shape[0]} (WxH) but the first image of "
                             f"{self.name} is {self.size[1]}x{self.size[0]}; a folder source needs images of one "
                             "size (resize them first)", "corrupt", index)
        return _as_bgr(img, str(path))

    def close(self) -> None:
        self._i = len(getattr(self, "_files", []))
        self._pending = None


def _as_bgr(frame: np.ndarray, name: str) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise SourceError(f"{name} delivered {frame.dtype} frames; only 8-bit video is supported")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


def gstreamer_available() -> bool:
    """True when this OpenCV build has GStreamer video I/O (pip's ``opencv-python`` has none)."""
    m = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(m) and m.group(1).upper() != "NO"


def _first_frame(cap: cv2.VideoCapture) -> np.ndarray | None:
    ok, frame = cap.read()
    return frame if ok and frame is not None and frame.size else None


def _capture_source(cap: cv2.VideoCapture, name: str, live: bool, not_opened: str, no_frame: str) -> FrameSource:
    """Wrap an OpenCV capture whose first frame decodes; else release it and raise SourceError with
    ``not_opened`` (cannot open) or ``no_frame`` (opened, no frame)."""
    if not cap.isOpened():
        cap.release()
        raise SourceError(not_opened)
    first = _first_frame(cap)
    if first is None:
        cap.release()
        raise SourceError(no_frame)
    return VideoCaptureSource(cap, name, live=live, first=first)


def _open_camera(index: int) -> FrameSource:
    return _capture_source(
        cv2.VideoCapture(index), f"camera {index}", live=True,
        not_opened=(f"camera {index} could not be opened: no such device, or it is busy or not permitted. "
                    "List devices with `v4l2-ctl --list-devices` (or `ls /dev/video*`), check permissions (your user "
                    "must be in the 'video' group) and that no other process is using it. A Jetson CSI camera "
                    f"needs a GStreamer pipeline instead, e.g. \"{JETSON_CSI_PIPELINE}\""),
        no_frame=(f"camera {index} opened but delivered no frame; check that it is not in use by another "
                  "process and that it supports a BGR/YUYV/MJPG mode (`v4l2-ctl -d /dev/video"
                  f"{index} --list-formats-ext`)"))


def _open_gstreamer(pipeline: str) -> FrameSource:
    if not gstreamer_available():
        raise SourceError(
            "GStreamer pipeline given but this OpenCV build has no GStreamer support (pip's opencv-python "
            "wheels are built without it; `python -c \"import cv2; print(cv2.getBuildInformation())\"` shows "
            "'GStreamer: NO'). On Jetson, uninstall the pip wheel (`pip uninstall opencv-python "
            "opencv-python-headless`) and use the system OpenCV from JetPack (`sudo apt install python3-opencv`, "
            "in a venv created with --system-site-packages), then pass a pipeline ending in appsink, e.g. "
            f"\"{JETSON_CSI_PIPELINE}\""
        )
    return _capture_source(
        cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER), pipeline, live=True,
        not_opened=(f"GStreamer pipeline could not be opened: {pipeline!r}. Test it with "
                    "`gst-launch-1.0` (replace appsink by fakesink) and make sure it ends in "
                    "'videoconvert ! video/x-raw,format=BGR ! appsink'"),
        no_frame=(f"GStreamer pipeline opened but delivered no frame: {pipeline!r}; check the camera "
                  "and the caps (the appsink must receive video/x-raw,format=BGR)"))


def _open_video(path: Path) -> FrameSource:
    return _capture_source(
        cv2.VideoCapture(str(path)), str(path), live=False,
        not_opened=(f"OpenCV cannot open video {path}: not a video file, corrupt, or a codec this OpenCV "
                    "build lacks; check it with `ffprobe` or convert it (`ffmpeg -i in -c:v libx264 out.mp4`)"),
        no_frame=(f"OpenCV opened video {path} but could not decode a single frame: empty, corrupt or an "
                  "unsupported codec; check it with `ffprobe` or re-encode it with ffmpeg"))


def open_source(source: str | int | Path) -> FrameSource:
    """Open a video file, an image folder, a single image, a camera or a GStreamer pipeline.

    Args:
        source: one of
            - a camera index: an ``int`` or a string of digits (``"0"``);
            - a path to a video file OpenCV can decode (``.mp4``, ``.avi``, ...);
            - a path to a folder of ``.png``/``.jpg``/``.jpeg``/``.bmp`` images (the dataset loaders' extensions) of one size, read in name order
              (fps 30), or to a single image (one frame);
            - a GStreamer pipeline (a string containing ``!``), opened with ``cv2.CAP_GSTREAMER``.

    Returns:
        a :class:`FrameSource` whose first frame has already been decoded.

    Raises:
        SourceError: the path does not exist; the folder holds no images; an image is corrupt;
            OpenCV cannot open or decode the video; the camera cannot be opened or delivers no
            frame; the pipeline is given but this OpenCV has no GStreamer, or it cannot be opened.
    """
    if isinstance(source, bool) or not isinstance(source, (str, int, Path)):
        raise SourceError(f"unsupported source {source!r}: pass a video path, image folder, camera index or "
                          "GStreamer pipeline string")
    if isinstance(source, int):
        if source < 0:
            raise SourceError(f"camera index must be >= 0, got {source}")
        return _open_camera(source)
    text = str(source).strip()
    if text.isdigit():
        return _open_camera(int(text))
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                       key=lambda p: p.name)
        if not files:
            raise SourceError(f"folder {path} contains no {'/'.join(IMAGE_EXTS)} images; point the source at a "
                              "folder of frames, a video file or a camera index")
        return ImageFolderSource(files, str(path))
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTS:
            return ImageFolderSource([path], str(path))
        return _open_video(path)
    if "!" in text:
        return _open_gstreamer(text)
    raise SourceError(f"source {text!r} not found: no such file or folder. Pass a video file, a folder of images, "
                      "a camera index such as 0, or a GStreamer pipeline (elements joined by '!')")
