"""The real-time video pipeline: read -> preprocess -> infer -> postprocess -> overlay -> write.

Three threads overlap the stages so the accelerator is not idle while frames are decoded or
encoded::

    FrameReader thread   decode (BGR) -> BGR->RGB + preprocess          --queue-->
    calling thread       backend.infer (batch of 1) + labels_from_logits + resize to the frame
                                                                        --queue-->
    FrameWriter thread   draw_overlay + VideoSink.write (+ imshow)

:func:`stream` only wires them together. Inference stays on the calling thread: CUDA/TensorRT
contexts are bound to the thread that created them, and signals are delivered there.

Both queues are bounded (``queue_size``). A file or folder source gets back-pressure: a slow stage
makes the reader wait and no frame is lost. A live source (camera, pipeline) never waits: a frame
that finds the queue full is dropped and counted (``dropped.queue``), so latency stays bounded
instead of growing with a backlog.

Bad frames: a frame the source cannot decode (:class:`FrameError` ``"decode"``) or that decodes
to an unusable frame (``"corrupt"``: empty, another size) is dropped, counted and the run goes on;
any other error of the source ends the run.

How a run ends decides what happens to ``out`` (written meanwhile by :class:`VideoSink` to a
hidden temporary file beside it):

============================================  ===========================================  ==========================
end                                           ``out``                                      raised
============================================  ===========================================  ==========================
end of input, ``max_frames``, ``q``/Esc       temp file renamed onto ``out``               nothing (returns stats)
SIGINT (Ctrl-C, once or repeatedly), SIGTERM  temp file renamed onto ``out``               :class:`StreamInterrupted`
an exception in any stage                     untouched (an earlier video stays); the      the exception
                                              frames so far are kept as
                                              ``<stem>.partial<ext>``, named in a
                                              :class:`UnetEdgeWarning` and a note on the
                                              exception
============================================  ===========================================  ==========================

When no frame was written no file is created. Either way no temporary file is left behind.

Signals: called from the main thread, :func:`stream` installs handlers for SIGINT and SIGTERM for
the whole call (finalisation included) and restores the previous ones before it returns or raises.
A signal only asks the pipeline to stop (it stops within a frame plus ~50 ms); a second or third
Ctrl-C is recorded and ignored, so it cannot cut the release/rename of the output short. Called
from another thread, no handler can be installed; a KeyboardInterrupt raised by a stage (e.g. a
backend) is handled like SIGINT.

Statistics are bounded in memory: per-stage times go to :class:`RollingStats` (running count,
mean, total and max over every frame; percentiles over the last ``stats_window`` frames).
"""
from __future__ import annotations

import collections
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..errors import ArtifactError, SourceError, UnetEdgeWarning, UsageError
from ..metadata import ModelMeta
from ..preprocess import labels_from_logits, preprocess, resize_labels
from ..progress import make_progress
from .base import Backend
from .overlay import draw_overlay
from .sources import FrameError, FrameSource, open_source

#: Pipeline stages timed per frame, in order.
STAGES = ("read", "preprocess", "infer", "postprocess", "overlay", "write")
#: Output containers and the FourCC written into them.
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
#: Frames whose per-stage times are kept for percentiles (about 50 KiB for the six stages).
DEFAULT_STATS_WINDOW = 1024
#: Messages of dropped frames kept for the summary (the counts cover every drop).
MAX_DROP_EXAMPLES = 5
#: Why a frame was dropped: undecodable data, an unusable decoded frame, a full queue (live sources).
DROP_REASONS = ("decode", "corrupt", "queue")
#: Exit status a shell reports for a process ended by a signal: 128 + signal number.
SIGNAL_EXIT_BASE = 128

_END = object()  # end-of-stream sentinel
_POLL_S = 0.05
_READER_JOIN_S = 10.0  # a camera read can block; give up waiting for the reader after this


# ------------------------------------------------------------------------------------ statistics


class RollingStats:
    """Bounded statistics of one series of durations (ms): O(``window``) memory for any length.

    ``count``, ``mean``, ``total`` and ``max`` cover every value added; :meth:`percentile` covers
    the last ``window`` values (a ring buffer, ``collections.deque(maxlen=window)``). Iterating
    and ``len()`` give that window, oldest first.

    Raises:
        UsageError: ``window`` < 1.
    """

    __slots__ = ("window", "count", "total", "max", "_recent")

    def __init__(self, window: int = DEFAULT_STATS_WINDOW):
        if int(window) < 1:
            raise UsageError(f"stats window must be >= 1 frame, got {window}")
        self.window = int(window)
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=self.window)

    def add(self, value: float) -> None:
        """Record one value (ms)."""
        self.count += 1
        self.total += value
        self.max = max(self.max, value)
        self._recent.append(value)

    def __len__(self) -> int:
        return len(self._recent)

    def __iter__(self) -> Iterator[float]:
        return iter(self._recent)

    @property
    def mean(self) -> float:
        """Mean of every value added (0.0 when none)."""
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100, linear interpolation) of the window (0.0 when empty)."""
        return float(np.percentile(self._recent, q)) if self._recent else 0.0

    def summary(self) -> dict[str, float]:
        """``{"count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "total_ms"}``."""
        return {"count": self.count, "mean_ms": self.mean, "p50_ms": self.percentile(50),
                "p90_ms": self.percentile(90), "p99_ms": self.percentile(99), "max_ms": self.max,
                "total_ms": self.total}


@dataclass
class DropCounts:
    """Frames read from the source that never reached the output, by reason (:data:`DROP_REASONS`).

    Attributes:
        decode: the frame's data could not be read or decoded (e.g. a garbage file in a folder).
        corrupt: it decoded to an unusable frame (empty, or another size than the source's).
        queue: a live source's frame found the inference queue full (the pipeline was behind).
    """

    decode: int = 0
    corrupt: int = 0
    queue: int = 0

    @property
    def total(self) -> int:
        """All dropped frames."""
        return self.decode + self.corrupt + self.queue

    def to_dict(self) -> dict[str, int]:
        """``{"decode", "corrupt", "queue", "total"}``."""
        return {"decode": self.decode, "corrupt": self.corrupt, "queue": self.queue, "total": self.total}


@dataclass
class StreamStats:
    """What a :func:`stream` run did and how fast.

    Frame counts satisfy ``frames_read == frames + dropped.total + frames_unfinished``.

    Attributes:
        frames: frames written (or shown) end to end; also :attr:`frames_written`.
        frames_read: frames taken from the source, including those that failed to decode.
        dropped: frames dropped, by reason (:class:`DropCounts`).
        drop_examples: the messages of the first :data:`MAX_DROP_EXAMPLES` decode/corrupt drops.
        wall_s: seconds from the start of the pipeline to the last write.
        stage_ms: per-stage :class:`RollingStats` of milliseconds per frame, for each of
            :data:`STAGES` (over written frames).
        stats_window: frames kept per stage for the percentiles.
        source, out, backend: what was read, written (None when not writing or nothing was
            written) and run.
        partial_out: where a failed run's frames were kept (``<stem>.partial<ext>``), else None.
        source_fps: frames per second of the source (and of the output video).
        frame_size: (H, W) of the source and output frames.
        input_size: (H, W) the model was fed.
        stopped_by_user: ``q`` or Esc was pressed in the preview window.
        interrupted: the run was ended by SIGINT/SIGTERM/KeyboardInterrupt.
        signal: ``"SIGINT"`` or ``"SIGTERM"`` when :attr:`interrupted`, else None.
    """

    frames: int = 0
    frames_read: int = 0
    dropped: DropCounts = field(default_factory=DropCounts)
    drop_examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    stats_window: int = DEFAULT_STATS_WINDOW
    stage_ms: dict[str, RollingStats] = field(default_factory=dict)
    source: str = ""
    out: str | None = None
    partial_out: str | None = None
    backend: str = ""
    source_fps: float = 0.0
    frame_size: tuple[int, int] = (0, 0)
    input_size: tuple[int, int] = (0, 0)
    stopped_by_user: bool = False
    interrupted: bool = False
    signal: str | None = None

    def __post_init__(self) -> None:
        for s in STAGES:
            self.stage_ms.setdefault(s, RollingStats(self.stats_window))

    @property
    def frames_written(self) -> int:
        """Frames that went through the writer (same as :attr:`frames`)."""
        return self.frames

    @property
    def frames_decoded(self) -> int:
        """Frames read that decoded (``frames_read - dropped.decode``)."""
        return self.frames_read - self.dropped.decode

    @property
    def frames_unfinished(self) -> int:
        """Frames in flight (read, not dropped, not written) when the run stopped early or failed."""
        return self.frames_read - self.frames - self.dropped.total

    @property
    def fps(self) -> float:
        """End-to-end frames per second."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def infer_fps(self) -> float:
        """Inference-only frames per second, ``1000 / mean(infer ms)``."""
        m = self.mean_ms("infer")
        return 1000.0 / m if m > 0 else 0.0

    def mean_ms(self, stage: str) -> float:
        """Mean milliseconds of one stage over every written frame (0.0 when none)."""
        st = self.stage_ms.get(stage)
        return st.mean if st is not None else 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        """Per stage :meth:`RollingStats.summary`: count, mean/total/max over every frame, p50/p90/p99
        over the last :attr:`stats_window` frames."""
        return {s: st.summary() for s, st in self.stage_ms.items()}

    def drop_message(self) -> str | None:
        """One line saying how many frames were dropped and why (with examples); None if none were."""
        d = self.dropped
        if not d.total:
            return None
        why = ", ".join(f"{n} {label}" for n, label in ((d.decode, "undecodable"), (d.corrupt, "corrupt"),
                                                       (d.queue, "queue full (inference slower than the source)")) if n)
        msg = f"{d.total} of {self.frames_read} frames read were dropped ({why})"
        if self.drop_examples:
            msg += "; " + "; ".join(self.drop_examples)
            if d.decode + d.corrupt > len(self.drop_examples):
                msg += "; ..."
        return msg

    def to_dict(self, per_frame: bool = False) -> dict:
        """JSON-ready dict: frame counts, fps, per-stage summary (and, when ``per_frame``, the
        per-stage ms of the last :attr:`stats_window` frames)."""
        d = {
            "frames": self.frames, "frames_read": self.frames_read, "frames_decoded": self.frames_decoded,
            "frames_written": self.frames, "frames_dropped": self.dropped.to_dict(),
            "frames_unfinished": self.frames_unfinished, "drop_examples": list(self.drop_examples),
            "wall_s": round(self.wall_s, 4), "fps": round(self.fps, 3), "infer_fps": round(self.infer_fps, 3),
            "source": self.source, "out": self.out, "partial_out": self.partial_out, "backend": self.backend,
            "source_fps": self.source_fps, "frame_size": list(self.frame_size), "input_size": list(self.input_size),
            "stopped_by_user": self.stopped_by_user, "interrupted": self.interrupted, "signal": self.signal,
            "stats_window": self.stats_window,
            "stages": {s: {k: round(v, 4) for k, v in row.items()} for s, row in self.summary().items()},
        }
        if per_frame:
            d["stage_ms"] = {s: [round(x, 4) for x in st] for s, st in self.stage_ms.items()}
        return d


class StreamInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C), SIGTERM or a KeyboardInterrupt during :func:`stream`, raised after the output
    was finalised (``out`` is a playable video of the frames processed).

    Attributes:
        stats: the :class:`StreamStats` of the frames processed before the interrupt.
        signum: ``signal.SIGINT`` or ``signal.SIGTERM``.
        signal: its name, ``"SIGINT"`` or ``"SIGTERM"``.
        exit_code: what a shell reports for that signal, 128 + signum: 130 (SIGINT), 143 (SIGTERM).
    """

    def __init__(self, stats: StreamStats, signum: int = signal.SIGINT):
        self.stats = stats
        self.signum = int(signum)
        self.signal = signal.Signals(self.signum).name
        self.exit_code = SIGNAL_EXIT_BASE + self.signum
        super().__init__(f"{self.signal} after {stats.frames} frames" + (f"; {stats.out} holds them" if stats.out else ""))


# ------------------------------------------------------------------------------------ records


@dataclass(slots=True)
class FrameTimes:
    """Milliseconds one frame spent in each of :data:`STAGES`."""

    read: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0
    overlay: float = 0.0
    write: float = 0.0


@dataclass(slots=True)
class ReadFrame:
    """Reader -> inference: ``bgr`` uint8 (H, W, 3) source frame, ``tensor`` float32 (3, h, w) model
    input, ``index`` 0-based position in the source."""

    index: int
    bgr: np.ndarray
    tensor: np.ndarray
    times: FrameTimes


@dataclass(slots=True)
class LabelledFrame:
    """Inference -> writer: ``labels`` uint8 (H, W) class ids at the frame's size."""

    index: int
    bgr: np.ndarray
    labels: np.ndarray
    times: FrameTimes


# ------------------------------------------------------------------------------------ output


def check_output(out: str | os.PathLike) -> Path:
    """Check that ``out`` can become the overlay video, before any frame (or model) is loaded.

    Creates and removes a probe file in the nearest existing folder of ``out`` (the folders
    below it are created when the video is opened).

    Returns:
        ``out`` as a :class:`Path` (``~`` expanded).

    Raises:
        UsageError: the extension is not one of :data:`CODECS`; ``out`` is a directory or another
            non-regular file; a parent of it is a regular file; its folder is not writable.
    """
    path = Path(out).expanduser()
    if path.is_dir():
        raise UsageError(f"output {path} is a directory; give a video file name, e.g. {path / 'overlay.mp4'}")
    if path.suffix.lower() not in CODECS:
        raise UsageError(f"output {path} has an unsupported extension {path.suffix or '(none)'!r}; name it "
                         f"*.mp4 or *.avi ({', '.join(f'{k}: {v}' for k, v in CODECS.items())})")
    if path.exists() and not path.is_file():
        raise UsageError(f"output {path} exists and is not a regular file; choose another file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"output {path} is under {folder}, which is a file, not a folder; choose a path in a folder")
    try:
        _probe_writable(folder, path.name)
    except OSError as e:
        raise UsageError(f"output {path}: cannot create files in {folder} ({e.strerror or e}); choose a folder "
                         "you can write to or fix its permissions") from e
    return path


def _probe_writable(folder: Path, name: str) -> None:
    fd, probe = tempfile.mkstemp(prefix=f".{name}.", suffix=".probe", dir=folder)
    os.close(fd)
    os.unlink(probe)


class VideoSink:
    """The overlay video: frames go to a hidden temporary file beside ``out``, which becomes ``out``
    only when the run ends well, so ``out`` is always a whole video (the old one or the new one).

    Lifecycle: :meth:`open` once, :meth:`write` per frame, then exactly one of :meth:`commit`
    (normal end or stop: rename onto ``out``) or :meth:`abandon` (failure: keep the frames as
    :attr:`partial_path`, leave ``out`` alone). Both release the ``cv2.VideoWriter`` and leave no
    temporary file; both are idempotent.

    Attributes:
        out: the video to produce (checked by :func:`check_output` on construction).
        partial_path: ``<stem>.partial<ext>`` beside ``out``.
        frames: frames written so far.

    Raises:
        UsageError: from :func:`check_output`.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = check_output(out)
        self.partial_path = self.out.with_name(f"{self.out.stem}.partial{self.out.suffix}")
        self.frames = 0
        self._tmp: Path | None = None
        self._vw: cv2.VideoWriter | None = None

    def open(self, fps: float, size_hw: tuple[int, int]) -> None:
        """Create the temporary file and a ``cv2.VideoWriter`` for (H, W) frames at ``fps``.

        Raises:
            SourceError: the folder cannot be created or OpenCV cannot write this container/codec.
        """
        codec = CODECS[self.out.suffix.lower()]
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self._reserve_temp()
        except OSError as e:
            raise SourceError(f"cannot create the output video beside {self.out}: {e}") from e
        self._vw = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), float(fps), (size_hw[1], size_hw[0]))
        if not self._vw.isOpened():
            self._release()
            self._drop_temp()
            raise SourceError(f"OpenCV cannot write {self.out.suffix} video with codec {codec!r} to {self.out.parent} "
                              f"({size_hw[1]}x{size_hw[0]} at {fps:g} fps); try "
                              f"{' / '.join(k for k in CODECS if k != self.out.suffix.lower())}")

    def _reserve_temp(self) -> Path:
        # os.open applies the umask (mkstemp would make the video 0600); the name ends in the
        # container's extension because OpenCV picks the muxer from it.
        while True:
            tmp = self.out.with_name(f".{self.out.name}.{uuid.uuid4().hex[:8]}.tmp{self.out.suffix}")
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                return tmp
            except FileExistsError:
                continue

    def write(self, img_bgr: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) BGR frame of the size given to :meth:`open`."""
        self._vw.write(img_bgr)
        self.frames += 1

    def commit(self) -> Path | None:
        """Finish the video and rename it onto ``out`` (``os.replace``).

        Returns:
            ``out``, or None when no frame was written (then nothing is created and ``out`` is untouched).

        Raises:
            SourceError: the rename failed (the finished video is left at the temporary path, named).
        """
        self._release()
        if self._tmp is None:
            return None
        if not self.frames:
            self._drop_temp()
            return None
        try:
            os.replace(self._tmp, self.out)
        except OSError as e:
            raise SourceError(f"cannot move the finished video {self._tmp} onto {self.out}: {e}; "
                              f"rename it by hand") from e
        self._tmp = None
        return self.out

    def abandon(self) -> Path | None:
        """After a failure: keep the frames written so far as :attr:`partial_path`; ``out`` is untouched.

        Returns:
            :attr:`partial_path`, or None when no frame was written or the move failed (the
            temporary file is removed either way).
        """
        self._release()
        if self._tmp is None:
            return None
        if self.frames:
            try:
                os.replace(self._tmp, self.partial_path)
                self._tmp = None
                return self.partial_path
            except OSError:
                pass  # the original failure matters more; do not leave the temp file behind
        self._drop_temp()
        return None

    def _release(self) -> None:
        vw, self._vw = self._vw, None
        if vw is not None:
            vw.release()

    def _drop_temp(self) -> None:
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------ threads


class _Worker(threading.Thread):
    """A daemon thread that records the exception that ended it (``error``) instead of printing it."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:  # noqa: BLE001 - re-raised by stream() in the caller
            self.error = e

    def work(self) -> None:
        raise NotImplementedError


def _put(q: queue.Queue, item, keep_going: Callable[[], bool]) -> bool:
    """Put with back-pressure; gives up (False) as soon as ``keep_going()`` is False."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if not keep_going():
                return False


class FrameReader(_Worker):
    """Reader thread: takes frames from a :class:`FrameSource`, preprocesses them for the model and
    queues :class:`ReadFrame` records, then the end sentinel.

    Frames the source reports as bad (:class:`FrameError`) are skipped and counted in
    ``stats.dropped`` (``decode``/``corrupt``, first messages in ``stats.drop_examples``). With
    ``drop_when_full`` (live sources) a frame that finds the queue full is dropped (``queue``)
    instead of waiting. Counts every frame taken in ``stats.frames_read``.

    Stops at the end of the source, after ``max_frames`` frames taken, when ``stop`` is set, or
    on any other exception (kept in ``error``).
    """

    def __init__(self, src: FrameSource, meta: ModelMeta, q: queue.Queue, stop: threading.Event,
                 stats: StreamStats, max_frames: int | None, drop_when_full: bool):
        super().__init__("unet-edge-reader")
        self.src, self.meta, self.q, self.stop, self.stats = src, meta, q, stop, stats
        self.max_frames, self.drop_when_full = max_frames, drop_when_full

    def work(self) -> None:
        try:
            self._loop()
        finally:
            _put(self.q, _END, lambda: not self.stop.is_set())

    def _loop(self) -> None:
        stats = self.stats
        while not self.stop.is_set() and (self.max_frames is None or stats.frames_read < self.max_frames):
            t = time.perf_counter()
            try:
                frame = next(self.src)
            except StopIteration:
                return
            except FrameError as e:
                stats.frames_read += 1
                self._drop(e.reason, str(e))
                continue
            index = stats.frames_read
            stats.frames_read += 1
            t_read = time.perf_counter()
            x = preprocess(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.meta)
            item = ReadFrame(index, frame, x, FrameTimes(read=(t_read - t) * 1e3,
                                                         preprocess=(time.perf_counter() - t_read) * 1e3))
            if self.drop_when_full:
                try:
                    self.q.put_nowait(item)
                except queue.Full:
                    self._drop("queue", "")
            elif not _put(self.q, item, lambda: not self.stop.is_set()):
                return

    def _drop(self, reason: str, message: str) -> None:
        d = self.stats.dropped
        reason = reason if reason in DROP_REASONS else "decode"
        setattr(d, reason, getattr(d, reason) + 1)
        if message and len(self.stats.drop_examples) < MAX_DROP_EXAMPLES:
            self.stats.drop_examples.append(message)


class FrameWriter(_Worker):
    """Writer thread: draws the class overlay, legend and HUD on each :class:`LabelledFrame`, writes
    it to the :class:`VideoSink` (when there is one) and shows it (when ``show``; ``q``/Esc sets
    ``user_stop`` and ``stop``). Records the frame's :class:`FrameTimes` in ``stats.stage_ms`` and
    counts it in ``stats.frames``; calls ``on_frame(rolling_fps)`` after each frame.

    Ends at the end sentinel, or on an exception (kept in ``error``). Does not finalise the sink.
    """

    WINDOW = "unet-edge"

    def __init__(self, q: queue.Queue, sink: VideoSink | None, meta: ModelMeta, label: str, stats: StreamStats,
                 stop: threading.Event, user_stop: threading.Event, alpha: float, legend: bool, show: bool,
                 total: int | None, on_frame: Callable[[float], None]):
        super().__init__("unet-edge-writer")
        self.q, self.sink, self.meta, self.label, self.stats = q, sink, meta, label, stats
        self.stop, self.user_stop = stop, user_stop
        self.alpha, self.legend, self.show, self.total, self.on_frame = alpha, legend, show, total, on_frame
        self.last_write = time.perf_counter()
        self._ticks: collections.deque[float] = collections.deque(maxlen=30)  # rolling FPS for the HUD

    def work(self) -> None:
        try:
            while True:
                try:
                    item = self.q.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is _END:
                    return
                self._handle(item)
        finally:
            if self.show:
                try:
                    cv2.destroyWindow(self.WINDOW)
                    cv2.waitKey(1)
                except cv2.error:
                    pass  # the window was never created or is already gone

    def _fps(self) -> float:
        t = self._ticks
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def _handle(self, item: LabelledFrame) -> None:
        t = time.perf_counter()
        fps, times = self._fps(), item.times
        hud = {"": self.label, "fps": f"{fps:.1f}" if fps else "--", "infer": f"{times.infer:.1f} ms",
               "frame": f"{item.index + 1}" + (f"/{self.total}" if self.total else "")}
        img = draw_overlay(item.bgr, item.labels, self.meta, alpha=self.alpha, hud=hud, legend=self.legend)
        t_ov = time.perf_counter()
        if self.sink is not None:
            self.sink.write(img)
        if self.show and not self.user_stop.is_set():
            cv2.imshow(self.WINDOW, img)
            if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                self.user_stop.set()
                self.stop.set()
        t_w = time.perf_counter()
        times.overlay, times.write = (t_ov - t) * 1e3, (t_w - t_ov) * 1e3
        for s in STAGES:
            self.stats.stage_ms[s].add(getattr(times, s))
        self.stats.frames += 1
        self._ticks.append(t_w)
        self.last_write = t_w
        self.on_frame(fps)


# ------------------------------------------------------------------------------------ orchestration


class _StopSignals:
    """While active, SIGINT and SIGTERM set ``stop`` and are recorded instead of raising; the
    previous handlers are restored on exit. Does nothing off the main thread (Python allows
    handlers only there)."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):
                    pass  # not settable on this platform
        return self

    def _handle(self, signum, _frame) -> None:
        self.received.append(signum)
        self.stop.set()

    def __exit__(self, *exc) -> bool:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        return False

    @property
    def first(self) -> int | None:
        return self.received[0] if self.received else None


def _check_display() -> None:
    gui = next((ln.split(":", 1)[1].strip() for ln in cv2.getBuildInformation().splitlines()
                if ln.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        raise UsageError("show=True needs an OpenCV build with a GUI backend but this one has none "
                         "(opencv-python-headless?); install opencv-python, or pass an output file instead")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError("show=True needs a display but DISPLAY is not set (headless or SSH session); "
                         "run with an X display (ssh -X, or export DISPLAY=:0 on the device) or write a file instead")


def _check_logits(logits: np.ndarray, backend: Backend) -> None:
    k = backend.meta.num_classes
    if logits.ndim != 4 or logits.shape[0] != 1 or logits.shape[1] != k:
        raise ArtifactError(f"backend {backend.label} returned logits of shape {tuple(logits.shape)}; "
                            f"expected (1, {k}, H, W) for the metadata's {k} classes; re-export the artifact "
                            "or fix its metadata")


def _infer_loop(backend: Backend, frame_size: tuple[int, int], in_q: queue.Queue, out_q: queue.Queue,
                reader: FrameReader, writer: FrameWriter, stop: threading.Event) -> None:
    """The calling thread's stage: infer each :class:`ReadFrame`, pass a :class:`LabelledFrame` on.
    Returns at the end sentinel, when ``stop`` is set or when a worker has failed or ended."""
    checked = False
    while not stop.is_set():
        try:
            item = in_q.get(timeout=_POLL_S)
        except queue.Empty:
            if reader.error is not None or writer.error is not None or not writer.is_alive():
                return
            if not reader.is_alive() and in_q.empty():
                return
            continue
        if item is _END:
            return
        t = time.perf_counter()
        logits = backend.infer(item.tensor[None])
        t_inf = time.perf_counter()
        if not checked:
            _check_logits(logits, backend)
            checked = True
        labels = resize_labels(labels_from_logits(logits)[0], frame_size)
        item.times.infer, item.times.postprocess = (t_inf - t) * 1e3, (time.perf_counter() - t_inf) * 1e3
        if not _put(out_q, LabelledFrame(item.index, item.bgr, labels, item.times), writer.is_alive):
            return


def _shutdown(reader: FrameReader, writer: FrameWriter, out_q: queue.Queue, stop: threading.Event) -> None:
    """Stop the reader, let the writer drain the frames already inferred, wait for both."""
    stop.set()
    if writer.is_alive():
        _put(out_q, _END, writer.is_alive)
        writer.join()
    if reader.ident is not None:
        reader.join(timeout=_READER_JOIN_S)


def _validate(alpha: float, max_frames: int | None, queue_size: int, stats_window: int, show: bool) -> None:
    if not 0.0 <= float(alpha) <= 1.0:
        raise UsageError(f"alpha must be in [0, 1], got {alpha}")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"max_frames must be >= 1 or None, got {max_frames}")
    if queue_size < 1:
        raise UsageError(f"queue_size must be >= 1, got {queue_size}")
    if stats_window < 1:
        raise UsageError(f"stats_window must be >= 1 frame, got {stats_window}")
    if show:
        _check_display()


def stream(
    backend: Backend,
    source: str | int | Path | FrameSource,
    out: str | Path | None = None,
    show: bool = False,
    alpha: float = 0.5,
    max_frames: int | None = None,
    progress: bool = True,
    queue_size: int = 4,
    legend: bool = True,
    stats_window: int = DEFAULT_STATS_WINDOW,
) -> StreamStats:
    """Segment a video, image folder, camera or GStreamer source frame by frame.

    See the module docstring for the threads, the drop policy, what each way of ending leaves in
    ``out`` and the signal handling.

    Args:
        backend: any :class:`Backend`; its ``meta`` gives input size, normalization, classes and palette.
        source: a path / camera index / pipeline for :func:`open_source` (opened and closed here),
            or an already open :class:`FrameSource` (not closed here).
        out: output video, ``.mp4`` (FourCC ``mp4v``) or ``.avi`` (``MJPG``): the source frames at
            their own resolution and fps with the class overlay, legend and HUD (backend label with
            its precision, rolling FPS, infer ms); one output frame per frame processed. None: no file.
            Checked by :func:`check_output` before the source is opened.
        show: display the overlay in an OpenCV window; ``q`` or Esc stops the run.
        alpha: class colour opacity in [0, 1].
        max_frames: stop after taking this many frames from the source (None: until it ends;
            cameras never do).
        progress: show a rich progress bar when the number of frames is known.
        queue_size: capacity of each inter-thread queue (frames in flight per stage).
        legend: draw the class legend.
        stats_window: frames whose per-stage times are kept for p50/p90/p99 (means and totals
            cover every frame).

    Returns:
        :class:`StreamStats`: frame counts and per-stage timings in ms.

    Raises:
        UsageError: ``out`` is unusable (see :func:`check_output`); invalid ``alpha`` /
            ``max_frames`` / ``queue_size`` / ``stats_window``; ``show`` without a display.
        SourceError: the source cannot be opened or stops working (also from the reader thread),
            or OpenCV cannot write ``out``.
        ArtifactError: the backend's logits do not have ``meta.num_classes`` channels.
        DataError: the backend does not take frames of ``meta.input_size``
            (:meth:`~unet_edge.runtime.base.Capabilities.check_shape`), before the source is opened.
        StreamInterrupted: SIGINT, SIGTERM or Ctrl-C (a KeyboardInterrupt carrying the stats);
            ``out`` holds the frames processed.
        Exception: anything ``backend.infer`` or a worker thread raised; ``out`` is untouched and
            the frames so far are in ``stats.partial_out`` (named in a warning and a note).
    """
    sink = VideoSink(out) if out is not None else None
    _validate(alpha, max_frames, queue_size, stats_window, show)
    backend.capabilities().check_shape((1, 3, *backend.meta.input_size))  # refused before any frame is read
    owns_source = not isinstance(source, FrameSource)
    src = open_source(source) if owns_source else source
    stats = StreamStats(source=src.name, backend=backend.label, source_fps=float(src.fps), frame_size=tuple(src.size),
                        input_size=tuple(backend.meta.input_size), stats_window=int(stats_window))
    total = _expected_frames(src, max_frames)
    stop, user_stop = threading.Event(), threading.Event()
    in_q: queue.Queue = queue.Queue(maxsize=queue_size)
    out_q: queue.Queue = queue.Queue(maxsize=queue_size)
    prog = make_progress(transient=True) if progress and total is not None else None
    task = prog.add_task(f"stream {Path(src.name).name or src.name}", total=total, status="") if prog else None

    def on_frame(fps: float) -> None:
        if prog is not None:
            prog.update(task, advance=1, status=f"{fps:.1f} fps" if fps else "")

    reader = FrameReader(src, backend.meta, in_q, stop, stats, max_frames, drop_when_full=src.live)
    writer = FrameWriter(out_q, sink, backend.meta, backend.label, stats, stop, user_stop, alpha, legend, show,
                         total, on_frame)
    failure: BaseException | None = None
    keyboard = False
    t0 = time.perf_counter()
    with _StopSignals(stop) as signals:
        try:
            if sink is not None:
                sink.open(src.fps, src.size)
            if prog is not None:
                prog.start()
            reader.start()
            writer.start()
            _infer_loop(backend, src.size, in_q, out_q, reader, writer, stop)
        except KeyboardInterrupt:
            keyboard = True
        except BaseException as e:  # noqa: BLE001 - re-raised below once the output is settled
            failure = e
        # Finalisation runs with the signal handlers still installed: a Ctrl-C here is only recorded.
        if reader.ident is not None or writer.ident is not None:
            _shutdown(reader, writer, out_q, stop)
        failure = failure or reader.error or writer.error
        try:
            if sink is not None:
                _settle_output(sink, stats, failed=failure is not None)
        finally:
            if prog is not None:
                prog.stop()
            if owns_source and not reader.is_alive():
                src.close()
    stats.wall_s = max(0.0, writer.last_write - t0) if stats.frames else 0.0
    stats.stopped_by_user = user_stop.is_set()
    if failure is not None:
        _report_partial(failure, stats, sink)
        raise failure
    if keyboard or signals.first is not None:
        stats.interrupted = True
        signum = signals.first if signals.first is not None else signal.SIGINT
        stats.signal = signal.Signals(signum).name
        raise StreamInterrupted(stats, signum)
    return stats


def _expected_frames(src: FrameSource, max_frames: int | None) -> int | None:
    """Frames the run will take (for the progress bar and HUD); None when unknown (live, no limit)."""
    if src.live and max_frames is None:
        return None
    if max_frames is None:
        return src.frame_count
    return min(src.frame_count, max_frames) if src.frame_count is not None else max_frames


def _settle_output(sink: VideoSink, stats: StreamStats, failed: bool) -> None:
    """Commit the video onto ``out`` (``stats.out``), or after a failure keep it as the partial file
    (``stats.partial_out``)."""
    if failed:
        partial = sink.abandon()
        stats.partial_out = str(partial) if partial is not None else None
    else:
        done = sink.commit()
        stats.out = str(done) if done is not None else None


def _report_partial(failure: BaseException, stats: StreamStats, sink: VideoSink | None) -> None:
    """Say where a failed run's frames went: a warning and a note on the exception."""
    if sink is None or stats.partial_out is None:
        return
    msg = (f"stream failed after {stats.frames} frames; {sink.out} was left untouched and the frames written "
           f"before the failure are in {stats.partial_out}")
    warnings.warn(msg, UnetEdgeWarning, stacklevel=3)
    failure.add_note(msg)
