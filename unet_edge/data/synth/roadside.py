"""Drawing what stands at the roadside: trees (broadleaf crowns of blobs and leaf speckles,
conifers), street lights and utility poles, traffic signs and traffic lights."""
from __future__ import annotations

import math

import numpy as np

from .camera import squads
from .constants import POLE, TRAFFICSIGN, VEGETATION, Z_NEAR
from .objects import Pole, Sign, Tree, tree_shape, tree_speckles
from .painter import Painter


def draw_tree(pt: Painter, tr: Tree) -> None:
    """Trunk, then crown blobs back to front (the biggest few when far), then leaf speckles (image
    only) when near; all class Vegetation."""
    cam = pt.cam
    Z = tr.s - cam.t
    if Z < Z_NEAR + 0.5:
        return
    x, s = tr.x, tr.s
    sh = tree_shape(tr)
    w = sh.trunk_w / 2
    pt.fill_world(squads(x - w, x + w, 0.0, sh.crown_y + 0.3, s), pt.colour(sh.trunk_color, Z, (0, 0, -1)), VEGETATION)
    pxm = cam.f / Z
    blobs = sh.blobs
    if sh.conifer:
        tri = np.empty((len(blobs), 3, 3))
        tri[:, :, 2] = s
        tri[:, 0, 0], tri[:, 1, 0], tri[:, 2, 0] = x - blobs[:, 2], x + blobs[:, 2], x
        tri[:, 0, 1] = tri[:, 1, 1] = sh.crown_y + blobs[:, 1]
        tri[:, 2, 1] = sh.crown_y + blobs[:, 1] + 1.6 * blobs[:, 2]
        uv = cam.project(tri)
        for i in range(len(blobs)):
            pt.fill(uv[i:i + 1], pt.colour(sh.blob_colors[i], Z), VEGETATION)
        return
    idx = np.arange(len(blobs))
    if pxm * sh.crown_r < 5:  # far: a few of the biggest blobs give the same silhouette
        idx = np.sort(np.argsort(blobs[:, 2])[-5:])
    b = blobs[idx]
    P = np.empty((len(idx), 3))
    P[:, 0], P[:, 1], P[:, 2] = x + b[:, 0], sh.crown_y + b[:, 1], s
    Lx, Ly = pt.L[0], pt.L[1]
    k = 1.0 + 0.12 * (b[:, 0] * Lx + b[:, 1] * Ly) / (np.abs(b[:, 0]) + np.abs(b[:, 1]) + 1.0)
    pt.circles(cam.project(P), b[:, 2] * pxm, [pt.colour(c, Z, None, kk) for c, kk in zip(sh.blob_colors[idx], k.tolist())],
               VEGETATION)
    if pxm * sh.crown_r > 25:
        sp = tree_speckles(tr, sh)
        if len(sp):
            P = np.empty((len(sp), 3))
            P[:, 0], P[:, 1], P[:, 2] = x + sp[:, 0], sh.crown_y + sp[:, 1], s
            base = sh.blob_colors.mean(0)
            pt.circles(cam.project(P), sp[:, 2] * pxm, [pt.colour(base, Z, None, kk) for kk in sp[:, 3].tolist()], None)


def draw_pole(pt: Painter, pl: Pole, side: int) -> None:
    """A street light (arm toward the road, lamp head) or a utility pole (cross arm)."""
    cam = pt.cam
    Z = pl.s - cam.t
    if Z < Z_NEAR + 0.3:
        return
    w = pl.width / 2
    col = pt.colour(pl.color, Z, (0, 0, -1))
    h = pl.height
    if pl.arm > 0:
        xe = pl.x - side * pl.arm
        q = squads([pl.x - w, xe - 0.35], [pl.x + w, xe + 0.35], [0.0, h + 0.05], [h, h + 0.3], pl.s)
        q[0, 2, 0], q[0, 3, 0] = pl.x + w * 0.7, pl.x - w * 0.7  # taper
        uv = cam.project(np.concatenate([q.reshape(-1, 3), [[pl.x, h - 0.1, pl.s], [xe, h + 0.2, pl.s]]]))
        pt.fill(uv[:8].reshape(2, 4, 2), col, POLE)
        pt.line(uv[8], uv[9], 0.09 * cam.f / Z, col, POLE)
    else:
        q = squads([pl.x - w, pl.x - 0.9], [pl.x + w, pl.x + 0.9], [0.0, h - 0.7], [h, h - 0.58], pl.s)
        uv = cam.project(q)
        pt.fill(uv[:1], col, POLE)
        pt.fill(uv[1:], col, POLE)


def _regular(n: int, r: float, rot: float) -> np.ndarray:
    a = rot + np.arange(n) * 2 * math.pi / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


_SHAPES = {"circle": _regular(20, 1.0, 0.0), "triangle": _regular(3, 1.15, math.pi / 2),
           "rect": np.array([[-1.1, -0.75], [1.1, -0.75], [1.1, 0.75], [-1.1, 0.75]]),
           "diamond": _regular(4, 1.1, 0.0), "octagon": _regular(8, 1.0, math.pi / 8)}


def draw_sign(pt: Painter, sg: Sign) -> None:
    """Pole (class Pole) plus a sign plate or traffic-light housing (class TrafficSign)."""
    cam = pt.cam
    Z = sg.s - cam.t
    if Z < Z_NEAR + 0.3:
        return
    pt.fill_world(squads(sg.x - 0.05, sg.x + 0.05, 0.0, sg.pole_h, sg.s), pt.colour(sg.pole_color, Z, (0, 0, -1)), POLE)
    yc = sg.pole_h + sg.size * 0.5
    pxm = cam.f / Z
    if sg.shape == "light":
        bw, bh = sg.size * 0.5, sg.size * 1.4
        pt.fill_world(squads(sg.x - bw, sg.x + bw, yc - bh / 2, yc + bh / 2, sg.s), pt.colour(sg.border, Z), TRAFFICSIGN)
        cen = cam.project(np.array([[sg.x, yc + bh * k, sg.s] for k in (0.3, 0.0, -0.3)]))
        lamps = ((235.0, 40.0, 30.0), (240.0, 170.0, 30.0), (40.0, 220.0, 90.0))
        for i in range(3):
            pt.circle(cen[i], bw * 0.6 * pxm, pt.colour(lamps[i], Z * 0.5, None, 1.0 if i == sg.light else 0.3), None)
        return
    r = sg.size / 2
    sh = _SHAPES[sg.shape] * r
    P = np.empty((2 * len(sh), 3))
    k = 0.72 if sg.shape in ("circle", "triangle") else 0.85
    P[:len(sh), 0], P[:len(sh), 1] = sg.x + sh[:, 0], yc + sh[:, 1]
    P[len(sh):, 0] = sg.x + sh[:, 0] * k
    P[len(sh):, 1] = yc + sh[:, 1] * k - (r * 0.08 if sg.shape == "triangle" else 0.0)
    P[:, 2] = sg.s
    uv = cam.project(P)
    if sg.back:
        pt.fill([uv[:len(sh)]], pt.colour(sg.pole_color, Z, (0, 0, -1), 1.1), TRAFFICSIGN)
        return
    pt.fill([uv[:len(sh)]], pt.colour(sg.border, Z), TRAFFICSIGN)
    pt.fill([uv[len(sh):]], pt.colour(sg.fill, Z), None)
    if pxm * r > 5:
        if sg.shape == "triangle":
            bar = squads(sg.x - r * 0.1, sg.x + r * 0.1, yc - r * 0.35, yc + r * 0.25, sg.s)
        else:
            bar = squads(sg.x - r * 0.45, sg.x + r * 0.45, yc - r * 0.12, yc + r * 0.12, sg.s)
        pt.fill_world(bar, pt.colour(sg.symbol, Z), None)
