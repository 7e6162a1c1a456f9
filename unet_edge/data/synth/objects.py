"""What stands in a street scene: buildings and walls, fences, hedges, trees, poles, signs and
traffic lights, cars, pedestrians and street furniture (dataclasses in road coordinates, metres,
RGB 0..255), and how a random one of each is drawn from an ``rng``. Drawing them is in
:mod:`.buildings`, :mod:`.roadside` and :mod:`.traffic`; laying them out along the road in
:mod:`.params`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .colours import (BUILDING_COLOURS, CAR_COLOURS, FENCE_COLOURS, POLE_COLOURS, WALL_COLOURS, choice_colour,
                      clip_rgb, clothing_colour, grey, hsv, jitter, pick, vegetation_colour)
from .constants import BUILDING, WALL


@dataclass
class Facade:
    """A building or a wall: a box along one side of the road.

    ``x`` is the road-coordinate lateral position (m) of the face that looks at the road; the box
    extends ``depth`` m away from the road. ``s0 < s1`` (m along the road), ``height`` m.
    Buildings have ``floors`` rows of windows in ``bays`` of ``bay`` m; ``wtype`` (bays, floors)
    uint8 picks each window's look (0 dark, 1 reflective, 2 lit). ``shade`` (bays,) float is a
    per-bay brightness jitter. ``style``: buildings 0 plain, 1 siding stripes, 2 shop front;
    walls 0 plain, 1 pillars, 2 pillars + streaks.
    """

    cls: int
    side: int
    x: float
    s0: float
    s1: float
    height: float
    depth: float
    color: np.ndarray
    style: int = 0
    bay: float = 3.0
    floor_h: float = 3.2
    floors: int = 0
    win_w: float = 0.5
    win_h: float = 0.5
    win_colors: np.ndarray | None = None   # (3, 3) RGB for dark / reflective / lit windows
    wtype: np.ndarray | None = None
    shade: np.ndarray | None = None
    accent: np.ndarray | None = None       # shop sign band / coping / pillar colour


@dataclass
class Fence:
    """A fence along one side: posts every ``spacing`` m and rails (style 0), planks (1) or mesh (2)."""

    side: int
    x: float
    s0: float
    s1: float
    height: float
    color: np.ndarray
    style: int
    spacing: float


@dataclass
class Hedge:
    """A bush row: a ``depth`` m thick box with a wavy top (``wave``: heights every metre)."""

    side: int
    x: float
    s0: float
    s1: float
    height: float
    depth: float
    color: np.ndarray
    wave: np.ndarray


@dataclass
class Tree:
    """A tree at (``x``, ``s``) m. Its shape (trunk, crown blobs, colours) is drawn from ``seed`` the
    first time it is needed (:func:`tree_shape`), so only trees that get drawn cost anything."""

    x: float
    s: float
    seed: int


@dataclass
class TreeShape:
    """Trunk plus a crown of ``blobs`` (n, 3) = (dx, dy, r) m around (x, ``crown_y``), each of colour
    ``blob_colors`` (n, 3); leaf ``speckles`` (m, 4) = (dx, dy, r, brightness) inside the crown
    (None until a near view needs them, see :func:`tree_speckles`)."""

    trunk_h: float
    trunk_w: float
    trunk_color: np.ndarray
    crown_y: float
    blobs: np.ndarray
    blob_colors: np.ndarray
    speckles: np.ndarray | None
    conifer: bool
    crown_r: float   # m, horizontal radius of the whole crown (for its shadow)
    crown_dy: float  # m, height of the crown's middle above crown_y


@dataclass
class Pole:
    """A street light or utility pole; ``arm`` m reaches toward the road centre (0: none)."""

    x: float
    s: float
    height: float
    width: float
    color: np.ndarray
    arm: float


@dataclass
class Sign:
    """A traffic sign (plate of ``shape`` circle/triangle/rect/diamond/octagon) or a traffic light, on a pole."""

    x: float
    s: float
    pole_h: float
    size: float
    shape: str
    border: np.ndarray
    fill: np.ndarray
    symbol: np.ndarray
    pole_color: np.ndarray
    back: bool = False      # seen from behind: a plain grey plate
    light: int = -1         # traffic light: lit lamp 0 red, 1 amber, 2 green; -1 for a sign


@dataclass
class Car:
    """A vehicle: centre lateral ``x``, centre at ``s0 + v * t`` along the road (``v`` is its speed as a
    fraction of the camera's; 0 parked, < 0 oncoming). ``kind``: 0 car, 1 van, 2 truck/bus."""

    x: float
    s0: float
    v: float
    length: float
    width: float
    height: float
    color: np.ndarray
    glass: np.ndarray
    kind: int
    oncoming: bool


@dataclass
class Pedestrian:
    """A walking person: feet at (``x``, ``s0 + v t``) heading along the road (``dir`` +-1) or across it
    (``across``), ``height`` m, gait phase ``phase`` rad at t = 0 (``v == 0`` and not across: standing)."""

    x: float
    s0: float
    v: float
    height: float
    shirt: np.ndarray
    pants: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    phase: float
    direction: int
    across: bool = False
    walking: bool = True


@dataclass
class Prop:
    """Street furniture labelled Other (bins, cabinets, benches, planters): a box."""

    x: float
    s: float
    width: float
    depth: float
    height: float
    color: np.ndarray


def random_building(rng: np.random.Generator, side: int, outer: float, s: float, district: str, lit_p: float,
                    sky_bottom: np.ndarray) -> tuple[Facade, float, float]:
    """A building starting at ``s`` m on ``side``, set back from the sidewalk's outer edge ``outer`` (m).

    ``lit_p`` is the share of lit windows; reflective windows mirror ``sky_bottom`` (RGB).
    Returns (facade, its length along the road in m, its setback in m).
    """
    seg = rng.uniform(8.0, 40.0)
    setback = rng.uniform(0.0, 1.5) if district == "urban" and rng.random() < 0.7 else rng.uniform(0.5, 9.0)
    height = rng.uniform(7.0, 32.0) if district == "urban" else rng.uniform(3.5, 10.0)
    floor_h = rng.uniform(2.8, 3.8)
    floors = max(1, int(height / floor_h))
    bay = rng.uniform(2.4, 4.2)
    n_b = max(1, int(round(seg / bay)))
    colour = choice_colour(rng, BUILDING_COLOURS)
    dark = jitter(rng, (40, 48, 58), 10) * rng.uniform(0.6, 1.3)
    refl = clip_rgb(0.55 * sky_bottom + 0.45 * dark + rng.normal(0, 8, 3))
    lit = jitter(rng, (250, 215, 150), 10)
    u = rng.random((n_b, floors))
    wt = ((u > 0.6 - lit_p / 2).astype(np.uint8) + (u > 1.0 - lit_p)).astype(np.uint8)
    style = pick(rng, (0.5, 0.2, 0.3))
    accent = hsv(rng, (0, 360), (0.3, 0.9), (0.3, 0.9)) if style == 2 else clip_rgb(colour * rng.uniform(0.6, 0.9))
    x = outer + side * setback
    f = Facade(BUILDING, side, x, s, s + seg, height, rng.uniform(8.0, 20.0), colour, style, seg / n_b,
               height / floors, floors, rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.65),
               np.stack([dark, refl, lit]), wt, rng.normal(1.0, 0.035, n_b), accent)
    return f, seg, setback


def random_wall(rng: np.random.Generator, side: int, outer: float, s: float) -> tuple[Facade, float]:
    """A wall starting at ``s`` m on ``side`` just beyond ``outer`` (m); returns (facade, its length in m)."""
    seg = rng.uniform(6.0, 30.0)
    colour = choice_colour(rng, WALL_COLOURS)
    f = Facade(WALL, side, outer + side * rng.uniform(0.0, 0.6), s, s + seg,
               rng.uniform(1.0, 3.8), rng.uniform(0.2, 0.5), colour,
               int(rng.integers(0, 3)), rng.uniform(2.5, 5.0),
               accent=clip_rgb(colour * rng.uniform(0.75, 1.2)))
    return f, seg


def random_boundary(rng: np.random.Generator, side: int, x: float, s0: float, s1: float,
                    kind: str | None = None) -> Fence | Hedge:
    """A fence or hedge (``kind``; None: drawn, 55% fences) along ``side`` at ``x`` over [s0, s1] m."""
    kind = kind or ("fence" if rng.random() < 0.55 else "hedge")
    if kind == "fence":
        style = pick(rng, (0.45, 0.3, 0.25))
        return Fence(side, x, s0, s1, rng.uniform(0.8, 2.0), choice_colour(rng, FENCE_COLOURS), style,
                     rng.uniform(1.8, 3.2))
    n = int(s1 - s0) + 3
    wave = np.convolve(rng.normal(0, 0.12, n + 4), np.ones(3) / 3, mode="same")[2:n + 2]
    return Hedge(side, x, s0, s1, rng.uniform(0.6, 1.9), rng.uniform(0.6, 1.5), vegetation_colour(rng, 0.05), wave)


def random_tree(rng: np.random.Generator, x: float, s: float) -> Tree:
    """A tree at (``x``, ``s``) m with its own shape seed."""
    return Tree(float(x), float(s), int(rng.integers(0, 2**31 - 1)))


def tree_shape(tr: Tree) -> TreeShape:
    """The (cached) shape of a tree, a pure function of ``tr.seed``."""
    shape = tr.__dict__.get("_shape")
    if shape is not None:
        return shape
    rng = np.random.default_rng(tr.seed)
    base = vegetation_colour(rng)
    u = rng.random(10)
    trunk_h = 1.5 + 2.0 * u[0]
    conifer = u[1] < 0.18
    if conifer:
        n = 4 + int(u[2] * 3)
        hgt, r0 = 5.0 + 6.0 * u[3], 1.2 + 1.2 * u[4]
        ys = np.linspace(0.0, hgt, n)
        blobs = np.stack([np.zeros(n), ys, r0 * (1.0 - ys / hgt * 0.85)], 1)
        crown_y = trunk_h * 0.6
    else:
        n = 7 + int(u[2] * 8)
        rx, ry = 1.3 + 2.2 * u[3], 1.2 + 1.8 * u[4]
        v = rng.random((3, n))
        ang, rad = 2 * math.pi * v[0], np.sqrt(v[1])
        r = (0.35 + 0.25 * v[2]) * min(rx, ry) + 0.25
        blobs = np.stack([rx * 0.75 * rad * np.cos(ang), ry * 0.75 * rad * np.sin(ang), r], 1)
        blobs = blobs[np.argsort(blobs[:, 1])]  # lower (shadier) blobs first
        crown_y = trunk_h + ry * 0.6
    w = rng.random((4, n))
    shades = 0.7 + 0.55 * w[0] + 0.1 * (blobs[:, 1] / (np.abs(blobs[:, 1]).max() + 1e-6))
    cols = np.clip(base[None, :] * shades[:, None] + 10.0 * (w[1:].T - 0.5), 0, 255)
    trunk = jitter(rng, (90, 70, 55), 18) if u[6] < 0.7 else grey(rng, 70, 140, 4)
    shape = TreeShape(trunk_h, 0.18 + 0.27 * u[7], trunk, crown_y, blobs, cols, None, conifer,
                      float(np.abs(blobs[:, 0]).max() + blobs[:, 2].max() * 0.8),
                      float(blobs[-1, 1] * 0.4 if conifer else blobs[:, 1].mean()))
    tr.__dict__["_shape"] = shape
    return shape


def tree_speckles(tr: Tree, shape: TreeShape) -> np.ndarray:
    """Leaf speckles (m, 4) = (dx, dy, r, brightness) inside a crown (cached), from the tree's seed."""
    if shape.speckles is None:
        rng = np.random.default_rng(tr.seed + 1)
        blobs = shape.blobs
        m = 35
        span = np.abs(blobs[:, :2]).max() + 0.5
        z = rng.random((5, m))
        sp = np.stack([span * (2 * z[0] - 1), span * (2 * z[1] - 1), 0.06 + 0.1 * z[2],
                       np.where(z[3] < 0.5, 0.85, 1.12) * (0.97 + 0.06 * z[4])], 1)
        inside = (np.hypot(blobs[None, :, 0] - sp[:, None, 0], blobs[None, :, 1] - sp[:, None, 1])
                  - blobs[None, :, 2] < -sp[:, None, 2]).any(1)
        shape.speckles = sp[inside] if not shape.conifer else sp[:0]
    return shape.speckles


def random_sign(rng: np.random.Generator, x: float, s: float) -> Sign:
    """A traffic light (20%) or a sign of a random shape and colours at (``x``, ``s``) m."""
    pole_col = choice_colour(rng, POLE_COLOURS)
    if rng.random() < 0.2:
        return Sign(x, s, rng.uniform(3.0, 4.5), rng.uniform(0.35, 0.5), "light", grey(rng, 15, 60, 3),
                    grey(rng, 15, 60, 3), grey(rng, 15, 60, 3), pole_col, light=int(rng.integers(0, 3)))
    kind = pick(rng, (0.3, 0.2, 0.25, 0.1, 0.15))
    shape = ["circle", "triangle", "rect", "diamond", "octagon"][kind]
    white = grey(rng, 200, 245, 3)
    red = jitter(rng, (200, 30, 35), 15)
    blue = jitter(rng, (30, 70, 170), 15)
    yellow = jitter(rng, (235, 195, 30), 15)
    green = jitter(rng, (20, 120, 60), 15)
    if shape == "circle":
        border, fill = (red, white) if rng.random() < 0.6 else (white, blue)
    elif shape == "triangle":
        border, fill = red, (white if rng.random() < 0.7 else yellow)
    elif shape == "rect":
        border, fill = white, [blue, green, white, yellow][int(rng.integers(0, 4))]
    elif shape == "diamond":
        border, fill = grey(rng, 10, 40, 3), yellow
    else:
        border, fill = white, red
    symbol = grey(rng, 10, 50, 3) if fill is white or fill is yellow else white
    back = rng.random() < 0.15
    return Sign(x, s, rng.uniform(2.0, 2.8), rng.uniform(0.55, 0.95), shape, border, fill, symbol, pole_col, back)


def random_car(rng: np.random.Generator, v: float, oncoming: bool) -> Car:
    """A car, van or truck of speed ``v`` (fraction of the camera's); the caller places it (``x``, ``s0``)."""
    kind = pick(rng, (0.75, 0.18, 0.07))
    if kind == 0:
        L, W, H = rng.uniform(3.7, 5.0), rng.uniform(1.65, 1.95), rng.uniform(1.35, 1.6)
    elif kind == 1:
        L, W, H = rng.uniform(4.5, 5.8), rng.uniform(1.85, 2.1), rng.uniform(1.8, 2.4)
    else:
        L, W, H = rng.uniform(7.0, 12.0), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.4)
    glass = jitter(rng, (35, 45, 55), 10) * rng.uniform(0.6, 2.2)
    return Car(0.0, 0.0, v, L, W, H, choice_colour(rng, CAR_COLOURS), clip_rgb(glass), kind, oncoming)


def random_pedestrian(rng: np.random.Generator, x: float, s: float) -> Pedestrian:
    """A walking (80%) or standing adult or child with feet at (``x``, ``s``) m, heading along the road."""
    child = rng.random() < 0.1
    h = rng.uniform(1.1, 1.4) if child else rng.uniform(1.55, 1.92)
    skin = hsv(rng, (15, 35), (0.25, 0.6), (0.3, 0.95))
    walking = rng.random() < 0.8
    direction = 1 if rng.random() < 0.5 else -1
    v = direction * rng.uniform(0.08, 0.2) if walking else 0.0
    hair = grey(rng, 10, 60, 6) if rng.random() < 0.8 else jitter(rng, (150, 110, 60), 25)
    return Pedestrian(float(x), float(s), v, h, clothing_colour(rng), clothing_colour(rng), skin, hair,
                      rng.uniform(0, 2 * math.pi), direction, False, walking)
