"""The sampling plan: which LR frames and HR key frames feed the reconstruction of LR time t.

One module that the engine, the training sampler and the GUI all use, so a frame the user sees
live is built from exactly the inputs the batch export and the training used.

Time is counted in LR frame indices ``0 .. n_frames - 1``. HR key frames are a sorted set of
those indices at which an HR frame exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Window", "key_indices", "lr_indices", "bracketing_keys", "window", "plan"]


@dataclass(frozen=True)
class Window:
    """Inputs of one reconstruction target.

    Attributes
    ----------
    target : int
        LR time index t whose HR frame is reconstructed.
    lr_indices : tuple of int
        ``(t - s, t, t + s)`` clamped to ``[0, n_frames - 1]``; the centre is always ``t``.
    key_before, key_after : int
        LR time indices of the two HR key frames used: the largest key <= t and the smallest
        key > t; past the last key, the two last keys (``key_before < key_after`` always).
    separation : int
        LR frame separation s.
    """

    target: int
    lr_indices: tuple[int, int, int]
    key_before: int
    key_after: int
    separation: int

    @property
    def keys(self) -> tuple[int, int]:
        """``(key_before, key_after)``."""
        return (self.key_before, self.key_after)

    @property
    def offset_from_key(self) -> int:
        """``target - key_before`` in LR frames (0 at a key frame)."""
        return self.target - self.key_before


def key_indices(
    n_frames: int, key_step: int | None = None, *, first_last: bool = False
) -> np.ndarray:
    """LR time indices at which an HR key frame exists.

    Parameters
    ----------
    n_frames : int
        Length T of the LR sequence (>= 2).
    key_step : int, optional
        Every ``key_step``-th frame is a key (0, k, 2k, ...), k >= 2. The last frame is *not*
        added unless it falls on the grid: that is how a camera triggered every k frames records.
    first_last : bool
        Only the first and the last frame are keys (the paper's hardest case).

    Returns
    -------
    numpy.ndarray of int64, shape (K,)
        Sorted key indices, K >= 2.
    """
    if n_frames < 2:
        raise ValueError(f"need at least 2 frames to place HR keys, got n_frames={n_frames}")
    if first_last:
        if key_step is not None:
            raise ValueError("give either key_step or first_last=True, not both")
        return np.array([0, n_frames - 1], dtype=np.int64)
    if key_step is None:
        raise ValueError("give key_step (>= 2) or first_last=True")
    if int(key_step) != key_step or key_step < 2:
        raise ValueError(f"key_step must be an integer >= 2, got {key_step!r}")
    keys = np.arange(0, n_frames, int(key_step), dtype=np.int64)
    if keys.size < 2:
        raise ValueError(
            f"key_step={key_step} leaves fewer than 2 HR keys in {n_frames} frames; "
            f"use a key step <= {n_frames - 1} or first_last=True"
        )
    return keys


def _check_keys(keys: Sequence[int] | np.ndarray, n_frames: int) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.int64).ravel()
    if keys.size < 2:
        raise ValueError(f"need at least 2 HR key frames, got {keys.size}")
    if np.any(np.diff(keys) <= 0):
        raise ValueError(f"HR key indices must be strictly increasing, got {keys.tolist()}")
    if keys[0] < 0 or keys[-1] >= n_frames:
        raise ValueError(
            f"HR key indices must lie in [0, {n_frames - 1}] (the LR sequence has {n_frames} "
            f"frames), got {keys.min()}..{keys.max()}"
        )
    return keys


def lr_indices(target: int, n_frames: int, separation: int) -> tuple[int, int, int]:
    """``(t - s, t, t + s)`` clamped to the sequence ``[0, n_frames - 1]``."""
    if int(separation) != separation or separation < 1:
        raise ValueError(f"LR separation must be an integer >= 1, got {separation!r}")
    if int(target) != target:
        raise ValueError(f"target frame must be an integer index, got {target!r}")
    if not 0 <= target < n_frames:
        raise ValueError(f"target frame {target} is outside the LR sequence [0, {n_frames - 1}]")
    # Plain ints: numpy integers would leak into Window and break JSON export metadata.
    target, separation, last = int(target), int(separation), int(n_frames) - 1
    return (max(target - separation, 0), target, min(target + separation, last))


def bracketing_keys(target: int, keys: np.ndarray) -> tuple[int, int]:
    """The two HR keys around ``target``: largest key <= t and smallest key > t.

    Before the first key (possible with real data) the two first keys are used; at or past the
    last key the two last keys.
    """
    pos = int(np.searchsorted(keys, target, side="right"))  # keys[pos-1] <= t < keys[pos]
    pos = min(max(pos, 1), keys.size - 1)
    return int(keys[pos - 1]), int(keys[pos])


def window(target: int, n_frames: int, separation: int, keys: Sequence[int] | np.ndarray) -> Window:
    """The :class:`Window` of one target LR time (see the module docstring)."""
    keys = _check_keys(keys, n_frames)
    indices = lr_indices(target, n_frames, separation)  # validates target and separation
    before, after = bracketing_keys(target, keys)
    return Window(int(target), indices, before, after, int(separation))


def plan(
    targets: Iterable[int], n_frames: int, separation: int, keys: Sequence[int] | np.ndarray
) -> list[Window]:
    """Windows of several targets, in the order given (the engine walks them in time order)."""
    keys = _check_keys(keys, n_frames)
    return [window(int(t), n_frames, separation, keys) for t in targets]
