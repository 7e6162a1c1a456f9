"""Turn an ordered image sequence (e.g. a CamVid sequence's frames) into a video file."""
from __future__ import annotations

from pathlib import Path

import cv2

from ..data.layouts import IMAGE_EXTS, read_image
from ..errors import SourceError
from ..io_utils import atomic_path


def frames_to_video(frames: list[Path], out: str | Path, fps: float = 10.0) -> Path:
    """Write ``frames`` (image files, in the given order) as an mp4 (mp4v) at the first frame's size
    (H, W); other sizes are resized. Written to a temp file and renamed, so ``out`` is always whole.

    Raises:
        SourceError: no frames, or OpenCV cannot write ``out``. DataError: an unreadable frame.
    """
    if not frames:
        raise SourceError("no frames to write: the folder/pattern matched no images")
    first = read_image(frames[0])
    h, w = first.shape[:2]
    with atomic_path(out) as tmp:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not vw.isOpened():
            raise SourceError(f"OpenCV cannot write a video to {out}; use a .mp4 path in a writable folder")
        try:
            for f in frames:
                img = read_image(f)
                if img.shape[:2] != (h, w):
                    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
                vw.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        finally:
            vw.release()
    return Path(out)


def sequence_frames(folder: str | Path, pattern: str = "*") -> list[Path]:
    """Image files in ``folder`` matching the glob ``pattern``, sorted by name (CamVid names are
    ``<sequence>_<frame>.png``, so name order is time order).

    Raises:
        SourceError: the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"frame folder not found: {folder}")
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTS)
