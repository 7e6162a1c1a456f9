"""Drawing projected shapes (polygons, discs, thick lines, road-aligned boxes) into the image,
anti-aliased and shaded by the sun and fog, and into the label map with hard edges in the same
order, so that occlusions in the image and the labels agree."""
from __future__ import annotations

import math

import cv2
import numpy as np

from .camera import SHIFT, SCALE, Camera, ipts
from .params import SceneParams


class Painter:
    """Draws projected shapes into the image (anti-aliased) and the label map (hard edges, same order)."""

    def __init__(self, cam: Camera, p: SceneParams, img: np.ndarray, lab: np.ndarray):
        self.cam, self.p, self.img, self.lab = cam, p, img, lab
        ce = math.cos(p.sun_elevation)
        self.L = (ce * math.sin(p.sun_azimuth), math.sin(p.sun_elevation), ce * math.cos(p.sun_azimuth))
        self.amb = 1.0 - p.sun
        self.sun = p.sun
        self.norm = 1.0 / (self.amb + p.sun * max(self.L[1], 0.0))
        self.fog = tuple(float(v) for v in p.sky_bottom)
        self.fog_d = p.fog_distance

    def colour(self, base, Z: float, n: tuple[float, float, float] | None = None, k: float = 1.0) -> tuple:
        """``base`` RGB times ``k``, shaded for a face of normal ``n`` (None: unshaded), fogged at distance Z (m)."""
        if n is not None:
            lam = n[0] * self.L[0] + n[1] * self.L[1] + n[2] * self.L[2]
            k = k * (self.amb + self.sun * (lam if lam > 0 else 0.0)) * self.norm
        fw = 1.0 - math.exp(-(Z if Z > 0 else 0.0) / self.fog_d)
        a = k * (1.0 - fw)
        f = self.fog
        return (min(float(base[0]) * a + f[0] * fw, 255.0), min(float(base[1]) * a + f[1] * fw, 255.0),
                min(float(base[2]) * a + f[2] * fw, 255.0))

    def fill(self, polys_uv, col: tuple, cls: int | None) -> None:
        """Fill non-overlapping polygons (an (n, k, 2) array or a list of (k, 2)) given in pixels."""
        pts = list(ipts(polys_uv)) if isinstance(polys_uv, np.ndarray) else [ipts(q) for q in polys_uv]
        cv2.fillPoly(self.img, pts, col, cv2.LINE_AA, SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lab, pts, int(cls), cv2.LINE_8, SHIFT)

    def fill_world(self, polys: np.ndarray, col: tuple, cls: int | None) -> None:
        """Project and fill non-overlapping world polygons, an (n, k, 3) array."""
        if len(polys):
            self.fill(self.cam.project(polys), col, cls)

    def circle(self, uv, r: float, col: tuple, cls: int | None) -> None:
        """A filled disc at pixel ``uv`` of radius ``r`` pixels."""
        c = (int(round(uv[0] * SCALE)), int(round(uv[1] * SCALE)))
        rr = max(int(round(r * SCALE)), 1)
        cv2.circle(self.img, c, rr, col, -1, cv2.LINE_AA, SHIFT)
        if cls is not None:
            cv2.circle(self.lab, c, rr, int(cls), -1, cv2.LINE_8, SHIFT)

    def circles(self, uv: np.ndarray, r: np.ndarray, cols: list[tuple], cls: int | None) -> None:
        """Filled discs at pixels ``uv`` (n, 2) with radii ``r`` (n,) pixels and colours ``cols``, in order."""
        c = np.rint(uv * SCALE).astype(np.int64).tolist()
        rr = np.maximum(np.rint(r * SCALE), 1).astype(np.int64).tolist()
        for ci, ri, col in zip(c, rr, cols):
            cv2.circle(self.img, ci, ri, col, -1, cv2.LINE_AA, SHIFT)
            if cls is not None:
                cv2.circle(self.lab, ci, ri, int(cls), -1, cv2.LINE_8, SHIFT)

    def line(self, a, b, width_px: float, col: tuple, cls: int | None) -> None:
        """A thick segment with round ends between pixels ``a`` and ``b``."""
        pa = (int(round(a[0] * SCALE)), int(round(a[1] * SCALE)))
        pb = (int(round(b[0] * SCALE)), int(round(b[1] * SCALE)))
        th = max(1, int(round(width_px)))
        cv2.line(self.img, pa, pb, col, th, cv2.LINE_AA, SHIFT)
        if cls is not None:
            cv2.line(self.lab, pa, pb, int(cls), th, cv2.LINE_8, SHIFT)

    def box(self, x0: float, x1: float, y0: float, y1: float, s0: float, s1: float, base, cls: int | None,
            top=None, end: bool = True, side_col=None, end_col=None) -> tuple[bool, bool]:
        """Draw the visible faces of a road-aligned box, clipped at the near plane.

        Returns whether the side face at ``x0`` / at ``x1`` was drawn."""
        cam = self.cam
        s0c = s0 if s0 > cam.s_near else cam.s_near
        if s1 <= s0c:
            return False, False
        Zm = 0.5 * (s0c + s1) - cam.t
        off = cam.offset1(Zm)
        C = np.empty((8, 3))
        C[:4, 0], C[4:, 0] = x0, x1
        C[:, 1] = (y0, y0, y1, y1, y0, y0, y1, y1)
        C[:, 2] = (s0c, s1, s0c, s1, s0c, s1, s0c, s1)
        uv = cam.project(C)
        drew = (False, False)
        sc = side_col if side_col is not None else base
        if x0 + off > 0:
            self.fill([uv[[0, 1, 3, 2]]], self.colour(sc, Zm, (-1, 0, 0)), cls)
            drew = (True, False)
        elif x1 + off < 0:
            self.fill([uv[[4, 5, 7, 6]]], self.colour(sc, Zm, (1, 0, 0)), cls)
            drew = (False, True)
        if y1 < cam.h:
            self.fill([uv[[2, 6, 7, 3]]], self.colour(top if top is not None else base, Zm, (0, 1, 0)), cls)
        if end and s0 >= cam.s_near:
            self.fill([uv[[0, 4, 6, 2]]], self.colour(end_col if end_col is not None else base, s0 - cam.t, (0, 0, -1)), cls)
        return drew
