"""The real-time video pipeline: read -> preprocess -> infer -> postprocess -> overlay -> write.

Three threads overlap the stages so the accelerator is not idle while frames are decoded or
encoded::

    reader thread       decode (BGR) -> BGR->RGB + preprocess      --queue-->
    calling thread      backend.infer (batch of 1) + labels_from_logits + resize to the frame
                                                                   --queue-->
    writer thread       draw_overlay + VideoWriter.write (+ imshow)

Both queues are bounded (``queue_size``) so a slow stage applies back-pressure instead of
buffering the whole video. Inference stays on the calling thread: CUDA/TensorRT contexts are
bound to the thread that created them, and Ctrl-C is delivered there.

Interruption and errors: the output is written to a temporary file beside ``out`` (same
extension). Whatever happens (end of input, ``max_frames``, ``q``/Esc in the window, an exception
in any stage, Ctrl-C) the frames that reached the writer are flushed, the ``VideoWriter`` is
released and the temporary file is renamed onto ``out`` (``os.replace``), so ``out`` is always a
playable video holding the frames processed so far. Then:

- an exception raised in the reader or writer thread is re-raised in the caller (original
  exception and traceback);
- an exception in the calling thread (e.g. ``backend.infer``) propagates unchanged;
- Ctrl-C is re-raised as :class:`StreamInterrupted`, a :class:`KeyboardInterrupt` subclass that
  carries the partial :class:`StreamStats` (``.stats``) so the CLI can report them;
- ``q``/Esc returns normally with ``StreamStats.stopped_by_user = True``.

If no frame at all was written, no output file is created.
"""
from __future__ import annotations

import collections
import os
import queue
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import ArtifactError, SourceError, UnetEdgeError
from ..preprocess import labels_from_logits, preprocess, resize_labels
from ..progress import make_progress
from .base import Backend
from .overlay import draw_overlay
from .sources import FrameSource, open_source

#: Pipeline stages timed per frame, in order.
STAGES = ("read", "preprocess", "infer", "postprocess", "overlay", "write")
#: Output containers and the FourCC written into them.
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}

_END = object()  # end-of-stream sentinel
_POLL_S = 0.05


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


@dataclass
class StreamStats:
    """What a :func:`stream` run did and how fast.

    Attributes:
        frames: frames written (or shown) end to end.
        wall_s: seconds from the first read to the last write, including start-up.
        fps: end-to-end frames per second (``frames / wall_s``).
        infer_fps: inference-only frames per second (``1000 / mean infer ms``).
        stage_ms: per-frame milliseconds for each stage of :data:`STAGES` (one value per written
            frame, in frame order).
        source, out, backend: what was read, written (None when not writing) and run.
        source_fps: frames per second of the source (and of the output video).
        frame_size: (H, W) of the source and output frames.
        input_size: (H, W) the model was fed.
        stopped_by_user: ``q`` or Esc was pressed in the preview window.
        interrupted: the run ended by Ctrl-C (set on the stats carried by :class:`StreamInterrupted`).
    """

    frames: int = 0
    wall_s: float = 0.0
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    source: str = ""
    out: str | None = None
    backend: str = ""
    source_fps: float = 0.0
    frame_size: tuple[int, int] = (0, 0)
    input_size: tuple[int, int] = (0, 0)
    stopped_by_user: bool = False
    interrupted: bool = False

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
        """Mean milliseconds of one stage (0.0 when no frame was timed)."""
        v = self.stage_ms.get(stage, [])
        return float(np.mean(v)) if v else 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        """Per stage ``{"mean_ms", "p50_ms", "p90_ms", "total_ms"}``."""
        return {s: {"mean_ms": self.mean_ms(s), "p50_ms": _pct(v, 50), "p90_ms": _pct(v, 90),
                    "total_ms": float(np.sum(v)) if v else 0.0}
                for s, v in self.stage_ms.items()}

    def to_dict(self, per_frame: bool = False) -> dict:
        """JSON-ready dict: counts, fps, per-stage summary (and per-frame ms when ``per_frame``)."""
        d = {
            "frames": self.frames, "wall_s": round(self.wall_s, 4), "fps": round(self.fps, 3),
            "infer_fps": round(self.infer_fps, 3), "source": self.source, "out": self.out,
            "backend": self.backend, "source_fps": self.source_fps, "frame_size": list(self.frame_size),
            "input_size": list(self.input_size), "stopped_by_user": self.stopped_by_user,
            "interrupted": self.interrupted,
            "stages": {s: {k: round(v, 4) for k, v in row.items()} for s, row in self.summary().items()},
        }
        if per_frame:
            d["stage_ms"] = {s: [round(x, 4) for x in v] for s, v in self.stage_ms.items()}
        return d


class StreamInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`stream`, raised after the output file was finalized.

    Attributes:
        stats: the :class:`StreamStats` of the frames processed before the interrupt.
    """

    def __init__(self, stats: StreamStats):
        super().__init__(f"interrupted after {stats.frames} frames" + (f"; partial output {stats.out}" if stats.out else ""))
        self.stats = stats


def _writer_for(out: Path, fps: float, size_hw: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
    """Open a VideoWriter on a temporary file beside ``out``; returns (writer, temp path)."""
    codec = CODECS[out.suffix.lower()]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".tmp" + out.suffix, dir=out.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    vw = cv2.VideoWriter(str(tmp_path), cv2.VideoWriter_fourcc(*codec), float(fps), (size_hw[1], size_hw[0]))
    if not vw.isOpened():
        vw.release()
        tmp_path.unlink(missing_ok=True)
        raise SourceError(f"OpenCV cannot write {out.suffix} video with codec {codec!r} to {out.parent} "
                          f"({size_hw[1]}x{size_hw[0]} at {fps:g} fps); check the folder is writable or try "
                          f"{' / '.join(k for k in CODECS if k != out.suffix.lower())}")
    return vw, tmp_path


def _check_display() -> None:
    gui = next((ln.split(":", 1)[1].strip() for ln in cv2.getBuildInformation().splitlines()
                if ln.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        raise UnetEdgeError("show=True needs an OpenCV build with a GUI backend but this one has none "
                            "(opencv-python-headless?); install opencv-python, or pass an output file instead")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UnetEdgeError("show=True needs a display but DISPLAY is not set (headless or SSH session); "
                            "run with an X display (ssh -X, or export DISPLAY=:0 on the device) or write a file instead")


class _Worker(threading.Thread):
    """A daemon thread that records the exception that ended it instead of printing it."""

    def __init__(self, target, name: str):
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            self.error = e


def _put(q: queue.Queue, item, keep_going) -> bool:
    """Put with back-pressure; gives up (False) as soon as ``keep_going()`` is False."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if not keep_going():
                return False


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
) -> StreamStats:
    """Segment a video, image folder, camera or GStreamer source frame by frame.

    Args:
        backend: any :class:`Backend`; its ``meta`` gives input size, normalization, classes and palette.
        source: a path / camera index / pipeline for :func:`open_source` (opened and closed here),
            or an already open :class:`FrameSource` (not closed here).
        out: output video, ``.mp4`` (FourCC ``mp4v``) or ``.avi`` (``MJPG``): the source frames at
            their own resolution and fps with the class overlay, legend and HUD (backend label with
            its precision, rolling FPS, infer ms); one output frame per input frame. None: no file.
        show: display the overlay in an OpenCV window; ``q`` or Esc stops the run.
        alpha: class colour opacity in [0, 1].
        max_frames: stop after this many frames (None: until the source ends; cameras never do).
        progress: show a rich progress bar when the number of frames is known.
        queue_size: capacity of each inter-thread queue (frames in flight per stage).
        legend: draw the class legend.

    Returns:
        :class:`StreamStats` with per-stage timings in ms.

    Raises:
        SourceError: the source cannot be opened or read (also from the reader thread), ``out``
            has an unsupported extension or cannot be written.
        UnetEdgeError: invalid ``alpha``/``max_frames``/``queue_size``, or ``show`` without a display.
        ArtifactError: the backend's logits do not have ``meta.num_classes`` channels.
        StreamInterrupted: Ctrl-C (a KeyboardInterrupt carrying the partial stats); ``out`` is valid.
        Exception: anything ``backend.infer`` or a worker thread raised, after ``out`` was finalized.
    """
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.suffix.lower() not in CODECS:
        raise SourceError(f"output {out_path} has an unsupported extension {out_path.suffix!r}; "
                          f"use one of {', '.join(CODECS)} ({', '.join(f'{k}: {v}' for k, v in CODECS.items())})")
    if not 0.0 <= float(alpha) <= 1.0:
        raise UnetEdgeError(f"alpha must be in [0, 1], got {alpha}")
    if max_frames is not None and max_frames < 1:
        raise UnetEdgeError(f"max_frames must be >= 1 or None, got {max_frames}")
    if queue_size < 1:
        raise UnetEdgeError(f"queue_size must be >= 1, got {queue_size}")
    if show:
        _check_display()

    meta = backend.meta
    owns_source = not isinstance(source, FrameSource)
    src = open_source(source) if owns_source else source
    stats = StreamStats(source=src.name, out=str(out_path) if out_path else None, backend=backend.label,
                        source_fps=float(src.fps), frame_size=tuple(src.size), input_size=tuple(meta.input_size))
    total = src.frame_count
    if max_frames is not None:
        total = min(total, max_frames) if total is not None else max_frames
    if src.live and max_frames is None:
        total = None

    vw = tmp_path = None
    reader = writer = None
    in_q: queue.Queue = queue.Queue(maxsize=queue_size)
    out_q: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()       # everyone: stop producing
    user_stop = threading.Event()  # q / Esc in the window
    prog = None
    t0 = time.perf_counter()
    t_last = [t0]
    ctrl_c: KeyboardInterrupt | None = None
    try:
        if out_path is not None:
            vw, tmp_path = _writer_for(out_path, src.fps, src.size)
        if progress and total is not None:
            prog = make_progress(transient=True)
            prog.start()
            task = prog.add_task(f"stream {Path(src.name).name or src.name}", total=total, status="")

        def read_loop() -> None:
            n = 0
            while not stop.is_set() and (max_frames is None or n < max_frames):
                t = time.perf_counter()
                try:
                    frame = next(src)
                except StopIteration:
                    break
                t_read = time.perf_counter()
                x = preprocess(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), meta)
                t_pre = time.perf_counter()
                times = {"read": (t_read - t) * 1e3, "preprocess": (t_pre - t_read) * 1e3}
                if not _put(in_q, (n, frame, x, times), lambda: not stop.is_set()):
                    return
                n += 1
            _put(in_q, _END, lambda: not stop.is_set())

        window = "unet-edge"
        ticks: collections.deque[float] = collections.deque(maxlen=30)

        def write_loop() -> None:
            try:
                while True:
                    try:
                        item = out_q.get(timeout=_POLL_S)
                    except queue.Empty:
                        continue
                    if item is _END:
                        return
                    n, frame, labels, times = item
                    t = time.perf_counter()
                    fps = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0
                    hud = {"": backend.label, "fps": f"{fps:.1f}" if fps else "--",
                           "infer": f"{times['infer']:.1f} ms", "frame": f"{n + 1}" + (f"/{total}" if total else "")}
                    img = draw_overlay(frame, labels, meta, alpha=alpha, hud=hud, legend=legend)
                    t_ov = time.perf_counter()
                    if vw is not None:
                        vw.write(img)
                    if show and not user_stop.is_set():
                        cv2.imshow(window, img)
                        if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                            user_stop.set()
                            stop.set()
                    t_w = time.perf_counter()
                    times["overlay"] = (t_ov - t) * 1e3
                    times["write"] = (t_w - t_ov) * 1e3
                    for s in STAGES:
                        stats.stage_ms[s].append(times[s])
                    stats.frames += 1
                    ticks.append(t_w)
                    t_last[0] = t_w
                    if prog is not None:
                        prog.update(task, advance=1, status=f"{fps:.1f} fps" if fps else "")
            finally:
                if show:
                    try:
                        cv2.destroyWindow(window)
                        cv2.waitKey(1)
                    except cv2.error:
                        pass  # the window was never created or is already gone

        reader = _Worker(read_loop, "unet-edge-reader")
        writer = _Worker(write_loop, "unet-edge-writer")
        reader.start()
        writer.start()

        checked = False
        while not stop.is_set():
            try:
                item = in_q.get(timeout=_POLL_S)
            except queue.Empty:
                if reader.error is not None or writer.error is not None:
                    break
                if not reader.is_alive() and in_q.empty():
                    break
                continue
            if item is _END:
                break
            n, frame, x, times = item
            t = time.perf_counter()
            logits = backend.infer(x[None])
            t_inf = time.perf_counter()
            if not checked:
                if logits.ndim != 4 or logits.shape[0] != 1 or logits.shape[1] != meta.num_classes:
                    raise ArtifactError(f"backend {backend.label} returned logits of shape {tuple(logits.shape)}; "
                                        f"expected (1, {meta.num_classes}, H, W) for the metadata's "
                                        f"{meta.num_classes} classes; re-export the artifact or fix its metadata")
                checked = True
            labels = resize_labels(labels_from_logits(logits)[0], src.size)
            times["infer"] = (t_inf - t) * 1e3
            times["postprocess"] = (time.perf_counter() - t_inf) * 1e3
            if not _put(out_q, (n, frame, labels, times), lambda: writer.is_alive()):
                break
    except KeyboardInterrupt as e:  # finalize below, then re-raise with the partial stats
        ctrl_c = e
    finally:
        stop.set()  # the reader stops; queued frames still reach the writer
        if writer is not None and writer.is_alive():
            _put(out_q, _END, lambda: writer.is_alive())
            writer.join()
        if reader is not None:
            reader.join(timeout=10.0)
        if vw is not None:
            vw.release()
        if tmp_path is not None:
            if stats.frames > 0 and out_path is not None:
                os.replace(tmp_path, out_path)
            else:
                tmp_path.unlink(missing_ok=True)
                stats.out = None
        if prog is not None:
            prog.stop()
        if owns_source and (reader is None or not reader.is_alive()):
            src.close()
        stats.wall_s = t_last[0] - t0
        stats.stopped_by_user = user_stop.is_set()
        stats.interrupted = ctrl_c is not None
    if ctrl_c is not None:
        raise StreamInterrupted(stats) from ctrl_c
    for w in (reader, writer):
        if w is not None and w.error is not None:
            raise w.error
    return stats
