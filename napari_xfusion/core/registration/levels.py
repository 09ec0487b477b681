"""LR pyramid levels both steps of the estimate work on, and small helpers they share.

See :mod:`napari_xfusion.core.registration.estimate` for the method.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xfusion.core.degrade import bin_frames

# The coarse search works at a pyramid level where the LR image is at most this wide.
_COARSE_MAX_SIDE = 128
_MIN_LEVEL_SIDE = 12


def _level_matrix(c: int) -> np.ndarray:
    """LR pixel coordinates -> coordinates on the LR image binned ``c x c``."""
    return np.array([[1 / c, 0, 0.5 / c - 0.5], [0, 1 / c, 0.5 / c - 0.5], [0, 0, 1.0]])


def _bin_level(frames: np.ndarray, c: int) -> np.ndarray:
    if c == 1:
        return np.asarray(frames, dtype=np.float32)
    h, w = frames.shape[-2:]
    return bin_frames(frames[..., : h - h % c, : w - w % c], c)


def _coarse_level(lr_shape: tuple[int, int], max_side: int = _COARSE_MAX_SIDE) -> int:
    """Smallest power-of-two binning that makes the LR image at most ``max_side`` wide (while
    its short side stays >= ``_MIN_LEVEL_SIDE``)."""
    c = 1
    while max(lr_shape) / c > max_side and min(lr_shape) / (2 * c) >= _MIN_LEVEL_SIDE:
        c *= 2
    return c


def _rotation(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _standardise(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    std = float(image.std())
    return (image - image.mean()) / (std if std > 0 else 1.0)
