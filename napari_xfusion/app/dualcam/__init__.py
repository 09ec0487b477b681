"""Real dual-camera data (issue 17): two cameras' stacks and metadata -> the aligned pair the
fusion takes (LR cropped to the common view, HR keys on its exact 4x grid with
``key_indices``), and a simulated misaligned pair to try it on. Qt-free; the science is in
:mod:`napari_xfusion.core.cameras` (time) and :mod:`napari_xfusion.core.registration` (space).

Modules: :mod:`.config` (:class:`DualCameraConfig`, :class:`DualCameraError`), :mod:`.times`
(stacks, metadata beside them, frame times), :mod:`.prepare` (:func:`prepare_pair`: read and
match in time), :mod:`.choose` (the transform to start from), :mod:`.align`
(:func:`align_prepared`, :func:`align_pair`), :mod:`.report` (:class:`AlignmentReport`),
:mod:`.output` (:func:`write_aligned`), :mod:`.preview` (the GUI's overlay check and hand
adjustment), :mod:`.simulate` (:func:`simulate_dual_camera`); every name importable from here.
"""

from __future__ import annotations

from napari_xfusion.app.dualcam.align import (
    AlignedPair,
    align_pair,
    align_prepared,
    fit_intensity,
    lr_at_times,
)
from napari_xfusion.app.dualcam.config import MODELS, DualCameraConfig, DualCameraError
from napari_xfusion.app.dualcam.output import ALIGNED_FILES, crop_truth, write_aligned
from napari_xfusion.app.dualcam.prepare import PreparedPair, prepare_pair
from napari_xfusion.app.dualcam.preview import overlay_preview
from napari_xfusion.app.dualcam.report import AlignmentReport, format_transform
from napari_xfusion.app.dualcam.simulate import (
    grid_target,
    similarity_matrix,
    simulate_dual_camera,
)
from napari_xfusion.app.dualcam.times import METADATA_SUFFIXES, camera_times, find_metadata

__all__ = [
    "ALIGNED_FILES",
    "METADATA_SUFFIXES",
    "MODELS",
    "AlignedPair",
    "AlignmentReport",
    "DualCameraConfig",
    "DualCameraError",
    "PreparedPair",
    "align_pair",
    "align_prepared",
    "camera_times",
    "crop_truth",
    "find_metadata",
    "fit_intensity",
    "lr_at_times",
    "format_transform",
    "grid_target",
    "overlay_preview",
    "prepare_pair",
    "similarity_matrix",
    "simulate_dual_camera",
    "write_aligned",
]
