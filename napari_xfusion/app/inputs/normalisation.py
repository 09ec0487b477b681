"""The normalisation rule of :mod:`napari_xfusion.app.inputs` (its docstring): which frames of a
stream its clip values are fitted on, and when data is used as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_xfusion.app.inputs.prepared import InputError

LR_SAMPLE_FRAMES = 64
"""Frames (evenly spaced) that an LR or truth stream's clip values are fitted on."""

_BLOCK_FRAMES = 32  # frames per block when binning a full-rate HR stack


def sample_rows(n: int, limit: int = LR_SAMPLE_FRAMES) -> list[int]:
    """At most ``limit`` evenly spaced indices of ``range(n)``, first and last included."""
    if n <= limit:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, limit).round())]


def _subsample(rows: Sequence[int]) -> list[int]:
    rows = [int(r) for r in rows]
    return [rows[i] for i in sample_rows(len(rows))]


def is_unit_float(stack: Any, rows: Sequence[int]) -> bool:
    """Whether ``stack[rows]`` is float data within [0, 1] (read block by block)."""
    if not np.issubdtype(stack.dtype, np.floating):
        return False
    for start in range(0, len(rows), _BLOCK_FRAMES):
        block = np.asarray(stack[list(rows[start : start + _BLOCK_FRAMES])])
        if block.size and (block.min() < 0.0 or block.max() > 1.0):
            return False
    return True


def fit_stream(
    stack: Any,
    rows: Sequence[int],
    mode: str = "auto",
    name: str = "stack",
    notes: list[str] | None = None,
    role: str = "HR",
) -> Any:
    """The normalisation of one stream by the module's rule, fitted on ``stack[rows]`` (at
    most :data:`LR_SAMPLE_FRAMES` of them, evenly spaced); None when it is used as is."""
    from napari_xfusion.core.normalise import fit_normalisation

    rows = _subsample(rows)
    notes = [] if notes is None else notes
    if mode == "none" or (mode == "auto" and is_unit_float(stack, rows)):
        return None
    data = np.asarray(stack[list(rows)])
    try:
        norm = fit_normalisation(data)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None
    if not norm.high > norm.low:
        raise InputError(
            f"{name}: constant values ({norm.low:g}) in the frames used for normalisation; "
            "expected an image with contrast"
        )
    notes.append(
        f"{role} normalised to [0, 1] ({name}): clipped at {norm.low:g} .. {norm.high:g} "
        f"({stack.dtype}, fitted on {len(rows)} frame(s))"
    )
    return norm


def truth_normalisation(
    truth: Any,
    rows: Sequence[int],
    mode: str = "auto",
    hr_normalisation: Any = None,
    name: str = "truth",
    notes: list[str] | None = None,
) -> Any:
    """The truth's normalisation by the module's rule: None when float in [0, 1] (on
    ``rows``, sampled), else the HR keys' clip values when HR was normalised, else its own."""
    notes = [] if notes is None else notes
    sample = _subsample(rows)
    if mode == "none" or (mode == "auto" and is_unit_float(truth, sample)):
        return None
    if hr_normalisation is not None:
        notes.append(f"{name}: compared in the HR keys' units (their clip values)")
        return hr_normalisation
    return fit_stream(truth, sample, mode, name, notes, "truth")
