"""Procedural CARLA-style road scenes: a synthetic segmentation dataset and forward-driving videos.

Every frame is a pinhole-camera view of a procedurally laid-out street, rendered with numpy and
OpenCV polygon drawing, together with its exact label map in CARLA 0.9's 13 classes
(:data:`unet_edge.data.layouts.CARLA_CLASSES`; the sky is 0 = Unlabeled, as CARLA's camera labels it).

Geometry (world units are metres)
    Road coordinates: ``X`` lateral (+ right of the road's centre line), ``Y`` up from the ground,
    ``S`` distance along the road. The camera sits ``cam_height`` above the road at ``S = t``,
    ``cam_x`` right of the centre line and looks along the road. A point at forward distance
    ``Z = S - t`` projects to ``u = cx + f (X + c(Z)) / Z``, ``v = horizon + f (cam_height - Y) / Z``
    where ``c(Z)`` is the camera-frame lateral offset of the road centre line: the double integral
    of the road's curvature ``k(s) = k0 + k1 sin(2 pi s / L + phi)`` (small-angle approximation),
    plus yaw. The ground (road, lane markings, crosswalks, curbs, sidewalks, verges) is rendered per
    pixel by inverting that projection row by row; everything standing on it (buildings, walls,
    fences, hedges, trees, poles, signs, traffic lights, street furniture, parked and moving cars,
    walking pedestrians) is drawn as projected polygons, far to near (painter's algorithm on the
    distance to the camera, long facades cut into short segments), image and labels in the same
    order so occlusions agree.

Appearance
    Per-class colours are drawn from overlapping distributions (grey asphalt, grey concrete
    sidewalks, walls, buildings, poles, silver cars, overcast skies...), with world-anchored
    textures (asphalt grain and patches, tyre tracks, paving tiles, grass noise, windows, siding,
    planks, leafy crowns), sun shading of faces, cast shadows, distance fog, then global gain,
    contrast, tint, gamma, vignetting, camera roll, optical blur and sensor noise. So a model must
    use shape, context and texture, not colour alone.

Time
    ``t`` is the forward travel in metres: the same :class:`SceneParams` rendered at increasing
    ``t`` is a temporally coherent drive (dashes, poles, facades and parked cars approach and grow;
    other cars keep their own speed; pedestrians walk; the sky turns with the road's heading).

Entry points: :func:`render_scene`, :func:`generate_dataset` (CARLA layout on disk) and
:func:`render_drive` (mp4 + optional labelled frames).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import DataError, SourceError, UnetEdgeError
from ..io_utils import atomic_path, write_text_atomic
from ..progress import progress_iter
from .layouts import CARLA_CLASSES

__all__ = ["SceneParams", "render_scene", "generate_dataset", "render_drive", "DEFAULT_SIZE"]

(UNLABELED, BUILDING, FENCE, OTHER, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION, VEHICLE,
 WALL, TRAFFICSIGN) = range(13)

DEFAULT_SIZE = (240, 320)  # (H, W) pixels
Z_NEAR = 0.8        # m: nearer geometry is clipped
Z_FAR_SMALL = 150.0  # m: cars, people, poles, signs, trees beyond this are not drawn
Z_FAR_BIG = 320.0    # m: buildings, walls, fences beyond this are not drawn
Z_GROUND_MAX = 2000.0  # m: distance of the ground rows just under the horizon
_SHIFT = 4           # cv2 sub-pixel bits
_SCALE = float(1 << _SHIFT)



# --------------------------------------------------------------------------------------------
# colour helpers
# --------------------------------------------------------------------------------------------

def _clip_rgb(c) -> np.ndarray:
    return np.minimum(np.maximum(np.asarray(c, dtype=np.float64), 0.0), 255.0)


def _grey(rng: np.random.Generator, lo: float, hi: float, chroma: float = 5.0) -> np.ndarray:
    """A grey in [lo, hi] with a little random tint."""
    return _clip_rgb(rng.uniform(lo, hi) + rng.normal(0.0, chroma, 3))


def _jitter(rng: np.random.Generator, base, sd: float) -> np.ndarray:
    return _clip_rgb(np.asarray(base, dtype=np.float64) + rng.normal(0.0, sd, 3))


def _hsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
    """A colour with hue in degrees [h0, h1] (wraps), saturation and value in [0, 1] ranges."""
    hh = (rng.uniform(*h) % 360.0) / 60.0
    ss, vv = rng.uniform(*s), rng.uniform(*v) * 255.0
    i = int(hh) % 6
    fr = hh - int(hh)
    p, q, w = vv * (1 - ss), vv * (1 - ss * fr), vv * (1 - ss * (1 - fr))
    return _clip_rgb([(vv, w, p), (q, vv, p), (p, vv, w), (p, q, vv), (w, p, vv), (vv, p, q)][i])


def _pick(rng: np.random.Generator, weights) -> int:
    """Index drawn with probability proportional to ``weights`` (faster than ``rng.choice(p=...)``)."""
    u = rng.random() * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u < acc:
            return i
    return len(weights) - 1


def _choice_colour(rng: np.random.Generator, table: list[tuple[float, Callable[[np.random.Generator], np.ndarray]]]) -> np.ndarray:
    return table[_pick(rng, [w for w, _ in table])][1](rng)


_CAR_COLOURS = [
    (0.18, lambda r: _grey(r, 205, 245, 3)),                      # white
    (0.16, lambda r: _grey(r, 12, 40, 3)),                        # black
    (0.20, lambda r: _grey(r, 140, 200, 4)),                      # silver
    (0.14, lambda r: _grey(r, 60, 130, 5)),                       # grey (road-like)
    (0.08, lambda r: _hsv(r, (350, 370), (0.6, 0.9), (0.45, 0.8))),  # red
    (0.09, lambda r: _hsv(r, (200, 235), (0.4, 0.85), (0.25, 0.7))),  # blue
    (0.04, lambda r: _hsv(r, (90, 160), (0.3, 0.7), (0.2, 0.55))),   # green
    (0.05, lambda r: _hsv(r, (25, 55), (0.2, 0.5), (0.35, 0.75))),   # beige / brown (building-like)
    (0.03, lambda r: _hsv(r, (40, 60), (0.7, 1.0), (0.75, 0.95))),   # yellow (taxi)
    (0.03, lambda r: _hsv(r, (0, 360), (0.3, 0.9), (0.3, 0.9))),     # anything
]
_BUILDING_COLOURS = [
    (0.30, lambda r: _grey(r, 85, 195, 5)),                         # concrete
    (0.16, lambda r: _jitter(r, (150, 82, 64), 18)),                # brick
    (0.16, lambda r: _jitter(r, (196, 178, 146), 18)),              # sand / beige
    (0.12, lambda r: _grey(r, 195, 235, 4)),                        # white render
    (0.08, lambda r: _grey(r, 45, 85, 4)),                          # dark
    (0.10, lambda r: _hsv(r, (0, 360), (0.12, 0.4), (0.55, 0.9))),  # pastel
    (0.08, lambda r: _jitter(r, (86, 110, 132), 15)),               # glass / blue-grey
]
_WALL_COLOURS = [
    (0.45, lambda r: _grey(r, 75, 185, 6)),
    (0.20, lambda r: _jitter(r, (145, 135, 115), 20)),
    (0.15, lambda r: _jitter(r, (140, 80, 62), 18)),
    (0.20, lambda r: _hsv(r, (0, 360), (0.08, 0.35), (0.35, 0.85))),
]
_FENCE_COLOURS = [
    (0.30, lambda r: _jitter(r, (125, 92, 62), 20)),    # wood
    (0.30, lambda r: _grey(r, 70, 170, 5)),            # metal
    (0.15, lambda r: _jitter(r, (45, 78, 52), 12)),     # green
    (0.13, lambda r: _grey(r, 200, 240, 3)),           # white
    (0.12, lambda r: _grey(r, 20, 50, 3)),             # black
]
_POLE_COLOURS = [
    (0.50, lambda r: _grey(r, 80, 175, 5)),
    (0.20, lambda r: _grey(r, 25, 60, 3)),
    (0.15, lambda r: _jitter(r, (50, 75, 60), 10)),
    (0.15, lambda r: _jitter(r, (105, 82, 60), 15)),
]
_PROP_COLOURS = [
    (0.35, lambda r: _grey(r, 50, 170, 6)),
    (0.25, lambda r: _jitter(r, (50, 90, 60), 15)),
    (0.20, lambda r: _jitter(r, (60, 80, 130), 20)),
    (0.20, lambda r: _jitter(r, (125, 90, 60), 20)),
]


def _vegetation_colour(rng: np.random.Generator, autumn: float = 0.12) -> np.ndarray:
    if rng.random() < autumn:
        return _hsv(rng, (20, 55), (0.35, 0.75), (0.3, 0.7))
    return _hsv(rng, (65, 140), (0.25, 0.75), (0.18, 0.62))


def _clothing_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.45:
        return _grey(rng, 15, 120, 6)
    return _hsv(rng, (0, 360), (0.2, 0.85), (0.15, 0.85))


# --------------------------------------------------------------------------------------------
# scene description
# --------------------------------------------------------------------------------------------

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
    first time it is needed (:func:`_tree_shape`), so only trees that get drawn cost anything."""

    x: float
    s: float
    seed: int


@dataclass
class _TreeShape:
    """Trunk plus a crown of ``blobs`` (n, 3) = (dx, dy, r) m around (x, ``crown_y``), each of colour
    ``blob_colors`` (n, 3); leaf ``speckles`` (m, 4) = (dx, dy, r, brightness) inside the crown
    (None until a near view needs them, see :func:`_speckles`)."""

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


@dataclass
class SceneParams:
    """The randomized layout and look of one street scene (all lengths in metres, colours RGB 0..255).

    Build with :meth:`SceneParams.random`; render with :func:`render_scene` at any travel ``t`` in
    ``[0, length - 150]`` (objects are laid out over ``S`` in ``[-30, length + 30]``).
    """

    # camera
    focal: float = 0.9          # focal length as a fraction of the image width
    horizon: float = 0.45       # horizon row as a fraction of the image height
    cam_height: float = 1.5
    cam_x: float = 1.7
    yaw: float = 0.0            # rad
    roll: float = 0.0           # deg
    weave: float = 0.0          # m of lateral weave while driving
    # road
    lanes_left: int = 1
    lanes_right: int = 1
    lane_width: float = 3.4
    shoulder_left: float = 0.0
    shoulder_right: float = 0.0
    sidewalk_left: float = 3.0
    sidewalk_right: float = 3.0
    curb_width: float = 0.2
    verge_left: int = VEGETATION
    verge_right: int = VEGETATION
    centre_line: int = 0        # 0 dashed, 1 solid, 2 double solid, 3 none
    edge_lines: bool = True
    line_width: float = 0.15
    dash_len: float = 3.0
    dash_period: float = 9.0
    crosswalks: list = field(default_factory=list)  # S positions (m)
    curv0: float = 0.0
    curv1: float = 0.0
    curv_period: float = 300.0
    curv_phase: float = 0.0
    # colours
    sky_top: np.ndarray = field(default_factory=lambda: np.array([70.0, 120.0, 200.0]))
    sky_bottom: np.ndarray = field(default_factory=lambda: np.array([190.0, 210.0, 235.0]))
    cloud_color: np.ndarray = field(default_factory=lambda: np.array([240.0, 240.0, 245.0]))
    cloud_cover: float = 0.3
    road_color: np.ndarray = field(default_factory=lambda: np.array([90.0, 90.0, 95.0]))
    line_color: np.ndarray = field(default_factory=lambda: np.array([235.0, 235.0, 230.0]))
    centre_color: np.ndarray = field(default_factory=lambda: np.array([235.0, 235.0, 230.0]))
    sidewalk_colors: np.ndarray = field(default_factory=lambda: np.array([[150.0] * 3, [150.0] * 3]))  # left, right
    curb_colors: np.ndarray = field(default_factory=lambda: np.array([[170.0] * 3, [170.0] * 3]))
    verge_colors: np.ndarray = field(default_factory=lambda: np.array([[80.0, 120.0, 50.0]] * 2))
    tile: float = 0.6
    tire_tracks: float = 0.08
    road_patches: float = 0.1
    # lighting and camera effects
    sun_azimuth: float = 0.5    # rad, 0 = straight ahead along +S, + toward +X
    sun_elevation: float = 0.7  # rad
    sun: float = 0.6            # direct light strength relative to ambient 1 - sun
    shadow: float = 0.45        # darkening in cast shadows
    fog_distance: float = 300.0
    gain: float = 1.0
    contrast: float = 1.0
    gamma: float = 1.0
    tint: np.ndarray = field(default_factory=lambda: np.ones(3))
    vignette: float = 0.1
    blur: float = 0.0           # Gaussian sigma in pixels at 320 px width
    noise: float = 2.0          # sensor noise sigma (0..255 scale)
    skyline: np.ndarray | None = None       # (n_az,) elevation (rad) of distant silhouettes, 0 = none
    skyline_cls: np.ndarray | None = None   # (n_az,) class per azimuth bin
    skyline_color: np.ndarray = field(default_factory=lambda: np.array([120.0, 130.0, 140.0]))
    # objects
    facades: list = field(default_factory=list)
    fences: list = field(default_factory=list)
    hedges: list = field(default_factory=list)
    trees: list = field(default_factory=list)
    poles: list = field(default_factory=list)
    signs: list = field(default_factory=list)
    cars: list = field(default_factory=list)
    pedestrians: list = field(default_factory=list)
    props: list = field(default_factory=list)
    seed: int = 0               # seeds the world-anchored textures and cloud field
    length: float = 300.0

    # ----------------------------------------------------------------------------------------
    @classmethod
    def random(cls, rng: np.random.Generator, length: float = 300.0) -> "SceneParams":
        """Draw a random scene from ``rng`` whose objects cover ``length`` m of road.

        Args:
            rng: numpy Generator; the scene is a pure function of its state.
            length: metres of road to populate (a drive to travel ``T`` m needs ``T + 200`` or so).
        """
        p = cls()
        p.length = float(length)
        p.seed = int(rng.integers(0, 2**31 - 1))
        district = ("urban", "suburban", "rural")[_pick(rng, (0.5, 0.35, 0.15))]
        weather = ("clear", "overcast", "dusk", "haze")[_pick(rng, (0.45, 0.3, 0.13, 0.12))]

        # camera
        p.focal = rng.uniform(0.7, 1.15)
        p.horizon = rng.uniform(0.36, 0.54)
        p.cam_height = rng.uniform(1.2, 2.1)
        p.yaw = rng.normal(0.0, 0.012)
        p.roll = float(np.clip(rng.normal(0.0, 1.3), -4, 4)) if rng.random() < 0.6 else 0.0
        p.weave = rng.uniform(0.0, 0.25)

        # road
        p.lane_width = rng.uniform(2.8, 3.8)
        p.lanes_right = 1 + _pick(rng, (0.7, 0.3))
        p.lanes_left = _pick(rng, (0.1, 0.65, 0.25))
        p.shoulder_left = 0.0 if rng.random() < 0.45 else rng.uniform(0.3, 2.6)
        p.shoulder_right = 0.0 if rng.random() < 0.45 else rng.uniform(0.3, 2.6)
        lane = int(rng.integers(0, p.lanes_right))
        p.cam_x = p.lane_width * (lane + 0.5) + rng.normal(0.0, 0.25)
        sw_hi = {"urban": 5.5, "suburban": 3.5, "rural": 2.0}[district]
        p.sidewalk_left = 0.0 if (district == "rural" and rng.random() < 0.6) else rng.uniform(1.2, sw_hi)
        p.sidewalk_right = 0.0 if (district == "rural" and rng.random() < 0.6) else rng.uniform(1.2, sw_hi)
        p.curb_width = rng.uniform(0.12, 0.3)
        p.verge_left = (VEGETATION, OTHER, SIDEWALK)[_pick(rng, (0.6, 0.2, 0.2))]
        p.verge_right = (VEGETATION, OTHER, SIDEWALK)[_pick(rng, (0.6, 0.2, 0.2))]
        p.centre_line = _pick(rng, (0.5, 0.15, 0.25, 0.1)) if p.lanes_left else 3
        p.edge_lines = bool(rng.random() < 0.6)
        p.line_width = rng.uniform(0.1, 0.22)
        p.dash_len = rng.uniform(1.5, 4.5)
        p.dash_period = p.dash_len + rng.uniform(2.0, 9.0)
        n_cw = rng.poisson(length / 250.0) if district != "rural" else 0
        p.crosswalks = sorted(float(x) for x in rng.uniform(8.0, length, n_cw))
        if rng.random() < 0.35:
            p.curv0 = 0.0
            p.curv1 = 0.0
        else:
            p.curv0 = rng.normal(0.0, 0.0018)
            p.curv1 = rng.uniform(0.0, 0.004)
        p.curv_period = rng.uniform(150.0, 450.0)
        p.curv_phase = rng.uniform(0.0, 2 * math.pi)

        # sky, light, weather
        if weather == "clear":
            p.sky_top = _jitter(rng, (55, 105, 190), 18)
            p.sky_bottom = _jitter(rng, (180, 205, 230), 14)
            p.cloud_color = _grey(rng, 225, 252, 3)
            p.cloud_cover = rng.uniform(0.0, 0.55)
            p.sun = rng.uniform(0.45, 0.75)
            p.shadow = rng.uniform(0.35, 0.6)
            p.fog_distance = rng.uniform(250.0, 700.0)
        elif weather == "overcast":
            g = rng.uniform(135, 215)
            p.sky_top = _grey(rng, g - 25, g, 4)
            p.sky_bottom = _grey(rng, g, g + 25, 4)
            p.cloud_color = _grey(rng, g - 40, g + 10, 3)
            p.cloud_cover = rng.uniform(0.4, 0.9)
            p.sun = rng.uniform(0.0, 0.2)
            p.shadow = rng.uniform(0.0, 0.15)
            p.fog_distance = rng.uniform(120.0, 350.0)
        elif weather == "dusk":
            p.sky_top = _jitter(rng, (45, 55, 105), 15)
            p.sky_bottom = _jitter(rng, (235, 150, 90), 20)
            p.cloud_color = _jitter(rng, (200, 120, 110), 20)
            p.cloud_cover = rng.uniform(0.1, 0.6)
            p.sun = rng.uniform(0.3, 0.6)
            p.shadow = rng.uniform(0.3, 0.55)
            p.fog_distance = rng.uniform(150.0, 400.0)
        else:  # haze
            p.sky_top = _grey(rng, 170, 215, 6)
            p.sky_bottom = _grey(rng, 195, 235, 6)
            p.cloud_color = _grey(rng, 215, 245, 3)
            p.cloud_cover = rng.uniform(0.0, 0.4)
            p.sun = rng.uniform(0.2, 0.5)
            p.shadow = rng.uniform(0.15, 0.35)
            p.fog_distance = rng.uniform(45.0, 130.0)
        p.sun_azimuth = rng.uniform(-math.pi, math.pi)
        p.sun_elevation = rng.uniform(0.12, 0.3) if weather == "dusk" else rng.uniform(0.3, 1.2)
        p.gain = rng.uniform(0.7, 1.25) * (0.8 if weather == "dusk" else 1.0)
        p.contrast = rng.uniform(0.75, 1.25)
        p.gamma = rng.uniform(0.8, 1.25)
        p.tint = np.clip(rng.normal(1.0, 0.045, 3), 0.85, 1.15)
        p.vignette = rng.uniform(0.0, 0.35)
        p.blur = 0.0 if rng.random() < 0.45 else rng.uniform(0.3, 1.2)
        p.noise = rng.uniform(0.0, 7.0)

        # ground materials
        p.road_color = _grey(rng, 45, 135, 4) if rng.random() < 0.85 else _jitter(rng, (120, 105, 90), 15)
        p.line_color = _grey(rng, 200, 250, 3) * rng.uniform(0.75, 1.0)
        p.centre_color = _jitter(rng, (230, 185, 45), 15) if rng.random() < 0.4 else p.line_color.copy()
        side_cols = []
        tile_kind = ("concrete", "paver", "beige")[_pick(rng, (0.6, 0.2, 0.2))]
        for _ in range(2):
            if tile_kind == "concrete":
                side_cols.append(_grey(rng, 95, 205, 5))
            elif tile_kind == "paver":
                side_cols.append(_jitter(rng, (150, 100, 90), 20))
            else:
                side_cols.append(_jitter(rng, (190, 175, 150), 18))
        p.sidewalk_colors = np.stack(side_cols)
        p.curb_colors = np.stack([_grey(rng, 110, 215, 4) for _ in range(2)])
        verge = []
        for v in (p.verge_left, p.verge_right):
            if v == VEGETATION:
                verge.append(_hsv(rng, (45, 120), (0.25, 0.7), (0.25, 0.6)))
            elif v == OTHER:
                verge.append(_jitter(rng, (125, 105, 80), 20))
            else:
                verge.append(_grey(rng, 100, 190, 5))
        p.verge_colors = np.stack(verge)
        p.tile = rng.uniform(0.3, 1.2)
        p.tire_tracks = rng.uniform(0.0, 0.15)
        p.road_patches = rng.uniform(0.0, 0.18)

        # distant skyline (buildings or a tree line above the horizon)
        if rng.random() < 0.65:
            n = 720
            prof = np.zeros(n)
            clsv = np.zeros(n, dtype=np.uint8)
            i = 0
            city = district == "urban" and rng.random() < 0.7
            while i < n:
                w = int(rng.integers(2, 14))
                if rng.random() < (0.75 if city else 0.2):
                    prof[i:i + w] = rng.uniform(0.005, 0.06)
                    clsv[i:i + w] = BUILDING
                elif rng.random() < 0.7:
                    prof[i:i + w] = np.clip(rng.uniform(0.005, 0.03) + rng.normal(0, 0.004, len(prof[i:i + w])), 0, None)
                    clsv[i:i + w] = VEGETATION
                i += w
            p.skyline, p.skyline_cls = prof, clsv
            fog_col = p.sky_bottom
            p.skyline_color = _clip_rgb(fog_col * rng.uniform(0.55, 0.9) + rng.normal(0, 6, 3))

        _populate(p, rng, district, weather)
        return p

    # ----------------------------------------------------------------------------------------
    def road_edges(self) -> tuple[float, float]:
        """(left, right) lateral positions (m, road coordinates) of the road's edges (the curbs)."""
        lw = self.lane_width
        return -(self.lanes_left * lw + self.shoulder_left), self.lanes_right * lw + self.shoulder_right

    def sidewalk_of(self, side: int) -> float:
        return self.sidewalk_right if side > 0 else self.sidewalk_left


def _populate(p: SceneParams, rng: np.random.Generator, district: str, weather: str) -> None:
    """Lay out the objects of a scene along ``[-30, p.length + 30]`` m."""
    left_edge, right_edge = p.road_edges()
    s_lo, s_hi = -30.0, p.length + 30.0
    lit_p = 0.35 if weather == "dusk" else 0.02

    for side in (-1, 1):
        edge = right_edge if side > 0 else left_edge
        sw = p.sidewalk_of(side)
        outer = edge + side * sw  # outer edge of the sidewalk
        probs = {"urban": [0.62, 0.14, 0.05, 0.05, 0.14], "suburban": [0.35, 0.1, 0.2, 0.2, 0.15],
                 "rural": [0.1, 0.05, 0.2, 0.25, 0.4]}[district]
        s = s_lo + rng.uniform(-10, 5)
        while s < s_hi:
            kind = ("building", "wall", "fence", "hedge", "gap")[_pick(rng, probs)]
            if kind == "building":
                seg = rng.uniform(8.0, 40.0)
                setback = rng.uniform(0.0, 1.5) if district == "urban" and rng.random() < 0.7 else rng.uniform(0.5, 9.0)
                height = rng.uniform(7.0, 32.0) if district == "urban" else rng.uniform(3.5, 10.0)
                floor_h = rng.uniform(2.8, 3.8)
                floors = max(1, int(height / floor_h))
                bay = rng.uniform(2.4, 4.2)
                n_b = max(1, int(round(seg / bay)))
                colour = _choice_colour(rng, _BUILDING_COLOURS)
                dark = _jitter(rng, (40, 48, 58), 10) * rng.uniform(0.6, 1.3)
                refl = _clip_rgb(0.55 * p.sky_bottom + 0.45 * dark + rng.normal(0, 8, 3))
                lit = _jitter(rng, (250, 215, 150), 10)
                u = rng.random((n_b, floors))
                wt = ((u > 0.6 - lit_p / 2).astype(np.uint8) + (u > 1.0 - lit_p)).astype(np.uint8)
                style = _pick(rng, (0.5, 0.2, 0.3))
                accent = _hsv(rng, (0, 360), (0.3, 0.9), (0.3, 0.9)) if style == 2 else _clip_rgb(colour * rng.uniform(0.6, 0.9))
                x = outer + side * setback
                p.facades.append(Facade(
                    BUILDING, side, x, s, s + seg, height, rng.uniform(8.0, 20.0), colour, style, seg / n_b,
                    height / floors, floors, rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.65),
                    np.stack([dark, refl, lit]), wt, rng.normal(1.0, 0.035, n_b), accent))
                if setback > 3.0 and rng.random() < 0.45:
                    _add_boundary(p, rng, side, outer + side * rng.uniform(0.1, 0.6), s, s + seg)
                elif setback > 2.0 and rng.random() < 0.4:
                    for _ in range(int(rng.integers(1, 3))):
                        p.trees.append(_random_tree(rng, outer + side * rng.uniform(1.0, setback - 1.0), rng.uniform(s, s + seg)))
            elif kind == "wall":
                seg = rng.uniform(6.0, 30.0)
                colour = _choice_colour(rng, _WALL_COLOURS)
                p.facades.append(Facade(WALL, side, outer + side * rng.uniform(0.0, 0.6), s, s + seg,
                                        rng.uniform(1.0, 3.8), rng.uniform(0.2, 0.5), colour,
                                        int(rng.integers(0, 3)), rng.uniform(2.5, 5.0),
                                        accent=_clip_rgb(colour * rng.uniform(0.75, 1.2))))
                if rng.random() < 0.35:
                    p.trees.append(_random_tree(rng, outer + side * rng.uniform(2.0, 6.0), rng.uniform(s, s + seg)))
            elif kind in ("fence", "hedge"):
                seg = rng.uniform(5.0, 28.0)
                _add_boundary(p, rng, side, outer + side * rng.uniform(0.0, 0.6), s, s + seg, kind)
                if rng.random() < 0.5:
                    p.trees.append(_random_tree(rng, outer + side * rng.uniform(2.0, 8.0), rng.uniform(s, s + seg)))
            else:
                seg = rng.uniform(3.0, 18.0)
                for _ in range(int(rng.poisson(seg / 10.0 * (2 if district == "rural" else 1)))):
                    p.trees.append(_random_tree(rng, outer + side * rng.uniform(1.0, 12.0), rng.uniform(s, s + seg)))
                if rng.random() < 0.15:
                    p.props.append(Prop(outer + side * rng.uniform(0.5, 3.0), rng.uniform(s, s + seg),
                                        rng.uniform(0.6, 1.4), rng.uniform(0.4, 0.8), rng.uniform(0.9, 1.6),
                                        _choice_colour(rng, _PROP_COLOURS)))
            s += seg + (rng.uniform(0.5, 6.0) if rng.random() < 0.45 else 0.0)

        # street trees in the sidewalk (or verge)
        if rng.random() < 0.5:
            spacing = rng.uniform(7.0, 16.0)
            x = edge + side * (sw * rng.uniform(0.55, 0.85) if sw > 0 else rng.uniform(1.0, 2.5))
            for s_t in np.arange(s_lo + rng.uniform(0, spacing), s_hi, spacing):
                if rng.random() < 0.85:
                    p.trees.append(_random_tree(rng, x + rng.normal(0, 0.1), s_t + rng.normal(0, 0.5)))

        # street lights / utility poles
        if rng.random() < 0.75:
            spacing = rng.uniform(18.0, 45.0)
            util = district == "rural" or rng.random() < 0.2
            colour = _choice_colour(rng, _POLE_COLOURS) if not util else _jitter(rng, (110, 85, 62), 15)
            x = edge + side * (rng.uniform(0.25, 0.7) if sw > 0 else rng.uniform(0.8, 2.0))
            h = rng.uniform(8.0, 10.5) if util else rng.uniform(5.5, 9.0)
            arm = 0.0 if util or rng.random() < 0.25 else rng.uniform(0.8, 2.5)
            w = rng.uniform(0.22, 0.3) if util else rng.uniform(0.12, 0.22)
            for s_p in np.arange(s_lo + rng.uniform(0, spacing), s_hi, spacing):
                p.poles.append(Pole(x, float(s_p), h, w, colour, arm))

        # signs and traffic lights
        for _ in range(int(rng.poisson(p.length / 55.0))):
            x = edge + side * (rng.uniform(0.2, 0.9) if sw > 0 else rng.uniform(0.5, 1.5))
            p.signs.append(_random_sign(rng, x, rng.uniform(s_lo, s_hi)))

        # parked cars
        shoulder = p.shoulder_right if side > 0 else p.shoulder_left
        if shoulder >= 1.7 and rng.random() < 0.75:
            s_c = s_lo + rng.uniform(0, 8)
            while s_c < s_hi:
                car = _random_car(rng, 0.0, False)
                car.x = edge - side * (car.width / 2 + rng.uniform(0.1, 0.4))
                car.s0 = s_c + car.length / 2
                if rng.random() < 0.8:
                    p.cars.append(car)
                s_c += car.length + rng.uniform(0.6, 3.0) + (rng.uniform(4, 25) if rng.random() < 0.3 else 0.0)

        # pedestrians on the sidewalk
        if sw > 0.8:
            dens = {"urban": 1 / 14.0, "suburban": 1 / 35.0, "rural": 1 / 80.0}[district]
            for _ in range(int(rng.poisson(p.length * dens * rng.uniform(0.3, 1.5)))):
                x = edge + side * rng.uniform(0.5, sw - 0.3)
                p.pedestrians.append(_random_pedestrian(rng, x, rng.uniform(s_lo, s_hi)))
            for _ in range(int(rng.poisson(p.length / 70.0))):
                x = edge + side * rng.uniform(0.4, max(0.5, sw - 0.4))
                p.props.append(Prop(x, rng.uniform(s_lo, s_hi), rng.uniform(0.45, 1.8), rng.uniform(0.4, 0.7),
                                    rng.uniform(0.5, 1.5), _choice_colour(rng, _PROP_COLOURS)))

    # moving traffic: one speed per lane so cars of a lane never overlap
    lw = p.lane_width
    lanes = [(k + 0.5) * lw for k in range(p.lanes_right)] + [-(k + 0.5) * lw for k in range(p.lanes_left)]
    for lx in lanes:
        oncoming = lx < 0
        ego_lane = abs(lx - p.cam_x) < lw / 2
        v = -rng.uniform(0.6, 1.6) if oncoming else (rng.uniform(1.0, 1.35) if ego_lane else rng.uniform(0.5, 1.4))
        s_c = (rng.uniform(10.0, 40.0) if ego_lane else s_lo + rng.uniform(0, 30))
        while s_c < s_hi:
            car = _random_car(rng, v, oncoming)
            car.x = lx + rng.normal(0, 0.15)
            car.s0 = s_c + car.length / 2
            p.cars.append(car)
            s_c += car.length + rng.uniform(8.0, 60.0) * (2.5 if district == "rural" else 1.0)

    # people on crosswalks
    for s_cw in p.crosswalks:
        for _ in range(int(rng.poisson(0.8))):
            x = rng.uniform(left_edge, right_edge)
            if abs(x - p.cam_x) < 1.5:
                continue
            ped = _random_pedestrian(rng, x, s_cw + rng.uniform(0.5, 3.0))
            ped.across, ped.v, ped.direction = True, 0.0, 1 if rng.random() < 0.5 else -1
            p.pedestrians.append(ped)


def _add_boundary(p: SceneParams, rng: np.random.Generator, side: int, x: float, s0: float, s1: float, kind: str | None = None) -> None:
    kind = kind or ("fence" if rng.random() < 0.55 else "hedge")
    if kind == "fence":
        style = _pick(rng, (0.45, 0.3, 0.25))
        p.fences.append(Fence(side, x, s0, s1, rng.uniform(0.8, 2.0), _choice_colour(rng, _FENCE_COLOURS), style,
                              rng.uniform(1.8, 3.2)))
    else:
        n = int(s1 - s0) + 3
        wave = np.convolve(rng.normal(0, 0.12, n + 4), np.ones(3) / 3, mode="same")[2:n + 2]
        p.hedges.append(Hedge(side, x, s0, s1, rng.uniform(0.6, 1.9), rng.uniform(0.6, 1.5),
                              _vegetation_colour(rng, 0.05), wave))


def _random_tree(rng: np.random.Generator, x: float, s: float) -> Tree:
    return Tree(float(x), float(s), int(rng.integers(0, 2**31 - 1)))


def _tree_shape(tr: Tree) -> _TreeShape:
    """The (cached) shape of a tree, a pure function of ``tr.seed``."""
    shape = tr.__dict__.get("_shape")
    if shape is not None:
        return shape
    rng = np.random.default_rng(tr.seed)
    base = _vegetation_colour(rng)
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
    trunk = _jitter(rng, (90, 70, 55), 18) if u[6] < 0.7 else _grey(rng, 70, 140, 4)
    shape = _TreeShape(trunk_h, 0.18 + 0.27 * u[7], trunk, crown_y, blobs, cols, None, conifer,
                       float(np.abs(blobs[:, 0]).max() + blobs[:, 2].max() * 0.8),
                       float(blobs[-1, 1] * 0.4 if conifer else blobs[:, 1].mean()))
    tr.__dict__["_shape"] = shape
    return shape


def _speckles(tr: Tree, shape: _TreeShape) -> np.ndarray:
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


def _random_sign(rng: np.random.Generator, x: float, s: float) -> Sign:
    pole_col = _choice_colour(rng, _POLE_COLOURS)
    if rng.random() < 0.2:
        return Sign(x, s, rng.uniform(3.0, 4.5), rng.uniform(0.35, 0.5), "light", _grey(rng, 15, 60, 3),
                    _grey(rng, 15, 60, 3), _grey(rng, 15, 60, 3), pole_col, light=int(rng.integers(0, 3)))
    kind = _pick(rng, (0.3, 0.2, 0.25, 0.1, 0.15))
    shape = ["circle", "triangle", "rect", "diamond", "octagon"][kind]
    white = _grey(rng, 200, 245, 3)
    red = _jitter(rng, (200, 30, 35), 15)
    blue = _jitter(rng, (30, 70, 170), 15)
    yellow = _jitter(rng, (235, 195, 30), 15)
    green = _jitter(rng, (20, 120, 60), 15)
    if shape == "circle":
        border, fill = (red, white) if rng.random() < 0.6 else (white, blue)
    elif shape == "triangle":
        border, fill = red, (white if rng.random() < 0.7 else yellow)
    elif shape == "rect":
        border, fill = white, [blue, green, white, yellow][int(rng.integers(0, 4))]
    elif shape == "diamond":
        border, fill = _grey(rng, 10, 40, 3), yellow
    else:
        border, fill = white, red
    symbol = _grey(rng, 10, 50, 3) if fill is white or fill is yellow else white
    back = rng.random() < 0.15
    return Sign(x, s, rng.uniform(2.0, 2.8), rng.uniform(0.55, 0.95), shape, border, fill, symbol, pole_col, back)


def _random_car(rng: np.random.Generator, v: float, oncoming: bool) -> Car:
    kind = _pick(rng, (0.75, 0.18, 0.07))
    if kind == 0:
        L, W, H = rng.uniform(3.7, 5.0), rng.uniform(1.65, 1.95), rng.uniform(1.35, 1.6)
    elif kind == 1:
        L, W, H = rng.uniform(4.5, 5.8), rng.uniform(1.85, 2.1), rng.uniform(1.8, 2.4)
    else:
        L, W, H = rng.uniform(7.0, 12.0), rng.uniform(2.3, 2.55), rng.uniform(2.8, 3.4)
    glass = _jitter(rng, (35, 45, 55), 10) * rng.uniform(0.6, 2.2)
    return Car(0.0, 0.0, v, L, W, H, _choice_colour(rng, _CAR_COLOURS), _clip_rgb(glass), kind, oncoming)


def _random_pedestrian(rng: np.random.Generator, x: float, s: float) -> Pedestrian:
    child = rng.random() < 0.1
    h = rng.uniform(1.1, 1.4) if child else rng.uniform(1.55, 1.92)
    skin = _hsv(rng, (15, 35), (0.25, 0.6), (0.3, 0.95))
    walking = rng.random() < 0.8
    direction = 1 if rng.random() < 0.5 else -1
    v = direction * rng.uniform(0.08, 0.2) if walking else 0.0
    hair = _grey(rng, 10, 60, 6) if rng.random() < 0.8 else _jitter(rng, (150, 110, 60), 25)
    return Pedestrian(float(x), float(s), v, h, _clothing_colour(rng), _clothing_colour(rng), skin, hair,
                      rng.uniform(0, 2 * math.pi), direction, False, walking)


# --------------------------------------------------------------------------------------------
# camera and drawing
# --------------------------------------------------------------------------------------------

class _Camera:
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


def _ipts(uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates -> int32 fixed point with :data:`_SHIFT` fractional bits, for cv2 drawing."""
    return np.rint(uv * _SCALE).astype(np.int32)


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


def _xquads(x, y0, y1, s0, s1) -> np.ndarray:
    """Quads in planes of constant X (facing the road): scalars or equal-length 1-D args -> (n, 4, 3)."""
    q = np.empty((_count(x, y0, y1, s0, s1), 4, 3))
    q[:, :, 0] = _col(x)
    q[:, 0, 1] = q[:, 1, 1] = y0
    q[:, 2, 1] = q[:, 3, 1] = y1
    q[:, 0, 2] = q[:, 3, 2] = s0
    q[:, 1, 2] = q[:, 2, 2] = s1
    return q


def _squads(x0, x1, y0, y1, s) -> np.ndarray:
    """Quads in planes of constant S (facing the camera): scalars or equal-length 1-D args -> (n, 4, 3)."""
    q = np.empty((_count(x0, x1, y0, y1, s), 4, 3))
    q[:, 0, 0] = q[:, 3, 0] = x0
    q[:, 1, 0] = q[:, 2, 0] = x1
    q[:, 0, 1] = q[:, 1, 1] = y0
    q[:, 2, 1] = q[:, 3, 1] = y1
    q[:, :, 2] = _col(s)
    return q


class _Painter:
    """Draws projected shapes into the image (anti-aliased) and the label map (hard edges, same order)."""

    def __init__(self, cam: _Camera, p: SceneParams, img: np.ndarray, lab: np.ndarray):
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
        pts = list(_ipts(polys_uv)) if isinstance(polys_uv, np.ndarray) else [_ipts(q) for q in polys_uv]
        cv2.fillPoly(self.img, pts, col, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lab, pts, int(cls), cv2.LINE_8, _SHIFT)

    def fill_world(self, polys: np.ndarray, col: tuple, cls: int | None) -> None:
        """Project and fill non-overlapping world polygons, an (n, k, 3) array."""
        if len(polys):
            self.fill(self.cam.project(polys), col, cls)

    def circle(self, uv, r: float, col: tuple, cls: int | None) -> None:
        """A filled disc at pixel ``uv`` of radius ``r`` pixels."""
        c = (int(round(uv[0] * _SCALE)), int(round(uv[1] * _SCALE)))
        rr = max(int(round(r * _SCALE)), 1)
        cv2.circle(self.img, c, rr, col, -1, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.circle(self.lab, c, rr, int(cls), -1, cv2.LINE_8, _SHIFT)

    def circles(self, uv: np.ndarray, r: np.ndarray, cols: list[tuple], cls: int | None) -> None:
        """Filled discs at pixels ``uv`` (n, 2) with radii ``r`` (n,) pixels and colours ``cols``, in order."""
        c = np.rint(uv * _SCALE).astype(np.int64).tolist()
        rr = np.maximum(np.rint(r * _SCALE), 1).astype(np.int64).tolist()
        for ci, ri, col in zip(c, rr, cols):
            cv2.circle(self.img, ci, ri, col, -1, cv2.LINE_AA, _SHIFT)
            if cls is not None:
                cv2.circle(self.lab, ci, ri, int(cls), -1, cv2.LINE_8, _SHIFT)

    def line(self, a, b, width_px: float, col: tuple, cls: int | None) -> None:
        """A thick segment with round ends between pixels ``a`` and ``b``."""
        pa = (int(round(a[0] * _SCALE)), int(round(a[1] * _SCALE)))
        pb = (int(round(b[0] * _SCALE)), int(round(b[1] * _SCALE)))
        th = max(1, int(round(width_px)))
        cv2.line(self.img, pa, pb, col, th, cv2.LINE_AA, _SHIFT)
        if cls is not None:
            cv2.line(self.lab, pa, pb, int(cls), th, cv2.LINE_8, _SHIFT)

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


# --------------------------------------------------------------------------------------------
# textures
# --------------------------------------------------------------------------------------------

_TEX_N = 128


def _textures(p: SceneParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def _bilinear(grid: np.ndarray, rpos: np.ndarray, cpos: np.ndarray) -> np.ndarray:
    """Sample ``grid`` (m, n) at the outer product of row positions (clamped) and column positions (wrapped)."""
    ra, rb, rf = _lerp_idx(rpos, grid.shape[0], False)
    ca, cb, cf = _lerp_idx(cpos, grid.shape[1], True)
    top = grid[ra][:, ca] * (1 - cf) + grid[ra][:, cb] * cf
    bot = grid[rb][:, ca] * (1 - cf) + grid[rb][:, cb] * cf
    return top * (1 - rf)[:, None] + bot * rf[:, None]


def _sample_world(tex: np.ndarray, X: np.ndarray, S: np.ndarray, scale: float) -> np.ndarray:
    """Bilinearly sample a tileable texture at road coordinates (X (R, W), S (R,)) with ``scale`` texels/m."""
    n = tex.shape[0]
    mx = np.mod(X * scale, n).astype(np.float32)
    my = np.broadcast_to(np.mod(S * scale, n).astype(np.float32)[:, None], X.shape)
    return cv2.remap(tex, mx, np.ascontiguousarray(my), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


# --------------------------------------------------------------------------------------------
# rendering passes
# --------------------------------------------------------------------------------------------

def _render_sky(p: SceneParams, cam: _Camera, img: np.ndarray, lab: np.ndarray) -> None:
    """Sky gradient with clouds (turning with the heading) and distant skyline silhouettes, rows above the horizon."""
    H, W = cam.H, cam.W
    r1 = int(min(H, max(0, math.ceil(cam.hor) + 1)))
    if r1 <= 0:
        return
    rows = np.arange(r1, dtype=np.float32)
    fr = (np.clip(rows / max(cam.hor, 1.0), 0, 1) ** 1.6)[:, None]
    top = np.asarray(p.sky_top, np.float32)
    bot = np.asarray(p.sky_bottom, np.float32)
    grad = top[None, :] * (1 - fr) + bot[None, :] * fr  # (r1, 3)
    _, _, c1, c2 = _textures(p)
    az = np.arctan2(np.arange(W, dtype=np.float64) - cam.cx, cam.f) + cam.heading  # rad, per column
    # clouds are smooth: evaluate them on a 4x coarser grid, then upsample
    rl = np.arange(0, r1 + 4, 4, dtype=np.float64)
    azl = np.arctan2(np.arange(0, W + 4, 4, dtype=np.float64) - cam.cx, cam.f) + cam.heading
    elp = np.clip(np.arctan2(cam.hor - rl, cam.f) / 0.6, 0, 1)
    cl = _bilinear(c1, elp * (c1.shape[0] - 1), azl / (2 * math.pi) * c1.shape[1])
    cl += 0.5 * _bilinear(c2, elp * (c2.shape[0] - 1), azl / (2 * math.pi) * c2.shape[1])
    cl = cv2.resize(cl.astype(np.float32), (len(azl) * 4, len(rl) * 4), interpolation=cv2.INTER_LINEAR)[:r1, :W]
    thr = 1.2 - 2.2 * p.cloud_cover
    alpha = np.clip((cl - thr) * 0.9, 0, 1) * np.clip((cam.hor - rows) / (0.1 * H), 0.3, 1)[:, None]
    shade = 1.0 - 0.25 * np.clip(cl - thr - 0.5, 0, 1)
    cc = np.asarray(p.cloud_color, np.float32)
    a3 = alpha[..., None]
    sky = grad[:, None, :] * (1 - a3) + (cc[None, None, :] * shade[..., None]) * a3
    img[:r1] = np.clip(sky, 0, 255).astype(np.uint8)
    lab[:r1] = UNLABELED
    if p.skyline is not None:  # distant buildings / tree lines sitting on the horizon
        n = len(p.skyline)
        idx = np.floor((az % (2 * math.pi)) / (2 * math.pi) * n).astype(np.int64) % n
        elev = p.skyline[idx]
        top_row = cam.hor - cam.f * np.tan(elev)  # (W,)
        m = (rows[:, None] >= top_row[None, :]) & (elev[None, :] > 0)
        if m.any():
            base = np.asarray(p.skyline_color, np.float32)
            gfac = 1.0 + 0.12 * np.clip((rows[:, None] - top_row[None, :]) / (cam.f * 0.02 + 1), 0, 1)
            col = np.clip(base[None, None, :] * gfac[..., None].astype(np.float32), 0, 255).astype(np.uint8)
            img[:r1][m] = col[m]
            lab[:r1][m] = np.broadcast_to(p.skyline_cls[idx][None, :], (r1, W))[m]


_SHADOW_RANGE = 90.0  # m: cast shadows farther than this are not drawn


def _ground_polys(p: SceneParams, cam: _Camera) -> list[tuple[np.ndarray, int]]:
    """Cast-shadow and contact-shadow polygons on the ground as (points (n, 2) = (X, S) m, strength 0..255)."""
    t = cam.t
    Lx, Ly, Ls = (math.cos(p.sun_elevation) * math.sin(p.sun_azimuth), math.sin(p.sun_elevation),
                  math.cos(p.sun_elevation) * math.cos(p.sun_azimuth))
    dx, ds = -Lx / max(Ly, 0.1), -Ls / max(Ly, 0.1)  # shadow displacement per metre of height
    out: list[tuple[np.ndarray, int]] = []
    sun_v = int(255 * min(1.0, p.shadow / 0.6))
    lo, hi = t - 10.0, t + _SHADOW_RANGE  # objects a little behind the camera may shade the road ahead

    def hull(x0, x1, s0, s1, h):
        fp = np.array([[x0, s0], [x1, s0], [x1, s1], [x0, s1]])
        return np.concatenate([fp, fp + np.array([dx * h, ds * h])])

    if sun_v > 4:
        for f in p.facades:
            if f.s1 > lo and f.s0 < hi:
                x0, x1 = (f.x, f.x + f.depth) if f.side > 0 else (f.x - f.depth, f.x)
                out.append((hull(x0, x1, f.s0, f.s1, f.height), sun_v))
        for f in p.hedges:
            if f.s1 > lo and f.s0 < hi:
                x0, x1 = (f.x, f.x + f.depth) if f.side > 0 else (f.x - f.depth, f.x)
                out.append((hull(x0, x1, f.s0, f.s1, f.height), sun_v))
        ang = np.linspace(0, 2 * math.pi, 10, endpoint=False)
        ca, sa = np.cos(ang), np.sin(ang)
        for tr in p.trees:
            if t < tr.s < hi:
                ts = _tree_shape(tr)
                r = ts.crown_r
                hc = ts.crown_y + ts.crown_dy
                out.append((np.stack([tr.x + dx * hc + r * ca, tr.s + ds * hc + r * 0.8 * sa], 1), int(sun_v * 0.8)))
        for pl in p.poles:
            if lo < pl.s < hi:
                w = pl.width / 2
                out.append((hull(pl.x - w, pl.x + w, pl.s - w, pl.s + w, pl.height), sun_v))
    for c in p.cars:
        sc = c.s0 + c.v * t
        if lo < sc < hi:
            x0, x1, s0, s1 = c.x - c.width / 2, c.x + c.width / 2, sc - c.length / 2, sc + c.length / 2
            if sun_v > 4:
                out.append((hull(x0, x1, s0, s1, c.height * 0.8), sun_v))
            out.append((np.array([[x0 - 0.1, s0 - 0.1], [x1 + 0.1, s0 - 0.1], [x1 + 0.1, s1 + 0.1], [x0 - 0.1, s1 + 0.1]]), 255))
    return out


def _clip_near(poly: np.ndarray, s_min: float) -> np.ndarray:
    """Clip a convex polygon (n, 2) = (X, S) to S >= s_min (Sutherland-Hodgman, one plane)."""
    if poly[:, 1].min() >= s_min:
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[1] >= s_min, b[1] >= s_min
        if ina:
            out.append(a)
        if ina != inb:
            out.append(a + (s_min - a[1]) / (b[1] - a[1]) * (b - a))
    return np.array(out) if len(out) >= 3 else np.zeros((0, 2))


def _densify(poly: np.ndarray, step: float) -> np.ndarray:
    """Insert points along the edges of a polygon (n, 2) = (X, S) so none spans more than ``step`` m of S."""
    b = np.roll(poly, -1, axis=0)
    k = np.maximum(1, np.ceil(np.abs(b[:, 1] - poly[:, 1]) / step).astype(np.int64))
    if k.max() == 1:
        return poly
    e = np.repeat(np.arange(len(poly)), k)
    f = (np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)) / np.repeat(k, k)
    return poly[e] + (b[e] - poly[e]) * f[:, None]


def _shadow_mask(p: SceneParams, cam: _Camera) -> np.ndarray | None:
    """uint8 (H, W) darkness of the ground (0 lit .. 255 full shadow), or None when there is none."""
    polys = _ground_polys(p, cam)
    if not polys:
        return None
    mask = np.zeros((cam.H, cam.W), np.uint8)
    drew = False
    for poly, val in sorted(polys, key=lambda pv: pv[1]):
        hp = cv2.convexHull(poly.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        hp = _clip_near(hp, cam.s_near)
        if len(hp) < 3:
            continue
        if not cam.straight:
            hp = _densify(hp, 6.0)
        P = np.zeros((len(hp), 3))
        P[:, 0], P[:, 2] = hp[:, 0], hp[:, 1]
        cv2.fillPoly(mask, [_ipts(cam.project(P))], int(val), cv2.LINE_8, _SHIFT)
        drew = True
    return cv2.blur(mask, (3, 3)) if drew else None


def _render_ground(p: SceneParams, cam: _Camera, img: np.ndarray, lab: np.ndarray, shadow: np.ndarray | None) -> None:
    """Road, lane markings, crosswalks, curbs, sidewalks and verges, per pixel below the horizon."""
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
    le, re = p.road_edges()
    # materials: 0 road, 1 line, 2 centre line, 3/4 sidewalk L/R, 5/6 curb L/R, 7/8 verge L/R
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
    pal = np.stack([p.road_color, p.line_color, p.centre_color, p.sidewalk_colors[0], p.sidewalk_colors[1],
                    p.curb_colors[0], p.curb_colors[1], p.verge_colors[0], p.verge_colors[1]]).astype(np.float32)
    labs = np.array([ROAD, ROADLINE, ROADLINE, SIDEWALK, SIDEWALK, SIDEWALK, SIDEWALK, p.verge_left, p.verge_right], np.uint8)
    # world-anchored textures: fine grain (fades with distance, it would alias) and large patches
    grain, patch, _, _ = _textures(p)
    Zf = Z.astype(np.float32)[:, None]
    g_fine = _sample_world(grain, X, S, 24.0) * np.clip(5.0 / Zf, 0, 1)
    g_mid = _sample_world(grain, X + 37.0, S, 4.0) * np.clip(25.0 / Zf, 0, 1)
    pt = _sample_world(patch, X, S, 0.7)
    amp = np.array([0.06, 0.04, 0.04, 0.04, 0.04, 0.03, 0.03, 0.14, 0.14], np.float32)
    amp2 = np.array([0.05, 0.03, 0.03, 0.04, 0.04, 0.03, 0.03, 0.13, 0.13], np.float32)
    pamp = np.array([p.road_patches, 0.03, 0.03, 0.05, 0.05, 0.02, 0.02, 0.14, 0.14], np.float32)
    fac = 1.0 + amp[mat] * g_fine + amp2[mat] * g_mid + pamp[mat] * pt
    # paving joints and tyre tracks, near rows only (far away they would alias)
    k = int(np.count_nonzero(Z < 35.0))
    if k:
        sl = slice(len(Z) - k, len(Z))  # Z decreases down the image: near rows are the last ones
        Xs, Ss, ms, fsub = X[sl], S[sl][:, None], mat[sl], fac[sl]
        jw = 0.035
        joint = (np.mod(Ss, p.tile) < jw) | (np.mod(Xs - re, p.tile) < jw)
        fsub[joint & ((ms == 3) | (ms == 4))] *= 0.8
        if p.tire_tracks > 0:
            lane_u = np.abs(np.mod(Xs, p.lane_width) - p.lane_width / 2)
            fsub[(np.abs(lane_u - 0.8) < 0.25) & (ms == 0)] *= 1.0 - p.tire_tracks
    if shadow is not None:
        fac *= 1.0 - np.float32(p.shadow / 255.0) * shadow[r0:].astype(np.float32)
    col = pal[mat] * fac[..., None]
    fw = (1.0 - np.exp(-Z / p.fog_distance)).astype(np.float32)[:, None, None]
    fog = np.asarray(p.sky_bottom, np.float32)
    col = col * (1 - fw) + fog * fw
    img[r0:] = np.clip(col, 0, 255).astype(np.uint8)
    lab[r0:] = labs[mat]


# ----- objects ---------------------------------------------------------------------------------

def _draw_facade_segment(pt: _Painter, f: Facade, b0: int, b1: int, bay: float) -> None:
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
            q = cam.project(_xquads(xf, ys, ys, s0c, s1)[:, :2])
            cv2.polylines(pt.img, list(_ipts(q)), False, pt.colour(base * 0.82, Zm, n), 1, cv2.LINE_AA, _SHIFT)
        groups.append((_xquads(xf, f.height - 0.45, f.height, s0c, s1),
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
                wq = _xquads(xf, ya, ya + wh, sa, sa + ww)
                for wt in range(3):
                    sel = types == wt
                    if sel.any():
                        groups.append((wq[sel], pt.colour(f.win_colors[wt], Zm, None if wt == 2 else n)))
            if f.style == 2:  # shop front: large windows and a coloured sign band
                sa0 = np.maximum(bs0 + 0.2, cam.s_near)
                ok = bs0 + bay - 0.2 > sa0
                if ok.any():
                    groups.append((_xquads(xf, 0.15, min(2.6, f.floor_h * 0.8), sa0[ok], (bs0 + bay - 0.2)[ok]),
                                   pt.colour(f.win_colors[0], Zm, n, 1.2)))
                groups.append((_xquads(xf, min(2.65, f.floor_h * 0.82), min(3.2, f.floor_h * 0.98), s0c, s1),
                               pt.colour(f.accent, Zm, n)))
    else:  # wall: coping, pillars, streaks
        hq = min(0.2, f.height * 0.15)
        acc = pt.colour(f.accent, Zm, n)
        groups.append((_xquads(xf, f.height - hq, f.height, s0c, s1), acc))
        if f.style >= 1 and pxm > 1.5:
            ps = np.arange(math.ceil(s0 / f.bay) * f.bay, s1, f.bay)
            ps = ps[ps - 0.2 > cam.s_near]
            if len(ps):
                groups.append((_xquads(xf, 0.0, f.height, ps - 0.2, ps + 0.2), acc))
        if f.style == 2 and pxm > 4:
            ps = np.arange(math.ceil(s0c / 0.9) * 0.9, s1, 0.9)
            if len(ps):
                q = _xquads(xf, f.height * 0.45, f.height - hq, ps, ps + 0.05)[:, 1:3]
                cv2.polylines(pt.img, list(_ipts(cam.project(q))), False, pt.colour(base * 0.75, Zm, n),
                              max(1, int(pxm * 0.08)), cv2.LINE_AA, _SHIFT)
    uv = cam.project(np.concatenate([q for q, _ in groups]))
    i = 0
    for q, col in groups:
        pt.fill(uv[i:i + len(q)], col, None)
        i += len(q)


def _draw_fence_segment(pt: _Painter, f: Fence, s0: float, s1: float) -> None:
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
        pt.fill_world(_xquads(x, 0.0, f.height, s0c, s1), col, FENCE)
        if pxm > 5:
            ps = np.arange(math.ceil(s0c / 0.15) * 0.15, s1, 0.15)
            if len(ps):
                q = _xquads(x - f.side * 0.01, 0.0, f.height, ps, ps)[:, 1:3]
                cv2.polylines(pt.img, list(_ipts(cam.project(q))), False, pt.colour(f.color * 0.7, Zm, n), 1, cv2.LINE_AA, _SHIFT)
        return
    rails = [(f.height - 0.08, f.height), (f.height * 0.45, f.height * 0.45 + 0.07) if f.style == 0 else (0.05, 0.12)]
    pt.fill_world(_xquads(x, [r[0] for r in rails], [r[1] for r in rails], s0c, s1), col, FENCE)
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
            segs.extend(list(_ipts(cam.project(P))))
        if segs:
            cv2.polylines(pt.img, segs, False, col, 1, cv2.LINE_AA, _SHIFT)
            cv2.polylines(pt.lab, segs, False, FENCE, 1, cv2.LINE_8, _SHIFT)
    ps = np.arange(math.ceil(s0 / f.spacing) * f.spacing, s1 + 1e-6, f.spacing)
    ps = ps[ps - 0.06 > cam.s_near]
    if len(ps):
        pt.fill_world(_xquads(x - f.side * 0.02, 0.0, f.height + 0.05, ps - 0.06, ps + 0.06),
                      pt.colour(f.color * 0.85, Zm, n), FENCE)


def _draw_hedge_segment(pt: _Painter, f: Hedge, s0: float, s1: float) -> None:
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


def _draw_tree(pt: _Painter, tr: Tree) -> None:
    """Trunk, then crown blobs back to front (the biggest few when far), then leaf speckles (image
    only) when near; all class Vegetation."""
    cam = pt.cam
    Z = tr.s - cam.t
    if Z < Z_NEAR + 0.5:
        return
    x, s = tr.x, tr.s
    sh = _tree_shape(tr)
    w = sh.trunk_w / 2
    pt.fill_world(_squads(x - w, x + w, 0.0, sh.crown_y + 0.3, s), pt.colour(sh.trunk_color, Z, (0, 0, -1)), VEGETATION)
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
        sp = _speckles(tr, sh)
        if len(sp):
            P = np.empty((len(sp), 3))
            P[:, 0], P[:, 1], P[:, 2] = x + sp[:, 0], sh.crown_y + sp[:, 1], s
            base = sh.blob_colors.mean(0)
            pt.circles(cam.project(P), sp[:, 2] * pxm, [pt.colour(base, Z, None, kk) for kk in sp[:, 3].tolist()], None)


def _draw_pole(pt: _Painter, pl: Pole, side: int) -> None:
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
        q = _squads([pl.x - w, xe - 0.35], [pl.x + w, xe + 0.35], [0.0, h + 0.05], [h, h + 0.3], pl.s)
        q[0, 2, 0], q[0, 3, 0] = pl.x + w * 0.7, pl.x - w * 0.7  # taper
        uv = cam.project(np.concatenate([q.reshape(-1, 3), [[pl.x, h - 0.1, pl.s], [xe, h + 0.2, pl.s]]]))
        pt.fill(uv[:8].reshape(2, 4, 2), col, POLE)
        pt.line(uv[8], uv[9], 0.09 * cam.f / Z, col, POLE)
    else:
        q = _squads([pl.x - w, pl.x - 0.9], [pl.x + w, pl.x + 0.9], [0.0, h - 0.7], [h, h - 0.58], pl.s)
        uv = cam.project(q)
        pt.fill(uv[:1], col, POLE)
        pt.fill(uv[1:], col, POLE)


def _regular(n: int, r: float, rot: float) -> np.ndarray:
    a = rot + np.arange(n) * 2 * math.pi / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


_SHAPES = {"circle": _regular(20, 1.0, 0.0), "triangle": _regular(3, 1.15, math.pi / 2),
           "rect": np.array([[-1.1, -0.75], [1.1, -0.75], [1.1, 0.75], [-1.1, 0.75]]),
           "diamond": _regular(4, 1.1, 0.0), "octagon": _regular(8, 1.0, math.pi / 8)}


def _draw_sign(pt: _Painter, sg: Sign) -> None:
    """Pole (class Pole) plus a sign plate or traffic-light housing (class TrafficSign)."""
    cam = pt.cam
    Z = sg.s - cam.t
    if Z < Z_NEAR + 0.3:
        return
    pt.fill_world(_squads(sg.x - 0.05, sg.x + 0.05, 0.0, sg.pole_h, sg.s), pt.colour(sg.pole_color, Z, (0, 0, -1)), POLE)
    yc = sg.pole_h + sg.size * 0.5
    pxm = cam.f / Z
    if sg.shape == "light":
        bw, bh = sg.size * 0.5, sg.size * 1.4
        pt.fill_world(_squads(sg.x - bw, sg.x + bw, yc - bh / 2, yc + bh / 2, sg.s), pt.colour(sg.border, Z), TRAFFICSIGN)
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
            bar = _squads(sg.x - r * 0.1, sg.x + r * 0.1, yc - r * 0.35, yc + r * 0.25, sg.s)
        else:
            bar = _squads(sg.x - r * 0.45, sg.x + r * 0.45, yc - r * 0.12, yc + r * 0.12, sg.s)
        pt.fill_world(bar, pt.colour(sg.symbol, Z), None)


_DARK = np.array([22.0, 22.0, 24.0])
_HUB = np.array([120.0, 120.0, 125.0])
_PLATE = np.array([225.0, 225.0, 215.0])
_RING = np.linspace(0, 2 * math.pi, 14, endpoint=False)


def _draw_car(pt: _Painter, c: Car) -> None:
    """Wheels and underbody, body box, cabin box (glass faces, body-coloured roof), pillars, side
    wheels, and lights and plate on the face toward the camera; all class Vehicle."""
    cam = pt.cam
    sc = c.s0 + c.v * cam.t
    s0, s1 = sc - c.length / 2, sc + c.length / 2
    if s1 <= cam.s_near:
        return
    x0, x1 = c.x - c.width / 2, c.x + c.width / 2
    Z = max(s0, cam.s_near) - cam.t
    r_w = 0.33 if c.kind == 0 else 0.42
    ax = (s0 + 0.18 * c.length, s1 - 0.18 * c.length) if c.kind != 2 else (s0 + 0.15 * c.length, s1 - 0.2 * c.length)
    off = cam.offset1(Z)
    side_x = x0 if (x0 + off) > 0 else (x1 if (x1 + off) < 0 else None)
    near_vis = s0 >= cam.s_near
    if c.height * cam.f / max(Z, 1e-3) < 8:  # far: body and cabin only
        hb = (0.58, 0.5, 1.0)[c.kind] * c.height
        pt.box(x0, x1, 0.2, hb, s0, s1, c.color, VEHICLE, top=c.color * 1.08)
        if c.kind != 2:
            pt.box(x0 + 0.1 * c.width, x1 - 0.1 * c.width, hb, c.height, s0 + 0.25 * c.length, s1 - 0.2 * c.length,
                   c.glass, VEHICLE, top=c.color * 1.1)
        return
    if near_vis:  # underbody and rear/front wheels seen under the bumper
        q = _squads([x0 + 0.1, x0 + 0.05, x1 - 0.32], [x1 - 0.1, x0 + 0.32, x1 - 0.05], 0.0,
                    [0.35, 1.8 * r_w, 1.8 * r_w], [s0 + 0.3, s0 + 0.25, s0 + 0.25])
        uv = cam.project(q)
        pt.fill(uv[:1], pt.colour(_DARK, Z), VEHICLE)
        pt.fill(uv[1:], pt.colour(_DARK, Z, None, 0.8), VEHICLE)
    hb = (0.58, 0.5, 0.7)[c.kind] * c.height
    bottom = 0.3 if c.kind != 2 else 0.45
    body = c.color
    if c.kind == 2:  # truck / bus: one tall box with a band of windows
        pt.box(x0, x1, bottom, c.height, s0, s1, body, VEHICLE, top=body * 1.05)
        if side_x is not None:
            wa = max(s0 + 0.4, cam.s_near)
            if s1 - 0.4 > wa:
                pt.fill_world(_xquads(side_x, c.height * 0.62, c.height * 0.86, wa, s1 - 0.4), pt.colour(c.glass, Z), None)
    else:
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
                pt.fill_world(_xquads(xs, hb, c.height, sp - 0.07, sp + 0.07), pt.colour(body, Z, None, 0.95), None)
    if side_x is not None:  # side wheels: projected circles on the visible side plane
        for a in ax:
            if a - r_w <= cam.s_near:
                continue
            P = np.empty((28, 3))
            P[:, 0] = side_x
            P[:14, 1], P[:14, 2] = r_w + r_w * np.sin(_RING), a + r_w * np.cos(_RING)
            P[14:, 1], P[14:, 2] = r_w + 0.55 * r_w * np.sin(_RING), a + 0.55 * r_w * np.cos(_RING)
            uv = cam.project(P)
            pt.fill([uv[:14]], pt.colour(_DARK, a - cam.t), VEHICLE)
            pt.fill([uv[14:]], pt.colour(_HUB, a - cam.t), None)
    if near_vis:  # lights, grille and plate on the face toward the camera
        s = s0 - 0.01
        yl0 = hb - 0.3 * (hb - bottom) - 0.12
        yl1 = yl0 + 0.17
        if c.oncoming:
            pt.fill_world(_squads(c.x - 0.35, c.x + 0.35, yl0 - 0.15, yl1, s), pt.colour(_DARK, Z, None, 1.5), None)
            lc = (235.0, 235.0, 215.0)
        else:
            lc = (200.0, 30.0, 30.0)
        pt.fill_world(_squads([x0 + 0.08, x1 - 0.35], [x0 + 0.35, x1 - 0.08], yl0, yl1, s), pt.colour(lc, Z), None)
        pt.fill_world(_squads(c.x - 0.25, c.x + 0.25, bottom + 0.08, bottom + 0.2, s), pt.colour(_PLATE, Z), None)


def _draw_pedestrian(pt: _Painter, pd: Pedestrian) -> None:
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


def _draw_prop(pt: _Painter, pr: Prop) -> None:
    pt.box(pr.x - pr.width / 2, pr.x + pr.width / 2, 0.0, pr.height, pr.s - pr.depth / 2, pr.s + pr.depth / 2,
           pr.color, OTHER, top=pr.color * 1.1)


def _pieces(s0: float, s1: float, lo: float, hi: float, t: float) -> list[tuple[float, float]]:
    """Cut [s0, s1] (within [lo, hi]) into pieces about 3 m long near the camera, longer far away."""
    out = []
    a = s0 if s0 >= lo else s0 + math.floor((lo - s0) / 3.0) * 3.0
    while a < min(s1, hi):
        b = min(s1, a + max(3.0, 0.2 * (a - t)))
        out.append((a, b))
        a = b
    return out


def _collect(p: SceneParams, cam: _Camera, pt: _Painter) -> list[tuple[float, int, Callable[[], None]]]:
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
            add(cam.key(f.x, sm), (lambda f=f, b=b, b1=b1, bay=bay: _draw_facade_segment(pt, f, b, b1, bay)))
            b = b1
    for fe in p.fences:
        if fe.s1 > lo and fe.s0 < hi_b:
            for a, b in _pieces(fe.s0, fe.s1, lo, hi_b, t):
                add(cam.key(fe.x, 0.5 * (a + b)), (lambda fe=fe, a=a, b=b: _draw_fence_segment(pt, fe, a, b)))
    for hd in p.hedges:
        if hd.s1 > lo and hd.s0 < hi_b:
            for a, b in _pieces(hd.s0, hd.s1, lo, hi_b, t):
                add(cam.key(hd.x, 0.5 * (a + b)), (lambda hd=hd, a=a, b=b: _draw_hedge_segment(pt, hd, a, b)))
    for tr in p.trees:
        if lo < tr.s < hi_s:
            add(cam.key(tr.x, tr.s), (lambda tr=tr: _draw_tree(pt, tr)))
    le, re = p.road_edges()
    for pl in p.poles:
        if lo < pl.s < hi_s:
            add(cam.key(pl.x, pl.s), (lambda pl=pl: _draw_pole(pt, pl, 1 if pl.x > 0.5 * (le + re) else -1)))
    for sg in p.signs:
        if lo < sg.s < hi_s:
            add(cam.key(sg.x, sg.s), (lambda sg=sg: _draw_sign(pt, sg)))
    for c in p.cars:
        sc = c.s0 + c.v * t
        if sc + c.length / 2 > lo and sc - c.length / 2 < hi_s:
            add(cam.key(c.x, max(sc - c.length / 2, lo) + 0.5), (lambda c=c: _draw_car(pt, c)))
    for pd in p.pedestrians:
        s = pd.s0 + pd.v * t
        if lo < s < hi_s:
            add(cam.key(pd.x, s), (lambda pd=pd: _draw_pedestrian(pt, pd)))
    for pr in p.props:
        if lo < pr.s + pr.depth / 2 and pr.s < hi_s:
            add(cam.key(pr.x, pr.s), (lambda pr=pr: _draw_prop(pt, pr)))
    return items


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def _check_size(size) -> tuple[int, int]:
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UnetEdgeError(f"size must be (H, W) in pixels, got {size!r}")
    if H < 16 or W < 16:
        raise UnetEdgeError(f"size must be at least 16x16 pixels, got {H}x{W}")
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
        UnetEdgeError: ``size`` is not a pair of integers >= 16.
    """
    H, W = _check_size(size)
    if params is None:
        params = SceneParams.random(rng)
    p = params
    cam = _Camera(p, (H, W), t)
    img = np.empty((H, W, 3), np.uint8)
    lab = np.empty((H, W), np.uint8)
    _render_sky(p, cam, img, lab)
    _render_ground(p, cam, img, lab, _shadow_mask(p, cam))
    pt = _Painter(cam, p, img, lab)
    for _, _, fn in sorted(_collect(p, cam, pt), key=lambda it: (-it[0], it[1])):
        fn()
    return _camera_effects(p, rng, img, lab)


def _camera_effects(p: SceneParams, rng: np.random.Generator, img: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    H, W = lab.shape
    if abs(p.roll) > 0.05:
        M = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), p.roll, 1.0 + abs(math.radians(p.roll)) * 1.2)
        img = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        lab = cv2.warpAffine(lab, M, (W, H), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT101)
    if p.blur > 0.05:
        sig = p.blur * W / 320.0
        img = cv2.GaussianBlur(img, (0, 0), sig)
    gain = (np.asarray(p.tint, np.float32) * (p.gain * p.contrast))  # (3,)
    offset = np.float32(128.0 * (1.0 - p.contrast) * p.gain)
    if p.vignette > 0:
        yy = (np.arange(H, dtype=np.float32) - (H - 1) / 2) / (H / 2)
        xx = (np.arange(W, dtype=np.float32) - (W - 1) / 2) / (W / 2)
        vig = 1.0 - p.vignette * 0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2)
        x = img.astype(np.float32) * (vig[..., None] * gain[None, None, :]) + offset
    else:
        x = img.astype(np.float32) * gain + offset
    sigma = p.noise * rng.uniform(0.7, 1.3)
    if sigma > 0.05:
        x += _gaussian_noise(rng, (H, W, 3)) * np.float32(sigma)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if abs(p.gamma - 1.0) > 1e-3:
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** p.gamma, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, lut)
    return np.ascontiguousarray(out), np.ascontiguousarray(lab)


_NOISE_BANK: np.ndarray | None = None
_NOISE_BANK_SIZE = 1 << 22


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """About N(0, 1) float32 noise of ``shape``: a window at a random offset (drawn from ``rng``) into a
    fixed bank of 4M Gaussian samples (int8, 1/20 steps), about 20x cheaper than fresh samples;
    fresh samples for images too large for the bank."""
    global _NOISE_BANK
    n = int(np.prod(shape))
    if n > _NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    if _NOISE_BANK is None:
        bank = np.random.default_rng(20240917).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32) * 20.0
        _NOISE_BANK = np.clip(np.rint(bank), -127, 127).astype(np.int8)
    off = int(rng.integers(0, _NOISE_BANK_SIZE - n))
    return _NOISE_BANK[off:off + n].reshape(shape).astype(np.float32) * np.float32(1.0 / 20.0)


def _write_png(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), arr):
            raise DataError(f"OpenCV could not write {path}; check that the folder is writable and the disk not full")


def _label_png(label: np.ndarray) -> np.ndarray:
    """CARLA label encoding: BGR uint8 with the class id in the red channel (index 2)."""
    out = np.zeros(label.shape + (3,), np.uint8)
    out[..., 2] = label
    return out


def _readme(n_train: int, n_val: int, size: tuple[int, int], seed: int) -> str:
    classes = "\n".join(f"  {i:2d} {name}" for i, name in enumerate(CARLA_CLASSES))
    return (
        "Synthetic CARLA-style road scenes generated by unet_edge.data.synth.generate_dataset\n"
        f"(seed {seed}, {n_train} train + {n_val} val frames, {size[0]}x{size[1]} HxW).\n\n"
        "Procedurally rendered street views (perspective road with lane markings and crosswalks,\n"
        "sidewalks, buildings, walls, fences, vegetation, poles, traffic signs and lights, cars,\n"
        "pedestrians, sky) with randomized geometry, colours, textures, lighting, shadows, blur and\n"
        "noise. Not real CARLA data: use it to test pipelines and to pre-train, not to report results.\n\n"
        "Layout (the 'carla' layout of unet_edge.data.layouts):\n"
        "  train/CameraRGB/NNNNNN.png  RGB image\n"
        "  train/CameraSeg/NNNNNN.png  label: class id in the RED channel, green and blue 0\n"
        "  val/...                     same\n\n"
        "Classes (CARLA 0.9 semantic camera, 13 classes; the sky is 0 Unlabeled):\n" + classes + "\n")


def generate_dataset(out: str | Path, n_train: int = 200, n_val: int = 40, size: tuple[int, int] = DEFAULT_SIZE,
                     seed: int = 0, progress: bool = True) -> Path:
    """Write a synthetic dataset in the CARLA layout under ``out``.

    ``out/train/CameraRGB/000000.png`` (RGB image) and ``out/train/CameraSeg/000000.png`` (class id
    0..12 in the red channel), the same under ``out/val/``, and ``out/README.txt``. Every file is
    written atomically; frame ``i`` of a split is a pure function of (``seed``, split, ``i``), so the
    same arguments give byte-identical files. Numbered PNGs left over from a larger earlier run in
    those folders are removed so the splits hold exactly ``n_train`` and ``n_val`` frames.

    Args:
        out: dataset folder (created).
        n_train, n_val: frames per split (>= 0, at least one in all).
        size: (H, W) in pixels.
        seed: integer seed.
        progress: show a progress bar.

    Returns:
        The dataset folder as a Path.

    Raises:
        UnetEdgeError: bad counts or size. DataError: a file cannot be written.
    """
    H, W = _check_size(size)
    if n_train < 0 or n_val < 0 or n_train + n_val == 0:
        raise UnetEdgeError(f"need n_train, n_val >= 0 and at least one frame, got {n_train} and {n_val}")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DataError(f"dataset folder {root} exists and is not a folder; pick another --out")
    for split_i, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        rgb_dir, seg_dir = root / split / "CameraRGB", root / split / "CameraSeg"
        for d in (rgb_dir, seg_dir):  # frames left over from an earlier, larger run
            if d.is_dir():
                for old in d.glob("*.png"):
                    if old.stem.isdigit() and int(old.stem) >= n:
                        old.unlink()
        if n == 0:
            continue
        rgb_dir.mkdir(parents=True, exist_ok=True)
        seg_dir.mkdir(parents=True, exist_ok=True)
        for i in progress_iter(range(n), total=n, description=f"synth {split}", enabled=progress):
            rng = np.random.default_rng([int(seed), split_i, i])
            img, lab = render_scene(rng, (H, W))
            _write_png(rgb_dir / f"{i:06d}.png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            _write_png(seg_dir / f"{i:06d}.png", _label_png(lab))
    write_text_atomic(root / "README.txt", _readme(n_train, n_val, (H, W), seed))
    return root


def render_drive(out_video: str | Path, frames: int = 120, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                 fps: float = 15.0, frames_dir: str | Path | None = None) -> Path:
    """Render a forward drive through one random scene as an mp4 ('mp4v'), optionally with labels.

    The camera travels at a random 6..12 m/s; frame ``i`` is :func:`render_scene` at
    ``t = i * speed / fps`` with the same :class:`SceneParams`. The video is written to a temporary
    file beside ``out_video`` and renamed onto it when complete. The mp4v encoder stores even
    dimensions: an odd H or W loses its last row / column in the video (not in ``frames_dir``). With ``frames_dir``, every frame
    and its label are also written in the flat CARLA layout (``frames_dir/CameraRGB/000000.png``,
    ``frames_dir/CameraSeg/000000.png``; :func:`~unet_edge.data.layouts.load_dataset` splits it).

    Args:
        out_video: output video path (``.mp4`` recommended).
        frames: number of frames (>= 1).
        size: (H, W) in pixels.
        seed: integer seed; the same arguments give the same frames.
        fps: frame rate of the video (> 0).
        frames_dir: optional folder for the PNG frames and labels.

    Returns:
        The video path as a Path.

    Raises:
        UnetEdgeError: bad frames/fps/size. SourceError: OpenCV cannot write the video.
        DataError: a frame PNG cannot be written.
    """
    H, W = _check_size(size)
    if frames < 1 or not fps > 0:
        raise UnetEdgeError(f"need frames >= 1 and fps > 0, got frames={frames}, fps={fps}")
    out_video = Path(out_video)
    rng = np.random.default_rng([int(seed), 1000])
    speed = rng.uniform(6.0, 12.0)
    step = speed / fps
    params = SceneParams.random(rng, length=frames * step + 250.0)
    if frames_dir is not None:
        fd = Path(frames_dir)
        (fd / "CameraRGB").mkdir(parents=True, exist_ok=True)
        (fd / "CameraSeg").mkdir(parents=True, exist_ok=True)
    with atomic_path(out_video) as tmp:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
        if not vw.isOpened():
            vw.release()
            raise SourceError(f"OpenCV cannot write an mp4v video to {out_video} ({W}x{H} at {fps:g} fps); "
                              f"check that the folder is writable and the name ends in .mp4")
        try:
            for i in range(frames):
                img, lab = render_scene(np.random.default_rng([int(seed), 1001, i]), (H, W), t=i * step, params=params)
                bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                vw.write(bgr)
                if frames_dir is not None:
                    _write_png(fd / "CameraRGB" / f"{i:06d}.png", bgr)
                    _write_png(fd / "CameraSeg" / f"{i:06d}.png", _label_png(lab))
        finally:
            vw.release()
    return out_video
