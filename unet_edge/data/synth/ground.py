"""The ground below the horizon, per pixel: road, lane and edge markings, crosswalks, curbs,
sidewalks and verges, with world-anchored textures, paving joints, tyre tracks, shadows and fog.
Each image row is inverted to road coordinates through the camera model of :mod:`.camera`."""
from __future__ import annotations

import math

import numpy as np

from .camera import Camera
from .constants import ROAD, ROADLINE, SIDEWALK, Z_GROUND_MAX
from .params import SceneParams
from .textures import sample_world, scene_textures


# materials: 0 road, 1 line, 2 centre line, 3/4 sidewalk L/R, 5/6 curb L/R, 7/8 verge L/R
_AMP_FINE = np.array([0.06, 0.04, 0.04, 0.04, 0.04, 0.03, 0.03, 0.14, 0.14], np.float32)
_AMP_MID = np.array([0.05, 0.03, 0.03, 0.04, 0.04, 0.03, 0.03, 0.13, 0.13], np.float32)


def render_ground(p: SceneParams, cam: Camera, img: np.ndarray, lab: np.ndarray, shadow: np.ndarray | None) -> None:
    """Road, lane markings, crosswalks, curbs, sidewalks and verges, per pixel below the horizon.

    Writes rows below the horizon of ``img`` (H, W, 3) uint8 RGB and ``lab`` (H, W) uint8 in place;
    ``shadow`` is the (H, W) uint8 darkness of :func:`~.lighting.shadow_mask` or None.
    """
    H, W = cam.H, cam.W
    r0 = int(max(0, math.floor(cam.hor) + 1))
    if r0 >= H:
        return
    rows = np.arange(r0, H, dtype=np.float64)
    Z = np.minimum(cam.f * cam.h / np.maximum(rows - cam.hor, 1e-3), Z_GROUND_MAX)  # (R,) m
    S = Z + cam.t
    off = cam.offset(Z)
    cols = np.arange(W, dtype=np.float32) - np.float32(cam.cx)
    X = cols[None, :] * (Z / cam.f).astype(np.float32)[:, None] - off.astype(np.float32)[:, None]  # (R, W) m
    mat = _materials(p, X, S)
    pal = np.stack([p.road_color, p.line_color, p.centre_color, p.sidewalk_colors[0], p.sidewalk_colors[1],
                    p.curb_colors[0], p.curb_colors[1], p.verge_colors[0], p.verge_colors[1]]).astype(np.float32)
    labs = np.array([ROAD, ROADLINE, ROADLINE, SIDEWALK, SIDEWALK, SIDEWALK, SIDEWALK, p.verge_left, p.verge_right], np.uint8)
    fac = _texture(p, mat, X, S, Z)
    if shadow is not None:
        fac *= 1.0 - np.float32(p.shadow / 255.0) * shadow[r0:].astype(np.float32)
    col = pal[mat] * fac[..., None]
    fw = (1.0 - np.exp(-Z / p.fog_distance)).astype(np.float32)[:, None, None]
    fog = np.asarray(p.sky_bottom, np.float32)
    col = col * (1 - fw) + fog * fw
    img[r0:] = np.clip(col, 0, 255).astype(np.uint8)
    lab[r0:] = labs[mat]


def _materials(p: SceneParams, X: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Material index (R, W) uint8 (see the table above) of ground points at lateral ``X`` (R, W) m and
    along-road ``S`` (R,) m: verges, sidewalks and curbs, road, centre line, lane and edge lines, crosswalks."""
    le, re = p.road_edges()
    mat = np.where(X >= 0, np.uint8(8), np.uint8(7))
    if p.sidewalk_right > 0:
        mat[(X >= re) & (X < re + p.sidewalk_right)] = 4
        mat[(X >= re) & (X < re + p.curb_width)] = 6
    if p.sidewalk_left > 0:
        mat[(X <= le) & (X > le - p.sidewalk_left)] = 3
        mat[(X <= le) & (X > le - p.curb_width)] = 5
    road = (X > le) & (X < re)
    mat[road] = 0
    lw2 = p.line_width / 2
    dash = (np.mod(S, p.dash_period) < p.dash_len)[:, None]  # (R, 1)
    if p.centre_line != 3:
        ax = np.abs(X)
        if p.centre_line == 2:
            m = np.abs(ax - 1.5 * lw2) < lw2
        else:
            m = ax < lw2
            if p.centre_line == 0:
                m &= dash
        mat[m & road] = 2
    for k in list(range(1, p.lanes_right)) + [-k for k in range(1, p.lanes_left)]:
        mat[(np.abs(X - k * p.lane_width) < lw2) & dash] = 1
    if p.edge_lines:
        for xe in (le + 0.25 + lw2, re - 0.25 - lw2):
            mat[np.abs(X - xe) < lw2] = 1
    for s_cw in p.crosswalks:
        rsel = np.nonzero((S >= s_cw) & (S < s_cw + 3.5))[0]
        if len(rsel):
            sub = X[rsel]
            mm = (np.mod(sub, 1.2) < 0.6) & (sub > le + 0.3) & (sub < re - 0.3)
            msub = mat[rsel]
            msub[mm] = 1
            mat[rsel] = msub
    return mat


def _texture(p: SceneParams, mat: np.ndarray, X: np.ndarray, S: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Brightness factor (R, W) float32 around 1 of the ground: world-anchored grain (fading with
    distance ``Z`` (R,) m, it would alias) and patches, then paving joints and tyre tracks near by."""
    grain, patch, _, _ = scene_textures(p)
    Zf = Z.astype(np.float32)[:, None]
    g_fine = sample_world(grain, X, S, 24.0) * np.clip(5.0 / Zf, 0, 1)
    g_mid = sample_world(grain, X + 37.0, S, 4.0) * np.clip(25.0 / Zf, 0, 1)
    pt = sample_world(patch, X, S, 0.7)
    pamp = np.array([p.road_patches, 0.03, 0.03, 0.05, 0.05, 0.02, 0.02, 0.14, 0.14], np.float32)
    fac = 1.0 + _AMP_FINE[mat] * g_fine + _AMP_MID[mat] * g_mid + pamp[mat] * pt
    k = int(np.count_nonzero(Z < 35.0))
    if k:
        sl = slice(len(Z) - k, len(Z))  # Z decreases down the image: near rows are the last ones
        Xs, Ss, ms, fsub = X[sl], S[sl][:, None], mat[sl], fac[sl]
        jw = 0.035
        joint = (np.mod(Ss, p.tile) < jw) | (np.mod(Xs - p.road_edges()[1], p.tile) < jw)
        fsub[joint & ((ms == 3) | (ms == 4))] *= 0.8
        if p.tire_tracks > 0:
            lane_u = np.abs(np.mod(Xs, p.lane_width) - p.lane_width / 2)
            fsub[(np.abs(lane_u - 0.8) < 0.25) & (ms == 0)] *= 1.0 - p.tire_tracks
    return fac
