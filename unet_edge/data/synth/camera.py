"""The pinhole camera of the scene generator and world-quad helpers.

Road coordinates (metres): ``X`` lateral (+ right of the road's centre line), ``Y`` up from the
ground, ``S`` distance along the road. The camera sits ``cam_height`` above the road at ``S = t``,
``cam_x`` right of the centre line and looks along the road. A point at forward distance
``Z = S - t`` projects to ``u = cx + f (X + c(Z)) / Z``, ``v = horizon + f (cam_height - Y) / Z``
where ``c(Z)`` is the camera-frame lateral offset of the road centre line: the double integral of
the road's curvature ``k(s) = k0 + k1 sin(2 pi s / L + phi)`` (small-angle approximation), plus yaw.
"""
from __future__ import annotations

import math

import numpy as np

from .constants import Z_NEAR
from .params import SceneParams

SHIFT = 4           # cv2 sub-pixel bits
SCALE = float(1 << SHIFT)


class Camera:
    """Pinhole camera of a scene at travel ``t`` (see the module docstring for the model)."""

    def __init__(self, p: SceneParams, hw: tuple[int, int], t: float):
        H, W = hw
        self.H, self.W, self.t = H, W, float(t)
        self.f = p.focal * W
        self.cx = (W - 1) / 2.0
        self.hor = p.horizon * H
        self.h = p.cam_height
        self.k0, self.k1 = p.curv0, p.curv1
        self.straight = p.curv0 == 0.0 and p.curv1 == 0.0
        self.w = 2 * math.pi / p.curv_period
        self.a = p.curv_phase + self.w * self.t
        self.cos_a, self.sin_a = math.cos(self.a), math.sin(self.a)
        self.cam_x = p.cam_x + p.weave * math.sin(self.t / 23.0) * math.sin(self.t / 9.0)
        self.yaw = p.yaw
        self.s_near = self.t + Z_NEAR
        # heading change since t = 0 (rad): turns the sky
        self.heading = self.k0 * self.t + self.k1 / self.w * (math.cos(p.curv_phase) - self.cos_a)

    def offset(self, Z: np.ndarray) -> np.ndarray:
        """Camera-frame lateral position (m) of the road centre line at forward distances ``Z`` (m, array)."""
        if self.straight:
            return self.yaw * Z - self.cam_x
        Zc = np.minimum(Z, 400.0)
        w = self.w
        c = 0.5 * self.k0 * Zc * Zc + self.k1 * (Zc * (self.cos_a / w) - (np.sin(self.a + w * Zc) - self.sin_a) / (w * w))
        return c + self.yaw * Z - self.cam_x

    def offset1(self, Z: float) -> float:
        """:meth:`offset` for one distance (a Python float)."""
        if self.straight:
            return self.yaw * Z - self.cam_x
        Zc = min(Z, 400.0)
        w = self.w
        c = 0.5 * self.k0 * Zc * Zc + self.k1 * (Zc * self.cos_a / w - (math.sin(self.a + w * Zc) - self.sin_a) / (w * w))
        return c + self.yaw * Z - self.cam_x

    def project(self, P: np.ndarray) -> np.ndarray:
        """Road-coordinate points (..., 3) = (X, Y, S) in m -> image points (..., 2) = (u, v) in pixels."""
        P = np.asarray(P, dtype=np.float64)
        Z = np.maximum(P[..., 2] - self.t, 0.05)
        inv = self.f / Z
        out = np.empty(P.shape[:-1] + (2,))
        out[..., 0] = (P[..., 0] + self.offset(Z)) * inv + self.cx
        out[..., 1] = (self.h - P[..., 1]) * inv + self.hor
        return out

    def key(self, x: float, s: float) -> float:
        """Painter's sort key: distance (m) from the camera to the road point (x, s)."""
        Z = s - self.t
        return math.hypot(x + self.offset1(max(Z, 0.0)), Z)


def ipts(uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> int32 fixed point with :data:`SHIFT` fractional bits, for cv2 drawing."""
    return np.rint(uv * SCALE).astype(np.int32)


def _count(*args) -> int:
    """Length shared by the 1-D sequence arguments (1 when all are scalars)."""
    n = 1
    for a in args:
        if hasattr(a, "__len__"):
            n = max(n, len(a))
    return n


def _col(a):
    """A scalar, or a sequence as an (n, 1) column for broadcasting over the 4 corners."""
    return np.asarray(a, dtype=np.float64)[:, None] if hasattr(a, "__len__") else a


def xquads(x, y0, y1, s0, s1) -> np.ndarray:
    """Quads in planes of constant X (facing the road): scalars or equal-length 1-D args -> (n, 4, 3)."""
    q = np.empty((_count(x, y0, y1, s0, s1), 4, 3))
    q[:, :, 0] = _col(x)
    q[:, 0, 1] = q[:, 1, 1] = y0
    q[:, 2, 1] = q[:, 3, 1] = y1
    q[:, 0, 2] = q[:, 3, 2] = s0
    q[:, 1, 2] = q[:, 2, 2] = s1
    return q


def squads(x0, x1, y0, y1, s) -> np.ndarray:
    """Quads in planes of constant S (facing the camera): scalars or equal-length 1-D args -> (n, 4, 3)."""
    q = np.empty((_count(x0, x1, y0, y1, s), 4, 3))
    q[:, 0, 0] = q[:, 3, 0] = x0
    q[:, 1, 0] = q[:, 2, 0] = x1
    q[:, 0, 1] = q[:, 1, 1] = y0
    q[:, 2, 1] = q[:, 3, 1] = y1
    q[:, :, 2] = _col(s)
    return q
