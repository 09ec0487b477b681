"""Registering the HR camera onto the exact 4x grid of the LR camera's view (issue 17, space).

- :class:`CameraTransform`: HR pixel -> LR pixel map (3x3), parameters, JSON transform file.
- :func:`estimate_transform`: from HR keys and their LR frames (flip, scale, rotation, shift,
  optionally affine), robust to LR shot noise; :func:`estimate_from_target` from a calibration
  grid image pair.
- :func:`assess_transform`: the same measures for a given transform (file, user adjustment).
- :func:`resample_keys`: HR keys onto the exact 4x grid of the common LR crop.
- :func:`measure_residual` / :func:`check_residual`: residual misregistration in LR pixels and
  the refusal to fuse; :func:`overlay` for a visual check; :func:`warp_hr_view` renders an HR
  camera's view of a scene on the 4x grid (simulated pairs, tests).

numpy + OpenCV only (no torch, no Qt).
"""

from napari_xfusion.core.registration.estimate import (
    FLIPS,
    MODELS,
    Registration,
    assess_transform,
    estimate_transform,
)
from napari_xfusion.core.registration.grid import (
    ResampledKeys,
    common_lr_crop,
    coverage_mask,
    grid_to_lr_matrix,
    resample_keys,
    warp_hr_view,
)
from napari_xfusion.core.registration.residual import check_residual, measure_residual, overlay
from napari_xfusion.core.registration.target import (
    estimate_from_target,
    grid_period,
    lattice_vectors,
)
from napari_xfusion.core.registration.transform import (
    TRANSFORM_FORMAT,
    TRANSFORM_VERSION,
    CameraTransform,
    RegistrationError,
)

__all__ = [
    "FLIPS",
    "MODELS",
    "TRANSFORM_FORMAT",
    "TRANSFORM_VERSION",
    "CameraTransform",
    "Registration",
    "RegistrationError",
    "ResampledKeys",
    "assess_transform",
    "check_residual",
    "common_lr_crop",
    "coverage_mask",
    "estimate_from_target",
    "estimate_transform",
    "grid_period",
    "grid_to_lr_matrix",
    "lattice_vectors",
    "measure_residual",
    "overlay",
    "resample_keys",
    "warp_hr_view",
]
