"""Normalising EDVR-STF's temporal-attention scores for plotting across key-frame gaps.

A raw score (the spatial mean of TSA's pre-sigmoid correlation between an input frame and the
reference LR frame) varies with image content, so curves from different gaps are not
comparable. Dividing each target's score by the score at the time of its preceding HR key
(where that key *is* the target's own time) makes every gap start at 1: the backward score
should then fall across the gap (about 1 -> 0.3) and the forward score rise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_xfusion.core.windows import bracketing_keys

__all__ = ["preceding_keys", "normalise_scores"]


def _as_keys(keys: Sequence[int] | np.ndarray) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.ndim != 1 or keys.size < 2:
        raise ValueError(f"need a 1-D sequence of at least 2 HR key indices, got {keys.tolist()}")
    if not np.issubdtype(keys.dtype, np.integer):
        raise ValueError(f"HR key indices must be integers, got dtype {keys.dtype}")
    if np.any(np.diff(keys) <= 0):
        raise ValueError(f"HR key indices must be strictly increasing, got {keys.tolist()}")
    return keys.astype(np.int64)


def preceding_keys(
    targets: Sequence[int] | np.ndarray, keys: Sequence[int] | np.ndarray
) -> np.ndarray:
    """The key each target's scores are grouped by: its window's ``key_before``.

    That is the largest key <= t, except at or past the last key (the window then uses the two
    last keys, so the group is the second-to-last key) and before the first key (the first key),
    as :func:`napari_xfusion.core.windows.bracketing_keys` decides.

    Returns
    -------
    numpy.ndarray of int64, shape (N,)
    """
    keys = _as_keys(keys)
    return np.array(
        [bracketing_keys(int(t), keys)[0] for t in np.asarray(targets).ravel()], dtype=np.int64
    )


def normalise_scores(
    targets: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    keys: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """Divide each target's attention score by the score at its preceding key's time.

    Parameters
    ----------
    targets : array of int, shape (N,)
        LR time indices the scores were computed at, unique, in any order.
    scores : array of float, shape (N,) or (N, ...)
        Raw scores per target (e.g. backward or forward; NaN where not computed). Trailing axes
        (several scores per target) are normalised independently.
    keys : array of int, shape (K,)
        Sorted HR key indices (K >= 2).

    Returns
    -------
    numpy.ndarray, float64, same shape as ``scores``
        ``scores[i] / scores[j]`` where ``targets[j]`` is the preceding key of ``targets[i]``
        (see :func:`preceding_keys`): 1 at each key's own time. NaN for every target whose
        key's own score was not computed (the key time is not among ``targets``, or its score
        is NaN). A key score of 0 gives +-inf (no warning); a negative one flips the sign.
    """
    targets = np.asarray(targets)
    scores = np.asarray(scores, dtype=np.float64)
    if targets.ndim != 1:
        raise ValueError(f"targets must be a 1-D array of frame indices, got shape {targets.shape}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer frame indices, got dtype {targets.dtype}")
    if scores.ndim == 0 or scores.shape[0] != targets.size:
        raise ValueError(
            f"need one score (row) per target: {targets.size} targets but scores of shape "
            f"{scores.shape}"
        )
    unique, counts = np.unique(targets, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"targets must be unique, repeated: {unique[counts > 1].tolist()}")

    groups = preceding_keys(targets, keys)
    row_of_target = {int(t): i for i, t in enumerate(targets)}
    key_scores = np.full(scores.shape, np.nan)
    for key in np.unique(groups):
        row = row_of_target.get(int(key))
        if row is not None:
            key_scores[groups == key] = scores[row]
    with np.errstate(divide="ignore", invalid="ignore"):
        return scores / key_scores
