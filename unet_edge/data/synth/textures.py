"""World-anchored tileable noise textures of a scene (asphalt grain, patches, cloud grids) and
their sampling at road coordinates or sky angles."""
from __future__ import annotations

import cv2
import numpy as np

from .params import SceneParams

_TEX_N = 128


def scene_textures(p: SceneParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World-anchored tileable textures of a scene, cached on ``p``: fine grain and large patches
    (float32 (128, 128), about N(0, 1)), and two cloud grids (elevation x azimuth, float32)."""
    cache = p.__dict__.get("_tex_cache")
    if cache is not None and cache[0] == p.seed:
        return cache[1]
    r = np.random.default_rng(p.seed)
    n = _TEX_N

    def tileable(m: int, sigma: float) -> np.ndarray:
        """Blurred white noise on an m x m torus, upsampled (periodically) to n x n."""
        z = r.standard_normal((m, m)).astype(np.float32)
        pad = int(3 * sigma) + 2
        z = cv2.GaussianBlur(np.pad(z, pad, mode="wrap"), (0, 0), sigma)[pad:pad + m, pad:pad + m]
        if m != n:
            k = n // m
            z = cv2.resize(np.pad(z, 2, mode="wrap"), ((m + 4) * k, (m + 4) * k), interpolation=cv2.INTER_LINEAR)
            z = z[2 * k:2 * k + n, 2 * k:2 * k + n]
        z = np.ascontiguousarray(z)
        return z / (z.std() + 1e-6)

    grain, patch = tileable(n, 0.7), tileable(n // 4, 1.5)
    c1 = r.standard_normal((16, 48)).astype(np.float32)
    c2 = r.standard_normal((32, 96)).astype(np.float32)
    out = (grain, patch, c1, c2)
    p.__dict__["_tex_cache"] = (p.seed, out)
    return out


def _lerp_idx(pos: np.ndarray, n: int, wrap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (a, b) and weight of b to sample a length-n grid at fractional positions ``pos``."""
    i0 = np.floor(pos).astype(np.int64)
    fr = (pos - i0).astype(np.float32)
    if wrap:
        return i0 % n, (i0 + 1) % n, fr
    return np.clip(i0, 0, n - 1), np.clip(i0 + 1, 0, n - 1), fr


def bilinear(grid: np.ndarray, rpos: np.ndarray, cpos: np.ndarray) -> np.ndarray:
    """Sample ``grid`` (m, n) at the outer product of row positions (clamped) and column positions (wrapped)."""
    ra, rb, rf = _lerp_idx(rpos, grid.shape[0], False)
    ca, cb, cf = _lerp_idx(cpos, grid.shape[1], True)
    top = grid[ra][:, ca] * (1 - cf) + grid[ra][:, cb] * cf
    bot = grid[rb][:, ca] * (1 - cf) + grid[rb][:, cb] * cf
    return top * (1 - rf)[:, None] + bot * rf[:, None]


def sample_world(tex: np.ndarray, X: np.ndarray, S: np.ndarray, scale: float) -> np.ndarray:
    """Bilinearly sample a tileable texture at road coordinates (X (R, W), S (R,)) with ``scale`` texels/m."""
    n = tex.shape[0]
    mx = np.mod(X * scale, n).astype(np.float32)
    my = np.broadcast_to(np.mod(S * scale, n).astype(np.float32)[:, None], X.shape)
    return cv2.remap(tex, mx, np.ascontiguousarray(my), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
