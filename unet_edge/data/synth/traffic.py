"""Drawing road users: cars, vans and trucks (body, cabin, glass, wheels, lights, plate) and
articulated walking pedestrians."""
from __future__ import annotations

import math

import numpy as np

from .camera import squads, xquads
from .constants import PEDESTRIAN, VEHICLE, Z_NEAR
from .objects import Car, Pedestrian
from .painter import Painter

_DARK = np.array([22.0, 22.0, 24.0])
_HUB = np.array([120.0, 120.0, 125.0])
_PLATE = np.array([225.0, 225.0, 215.0])
_RING = np.linspace(0, 2 * math.pi, 14, endpoint=False)


def draw_car(pt: Painter, c: Car) -> None:
    """Wheels and underbody, body box, cabin box (glass faces, body-coloured roof), pillars, side
    wheels, and lights and plate on the face toward the camera; all class Vehicle. Far cars (under
    8 px tall) are a body and a cabin box only."""
    cam = pt.cam
    sc = c.s0 + c.v * cam.t
    s0, s1 = sc - c.length / 2, sc + c.length / 2
    if s1 <= cam.s_near:
        return
    x0, x1 = c.x - c.width / 2, c.x + c.width / 2
    Z = max(s0, cam.s_near) - cam.t
    if c.height * cam.f / max(Z, 1e-3) < 8:  # far: body and cabin only
        hb = (0.58, 0.5, 1.0)[c.kind] * c.height
        pt.box(x0, x1, 0.2, hb, s0, s1, c.color, VEHICLE, top=c.color * 1.08)
        if c.kind != 2:
            pt.box(x0 + 0.1 * c.width, x1 - 0.1 * c.width, hb, c.height, s0 + 0.25 * c.length, s1 - 0.2 * c.length,
                   c.glass, VEHICLE, top=c.color * 1.1)
        return
    r_w = 0.33 if c.kind == 0 else 0.42
    ax = (s0 + 0.18 * c.length, s1 - 0.18 * c.length) if c.kind != 2 else (s0 + 0.15 * c.length, s1 - 0.2 * c.length)
    off = cam.offset1(Z)
    side_x = x0 if (x0 + off) > 0 else (x1 if (x1 + off) < 0 else None)
    near_vis = s0 >= cam.s_near
    if near_vis:  # underbody and rear/front wheels seen under the bumper
        q = squads([x0 + 0.1, x0 + 0.05, x1 - 0.32], [x1 - 0.1, x0 + 0.32, x1 - 0.05], 0.0,
                   [0.35, 1.8 * r_w, 1.8 * r_w], [s0 + 0.3, s0 + 0.25, s0 + 0.25])
        uv = cam.project(q)
        pt.fill(uv[:1], pt.colour(_DARK, Z), VEHICLE)
        pt.fill(uv[1:], pt.colour(_DARK, Z, None, 0.8), VEHICLE)
    hb, bottom = _draw_car_body(pt, c, x0, x1, s0, s1, Z, side_x)
    if side_x is not None:
        _draw_side_wheels(pt, side_x, ax, r_w)
    if near_vis:
        _draw_car_face(pt, c, x0, x1, s0, Z, hb, bottom)


def _draw_car_body(pt: Painter, c: Car, x0: float, x1: float, s0: float, s1: float, Z: float,
                   side_x: float | None) -> tuple[float, float]:
    """Body and cabin (a truck or bus: one tall box with a band of windows) and the window pillars
    on the visible side ``side_x`` (None: neither side visible). Returns (body top, body bottom) in m."""
    cam = pt.cam
    hb = (0.58, 0.5, 0.7)[c.kind] * c.height
    bottom = 0.3 if c.kind != 2 else 0.45
    body = c.color
    if c.kind == 2:
        pt.box(x0, x1, bottom, c.height, s0, s1, body, VEHICLE, top=body * 1.05)
        if side_x is not None:
            wa = max(s0 + 0.4, cam.s_near)
            if s1 - 0.4 > wa:
                pt.fill_world(xquads(side_x, c.height * 0.62, c.height * 0.86, wa, s1 - 0.4), pt.colour(c.glass, Z), None)
        return hb, bottom
    pt.box(x0, x1, bottom, hb, s0, s1, body, VEHICLE, top=body * 1.08)
    ins = 0.1 * c.width
    if c.kind == 0:
        cs0 = s0 + (0.3 if c.oncoming else 0.28) * c.length
        cs1 = s1 - (0.28 if c.oncoming else 0.2) * c.length
    else:
        cs0, cs1 = s0 + 0.12 * c.length, s1 - 0.08 * c.length
    pt.box(x0 + ins, x1 - ins, hb, c.height, cs0, cs1, c.glass, VEHICLE, top=body * 1.1,
           side_col=c.glass, end_col=c.glass * 1.15)
    if side_x is not None:  # window pillars
        xs = side_x + (ins if side_x == x0 else -ins)
        sp = np.array([cs0 + 0.08, 0.5 * (cs0 + cs1), cs1 - 0.08])
        sp = sp[sp - 0.07 > cam.s_near]
        if len(sp):
            pt.fill_world(xquads(xs, hb, c.height, sp - 0.07, sp + 0.07), pt.colour(body, Z, None, 0.95), None)
    return hb, bottom


def _draw_side_wheels(pt: Painter, side_x: float, axles: tuple[float, float], r_w: float) -> None:
    """Tyres and hubs as projected circles of radius ``r_w`` m on the side plane ``X = side_x`` at
    the ``axles`` (S, m)."""
    cam = pt.cam
    for a in axles:
        if a - r_w <= cam.s_near:
            continue
        P = np.empty((28, 3))
        P[:, 0] = side_x
        P[:14, 1], P[:14, 2] = r_w + r_w * np.sin(_RING), a + r_w * np.cos(_RING)
        P[14:, 1], P[14:, 2] = r_w + 0.55 * r_w * np.sin(_RING), a + 0.55 * r_w * np.cos(_RING)
        uv = cam.project(P)
        pt.fill([uv[:14]], pt.colour(_DARK, a - cam.t), VEHICLE)
        pt.fill([uv[14:]], pt.colour(_HUB, a - cam.t), None)


def _draw_car_face(pt: Painter, c: Car, x0: float, x1: float, s0: float, Z: float, hb: float, bottom: float) -> None:
    """Lights (head lights and grille when oncoming, tail lights otherwise) and the plate on the face
    toward the camera (image only)."""
    s = s0 - 0.01
    yl0 = hb - 0.3 * (hb - bottom) - 0.12
    yl1 = yl0 + 0.17
    if c.oncoming:
        pt.fill_world(squads(c.x - 0.35, c.x + 0.35, yl0 - 0.15, yl1, s), pt.colour(_DARK, Z, None, 1.5), None)
        lc = (235.0, 235.0, 215.0)
    else:
        lc = (200.0, 30.0, 30.0)
    pt.fill_world(squads([x0 + 0.08, x1 - 0.35], [x0 + 0.35, x1 - 0.08], yl0, yl1, s), pt.colour(lc, Z), None)
    pt.fill_world(squads(c.x - 0.25, c.x + 0.25, bottom + 0.08, bottom + 0.2, s), pt.colour(_PLATE, Z), None)


def draw_pedestrian(pt: Painter, pd: Pedestrian) -> None:
    """An articulated walker: legs (thigh, shin) and arms swinging in the walking direction, a torso
    (two crossing quads: box-like from any side), head and hair; all class Pedestrian."""
    cam = pt.cam
    t = cam.t
    s = pd.s0 + pd.v * t
    Z = s - t
    if Z < Z_NEAR + 0.6:
        return
    h = pd.height
    pxm = cam.f / Z
    if h * pxm < 10:  # far: a torso quad, legs and head
        uv = cam.project(np.array([[pd.x - 0.2, 0.53 * h, s], [pd.x + 0.2, 0.53 * h, s], [pd.x + 0.21, 0.82 * h, s],
                                   [pd.x - 0.21, 0.82 * h, s], [pd.x, 0.05, s], [pd.x, 0.5 * h, s], [pd.x, 0.93 * h, s]]))
        pt.line(uv[4], uv[5], 0.3 * pxm, pt.colour(pd.pants, Z), PEDESTRIAN)
        pt.fill(uv[None, :4], pt.colour(pd.shirt, Z), PEDESTRIAN)
        pt.circle(uv[6], 0.11 * pxm, pt.colour(pd.hair, Z), PEDESTRIAN)
        return
    dX, dS = (float(pd.direction), 0.0) if pd.across else (0.0, float(pd.direction))  # walking direction
    pX, pS = dS, -dX                                                                   # to its side
    walked = abs(pd.v) * t if not pd.across else 0.15 * t
    ph = pd.phase + (2 * math.pi * walked / (0.75 * h) if pd.walking else 0.0)
    amp = 0.45 if pd.walking else 0.05
    hip, sh, head, leg, arm = 0.53 * h, 0.82 * h, 0.93 * h, 0.53 * h, 0.38 * h
    J = []  # (lateral, up, forward) offsets from the feet point

    for sign, lat in ((1.0, -0.09), (-1.0, 0.09)):
        a = amp * math.sin(ph) * sign
        J += [(lat, hip, 0.0), (lat, hip - 0.5 * leg * math.cos(a), 0.5 * leg * math.sin(a) + 0.04),
              (lat, max(0.05, hip - leg * math.cos(a) + 0.03 * (1 + math.sin(ph * sign))), 0.9 * leg * math.sin(a))]
    for sign, lat in ((-1.0, -0.22), (1.0, 0.22)):
        a = 0.8 * amp * math.sin(ph) * sign
        J += [(lat, sh - 0.03, 0.0), (lat * 1.1, sh - arm * math.cos(a), arm * math.sin(a))]
    J += [(-0.19, hip - 0.05, 0.0), (0.19, hip - 0.05, 0.0), (0.21, sh, 0.0), (-0.21, sh, 0.0),
          (0.0, hip - 0.05, -0.11), (0.0, hip - 0.05, 0.11), (0.0, sh, 0.11), (0.0, sh, -0.11),
          (0.0, head, 0.0), (0.0, head + 0.035, 0.0), (0.0, head - 0.01, 0.03)]
    J = np.asarray(J)
    P = np.empty((len(J), 3))
    P[:, 0] = pd.x + J[:, 0] * pX + J[:, 2] * dX
    P[:, 1] = J[:, 1]
    P[:, 2] = s + J[:, 0] * pS + J[:, 2] * dS
    uv = cam.project(P)
    pants = pt.colour(pd.pants, Z)
    pants2 = pt.colour(pd.pants, Z, None, 0.88)
    for base, col in ((0, pants2), (3, pants)):
        pt.line(uv[base], uv[base + 1], 0.15 * pxm, col, PEDESTRIAN)
        pt.line(uv[base + 1], uv[base + 2], 0.12 * pxm, col, PEDESTRIAN)
    shirt = pt.colour(pd.shirt, Z)
    pt.fill([uv[10:14]], shirt, PEDESTRIAN)
    pt.fill([uv[14:18]], shirt, PEDESTRIAN)
    sleeve = pt.colour(pd.shirt, Z, None, 0.92)
    pt.line(uv[6], uv[7], 0.09 * pxm, sleeve, PEDESTRIAN)
    pt.line(uv[8], uv[9], 0.09 * pxm, sleeve, PEDESTRIAN)
    r = 0.105 * h / 1.75 * pxm
    pt.circle(uv[18], r, pt.colour(pd.skin, Z), PEDESTRIAN)
    pt.circle(uv[19], r * 0.85, pt.colour(pd.hair, Z), PEDESTRIAN)
    if pd.across or pd.direction < 0:  # face visible: walking toward the camera or seen from the side
        pt.circle(uv[20], r * 0.8, pt.colour(pd.skin, Z), PEDESTRIAN)
