"""Mapping detector values to [0, 1] and back.

Every method works on float32 frames in [0, 1]. A stack is clipped at its 0.35th and 99.65th
percentiles (hot and dead pixels, saturated spots) and min-max scaled in between. The clip
values and the original dtype are kept in a :class:`Normalisation` so results can be exported in
detector units, and saved with them (:meth:`Normalisation.to_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LOWER_PERCENTILE",
    "SAMPLE_FRAMES",
    "SAMPLE_PIXELS",
    "UPPER_PERCENTILE",
    "Normalisation",
    "fit_normalisation",
    "normalise",
]

LOWER_PERCENTILE = 0.35
"""Percentile of the whole stack mapped to 0."""

UPPER_PERCENTILE = 99.65
"""Percentile of the whole stack mapped to 1."""

# Frames are converted a few at a time so a memory-mapped stack never needs a float64 copy.
_CHUNK_PIXELS = 1 << 22


def _chunks(shape: tuple[int, ...]) -> Iterator[tuple[slice, ...] | tuple[()]]:
    """Index tuples covering an array of ``shape`` in slabs along the first axis."""
    if len(shape) < 3 or shape[0] == 0:
        yield ()
        return
    per_frame = max(1, math.prod(shape[1:]))
    step = max(1, _CHUNK_PIXELS // per_frame)
    for start in range(0, shape[0], step):
        yield (slice(start, start + step),)


@dataclass(frozen=True)
class Normalisation:
    """A linear map from detector values to [0, 1] and its inverse.

    Attributes
    ----------
    low, high : float
        Detector values mapped to 0 and 1 (``low <= high``); values outside are clipped. When
        ``low == high`` (a constant stack) everything maps to 0, and back to ``low``.
    dtype : str
        NumPy dtype name of the original data (e.g. ``"uint16"``), restored by :meth:`invert`.
    """

    low: float
    high: float
    dtype: str = "float32"

    def __post_init__(self) -> None:
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"normalisation limits must be finite, got low={low}, high={high}")
        if high < low:
            raise ValueError(f"normalisation needs low <= high, got low={low}, high={high}")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise ValueError(f"not a NumPy dtype: {self.dtype!r}") from None
        if dtype.kind not in "uif":
            raise ValueError(f"original dtype must be an integer or float type, got {dtype}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "dtype", dtype.name)

    @property
    def span(self) -> float:
        """``high - low`` in detector units (0 for a constant stack)."""
        return self.high - self.low

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """Detector values -> float32 in [0, 1], clipped.

        Parameters
        ----------
        arr : numpy.ndarray, any shape, real dtype
            Detector values (a memory-mapped stack is read in slabs).

        Returns
        -------
        numpy.ndarray, float32, same shape
        """
        arr = np.asarray(arr)
        out = np.empty(arr.shape, dtype=np.float32)
        if self.span == 0.0:
            out.fill(0.0)
            return out
        scale = 1.0 / self.span
        for index in _chunks(arr.shape):
            # float64 for the subtraction: large offsets (e.g. 1e6 + small signal) survive.
            slab = (np.asarray(arr[index], dtype=np.float64) - self.low) * scale
            np.clip(slab, 0.0, 1.0, out=slab)
            out[index] = slab
        return out

    def invert(self, arr: np.ndarray, to_dtype: bool = True) -> np.ndarray:
        """[0, 1] values -> detector units.

        Parameters
        ----------
        arr : numpy.ndarray, any shape
            Normalised values (a reconstruction may stray slightly outside [0, 1]).
        to_dtype : bool
            Return the original :attr:`dtype`: integers are rounded and clipped to the dtype's
            range. False returns float32 detector values, unrounded and unclipped.

        Returns
        -------
        numpy.ndarray, same shape, :attr:`dtype` or float32
        """
        arr = np.asarray(arr)
        target = np.dtype(self.dtype) if to_dtype else np.dtype(np.float32)
        out = np.empty(arr.shape, dtype=target)
        for index in _chunks(arr.shape):
            slab = np.asarray(arr[index], dtype=np.float64) * self.span + self.low
            if target.kind in "ui":
                info = np.iinfo(target)
                np.rint(slab, out=slab)
                np.clip(slab, info.min, info.max, out=slab)
            out[index] = slab
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, saved in export metadata."""
        return {"low": self.low, "high": self.high, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalisation:
        """Inverse of :meth:`to_dict`."""
        missing = {"low", "high", "dtype"} - set(data)
        if missing:
            raise ValueError(
                f"normalisation metadata lacks {', '.join(sorted(missing))}; got keys "
                f"{sorted(data)}"
            )
        return cls(low=data["low"], high=data["high"], dtype=data["dtype"])


SAMPLE_PIXELS = 1 << 22
"""Pixels the clip values are estimated from (about 4.2 M): a stack up to this size is used
whole (exact percentiles); a larger one is sampled, so memory does not grow with its length.

Accuracy of the sample: with n = 4.2 M independent pixels the estimated 0.35th percentile is
the stack's true q-th percentile with q within 0.35 +- 0.003 (one standard error,
sqrt(p (1 - p) / n)); the test on a 2,000-frame memory-mapped uint16 stack checks it holds.
Frames are sampled evenly in time (:data:`SAMPLE_FRAMES`), so content that appears in only a
few frames between two sampled ones is missed: those pixels are a tiny share of the stack and
would move a 0.35 % percentile little anyway."""

SAMPLE_FRAMES = 256
"""Frames, evenly spaced from the first to the last, a large stack is sampled from."""


def fit_normalisation(
    stack: np.ndarray,
    lower: float = LOWER_PERCENTILE,
    upper: float = UPPER_PERCENTILE,
    max_frames: int | None = None,
) -> Normalisation:
    """Clip values of a stack: its ``lower`` and ``upper`` percentiles over all pixels.

    Stacks of at most :data:`SAMPLE_PIXELS` pixels give exact percentiles; larger ones are
    estimated without copying them: :data:`SAMPLE_FRAMES` frames evenly spaced through the
    stack, read one at a time, and from each a fixed, seeded random set of pixels (the same
    stack always gives the same values). Peak memory is one frame plus the sample, whatever
    the number of frames.

    Parameters
    ----------
    stack : numpy.ndarray, shape (T, H, W) or (H, W)
        Detector values, any real dtype (memory-mapped is fine).
    lower, upper : float
        Percentiles in [0, 100], ``lower < upper``.
    max_frames : int, optional
        Use at most this many frames, evenly spaced through the stack (first and last
        included), instead of :data:`SAMPLE_FRAMES`.

    Returns
    -------
    Normalisation
        With the stack's dtype.

    Raises
    ------
    ValueError
        Not 2-D/3-D, empty, not a real dtype, bad percentiles, or NaN/inf in the frames used
        (the message names the first: frame and pixel).
    """
    if not hasattr(stack, "ndim"):
        stack = np.asarray(stack)
    if stack.ndim not in (2, 3) or stack.size == 0:
        raise ValueError(
            f"expected a stack of shape (T, H, W) or a frame (H, W), got {stack.shape}"
        )
    if stack.dtype.kind not in "uif":
        raise ValueError(f"expected integer or float detector values, got dtype {stack.dtype}")
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(
            f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}"
        )
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 1):
        raise ValueError(f"max_frames must be an integer >= 1 or None, got {max_frames!r}")
    frames = stack[np.newaxis] if stack.ndim == 2 else stack
    n_frames, frame_pixels = frames.shape[0], math.prod(frames.shape[1:])
    limit = SAMPLE_FRAMES if max_frames is None else int(max_frames)
    if n_frames * frame_pixels <= SAMPLE_PIXELS and max_frames is None:
        used = np.arange(n_frames)
    else:
        used = np.unique(np.linspace(0, n_frames - 1, min(limit, n_frames)).round())
        used = used.astype(np.int64)
    per_frame = min(frame_pixels, max(1, SAMPLE_PIXELS // used.size))
    rng = np.random.default_rng(0)  # fixed: the same stack always gives the same clip values
    sample = np.empty(used.size * per_frame, dtype=stack.dtype)
    for j, t in enumerate(used):
        frame = np.asarray(frames[int(t)])  # one frame in memory at a time
        if frame.dtype.kind == "f":
            _check_finite_frame(frame, int(t) if stack.ndim == 3 else None)
        flat = frame.ravel()
        if frame_pixels > per_frame:
            flat = flat[rng.integers(0, frame_pixels, per_frame)]
        sample[j * per_frame : (j + 1) * per_frame] = flat
    # Partitioned in place: the sample is ours, and stays in its dtype (no float64 copy).
    low, high = np.percentile(sample, [lower, upper], overwrite_input=True)
    return Normalisation(float(low), float(high), stack.dtype.name)


def _check_finite_frame(frame: np.ndarray, t: int | None) -> None:
    finite = np.isfinite(frame)
    if finite.all():
        return
    y, x = (int(i) for i in np.argwhere(~finite)[0])
    what = "the frame" if t is None else f"frame {t}"
    raise ValueError(
        f"stack holds non-finite values: {what} has {finite.size - int(finite.sum())} NaN/inf "
        f"pixel(s), the first at pixel (y={y}, x={x}); clean them first"
    )


def normalise(
    stack: np.ndarray,
    lower: float = LOWER_PERCENTILE,
    upper: float = UPPER_PERCENTILE,
    max_frames: int | None = None,
) -> tuple[np.ndarray, Normalisation]:
    """Fit and apply :func:`fit_normalisation` in one call.

    Returns
    -------
    normalised : numpy.ndarray, float32, same shape as ``stack``, values in [0, 1]
    normalisation : Normalisation
        To map results back with :meth:`Normalisation.invert`.
    """
    params = fit_normalisation(stack, lower, upper, max_frames)
    return params.apply(stack), params
