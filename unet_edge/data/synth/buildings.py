"""Drawing the frontage of a street: building and wall segments with their windows, shop fronts,
siding, pillars and coping; fences (rails, planks, mesh); hedges; and street furniture boxes."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .camera import SHIFT, ipts, xquads
from .constants import BUILDING, FENCE, OTHER, VEGETATION
from .objects import Facade, Fence, Hedge, Prop
from .painter import Painter


def draw_facade_segment(pt: Painter, f: Facade, b0: int, b1: int, bay: float) -> None:
    """Draw bays [b0, b1) (each ``bay`` m; the last may be shorter) of a building or wall: its box
    (road-facing face, the near end face for bay 0, the top when lower than the camera) and details
    (windows, cornice, shop front / coping, pillars, streaks; image only, the label stays the box's)."""
    cam = pt.cam
    s0 = f.s0 + b0 * bay
    s1 = min(f.s1, f.s0 + b1 * bay)
    x0, x1 = (f.x, f.x + f.depth) if f.side > 0 else (f.x - f.depth, f.x)
    base = f.color * (float(f.shade[b0]) if f.shade is not None else 1.0)
    drew = pt.box(x0, x1, 0.0, f.height, s0, s1, base, f.cls, end=b0 == 0, top=base * 0.8, end_col=base * 0.93)
    if not (drew[0] if f.side > 0 else drew[1]):
        return
    s0c = max(s0, cam.s_near)
    Zm = 0.5 * (s0c + s1) - cam.t
    pxm = cam.f / max(Zm, 1e-3)  # pixels per metre
    xf = f.x - f.side * 0.02     # details sit just in front of the face
    n = (-f.side, 0, 0)
    groups: list[tuple[np.ndarray, tuple]] = []  # (quads (k, 4, 3), colour), drawn in order
    if f.cls == BUILDING:
        if f.style == 1 and pxm > 6:  # siding: horizontal stripes
            ys = np.arange(0.3, f.height - 0.5, 0.35)
            q = cam.project(xquads(xf, ys, ys, s0c, s1)[:, :2])
            cv2.polylines(pt.img, list(ipts(q)), False, pt.colour(base * 0.82, Zm, n), 1, cv2.LINE_AA, SHIFT)
        groups.append((xquads(xf, f.height - 0.45, f.height, s0c, s1),
                       pt.colour(f.accent if f.style != 2 else base * 0.7, Zm, n)))  # cornice
        if pxm * f.floor_h >= 2.5:
            bs0 = f.s0 + np.arange(b0, b1) * bay
            first = 1 if f.style == 2 else 0
            ww, wh = f.win_w * bay, f.win_h * f.floor_h
            fl = np.arange(first, f.floors)
            sa = np.repeat(bs0 + (bay - ww) / 2, len(fl))
            ya = np.tile(fl * f.floor_h + (f.floor_h - wh) * 0.55, len(bs0))
            types = f.wtype[b0:b1, first:].reshape(-1)
            keep = (sa >= cam.s_near) & (ya + wh < f.height - 0.45)
            if keep.any():
                sa, ya, types = sa[keep], ya[keep], types[keep]
                wq = xquads(xf, ya, ya + wh, sa, sa + ww)
                for wt in range(3):
                    sel = types == wt
                    if sel.any():
                        groups.append((wq[sel], pt.colour(f.win_colors[wt], Zm, None if wt == 2 else n)))
            if f.style == 2:  # shop front: large windows and a coloured sign band
                sa0 = np.maximum(bs0 + 0.2, cam.s_near)
                ok = bs0 + bay - 0.2 > sa0
                if ok.any():
                    groups.append((xquads(xf, 0.15, min(2.6, f.floor_h * 0.8), sa0[ok], (bs0 + bay - 0.2)[ok]),
                                   pt.colour(f.win_colors[0], Zm, n, 1.2)))
                groups.append((xquads(xf, min(2.65, f.floor_h * 0.82), min(3.2, f.floor_h * 0.98), s0c, s1),
                               pt.colour(f.accent, Zm, n)))
    else:  # wall: coping, pillars, streaks
        hq = min(0.2, f.height * 0.15)
        acc = pt.colour(f.accent, Zm, n)
        groups.append((xquads(xf, f.height - hq, f.height, s0c, s1), acc))
        if f.style >= 1 and pxm > 1.5:
            ps = np.arange(math.ceil(s0 / f.bay) * f.bay, s1, f.bay)
            ps = ps[ps - 0.2 > cam.s_near]
            if len(ps):
                groups.append((xquads(xf, 0.0, f.height, ps - 0.2, ps + 0.2), acc))
        if f.style == 2 and pxm > 4:
            ps = np.arange(math.ceil(s0c / 0.9) * 0.9, s1, 0.9)
            if len(ps):
                q = xquads(xf, f.height * 0.45, f.height - hq, ps, ps + 0.05)[:, 1:3]
                cv2.polylines(pt.img, list(ipts(cam.project(q))), False, pt.colour(base * 0.75, Zm, n),
                              max(1, int(pxm * 0.08)), cv2.LINE_AA, SHIFT)
    uv = cam.project(np.concatenate([q for q, _ in groups]))
    i = 0
    for q, col in groups:
        pt.fill(uv[i:i + len(q)], col, None)
        i += len(q)


def draw_fence_segment(pt: Painter, f: Fence, s0: float, s1: float) -> None:
    """Posts and rails (style 0), planks (1) or mesh (2) between s0 and s1."""
    cam = pt.cam
    s0c = max(s0, cam.s_near)
    if s1 <= s0c:
        return
    Zm = 0.5 * (s0c + s1) - cam.t
    x = f.x
    n = (-f.side, 0, 0)
    col = pt.colour(f.color, Zm, n)
    pxm = cam.f / max(Zm, 1e-3)
    if f.style == 1:
        pt.fill_world(xquads(x, 0.0, f.height, s0c, s1), col, FENCE)
        if pxm > 5:
            ps = np.arange(math.ceil(s0c / 0.15) * 0.15, s1, 0.15)
            if len(ps):
                q = xquads(x - f.side * 0.01, 0.0, f.height, ps, ps)[:, 1:3]
                cv2.polylines(pt.img, list(ipts(cam.project(q))), False, pt.colour(f.color * 0.7, Zm, n), 1, cv2.LINE_AA, SHIFT)
        return
    rails = [(f.height - 0.08, f.height), (f.height * 0.45, f.height * 0.45 + 0.07) if f.style == 0 else (0.05, 0.12)]
    pt.fill_world(xquads(x, [r[0] for r in rails], [r[1] for r in rails], s0c, s1), col, FENCE)
    if f.style == 2 and pxm > 2.5:  # mesh: two families of diagonal wires, clipped to [s0c, s1]
        step = 0.25 if pxm > 12 else 0.6
        ss = np.arange(math.floor((s0c - f.height) / step) * step, s1, step)
        segs = []
        for d in (1.0, -1.0):
            a_s, b_s = ss, ss + d * f.height
            lo, hi = np.minimum(a_s, b_s), np.maximum(a_s, b_s)
            ok = (hi > s0c) & (lo < s1)
            a_s, b_s = a_s[ok], b_s[ok]
            # parametrize s(u) = a + u (b - a), y(u) = u h ; clip u to the S range
            u0 = np.clip((np.where(d > 0, s0c, s1) - a_s) / (b_s - a_s), 0, 1)
            u1 = np.clip((np.where(d > 0, s1, s0c) - a_s) / (b_s - a_s), 0, 1)
            P = np.empty((len(a_s), 2, 3))
            P[:, :, 0] = x
            for j, u in enumerate((u0, u1)):
                P[:, j, 1] = u * f.height
                P[:, j, 2] = a_s + u * (b_s - a_s)
            segs.extend(list(ipts(cam.project(P))))
        if segs:
            cv2.polylines(pt.img, segs, False, col, 1, cv2.LINE_AA, SHIFT)
            cv2.polylines(pt.lab, segs, False, FENCE, 1, cv2.LINE_8, SHIFT)
    ps = np.arange(math.ceil(s0 / f.spacing) * f.spacing, s1 + 1e-6, f.spacing)
    ps = ps[ps - 0.06 > cam.s_near]
    if len(ps):
        pt.fill_world(xquads(x - f.side * 0.02, 0.0, f.height + 0.05, ps - 0.06, ps + 0.06),
                      pt.colour(f.color * 0.85, Zm, n), FENCE)


def draw_hedge_segment(pt: Painter, f: Hedge, s0: float, s1: float) -> None:
    """A piece of a bush row: box plus a wavy top on the road-facing face."""
    cam = pt.cam
    s0c = max(s0, cam.s_near)
    if s1 <= s0c:
        return
    x0, x1 = (f.x, f.x + f.depth) if f.side > 0 else (f.x - f.depth, f.x)
    Zm = 0.5 * (s0c + s1) - cam.t
    pt.box(x0, x1, 0.0, f.height, s0c, s1, f.color, VEGETATION, top=f.color * 1.15, end=s0 == f.s0)
    ss = np.linspace(s0c, s1, max(2, int((s1 - s0c) / 0.5) + 1))
    i = np.clip((ss - f.s0).astype(np.int64), 0, len(f.wave) - 1)
    poly = np.empty((2 * len(ss), 3))
    poly[:, 0] = f.x
    poly[:len(ss), 1] = f.height + f.wave[i]
    poly[:len(ss), 2] = ss
    poly[len(ss):, 1] = f.height - 0.25
    poly[len(ss):, 2] = ss[::-1]
    pt.fill([cam.project(poly)], pt.colour(f.color, Zm, (-f.side, 0.3, 0)), VEGETATION)


def draw_prop(pt: Painter, pr: Prop) -> None:
    """A piece of street furniture: a box of class Other with a lighter top."""
    pt.box(pr.x - pr.width / 2, pr.x + pr.width / 2, 0.0, pr.height, pr.s - pr.depth / 2, pr.s + pr.depth / 2,
           pr.color, OTHER, top=pr.color * 1.1)
