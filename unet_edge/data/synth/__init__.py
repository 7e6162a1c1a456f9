"""Procedural CARLA-style road scenes: a synthetic segmentation dataset and forward-driving videos.

Every frame is a pinhole-camera view of a procedurally laid-out street, rendered with numpy and
OpenCV polygon drawing, together with its exact label map in CARLA 0.9's 13 classes
(:data:`unet_edge.data.layouts.CARLA_CLASSES`; the sky is 0 = Unlabeled, as CARLA's camera labels it).

Geometry (world units are metres; the camera model is in :mod:`.camera`)
    The ground (road, lane markings, crosswalks, curbs, sidewalks, verges) is rendered per pixel by
    inverting the projection row by row (:mod:`.ground`); everything standing on it (buildings,
    walls, fences, hedges, trees, poles, signs, traffic lights, street furniture, parked and moving
    cars, walking pedestrians) is drawn as projected polygons, far to near (painter's algorithm on
    the distance to the camera, long facades cut into short segments), image and labels in the
    same order so occlusions agree (:mod:`.scene`).

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

Modules, each importing only those above it: ``constants`` (label ids, limits), ``colours``,
``objects`` (what stands in the street, drawn at random), ``params`` (:class:`SceneParams` and its
random layout), ``camera``, ``painter``, ``textures``, ``lighting`` (sky, shadows, exposure, noise),
``ground``, ``buildings`` / ``roadside`` / ``traffic`` (drawing the objects), ``scene`` (one frame),
``writer`` (dataset folders, drive video).
"""
from .constants import DEFAULT_SIZE
from .params import SceneParams
from .scene import render_scene
from .writer import generate_dataset, render_drive

__all__ = ["SceneParams", "render_scene", "generate_dataset", "render_drive", "DEFAULT_SIZE"]
