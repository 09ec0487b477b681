"""Validated values from a stack's JSON metadata (key indices, frame indices, separation).

Metadata is read from files anyone can write, so every value is checked before use: JSON
numbers may be floats (``5.7``, ``1e300``), strings, dicts or ``null``; NumPy's casts would
silently truncate them. Each parser returns a clean value or raises :class:`MetadataError`
naming the ``source`` (e.g. ``"hr.tif metadata key_indices"``) and what was expected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_xfusion.core.io import StackError

__all__ = [
    "MetadataError",
    "parse_frame_indices",
    "parse_key_indices",
    "parse_separation",
]


class MetadataError(StackError):
    """A metadata value is missing or not what it must be (a :class:`StackError`)."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_int(item: Any, source: str, where: str) -> int:
    """``item`` as a Python int: ints and integral floats; never bools, strings, 5.7 or 1e300."""
    if isinstance(item, (bool, np.bool_)):
        raise MetadataError(f"{source}: {where} is {item!r}, expected an integer frame index")
    if isinstance(item, (int, np.integer)):
        return int(item)
    if isinstance(item, (float, np.floating)):
        if math.isfinite(item) and float(item).is_integer() and abs(item) < 2**53:
            return int(item)
        raise MetadataError(
            f"{source}: {where} is {item!r}, expected an integer frame index (not a fraction "
            "or an out-of-range number)"
        )
    raise MetadataError(
        f"{source}: {where} is {_show(item)} ({type(item).__name__}), expected an integer"
    )


def _as_int_list(value: Any, source: str) -> list[int]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise MetadataError(f"{source}: expected a list of integers, got an array of shape "
                                f"{value.shape}")  # fmt: skip
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise MetadataError(
            f"{source}: expected a list of integer frame indices, got {_show(value)} "
            f"({type(value).__name__})"
        )
    return [_as_int(item, source, f"entry {i}") for i, item in enumerate(value)]


def _check_range(indices: list[int], n_frames: int | None, source: str) -> None:
    for i, t in enumerate(indices):
        if t < 0:
            raise MetadataError(f"{source}: entry {i} is {t}; frame indices must be >= 0")
        if n_frames is not None and t >= n_frames:
            raise MetadataError(
                f"{source}: entry {i} is {t}, past the last frame ({n_frames - 1}) of a "
                f"{n_frames}-frame stack"
            )


def parse_key_indices(
    value: Any,
    n_frames: int | None,
    source: str,
    *,
    required: bool = True,
    min_keys: int = 2,
) -> np.ndarray | None:
    """LR time indices of the HR key frames, checked.

    Parameters
    ----------
    value : Any
        The metadata value (a JSON list), or None when the key is absent.
    n_frames : int, optional
        Frames of the LR stack the indices refer to (indices must be below it); None: no
        upper bound known.
    source : str
        Where the value came from, for messages: ``"hr.tif metadata key_indices"``.
    required : bool
        Raise when ``value`` is None; otherwise return None.
    min_keys : int
        Fewest keys accepted (fusion needs 2).

    Returns
    -------
    numpy.ndarray of int64, shape (K,), strictly increasing, or None
    """
    if value is None:
        if required:
            raise MetadataError(f"{source}: missing (null); expected a list of key frame indices")
        return None
    indices = _as_int_list(value, source)
    if len(indices) < min_keys:
        raise MetadataError(
            f"{source}: {len(indices)} key index(es) {indices}; need at least {min_keys}"
        )
    _check_range(indices, n_frames, source)
    for i in range(1, len(indices)):
        if indices[i] <= indices[i - 1]:
            what = "repeated" if indices[i] == indices[i - 1] else "out of order"
            raise MetadataError(
                f"{source}: entry {i} ({indices[i]}) is {what} after {indices[i - 1]}; key "
                "indices must be strictly increasing"
            )
    return np.asarray(indices, dtype=np.int64)


def parse_frame_indices(value: Any, n_frames: int | None, source: str) -> np.ndarray:
    """LR time index of each frame of a fused stack (``frame_indices``), checked.

    Parameters
    ----------
    value : Any
        The metadata value: a JSON list of distinct integers >= 0.
    n_frames : int, optional
        Frames of the stack they index into (e.g. the truth stack); indices must be below it.
    source : str
        For messages: ``"fused.tif metadata frame_indices"``.

    Returns
    -------
    numpy.ndarray of int64, shape (N,)
    """
    if value is None:
        raise MetadataError(f"{source}: missing (null); expected a list of frame indices")
    indices = _as_int_list(value, source)
    _check_range(indices, n_frames, source)
    seen: dict[int, int] = {}
    for i, t in enumerate(indices):
        if t in seen:
            raise MetadataError(f"{source}: frame index {t} appears twice (entries {seen[t]} "
                                f"and {i})")  # fmt: skip
        seen[t] = i
    return np.asarray(indices, dtype=np.int64)


def parse_separation(value: Any, n_frames: int | None, source: str) -> int:
    """LR separation ``s`` (an integer ``1 <= s < n_frames``), checked.

    Parameters
    ----------
    value : Any
        The metadata value.
    n_frames : int, optional
        Frames of the LR stack; ``s`` must be below it. None: no upper bound.
    source : str
        For messages: ``"lr.tif metadata separation"``.
    """
    if value is None:
        raise MetadataError(f"{source}: missing (null); expected an integer >= 1")
    s = _as_int(value, source, "the value")
    if s < 1:
        raise MetadataError(f"{source}: {s}; the LR separation must be >= 1")
    if n_frames is not None and s >= n_frames:
        raise MetadataError(
            f"{source}: {s} is not below the stack's {n_frames} frames; the LR frames t-s, t, "
            "t+s must lie in the stack"
        )
    return s
