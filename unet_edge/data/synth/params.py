"""The description of one street scene (:class:`SceneParams`) and how a random one is drawn.

:meth:`SceneParams.random` draws, in a fixed order from one ``rng``: the district and weather, the
camera, the road's cross-section and curvature, sky / sun / fog, exposure and sensor settings,
ground materials, the distant skyline, and then lays out the objects along both sides of the road
and in its lanes (:func:`_populate`; the objects themselves come from :mod:`.objects`).
Changing the order of the draws changes every scene of a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .colours import POLE_COLOURS, PROP_COLOURS, choice_colour, clip_rgb, grey, hsv, jitter, pick
from .constants import BUILDING, OTHER, SIDEWALK, VEGETATION
from .objects import (Fence, Hedge, Pole, Prop, random_boundary, random_building, random_car, random_pedestrian,
                      random_sign, random_tree, random_wall)


@dataclass
class SceneParams:
    """The randomized layout and look of one street scene (all lengths in metres, colours RGB 0..255).

    Build with :meth:`SceneParams.random`; render with :func:`~unet_edge.data.synth.render_scene` at any travel ``t`` in
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
        district = ("urban", "suburban", "rural")[pick(rng, (0.5, 0.35, 0.15))]
        weather = ("clear", "overcast", "dusk", "haze")[pick(rng, (0.45, 0.3, 0.13, 0.12))]
        _draw_camera(p, rng)
        _draw_road(p, rng, district, length)
        _draw_weather(p, rng, weather)
        _draw_exposure(p, rng, weather)
        _draw_ground_materials(p, rng)
        _draw_skyline(p, rng, district)
        _populate(p, rng, district, weather)
        return p

    def road_edges(self) -> tuple[float, float]:
        """(left, right) lateral positions (m, road coordinates) of the road's edges (the curbs)."""
        lw = self.lane_width
        return -(self.lanes_left * lw + self.shoulder_left), self.lanes_right * lw + self.shoulder_right

    def sidewalk_of(self, side: int) -> float:
        """Width (m) of the sidewalk on ``side`` (+1 right, -1 left; 0: none)."""
        return self.sidewalk_right if side > 0 else self.sidewalk_left


def _draw_camera(p: SceneParams, rng: np.random.Generator) -> None:
    """Focal length, horizon row, height, yaw, roll and weave of the camera."""
    p.focal = rng.uniform(0.7, 1.15)
    p.horizon = rng.uniform(0.36, 0.54)
    p.cam_height = rng.uniform(1.2, 2.1)
    p.yaw = rng.normal(0.0, 0.012)
    p.roll = float(np.clip(rng.normal(0.0, 1.3), -4, 4)) if rng.random() < 0.6 else 0.0
    p.weave = rng.uniform(0.0, 0.25)


def _draw_road(p: SceneParams, rng: np.random.Generator, district: str, length: float) -> None:
    """Lanes, shoulders, the camera's lane, sidewalks, curbs, verges, markings, crosswalks, curvature."""
    p.lane_width = rng.uniform(2.8, 3.8)
    p.lanes_right = 1 + pick(rng, (0.7, 0.3))
    p.lanes_left = pick(rng, (0.1, 0.65, 0.25))
    p.shoulder_left = 0.0 if rng.random() < 0.45 else rng.uniform(0.3, 2.6)
    p.shoulder_right = 0.0 if rng.random() < 0.45 else rng.uniform(0.3, 2.6)
    lane = int(rng.integers(0, p.lanes_right))
    p.cam_x = p.lane_width * (lane + 0.5) + rng.normal(0.0, 0.25)
    sw_hi = {"urban": 5.5, "suburban": 3.5, "rural": 2.0}[district]
    p.sidewalk_left = 0.0 if (district == "rural" and rng.random() < 0.6) else rng.uniform(1.2, sw_hi)
    p.sidewalk_right = 0.0 if (district == "rural" and rng.random() < 0.6) else rng.uniform(1.2, sw_hi)
    p.curb_width = rng.uniform(0.12, 0.3)
    p.verge_left = (VEGETATION, OTHER, SIDEWALK)[pick(rng, (0.6, 0.2, 0.2))]
    p.verge_right = (VEGETATION, OTHER, SIDEWALK)[pick(rng, (0.6, 0.2, 0.2))]
    p.centre_line = pick(rng, (0.5, 0.15, 0.25, 0.1)) if p.lanes_left else 3
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


def _draw_weather(p: SceneParams, rng: np.random.Generator, weather: str) -> None:
    """Sky and cloud colours, cloud cover, sun strength, shadow depth and fog distance of a weather."""
    if weather == "clear":
        p.sky_top = jitter(rng, (55, 105, 190), 18)
        p.sky_bottom = jitter(rng, (180, 205, 230), 14)
        p.cloud_color = grey(rng, 225, 252, 3)
        p.cloud_cover = rng.uniform(0.0, 0.55)
        p.sun = rng.uniform(0.45, 0.75)
        p.shadow = rng.uniform(0.35, 0.6)
        p.fog_distance = rng.uniform(250.0, 700.0)
    elif weather == "overcast":
        g = rng.uniform(135, 215)
        p.sky_top = grey(rng, g - 25, g, 4)
        p.sky_bottom = grey(rng, g, g + 25, 4)
        p.cloud_color = grey(rng, g - 40, g + 10, 3)
        p.cloud_cover = rng.uniform(0.4, 0.9)
        p.sun = rng.uniform(0.0, 0.2)
        p.shadow = rng.uniform(0.0, 0.15)
        p.fog_distance = rng.uniform(120.0, 350.0)
    elif weather == "dusk":
        p.sky_top = jitter(rng, (45, 55, 105), 15)
        p.sky_bottom = jitter(rng, (235, 150, 90), 20)
        p.cloud_color = jitter(rng, (200, 120, 110), 20)
        p.cloud_cover = rng.uniform(0.1, 0.6)
        p.sun = rng.uniform(0.3, 0.6)
        p.shadow = rng.uniform(0.3, 0.55)
        p.fog_distance = rng.uniform(150.0, 400.0)
    else:  # haze
        p.sky_top = grey(rng, 170, 215, 6)
        p.sky_bottom = grey(rng, 195, 235, 6)
        p.cloud_color = grey(rng, 215, 245, 3)
        p.cloud_cover = rng.uniform(0.0, 0.4)
        p.sun = rng.uniform(0.2, 0.5)
        p.shadow = rng.uniform(0.15, 0.35)
        p.fog_distance = rng.uniform(45.0, 130.0)


def _draw_exposure(p: SceneParams, rng: np.random.Generator, weather: str) -> None:
    """Sun direction, then the camera's gain, contrast, gamma, tint, vignetting, blur and noise."""
    p.sun_azimuth = rng.uniform(-math.pi, math.pi)
    p.sun_elevation = rng.uniform(0.12, 0.3) if weather == "dusk" else rng.uniform(0.3, 1.2)
    p.gain = rng.uniform(0.7, 1.25) * (0.8 if weather == "dusk" else 1.0)
    p.contrast = rng.uniform(0.75, 1.25)
    p.gamma = rng.uniform(0.8, 1.25)
    p.tint = np.clip(rng.normal(1.0, 0.045, 3), 0.85, 1.15)
    p.vignette = rng.uniform(0.0, 0.35)
    p.blur = 0.0 if rng.random() < 0.45 else rng.uniform(0.3, 1.2)
    p.noise = rng.uniform(0.0, 7.0)


def _draw_ground_materials(p: SceneParams, rng: np.random.Generator) -> None:
    """Colours of road, markings, sidewalks, curbs and verges; tile size, tyre tracks, road patches."""
    p.road_color = grey(rng, 45, 135, 4) if rng.random() < 0.85 else jitter(rng, (120, 105, 90), 15)
    p.line_color = grey(rng, 200, 250, 3) * rng.uniform(0.75, 1.0)
    p.centre_color = jitter(rng, (230, 185, 45), 15) if rng.random() < 0.4 else p.line_color.copy()
    side_cols = []
    tile_kind = ("concrete", "paver", "beige")[pick(rng, (0.6, 0.2, 0.2))]
    for _ in range(2):
        if tile_kind == "concrete":
            side_cols.append(grey(rng, 95, 205, 5))
        elif tile_kind == "paver":
            side_cols.append(jitter(rng, (150, 100, 90), 20))
        else:
            side_cols.append(jitter(rng, (190, 175, 150), 18))
    p.sidewalk_colors = np.stack(side_cols)
    p.curb_colors = np.stack([grey(rng, 110, 215, 4) for _ in range(2)])
    verge = []
    for v in (p.verge_left, p.verge_right):
        if v == VEGETATION:
            verge.append(hsv(rng, (45, 120), (0.25, 0.7), (0.25, 0.6)))
        elif v == OTHER:
            verge.append(jitter(rng, (125, 105, 80), 20))
        else:
            verge.append(grey(rng, 100, 190, 5))
    p.verge_colors = np.stack(verge)
    p.tile = rng.uniform(0.3, 1.2)
    p.tire_tracks = rng.uniform(0.0, 0.15)
    p.road_patches = rng.uniform(0.0, 0.18)


def _draw_skyline(p: SceneParams, rng: np.random.Generator, district: str) -> None:
    """Distant silhouettes above the horizon (buildings or a tree line) in 65% of scenes."""
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
        p.skyline_color = clip_rgb(fog_col * rng.uniform(0.55, 0.9) + rng.normal(0, 6, 3))


_FRONTAGE = {"urban": [0.62, 0.14, 0.05, 0.05, 0.14], "suburban": [0.35, 0.1, 0.2, 0.2, 0.15],
             "rural": [0.1, 0.05, 0.2, 0.25, 0.4]}  # weights of building, wall, fence, hedge, gap


def _populate(p: SceneParams, rng: np.random.Generator, district: str, weather: str) -> None:
    """Lay out the objects of a scene along ``[-30, p.length + 30]`` m: the left then the right side
    of the road, then the traffic in the lanes, then people on the crosswalks."""
    s_lo, s_hi = -30.0, p.length + 30.0
    lit_p = 0.35 if weather == "dusk" else 0.02  # share of lit windows
    for side in (-1, 1):
        _populate_side(p, rng, side, district, lit_p, s_lo, s_hi)
    _add_traffic(p, rng, district, s_lo, s_hi)
    _add_crossing_people(p, rng)


def _populate_side(p: SceneParams, rng: np.random.Generator, side: int, district: str, lit_p: float,
                   s_lo: float, s_hi: float) -> None:
    """One side of the road (``side`` -1 left, +1 right) over ``[s_lo, s_hi]`` m: the frontage, then
    street trees, poles, signs, parked cars, and people and furniture on the sidewalk."""
    left_edge, right_edge = p.road_edges()
    edge = right_edge if side > 0 else left_edge
    sw = p.sidewalk_of(side)
    outer = edge + side * sw  # outer edge of the sidewalk
    _add_frontage(p, rng, side, outer, district, lit_p, s_lo, s_hi)

    # street trees in the sidewalk (or verge)
    if rng.random() < 0.5:
        spacing = rng.uniform(7.0, 16.0)
        x = edge + side * (sw * rng.uniform(0.55, 0.85) if sw > 0 else rng.uniform(1.0, 2.5))
        for s_t in np.arange(s_lo + rng.uniform(0, spacing), s_hi, spacing):
            if rng.random() < 0.85:
                p.trees.append(random_tree(rng, x + rng.normal(0, 0.1), s_t + rng.normal(0, 0.5)))

    # street lights / utility poles
    if rng.random() < 0.75:
        spacing = rng.uniform(18.0, 45.0)
        util = district == "rural" or rng.random() < 0.2
        colour = choice_colour(rng, POLE_COLOURS) if not util else jitter(rng, (110, 85, 62), 15)
        x = edge + side * (rng.uniform(0.25, 0.7) if sw > 0 else rng.uniform(0.8, 2.0))
        h = rng.uniform(8.0, 10.5) if util else rng.uniform(5.5, 9.0)
        arm = 0.0 if util or rng.random() < 0.25 else rng.uniform(0.8, 2.5)
        w = rng.uniform(0.22, 0.3) if util else rng.uniform(0.12, 0.22)
        for s_p in np.arange(s_lo + rng.uniform(0, spacing), s_hi, spacing):
            p.poles.append(Pole(x, float(s_p), h, w, colour, arm))

    # signs and traffic lights
    for _ in range(int(rng.poisson(p.length / 55.0))):
        x = edge + side * (rng.uniform(0.2, 0.9) if sw > 0 else rng.uniform(0.5, 1.5))
        p.signs.append(random_sign(rng, x, rng.uniform(s_lo, s_hi)))

    # parked cars
    shoulder = p.shoulder_right if side > 0 else p.shoulder_left
    if shoulder >= 1.7 and rng.random() < 0.75:
        s_c = s_lo + rng.uniform(0, 8)
        while s_c < s_hi:
            car = random_car(rng, 0.0, False)
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
            p.pedestrians.append(random_pedestrian(rng, x, rng.uniform(s_lo, s_hi)))
        for _ in range(int(rng.poisson(p.length / 70.0))):
            x = edge + side * rng.uniform(0.4, max(0.5, sw - 0.4))
            p.props.append(Prop(x, rng.uniform(s_lo, s_hi), rng.uniform(0.45, 1.8), rng.uniform(0.4, 0.7),
                                rng.uniform(0.5, 1.5), choice_colour(rng, PROP_COLOURS)))


def _add_frontage(p: SceneParams, rng: np.random.Generator, side: int, outer: float, district: str, lit_p: float,
                  s_lo: float, s_hi: float) -> None:
    """Buildings, walls, fences, hedges and gaps (trees, furniture) one after another beyond the sidewalk."""
    s = s_lo + rng.uniform(-10, 5)
    while s < s_hi:
        kind = ("building", "wall", "fence", "hedge", "gap")[pick(rng, _FRONTAGE[district])]
        if kind == "building":
            f, seg, setback = random_building(rng, side, outer, s, district, lit_p, p.sky_bottom)
            p.facades.append(f)
            if setback > 3.0 and rng.random() < 0.45:
                _add_boundary(p, random_boundary(rng, side, outer + side * rng.uniform(0.1, 0.6), s, s + seg))
            elif setback > 2.0 and rng.random() < 0.4:
                for _ in range(int(rng.integers(1, 3))):
                    p.trees.append(random_tree(rng, outer + side * rng.uniform(1.0, setback - 1.0), rng.uniform(s, s + seg)))
        elif kind == "wall":
            f, seg = random_wall(rng, side, outer, s)
            p.facades.append(f)
            if rng.random() < 0.35:
                p.trees.append(random_tree(rng, outer + side * rng.uniform(2.0, 6.0), rng.uniform(s, s + seg)))
        elif kind in ("fence", "hedge"):
            seg = rng.uniform(5.0, 28.0)
            _add_boundary(p, random_boundary(rng, side, outer + side * rng.uniform(0.0, 0.6), s, s + seg, kind))
            if rng.random() < 0.5:
                p.trees.append(random_tree(rng, outer + side * rng.uniform(2.0, 8.0), rng.uniform(s, s + seg)))
        else:
            seg = rng.uniform(3.0, 18.0)
            for _ in range(int(rng.poisson(seg / 10.0 * (2 if district == "rural" else 1)))):
                p.trees.append(random_tree(rng, outer + side * rng.uniform(1.0, 12.0), rng.uniform(s, s + seg)))
            if rng.random() < 0.15:
                p.props.append(Prop(outer + side * rng.uniform(0.5, 3.0), rng.uniform(s, s + seg),
                                    rng.uniform(0.6, 1.4), rng.uniform(0.4, 0.8), rng.uniform(0.9, 1.6),
                                    choice_colour(rng, PROP_COLOURS)))
        s += seg + (rng.uniform(0.5, 6.0) if rng.random() < 0.45 else 0.0)


def _add_boundary(p: SceneParams, b: Fence | Hedge) -> None:
    """Append a fence to ``p.fences`` or a hedge to ``p.hedges``."""
    (p.fences if isinstance(b, Fence) else p.hedges).append(b)


def _add_traffic(p: SceneParams, rng: np.random.Generator, district: str, s_lo: float, s_hi: float) -> None:
    """Moving cars in every lane: one speed per lane so cars of a lane never overlap."""
    lw = p.lane_width
    lanes = [(k + 0.5) * lw for k in range(p.lanes_right)] + [-(k + 0.5) * lw for k in range(p.lanes_left)]
    for lx in lanes:
        oncoming = lx < 0
        ego_lane = abs(lx - p.cam_x) < lw / 2
        v = -rng.uniform(0.6, 1.6) if oncoming else (rng.uniform(1.0, 1.35) if ego_lane else rng.uniform(0.5, 1.4))
        s_c = (rng.uniform(10.0, 40.0) if ego_lane else s_lo + rng.uniform(0, 30))
        while s_c < s_hi:
            car = random_car(rng, v, oncoming)
            car.x = lx + rng.normal(0, 0.15)
            car.s0 = s_c + car.length / 2
            p.cars.append(car)
            s_c += car.length + rng.uniform(8.0, 60.0) * (2.5 if district == "rural" else 1.0)


def _add_crossing_people(p: SceneParams, rng: np.random.Generator) -> None:
    """Pedestrians standing on the crosswalks (none close to the camera's line)."""
    left_edge, right_edge = p.road_edges()
    for s_cw in p.crosswalks:
        for _ in range(int(rng.poisson(0.8))):
            x = rng.uniform(left_edge, right_edge)
            if abs(x - p.cam_x) < 1.5:
                continue
            ped = random_pedestrian(rng, x, s_cw + rng.uniform(0.5, 3.0))
            ped.across, ped.v, ped.direction = True, 0.0, 1 if rng.random() < 0.5 else -1
            p.pedestrians.append(ped)
