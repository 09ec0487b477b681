"""The GUI's overlay check and hand adjustment, Qt-free: one key resampled with a transform,
shown over its up-sampled LR frame (checkerboard or blend), and a transform from edited
parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion.app.dualcam.align import fit_intensity, lr_at_times
from napari_xfusion.app.dualcam.prepare import PreparedPair

if TYPE_CHECKING:
    from napari_xfusion.core.registration import CameraTransform

__all__ = ["OVERLAY_MODES", "Preview", "overlay_preview"]

OVERLAY_MODES = ("checkerboard", "blend")


@dataclass(frozen=True)
class Preview:
    """``image`` (4h', 4w') float32: the overlay of key ``key`` on its LR frame
    ``lr_index`` (up-sampled x4) over the LR crop ``lr_crop`` (y0, y1, x0, x1);
    ``residual_lr_px`` of that key."""

    image: np.ndarray
    key: int
    lr_index: int
    lr_crop: tuple[int, int, int, int]
    residual_lr_px: float


def overlay_preview(
    prepared: PreparedPair,
    transform: CameraTransform,
    key: int = 0,
    *,
    lr_index: int | None = None,
    time_frames: float | None = None,
    mode: str = "checkerboard",
    tile: int = 32,
) -> Preview:
    """Key ``key`` of ``prepared`` resampled with ``transform`` onto the 4x grid, over the LR
    frame it belongs to (``lr_index``, default its time match), up-sampled bicubic x4.

    ``time_frames`` (the key's refined LR time, :attr:`AlignmentReport.key_times_frames`): the
    LR interpolated to that time instead, so the residual shown is the alignment's, without the
    motion between the key and its nearest LR frame."""
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.registration import measure_residual, overlay, resample_keys
    from napari_xfusion.core.resample import upscale_bicubic

    if mode not in OVERLAY_MODES:
        raise ValueError(f"overlay mode: expected one of {', '.join(OVERLAY_MODES)}, got {mode!r}")
    n = int(prepared.hr.shape[0])
    if not 0 <= key < n:
        raise ValueError(f"key {key}: expected 0 .. {n - 1}")
    t = int(prepared.lr_index[key] if lr_index is None else lr_index)
    keys: Any = resample_keys(
        prepared.hr[key : key + 1], transform, prepared.lr.shape[1:], factor=4
    )
    y0, y1, x0, x1 = (int(v) for v in keys.lr_crop)
    if time_frames is None:
        lr = prepared.lr[t : t + 1, y0:y1, x0:x1]
    else:
        lr = lr_at_times(prepared.lr[:, y0:y1, x0:x1], np.array([float(time_frames)]))
    grid = np.asarray(keys.hr_on_grid, dtype=np.float32)
    gain, offset = fit_intensity(bin_frames(grid), lr)
    grid = np.clip(gain * grid + offset, 0.0, 1.0).astype(np.float32)
    image = overlay(grid[0], upscale_bicubic(lr)[0], mode=mode, tile=tile)
    median, _ = measure_residual(grid, lr)
    return Preview(np.asarray(image, dtype=np.float32), key, t, (y0, y1, x0, x1), float(median))
