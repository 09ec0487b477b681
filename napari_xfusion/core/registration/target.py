"""Calibration from a grid target image pair (e.g. a copper TEM grid)."""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_from_target", "grid_period"]


def grid_period(image: np.ndarray) -> float | None:
    raise NotImplementedError


def estimate_from_target(hr_target: np.ndarray, lr_target: np.ndarray, **kwargs):  # noqa: ANN003, ANN201
    raise NotImplementedError
