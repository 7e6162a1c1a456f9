"""Random colours for the scene generator: greys, jitter around a base colour, HSV ranges and the
weighted per-class colour tables (cars, buildings, walls, fences, poles, street furniture, plants,
clothing). RGB float64 arrays in 0..255; every draw comes from the ``rng`` passed in."""
from __future__ import annotations

from typing import Callable

import numpy as np


def clip_rgb(c) -> np.ndarray:
    """``c`` as float64 RGB clipped to 0..255."""
    return np.minimum(np.maximum(np.asarray(c, dtype=np.float64), 0.0), 255.0)


def grey(rng: np.random.Generator, lo: float, hi: float, chroma: float = 5.0) -> np.ndarray:
    """A grey in [lo, hi] with a little random tint."""
    return clip_rgb(rng.uniform(lo, hi) + rng.normal(0.0, chroma, 3))


def jitter(rng: np.random.Generator, base, sd: float) -> np.ndarray:
    """``base`` RGB plus Gaussian noise of ``sd`` per channel, clipped."""
    return clip_rgb(np.asarray(base, dtype=np.float64) + rng.normal(0.0, sd, 3))


def hsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    """A colour with hue in degrees [h0, h1] (wraps), saturation and value in [0, 1] ranges."""
    hh = (rng.uniform(*h) % 360.0) / 60.0
    ss, vv = rng.uniform(*s), rng.uniform(*v) * 255.0
    i = int(hh) % 6
    fr = hh - int(hh)
    p, q, w = vv * (1 - ss), vv * (1 - ss * fr), vv * (1 - ss * (1 - fr))
    return clip_rgb([(vv, w, p), (q, vv, p), (p, vv, w), (p, q, vv), (w, p, vv), (vv, p, q)][i])


def pick(rng: np.random.Generator, weights) -> int:
    """Index drawn with probability proportional to ``weights`` (faster than ``rng.choice(p=...)``)."""
    u = rng.random() * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u < acc:
            return i
    return len(weights) - 1


def choice_colour(rng: np.random.Generator, table: list[tuple[float, Callable[[np.random.Generator], np.ndarray]]]) -> np.ndarray:
    """A colour from a weighted ``table`` of (weight, draw function) pairs."""
    return table[pick(rng, [w for w, _ in table])][1](rng)


CAR_COLOURS = [
    (0.18, lambda r: grey(r, 205, 245, 3)),                      # white
    (0.16, lambda r: grey(r, 12, 40, 3)),                        # black
    (0.20, lambda r: grey(r, 140, 200, 4)),                      # silver
    (0.14, lambda r: grey(r, 60, 130, 5)),                       # grey (road-like)
    (0.08, lambda r: hsv(r, (350, 370), (0.6, 0.9), (0.45, 0.8))),  # red
    (0.09, lambda r: hsv(r, (200, 235), (0.4, 0.85), (0.25, 0.7))),  # blue
    (0.04, lambda r: hsv(r, (90, 160), (0.3, 0.7), (0.2, 0.55))),   # green
    (0.05, lambda r: hsv(r, (25, 55), (0.2, 0.5), (0.35, 0.75))),   # beige / brown (building-like)
    (0.03, lambda r: hsv(r, (40, 60), (0.7, 1.0), (0.75, 0.95))),   # yellow (taxi)
    (0.03, lambda r: hsv(r, (0, 360), (0.3, 0.9), (0.3, 0.9))),     # anything
]
BUILDING_COLOURS = [
    (0.30, lambda r: grey(r, 85, 195, 5)),                         # concrete
    (0.16, lambda r: jitter(r, (150, 82, 64), 18)),                # brick
    (0.16, lambda r: jitter(r, (196, 178, 146), 18)),              # sand / beige
    (0.12, lambda r: grey(r, 195, 235, 4)),                        # white render
    (0.08, lambda r: grey(r, 45, 85, 4)),                          # dark
    (0.10, lambda r: hsv(r, (0, 360), (0.12, 0.4), (0.55, 0.9))),  # pastel
    (0.08, lambda r: jitter(r, (86, 110, 132), 15)),               # glass / blue-grey
]
WALL_COLOURS = [
    (0.45, lambda r: grey(r, 75, 185, 6)),
    (0.20, lambda r: jitter(r, (145, 135, 115), 20)),
    (0.15, lambda r: jitter(r, (140, 80, 62), 18)),
    (0.20, lambda r: hsv(r, (0, 360), (0.08, 0.35), (0.35, 0.85))),
]
FENCE_COLOURS = [
    (0.30, lambda r: jitter(r, (125, 92, 62), 20)),    # wood
    (0.30, lambda r: grey(r, 70, 170, 5)),            # metal
    (0.15, lambda r: jitter(r, (45, 78, 52), 12)),     # green
    (0.13, lambda r: grey(r, 200, 240, 3)),           # white
    (0.12, lambda r: grey(r, 20, 50, 3)),             # black
]
POLE_COLOURS = [
    (0.50, lambda r: grey(r, 80, 175, 5)),
    (0.20, lambda r: grey(r, 25, 60, 3)),
    (0.15, lambda r: jitter(r, (50, 75, 60), 10)),
    (0.15, lambda r: jitter(r, (105, 82, 60), 15)),
]
PROP_COLOURS = [
    (0.35, lambda r: grey(r, 50, 170, 6)),
    (0.25, lambda r: jitter(r, (50, 90, 60), 15)),
    (0.20, lambda r: jitter(r, (60, 80, 130), 20)),
    (0.20, lambda r: jitter(r, (125, 90, 60), 20)),
]


def vegetation_colour(rng: np.random.Generator, autumn: float = 0.12) -> np.ndarray:
    """A leaf green, or with probability ``autumn`` a yellow-brown."""
    if rng.random() < autumn:
        return hsv(rng, (20, 55), (0.35, 0.75), (0.3, 0.7))
    return hsv(rng, (65, 140), (0.25, 0.75), (0.18, 0.62))


def clothing_colour(rng: np.random.Generator) -> np.ndarray:
    """A dark grey (45%) or any hue."""
    if rng.random() < 0.45:
        return grey(rng, 15, 120, 6)
    return hsv(rng, (0, 360), (0.2, 0.85), (0.15, 0.85))
