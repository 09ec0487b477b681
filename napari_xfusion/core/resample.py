"""Integer-factor bicubic up-sampling in plain numpy, identical to PyTorch's.

:func:`upscale_bicubic` reproduces ``torch.nn.functional.interpolate(x, scale_factor=factor,
mode="bicubic", align_corners=False)``: Keys' cubic convolution kernel with ``a = -0.75``, pixel
centres aligned (output pixel ``i`` samples the input at ``(i + 0.5) / factor - 0.5``) and edge
pixels replicated beyond the border. It backs the ``bicubic`` method and the x4 views of the LR
stream, so the baseline here equals the one a network sees in training.

For an integer factor the sub-pixel phase of an output pixel depends only on ``i mod factor``:
each axis is a fixed bank of ``factor`` 4-tap filters applied to an edge-padded copy, which
costs O(output pixels) (no dense interpolation matrices).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["KEYS_A", "upscale_bicubic"]

KEYS_A = -0.75
"""Keys' cubic-convolution parameter of PyTorch and OpenCV (MATLAB's ``imresize`` uses -0.5)."""

# Every phase's 4 taps lie within 2 input pixels of the output pixel's block: the source
# position's fractional part is in (-0.5, 0.5), so the taps start at offset -2 or -1.
_PAD = 2


def _keys_kernel(distance: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel at ``distance`` (input pixels), ``a = KEYS_A``."""
    a = KEYS_A
    d = np.abs(distance)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return np.where(d <= 1.0, near, np.where(d < 2.0, far, 0.0))


@lru_cache(maxsize=16)
def _phase_filters(factor: int) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """The filter bank of one axis.

    Returns
    -------
    starts : tuple of int, length ``factor``
        For phase ``p``, index of the first tap in the ``_PAD``-padded input relative to the
        input pixel ``j`` of output pixel ``factor * j + p``.
    weights : numpy.ndarray, float32, shape (factor, 4)
        Tap weights of each phase (each row sums to 1).
    bank : numpy.ndarray, float32, shape (2 * _PAD + 1, factor)
        The same weights placed on the 5 padded pixels ``j - 2 .. j + 2``, one column per phase.
    """
    phase = np.arange(factor)
    source = (phase + 0.5) / factor - 0.5  # source position relative to j, in (-0.5, 0.5)
    first = np.floor(source).astype(np.int64) - 1  # first of the 4 taps, relative to j
    weights = _keys_kernel(source[:, None] - (first[:, None] + np.arange(4)))
    starts = tuple(int(s) + _PAD for s in first)
    weights = weights.astype(np.float32)
    bank = np.zeros((2 * _PAD + 1, factor), dtype=np.float32)
    for p, start in enumerate(starts):
        bank[start : start + 4, p] = weights[p]
    weights.flags.writeable = False
    bank.flags.writeable = False
    return starts, weights, bank


def _upscale_frame(frame: np.ndarray, factor: int, out: np.ndarray) -> None:
    """Up-sample one float32 ``(h, w)`` frame into ``out`` of shape ``(factor*h, factor*w)``."""
    h, w = frame.shape
    starts, weights, bank = _phase_filters(factor)

    # Along the width: build (h, w, 5) windows of the padded rows and apply all phases at once
    # with one small matmul; (h, w, factor) reshaped is the phase-interleaved row.
    padded = np.pad(frame, ((0, 0), (_PAD, _PAD)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * _PAD + 1, axis=1)
    rows = (windows @ bank).reshape(h, w * factor)

    # Along the height: whole output rows of one phase are contiguous blocks of `out`, so
    # accumulate them in place from shifted views of the padded rows (one reused scratch row).
    rows = np.pad(rows, ((_PAD, _PAD), (0, 0)), mode="edge")
    by_phase = out.reshape(h, factor, w * factor)
    scratch = np.empty((h, w * factor), dtype=np.float32)
    for p, start in enumerate(starts):
        target = by_phase[:, p, :]
        np.multiply(rows[start : start + h], weights[p, 0], out=target)
        for k in range(1, 4):
            np.multiply(rows[start + k : start + k + h], weights[p, k], out=scratch)
            target += scratch


def upscale_bicubic(frames: np.ndarray, factor: int = 4) -> np.ndarray:
    """Bicubic up-sampling by an integer factor, equal to PyTorch's ``bicubic`` mode.

    Parameters
    ----------
    frames : numpy.ndarray, shape (..., h, w)
        One frame or a stack (any leading dimensions), any real dtype; computed in float32.
    factor : int
        Up-sampling factor along each axis (>= 1); 4 for LR -> HR.

    Returns
    -------
    numpy.ndarray, float32, shape (..., factor * h, factor * w)
        Keys kernel ``a = -0.75``, ``align_corners=False``, edges replicated. Values may
        overshoot the input range slightly at sharp edges (as PyTorch's do); not clipped.
    """
    frames = np.asarray(frames)
    if frames.ndim < 2:
        raise ValueError(f"expected frames of shape (..., h, w), got shape {frames.shape}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"up-sampling factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    h, w = frames.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"cannot up-sample empty frames of shape {frames.shape}")
    if not np.issubdtype(frames.dtype, np.number) or np.iscomplexobj(frames):
        raise TypeError(f"expected real-valued frames, got dtype {frames.dtype}")

    lead = frames.shape[:-2]
    out = np.empty((*lead, factor * h, factor * w), dtype=np.float32)
    if factor == 1:
        out[...] = frames
        return out
    # One frame at a time keeps the temporaries frame-sized for long (T, h, w) stacks.
    flat_in = frames.reshape(-1, h, w)
    flat_out = out.reshape(-1, factor * h, factor * w)
    for i in range(flat_in.shape[0]):
        frame = np.ascontiguousarray(flat_in[i], dtype=np.float32)
        _upscale_frame(frame, factor, flat_out[i])
    return out
