"""Label ids, the default frame size and the distance limits shared by the scene generator.

The ids are CARLA 0.9's 13 semantic-camera classes, in the order of
:data:`unet_edge.data.layouts.CARLA_CLASSES` (the sky is 0, Unlabeled).
"""
from __future__ import annotations

(UNLABELED, BUILDING, FENCE, OTHER, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION, VEHICLE,
 WALL, TRAFFICSIGN) = range(13)

DEFAULT_SIZE = (240, 320)  # (H, W) pixels
Z_NEAR = 0.8        # m: nearer geometry is clipped
Z_FAR_SMALL = 150.0  # m: cars, people, poles, signs, trees beyond this are not drawn
Z_FAR_BIG = 320.0    # m: buildings, walls, fences beyond this are not drawn
Z_GROUND_MAX = 2000.0  # m: distance of the ground rows just under the horizon
