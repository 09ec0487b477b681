"""Real-motion test sequences rendered from natural still images.

The simulator (:mod:`napari_xfusion.core.sample`) moves little and smoothly; real footage pans,
zooms, rotates, shakes, has independently moving objects that occlude each other, non-rigid
deformation and brightness changes. This module renders such sequences from natural stills that
ship with packages the project already depends on (scikit-image's bundled images, matplotlib's
sample data), so nothing is downloaded.

Rendering: every frame is sampled from the still at sub-pixel accurate source coordinates with
a cubic spline (``skimage.transform.warp``, order 3) and mirror reflection beyond the still's
border (so pans of hundreds of pixels stay sharp). The camera never magnifies the still (local
magnification <= 1): a frame is never blurrier than the still itself; zooms go from a wider
view (minified, anti-aliased) to the native scale.

Coordinates are ``(row, col)`` = ``(y, x)`` in output (HR) pixels; a velocity ``(vy, vx)`` moves
the image content by ``vy`` rows and ``vx`` columns per frame. Angles are in degrees,
counter-clockwise as displayed (``skimage.transform.rotate``'s convention).

Stills split
------------
:func:`training_stills` and :func:`validation_stills` are a fixed, disjoint split. The
validation stills are those that no shipped network has seen: the shipped weights were trained
on moving crops of every natural image bundled with scikit-image (``train.datasets``), so
validation uses scikit-image's stereo "motorcycle" pair (not in that list) and matplotlib's
sample images. Networks trained later must draw natural images from :func:`training_stills`
only.
"""

from __future__ import annotations

from napari_xfusion.core.motion.camera import CameraMotion, camera_path, render_camera, smooth_field
from napari_xfusion.core.motion.layers import Layer, apply_brightness, composite_layers
from napari_xfusion.core.motion.stills import (
    TRAINING_STILLS,
    VALIDATION_STILLS,
    load_still,
    training_stills,
    validation_stills,
)
from napari_xfusion.core.motion.suite import SUITE, validation_suite

__all__ = [
    "TRAINING_STILLS",
    "VALIDATION_STILLS",
    "SUITE",
    "CameraMotion",
    "Layer",
    "training_stills",
    "validation_stills",
    "load_still",
    "smooth_field",
    "camera_path",
    "render_camera",
    "composite_layers",
    "apply_brightness",
    "validation_suite",
]
