"""Draw segmentation results on video frames: class colours, a legend and a HUD (OpenCV only).

Colours come from ``meta.palette`` (RGB, as everywhere else in unet-edge) and are converted to
OpenCV's BGR here. Label id ``i`` is class ``meta.class_names[i]``. A class whose palette colour
is pure black ``(0, 0, 0)`` (``background`` of binary datasets, CARLA's ``unlabeled``) is drawn
transparent, so the frame is not darkened where nothing was found; ids outside the palette
(``ignore_index``, 255) are left untouched as well.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import DataError, UnetEdgeError
from ..metadata import ModelMeta
from ..preprocess import colorize, resize_labels

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_table(meta: ModelMeta) -> tuple[list[str], np.ndarray]:
    """Names and BGR colours indexed by label id.

    A binary head (K == 1) whose metadata names only the foreground class gets an implicit
    ``background`` (black, transparent) at id 0, since :func:`unet_edge.preprocess.labels_from_logits`
    returns 1 for the foreground.

    Returns:
        (names, colours): ``names[i]`` for label id ``i`` and uint8 (len(names), 3) BGR colours.

    Raises:
        DataError: the palette has fewer colours than there are class names.
    """
    names = list(meta.class_names)
    palette = [list(c) for c in meta.palette]
    if meta.binary and len(names) == 1:
        names = ["background", names[0]]
        palette = [[0, 0, 0], palette[0] if palette else [255, 255, 255]]
    if len(palette) < len(names):
        raise DataError(f"model metadata has {len(names)} class names but only {len(palette)} palette colours; "
                        "fix the artifact's metadata (palette must give one RGB colour per class)")
    rgb = np.asarray(palette[: len(names)], dtype=np.uint8).reshape(-1, 3)
    return names, np.ascontiguousarray(rgb[:, ::-1])


def _font_scale(width: int) -> tuple[float, int]:
    """Font scale and line height (px) readable from 320 px to 4K frames."""
    scale = float(np.clip(width / 900.0, 0.38, 1.0))
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    return scale, th + base + max(2, int(4 * scale))


def _shade(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, strength: float = 0.55) -> None:
    """Darken a rectangle in place (a translucent panel behind text)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 > x0 and y1 > y0:
        roi = img[y0:y1, x0:x1]
        roi[:] = (roi.astype(np.uint16) * int(round((1 - strength) * 256)) >> 8).astype(np.uint8)


def _text(img: np.ndarray, s: str, x: int, y: int, scale: float, color=(255, 255, 255)) -> None:
    cv2.putText(img, s, (x, y), _FONT, scale, color, 1, cv2.LINE_AA)


def _draw_hud(img: np.ndarray, hud: dict[str, str], scale: float, line_h: int) -> None:
    lines = [f"{k}: {v}" if k else str(v) for k, v in hud.items()]
    if not lines:
        return
    pad = max(3, line_h // 4)
    tw = max(cv2.getTextSize(s, _FONT, scale, 1)[0][0] for s in lines)
    _shade(img, 0, 0, tw + 2 * pad, len(lines) * line_h + 2 * pad)
    for i, s in enumerate(lines):
        _text(img, s, pad, pad + (i + 1) * line_h - line_h // 4, scale)


def _draw_legend(img: np.ndarray, ids: list[int], names: list[str], colours: np.ndarray, scale: float, line_h: int) -> None:
    """Legend at the bottom-right: one row per class (swatch + name), wrapping into columns."""
    if not ids:
        return
    h, w = img.shape[:2]
    pad = max(3, line_h // 4)
    sw = line_h - pad  # swatch side
    rows = max(1, min(len(ids), (h - 2 * pad) // line_h))
    cols = [ids[i : i + rows] for i in range(0, len(ids), rows)]
    col_w = [sw + pad + max(cv2.getTextSize(names[i], _FONT, scale, 1)[0][0] for i in c) + 2 * pad for c in cols]
    keep = 1
    while keep < len(cols) and sum(col_w[: keep + 1]) + pad <= w:
        keep += 1
    if keep < len(cols):  # too many classes for this frame: list what fits, then "+N more"
        hidden = sum(len(c) for c in cols[keep:]) + 1
        cols, col_w = cols[:keep], col_w[:keep]
        cols[-1] = cols[-1][:-1] + [-hidden]
    total_w = sum(col_w) + pad
    x = max(0, w - total_w)
    y_top = h - (len(cols[0]) * line_h + 2 * pad)
    _shade(img, x, max(0, y_top), w, h)
    for c, cw in zip(cols, col_w):
        for r, i in enumerate(c):
            y = y_top + pad + r * line_h
            if i < 0:
                _text(img, f"+{-i} more", x + pad, y + line_h - pad, scale)
                continue
            colour = tuple(int(v) for v in colours[i])
            cv2.rectangle(img, (x + pad, y + pad // 2), (x + pad + sw, y + pad // 2 + sw), colour, -1)
            cv2.rectangle(img, (x + pad, y + pad // 2), (x + pad + sw, y + pad // 2 + sw), (255, 255, 255), 1)
            _text(img, names[i], x + 2 * pad + sw, y + line_h - pad, scale)
        x += cw


def draw_overlay(
    frame_bgr: np.ndarray,
    labels: np.ndarray,
    meta: ModelMeta,
    alpha: float = 0.5,
    hud: dict[str, str] | None = None,
    legend: bool = True,
    legend_all: bool = False,
) -> np.ndarray:
    """Blend class colours onto a frame and draw a legend and a HUD.

    Args:
        frame_bgr: uint8 (H, W, 3), OpenCV BGR order. Not modified.
        labels: uint8 (h, w) class ids at any size; resized (nearest) to (H, W).
        meta: model metadata (``class_names``, RGB ``palette``).
        alpha: opacity of the class colours in [0, 1] (0 = frame only, 1 = colours only).
        hud: text lines drawn top-left as ``key: value`` (e.g. ``{"fps": "24.1", "infer": "12.3 ms"}``);
            an empty key draws the value alone. None draws no HUD.
        legend: draw the legend (swatch + class name) bottom-right.
        legend_all: list every class instead of only the classes present in ``labels``.

    Returns:
        a new uint8 (H, W, 3) BGR image.

    Raises:
        DataError: ``frame_bgr`` is not uint8 (H, W, 3), ``labels`` is not a 2-D integer map, or
            the palette is shorter than the class list.
        UnetEdgeError: ``alpha`` is outside [0, 1].
    """
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise DataError(f"draw_overlay needs a BGR uint8 frame of shape (H, W, 3), got {frame_bgr.dtype} {frame_bgr.shape}")
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"draw_overlay needs a 2-D integer label map (H, W), got {labels.dtype} {labels.shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise UnetEdgeError(f"overlay alpha must be in [0, 1], got {alpha}")
    names, colours = class_table(meta)
    labels = labels.astype(np.uint8, copy=False)
    h, w = frame_bgr.shape[:2]
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256)[: len(names)]).tolist()
    labels = resize_labels(labels, (h, w))

    # Table lookups (cv2.LUT) and a masked cv2.copyTo: numpy fancy indexing (palette[labels],
    # out[mask] = ...) cost several ms per 480x360 frame of a 2-core budget.
    opaque = np.zeros((256, 1), dtype=np.uint8)
    opaque[: len(names), 0] = colours.any(axis=1) * 255
    mask = cv2.LUT(labels, opaque)
    out = frame_bgr.copy()
    if alpha > 0 and cv2.countNonZero(mask):
        coloured = colorize(labels, colours)
        blended = cv2.addWeighted(frame_bgr, 1.0 - float(alpha), coloured, float(alpha), 0.0)
        cv2.copyTo(blended, mask, out)

    scale, line_h = _font_scale(w)
    if legend:
        _draw_legend(out, list(range(len(names))) if legend_all else present, names, colours, scale, line_h)
    if hud:
        _draw_hud(out, hud, scale, line_h)
    return out
