"""Light and the camera's response: the sky (gradient, clouds turning with the heading, distant
skyline), cast and contact shadows on the ground, then the frame's exposure (roll, blur, gain,
contrast, tint, vignetting, sensor noise, gamma)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .camera import SHIFT, Camera, ipts
from .constants import UNLABELED
from .objects import tree_shape
from .params import SceneParams
from .textures import bilinear, scene_textures


def render_sky(p: SceneParams, cam: Camera, img: np.ndarray, lab: np.ndarray) -> None:
    """Sky gradient with clouds (turning with the heading) and distant skyline silhouettes, rows above the horizon."""
    H, W = cam.H, cam.W
    r1 = int(min(H, max(0, math.ceil(cam.hor) + 1)))
    if r1 <= 0:
        return
    rows = np.arange(r1, dtype=np.float32)
    fr = (np.clip(rows / max(cam.hor, 1.0), 0, 1) ** 1.6)[:, None]
    top = np.asarray(p.sky_top, np.float32)
    bot = np.asarray(p.sky_bottom, np.float32)
    grad = top[None, :] * (1 - fr) + bot[None, :] * fr  # (r1, 3)
    _, _, c1, c2 = scene_textures(p)
    az = np.arctan2(np.arange(W, dtype=np.float64) - cam.cx, cam.f) + cam.heading  # rad, per column
    # clouds are smooth: evaluate them on a 4x coarser grid, then upsample
    rl = np.arange(0, r1 + 4, 4, dtype=np.float64)
    azl = np.arctan2(np.arange(0, W + 4, 4, dtype=np.float64) - cam.cx, cam.f) + cam.heading
    elp = np.clip(np.arctan2(cam.hor - rl, cam.f) / 0.6, 0, 1)
    cl = bilinear(c1, elp * (c1.shape[0] - 1), azl / (2 * math.pi) * c1.shape[1])
    cl += 0.5 * bilinear(c2, elp * (c2.shape[0] - 1), azl / (2 * math.pi) * c2.shape[1])
    cl = cv2.resize(cl.astype(np.float32), (len(azl) * 4, len(rl) * 4), interpolation=cv2.INTER_LINEAR)[:r1, :W]
    thr = 1.2 - 2.2 * p.cloud_cover
    alpha = np.clip((cl - thr) * 0.9, 0, 1) * np.clip((cam.hor - rows) / (0.1 * H), 0.3, 1)[:, None]
    shade = 1.0 - 0.25 * np.clip(cl - thr - 0.5, 0, 1)
    cc = np.asarray(p.cloud_color, np.float32)
    a3 = alpha[..., None]
    sky = grad[:, None, :] * (1 - a3) + (cc[None, None, :] * shade[..., None]) * a3
    img[:r1] = np.clip(sky, 0, 255).astype(np.uint8)
    lab[:r1] = UNLABELED
    if p.skyline is not None:  # distant buildings / tree lines sitting on the horizon
        n = len(p.skyline)
        idx = np.floor((az % (2 * math.pi)) / (2 * math.pi) * n).astype(np.int64) % n
        elev = p.skyline[idx]
        top_row = cam.hor - cam.f * np.tan(elev)  # (W,)
        m = (rows[:, None] >= top_row[None, :]) & (elev[None, :] > 0)
        if m.any():
            base = np.asarray(p.skyline_color, np.float32)
            gfac = 1.0 + 0.12 * np.clip((rows[:, None] - top_row[None, :]) / (cam.f * 0.02 + 1), 0, 1)
            col = np.clip(base[None, None, :] * gfac[..., None].astype(np.float32), 0, 255).astype(np.uint8)
            img[:r1][m] = col[m]
            lab[:r1][m] = np.broadcast_to(p.skyline_cls[idx][None, :], (r1, W))[m]


_SHADOW_RANGE = 90.0  # m: cast shadows farther than this are not drawn


def _ground_polys(p: SceneParams, cam: Camera) -> list[tuple[np.ndarray, int]]:
    """Cast-shadow and contact-shadow polygons on the ground as (points (n, 2) = (X, S) m, strength 0..255)."""
    t = cam.t
    Lx, Ly, Ls = (math.cos(p.sun_elevation) * math.sin(p.sun_azimuth), math.sin(p.sun_elevation),
                  math.cos(p.sun_elevation) * math.cos(p.sun_azimuth))
    dx, ds = -Lx / max(Ly, 0.1), -Ls / max(Ly, 0.1)  # shadow displacement per metre of height
    out: list[tuple[np.ndarray, int]] = []
    sun_v = int(255 * min(1.0, p.shadow / 0.6))
    lo, hi = t - 10.0, t + _SHADOW_RANGE  # objects a little behind the camera may shade the road ahead

    def hull(x0, x1, s0, s1, h):
        fp = np.array([[x0, s0], [x1, s0], [x1, s1], [x0, s1]])
        return np.concatenate([fp, fp + np.array([dx * h, ds * h])])

    if sun_v > 4:
        for f in p.facades:
            if f.s1 > lo and f.s0 < hi:
                x0, x1 = (f.x, f.x + f.depth) if f.side > 0 else (f.x - f.depth, f.x)
                out.append((hull(x0, x1, f.s0, f.s1, f.height), sun_v))
        for f in p.hedges:
            if f.s1 > lo and f.s0 < hi:
                x0, x1 = (f.x, f.x + f.depth) if f.side > 0 else (f.x - f.depth, f.x)
                out.append((hull(x0, x1, f.s0, f.s1, f.height), sun_v))
        ang = np.linspace(0, 2 * math.pi, 10, endpoint=False)
        ca, sa = np.cos(ang), np.sin(ang)
        for tr in p.trees:
            if t < tr.s < hi:
                ts = tree_shape(tr)
                r = ts.crown_r
                hc = ts.crown_y + ts.crown_dy
                out.append((np.stack([tr.x + dx * hc + r * ca, tr.s + ds * hc + r * 0.8 * sa], 1), int(sun_v * 0.8)))
        for pl in p.poles:
            if lo < pl.s < hi:
                w = pl.width / 2
                out.append((hull(pl.x - w, pl.x + w, pl.s - w, pl.s + w, pl.height), sun_v))
    for c in p.cars:
        sc = c.s0 + c.v * t
        if lo < sc < hi:
            x0, x1, s0, s1 = c.x - c.width / 2, c.x + c.width / 2, sc - c.length / 2, sc + c.length / 2
            if sun_v > 4:
                out.append((hull(x0, x1, s0, s1, c.height * 0.8), sun_v))
            out.append((np.array([[x0 - 0.1, s0 - 0.1], [x1 + 0.1, s0 - 0.1], [x1 + 0.1, s1 + 0.1], [x0 - 0.1, s1 + 0.1]]), 255))
    return out


def _clip_near(poly: np.ndarray, s_min: float) -> np.ndarray:
    """Clip a convex polygon (n, 2) = (X, S) to S >= s_min (Sutherland-Hodgman, one plane)."""
    if poly[:, 1].min() >= s_min:
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[1] >= s_min, b[1] >= s_min
        if ina:
            out.append(a)
        if ina != inb:
            out.append(a + (s_min - a[1]) / (b[1] - a[1]) * (b - a))
    return np.array(out) if len(out) >= 3 else np.zeros((0, 2))


def _densify(poly: np.ndarray, step: float) -> np.ndarray:
    """Insert points along the edges of a polygon (n, 2) = (X, S) so none spans more than ``step`` m of S."""
    b = np.roll(poly, -1, axis=0)
    k = np.maximum(1, np.ceil(np.abs(b[:, 1] - poly[:, 1]) / step).astype(np.int64))
    if k.max() == 1:
        return poly
    e = np.repeat(np.arange(len(poly)), k)
    f = (np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)) / np.repeat(k, k)
    return poly[e] + (b[e] - poly[e]) * f[:, None]


def shadow_mask(p: SceneParams, cam: Camera) -> np.ndarray | None:
    """uint8 (H, W) darkness of the ground (0 lit .. 255 full shadow), or None when there is none."""
    polys = _ground_polys(p, cam)
    if not polys:
        return None
    mask = np.zeros((cam.H, cam.W), np.uint8)
    drew = False
    for poly, val in sorted(polys, key=lambda pv: pv[1]):
        hp = cv2.convexHull(poly.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        hp = _clip_near(hp, cam.s_near)
        if len(hp) < 3:
            continue
        if not cam.straight:
            hp = _densify(hp, 6.0)
        P = np.zeros((len(hp), 3))
        P[:, 0], P[:, 2] = hp[:, 0], hp[:, 1]
        cv2.fillPoly(mask, [ipts(cam.project(P))], int(val), cv2.LINE_8, SHIFT)
        drew = True
    return cv2.blur(mask, (3, 3)) if drew else None


def camera_effects(p: SceneParams, rng: np.random.Generator, img: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The camera's response to a rendered frame: roll (image and labels), optical blur, gain,
    contrast, tint and vignetting, sensor noise drawn from ``rng``, then gamma.

    ``img`` (H, W, 3) uint8 RGB and ``lab`` (H, W) uint8 in; returns new C-contiguous (image, label).
    """
    H, W = lab.shape
    if abs(p.roll) > 0.05:
        M = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), p.roll, 1.0 + abs(math.radians(p.roll)) * 1.2)
        img = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        lab = cv2.warpAffine(lab, M, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT101)
    if p.blur > 0.05:
        sig = p.blur * W / 320.0
        img = cv2.GaussianBlur(img, (0, 0), sig)
    gain = (np.asarray(p.tint, np.float32) * (p.gain * p.contrast))  # (3,)
    offset = np.float32(128.0 * (1.0 - p.contrast) * p.gain)
    if p.vignette > 0:
        yy = (np.arange(H, dtype=np.float32) - (H - 1) / 2) / (H / 2)
        xx = (np.arange(W, dtype=np.float32) - (W - 1) / 2) / (W / 2)
        vig = 1.0 - p.vignette * 0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2)
        x = img.astype(np.float32) * (vig[..., None] * gain[None, None, :]) + offset
    else:
        x = img.astype(np.float32) * gain + offset
    sigma = p.noise * rng.uniform(0.7, 1.3)
    if sigma > 0.05:
        x += _gaussian_noise(rng, (H, W, 3)) * np.float32(sigma)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if abs(p.gamma - 1.0) > 1e-3:
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** p.gamma, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, lut)
    return np.ascontiguousarray(out), np.ascontiguousarray(lab)


_NOISE_BANK: np.ndarray | None = None
_NOISE_BANK_SIZE = 1 << 22


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """About N(0, 1) float32 noise of ``shape``: a window at a random offset (drawn from ``rng``) into a
    fixed bank of 4M Gaussian samples (int8, 1/20 steps), about 20x cheaper than fresh samples;
    fresh samples for images too large for the bank."""
    global _NOISE_BANK
    n = int(np.prod(shape))
    if n > _NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    if _NOISE_BANK is None:
        bank = np.random.default_rng(20240917).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32) * 20.0
        _NOISE_BANK = np.clip(np.rint(bank), -127, 127).astype(np.int8)
    off = int(rng.integers(0, _NOISE_BANK_SIZE - n))
    return _NOISE_BANK[off:off + n].reshape(shape).astype(np.float32) * np.float32(1.0 / 20.0)
