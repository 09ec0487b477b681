"""What the engine yields per frame and method, and the run's attention table."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.core.windows import Window


@dataclass
class FrameResult:
    """One reconstructed frame, as :func:`run` yields it.

    Attributes
    ----------
    method : str
        Label of the method (its name, e.g. ``"edvr-stf"``).
    index : int
        LR time index t of the frame.
    frame : numpy.ndarray, float32, shape (H, W)
        The HR frame at t, normalised units ([0, 1]).
    window : Window
        The LR and key indices it was built from.
    attention : numpy.ndarray of float64, shape (5,) or (3,), or None
        Raw attention scores when the method has them.
    backward, forward : float or None
        Raw scores with the HR key before / after t (None when the method has no key
        attention).
    backward_norm, forward_norm : float or None
        The same divided by the score at the time of the window's ``key_before`` (NaN while
        unknown: before the first key that time comes later; :func:`attention_table` fills
        those in at the end).
    variance : numpy.ndarray, float32, shape (H, W), or None
        Per-pixel posterior variance when the method has it (``bayesian``).
    seconds : float
        Wall time spent producing this result (a batched network charges a batch to its
        first frame).
    done, total : int
        Results yielded so far (including this one) and in all, over every method.
    eta_seconds : float
        Estimated seconds until the last result (from the mean time per result so far).
    """

    method: str
    index: int
    frame: np.ndarray
    window: Window
    attention: np.ndarray | None
    backward: float | None
    forward: float | None
    backward_norm: float | None
    forward_norm: float | None
    variance: np.ndarray | None
    seconds: float
    done: int
    total: int
    eta_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


def attention_table(results: Iterable[FrameResult], keys: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame attention of one method's results as columns, normalised over the whole run.

    Returns ``index``, ``backward``, ``forward``, ``backward_norm``, ``forward_norm`` (float64,
    NaN where the method has no score); normalisation by
    :func:`napari_xfusion.core.attention.normalise_scores` over all given frames.
    """
    from napari_xfusion.core.attention import normalise_scores

    rows = sorted(((r.index, r.backward, r.forward) for r in results), key=lambda row: row[0])
    index = np.array([r[0] for r in rows], dtype=np.int64)
    backward = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    forward = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)
    return {
        "index": index,
        "backward": backward,
        "forward": forward,
        "backward_norm": np.asarray(normalise_scores(index, backward, keys), dtype=np.float64),
        "forward_norm": np.asarray(normalise_scores(index, forward, keys), dtype=np.float64),
    }
