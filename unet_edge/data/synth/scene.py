"""Composing one frame: sky, ground (with shadows), then every object piece in view drawn far to
near (painter's algorithm on the distance to the camera, long facades cut into short pieces),
then the camera effects."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ...errors import UsageError
from .buildings import draw_facade_segment, draw_fence_segment, draw_hedge_segment, draw_prop
from .camera import Camera
from .constants import BUILDING, DEFAULT_SIZE, Z_FAR_BIG, Z_FAR_SMALL, Z_NEAR
from .ground import render_ground
from .lighting import camera_effects, render_sky, shadow_mask
from .painter import Painter
from .params import SceneParams
from .roadside import draw_pole, draw_sign, draw_tree
from .traffic import draw_car, draw_pedestrian


def _pieces(s0: float, s1: float, lo: float, hi: float, t: float) -> list[tuple[float, float]]:
    """Cut [s0, s1] (within [lo, hi]) into pieces about 3 m long near the camera, longer far away."""
    out = []
    a = s0 if s0 >= lo else s0 + math.floor((lo - s0) / 3.0) * 3.0
    while a < min(s1, hi):
        b = min(s1, a + max(3.0, 0.2 * (a - t)))
        out.append((a, b))
        a = b
    return out


def _collect(p: SceneParams, cam: Camera, pt: Painter) -> list[tuple[float, int, Callable[[], None]]]:
    """Every object piece in view as (distance key, tie-break, draw function)."""
    t = cam.t
    items: list[tuple[float, int, Callable[[], None]]] = []
    lo = t + Z_NEAR
    hi_b, hi_s = t + Z_FAR_BIG, t + Z_FAR_SMALL

    def add(key: float, fn: Callable[[], None]) -> None:
        items.append((key, len(items), fn))

    for f in p.facades:
        if f.s1 <= lo or f.s0 >= hi_b:
            continue
        # buildings are cut at their bays (windows never straddle two pieces), walls every ~3 m;
        # far away several bays make one piece
        nb = len(f.shade) if f.cls == BUILDING else max(1, int(math.ceil((f.s1 - f.s0) / 3.0)))
        bay = (f.s1 - f.s0) / nb
        b = max(0, int((lo - f.s0) // bay))
        while b < nb:
            sa = f.s0 + b * bay
            if sa >= hi_b:
                break
            b1 = min(nb, b + max(1, int(0.2 * max(sa - t, Z_NEAR) / bay)))
            sm = 0.5 * (max(sa, lo) + min(f.s0 + b1 * bay, f.s1))
            add(cam.key(f.x, sm), (lambda f=f, b=b, b1=b1, bay=bay: draw_facade_segment(pt, f, b, b1, bay)))
            b = b1
    for fe in p.fences:
        if fe.s1 > lo and fe.s0 < hi_b:
            for a, b in _pieces(fe.s0, fe.s1, lo, hi_b, t):
                add(cam.key(fe.x, 0.5 * (a + b)), (lambda fe=fe, a=a, b=b: draw_fence_segment(pt, fe, a, b)))
    for hd in p.hedges:
        if hd.s1 > lo and hd.s0 < hi_b:
            for a, b in _pieces(hd.s0, hd.s1, lo, hi_b, t):
                add(cam.key(hd.x, 0.5 * (a + b)), (lambda hd=hd, a=a, b=b: draw_hedge_segment(pt, hd, a, b)))
    for tr in p.trees:
        if lo < tr.s < hi_s:
            add(cam.key(tr.x, tr.s), (lambda tr=tr: draw_tree(pt, tr)))
    le, re = p.road_edges()
    for pl in p.poles:
        if lo < pl.s < hi_s:
            add(cam.key(pl.x, pl.s), (lambda pl=pl: draw_pole(pt, pl, 1 if pl.x > 0.5 * (le + re) else -1)))
    for sg in p.signs:
        if lo < sg.s < hi_s:
            add(cam.key(sg.x, sg.s), (lambda sg=sg: draw_sign(pt, sg)))
    for c in p.cars:
        sc = c.s0 + c.v * t
        if sc + c.length / 2 > lo and sc - c.length / 2 < hi_s:
            add(cam.key(c.x, max(sc - c.length / 2, lo) + 0.5), (lambda c=c: draw_car(pt, c)))
    for pd in p.pedestrians:
        s = pd.s0 + pd.v * t
        if lo < s < hi_s:
            add(cam.key(pd.x, s), (lambda pd=pd: draw_pedestrian(pt, pd)))
    for pr in p.props:
        if lo < pr.s + pr.depth / 2 and pr.s < hi_s:
            add(cam.key(pr.x, pr.s), (lambda pr=pr: draw_prop(pt, pr)))
    return items


def check_size(size) -> tuple[int, int]:
    """``size`` as (H, W) ints; raises UsageError unless it is a pair of integers >= 16."""
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError(f"size must be (H, W) in pixels, got {size!r}; pass two integers such as (240, 320)")
    if H < 16 or W < 16:
        raise UsageError(f"size must be at least 16x16 pixels, got {H}x{W}; pass a larger size")
    return H, W


def render_scene(rng: np.random.Generator, size: tuple[int, int] = DEFAULT_SIZE, t: float = 0.0,
                 params: SceneParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame of a street scene and its labels.

    Args:
        rng: numpy Generator. Draws the scene layout when ``params`` is None, then the per-frame
            sensor noise; the result is a pure function of its state (and the other arguments).
        size: (H, W) in pixels.
        t: forward travel of the camera along the road in metres. Rendering the same ``params`` at
            increasing ``t`` gives a temporally coherent forward drive.
        params: the scene (layout, colours, lighting); None draws ``SceneParams.random(rng)``.

    Returns:
        (image, label): image RGB uint8 (H, W, 3); label uint8 (H, W) of CARLA 13-class ids
        0..12 (:data:`unet_edge.data.layouts.CARLA_CLASSES`; the sky is 0, Unlabeled).

    Raises:
        UsageError: ``size`` is not a pair of integers >= 16.
    """
    H, W = check_size(size)
    if params is None:
        params = SceneParams.random(rng)
    p = params
    cam = Camera(p, (H, W), t)
    img = np.empty((H, W, 3), np.uint8)
    lab = np.empty((H, W), np.uint8)
    render_sky(p, cam, img, lab)
    render_ground(p, cam, img, lab, shadow_mask(p, cam))
    pt = Painter(cam, p, img, lab)
    for _, _, fn in sorted(_collect(p, cam, pt), key=lambda it: (-it[0], it[1])):
        fn()
    return camera_effects(p, rng, img, lab)
