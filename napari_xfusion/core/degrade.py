"""Simulating the LR camera from HR frames: spatial binning and photon shot noise.

The paper makes its LR stream by 4x4 block averaging (binning) of HR frames and adds Poisson
shot noise to the LR frames only: a detector that counts ``b0`` photons at full transmission
sees ``Poisson(b0 * I) / b0`` for a normalised transmission image ``I`` in [0, 1]. ``b0``
(the blank-scan factor, 10^1 .. 10^7 in training) is not intuitive to a user, so the UI asks
for a target LR PSNR and :func:`solve_b0` finds the ``b0`` that gives it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from napari_xfusion.core.metrics import psnr

__all__ = [
    "SCALE",
    "MIN_TARGET_PSNR_DB",
    "MAX_TARGET_PSNR_DB",
    "bin_frames",
    "add_shot_noise",
    "lr_psnr_for_b0",
    "solve_b0",
]

SCALE = 4
"""HR pixels per LR pixel along each axis: the fixed ratio of the two cameras' grids that every
method, the simulation (LR = SCALE x SCALE binning of HR) and the networks' up-sampling assume.
The one definition; everything else imports it."""

MIN_TARGET_PSNR_DB = 20.0
"""Lowest LR PSNR :func:`solve_b0` accepts (very noisy)."""

MAX_TARGET_PSNR_DB = 60.0
"""Highest LR PSNR :func:`solve_b0` accepts (practically clean)."""

# log10(b0) search interval of the solver. Wide on purpose: a dark image (mean transmission
# 0.01) needs b0 ~ 1 for 20 dB, a bright one ~ 10^6 for 60 dB; Poisson sampling stays exact for
# rates far beyond 10^12.
_LOG10_B0_RANGE = (-3.0, 12.0)
_PSNR_TOLERANCE_DB = 0.02
_MAX_BISECTIONS = 60


def bin_frames(frames: np.ndarray, factor: int = SCALE, *, crop: bool = False) -> np.ndarray:
    """Block-average ``factor x factor`` pixel blocks: the LR camera's view of HR frames.

    Parameters
    ----------
    frames : numpy.ndarray, shape (..., H, W)
        HR frame(s), any leading dimensions, any real dtype.
    factor : int
        Block size along each axis (>= 1); 4 for the HR -> LR ratio.
    crop : bool
        When H or W is not a multiple of ``factor``: False (default) raises ``ValueError``;
        True drops the bottom rows / right columns that do not fill a block and warns how many.

    Returns
    -------
    numpy.ndarray, float32, shape (..., H // factor, W // factor)
        Block means (accumulated in float64).
    """
    frames = np.asarray(frames)
    if frames.ndim < 2:
        raise ValueError(f"expected frames of shape (..., H, W), got shape {frames.shape}")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"binning factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    h, w = frames.shape[-2:]
    extra_rows, extra_cols = h % factor, w % factor
    if extra_rows or extra_cols:
        if not crop:
            raise ValueError(
                f"frames of shape {frames.shape} cannot be binned {factor}x{factor}: H={h} and "
                f"W={w} must be multiples of {factor} ({extra_rows} rows and {extra_cols} columns "
                f"left over); crop the frames or pass crop=True"
            )
        warnings.warn(
            f"binning {factor}x{factor}: cropped {extra_rows} bottom rows and {extra_cols} right "
            f"columns of frames of shape {frames.shape}",
            stacklevel=2,
        )
        frames = frames[..., : h - extra_rows, : w - extra_cols]
        h, w = frames.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f"frames of shape {frames.shape} hold no full {factor}x{factor} block")
    blocks = frames.reshape(*frames.shape[:-2], h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def _check_b0(b0: float) -> float:
    b0 = float(b0)
    if not math.isfinite(b0) or b0 <= 0:
        raise ValueError(f"blank-scan factor b0 must be a finite number > 0, got {b0!r}")
    return b0


def add_shot_noise(
    frames: np.ndarray, b0: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Photon shot noise: ``clip(Poisson(b0 * frames) / b0, 0, 1)``.

    Parameters
    ----------
    frames : numpy.ndarray, shape (...)
        Clean normalised frames in [0, 1] (negative values count as 0 photons).
    b0 : float
        Blank-scan factor: expected photon count per pixel at transmission 1 (> 0). Larger is
        cleaner; the noise standard deviation at transmission ``I`` is ``sqrt(I / b0)``.
    rng : numpy.random.Generator or int or None
        Random generator, or a seed for one (None: fresh entropy).

    Returns
    -------
    numpy.ndarray, float32, same shape as ``frames``
        Noisy frames in [0, 1].
    """
    b0 = _check_b0(b0)
    rng = np.random.default_rng(rng)
    rate = np.clip(np.asarray(frames, dtype=np.float64), 0.0, None) * b0
    counts = rng.poisson(rate)
    noisy = counts / b0
    return np.clip(noisy, 0.0, 1.0, out=noisy).astype(np.float32)


def lr_psnr_for_b0(clean_lr: np.ndarray, b0: float, seed: int = 0) -> float:
    """PSNR in dB of ``clean_lr`` after shot noise with blank-scan factor ``b0``.

    Parameters
    ----------
    clean_lr : numpy.ndarray, shape (..., h, w)
        Clean LR frame(s) in [0, 1].
    b0 : float
        Blank-scan factor (> 0).
    seed : int
        Seed of the noise draw (the same seed gives the same value).

    Returns
    -------
    float
        PSNR over all pixels of all frames (data range 1).
    """
    clean_lr = np.asarray(clean_lr)
    return psnr(add_shot_noise(clean_lr, b0, np.random.default_rng(seed)), clean_lr)


def solve_b0(
    clean_lr: np.ndarray, target_psnr_db: float, seed: int = 0, *, max_frames: int | None = 32
) -> float:
    """The blank-scan factor ``b0`` whose shot noise gives ``clean_lr`` the target PSNR.

    PSNR grows with ``b0`` (noise variance ~ I / b0), so the solver bisects in ``log10(b0)`` on
    one seeded noise draw (common random numbers keep the curve monotone in practice) until the
    PSNR is within 0.02 dB of the target.

    Parameters
    ----------
    clean_lr : numpy.ndarray, shape (h, w) or (T, h, w)
        Clean LR frame(s) in [0, 1].
    target_psnr_db : float
        Wanted LR PSNR in dB, 20 .. 60.
    seed : int
        Seed of the noise draw; :func:`lr_psnr_for_b0` with the same seed reproduces the PSNR.
    max_frames : int or None
        Solve on at most this many frames of a stack, evenly spaced, to bound the cost on long
        sequences (the PSNR of a stack of statistically similar frames barely depends on T).
        None uses every frame.

    Returns
    -------
    float
        ``b0`` > 0.

    Raises
    ------
    ValueError
        For a target outside 20 .. 60 dB, or one the image cannot reach (e.g. an all-dark image,
        which has no shot noise at any ``b0``).
    """
    target = float(target_psnr_db)
    if not MIN_TARGET_PSNR_DB <= target <= MAX_TARGET_PSNR_DB:
        raise ValueError(
            f"target LR PSNR must be between {MIN_TARGET_PSNR_DB:g} and {MAX_TARGET_PSNR_DB:g} "
            f"dB, got {target_psnr_db!r}"
        )
    clean_lr = np.asarray(clean_lr)
    if clean_lr.ndim not in (2, 3) or clean_lr.size == 0:
        raise ValueError(f"expected clean LR of shape (h, w) or (T, h, w), got {clean_lr.shape}")
    if max_frames is not None and clean_lr.ndim == 3 and clean_lr.shape[0] > max_frames:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
        picks = np.linspace(0, clean_lr.shape[0] - 1, max_frames).round().astype(np.int64)
        clean_lr = clean_lr[picks]
    clean_lr = np.asarray(clean_lr, dtype=np.float64)

    def excess_db(log10_b0: float) -> float:
        return lr_psnr_for_b0(clean_lr, 10.0**log10_b0, seed) - target

    low, high = _LOG10_B0_RANGE
    at_low, at_high = excess_db(low), excess_db(high)
    if not at_low <= 0.0 <= at_high:
        raise ValueError(
            f"cannot reach an LR PSNR of {target:g} dB: shot noise gives this image "
            f"{at_low + target:.1f} dB at b0=1e{low:g} and {at_high + target:.1f} dB at "
            f"b0=1e{high:g} (is it almost black or constant?)"
        )
    middle = 0.5 * (low + high)
    for _ in range(_MAX_BISECTIONS):
        middle = 0.5 * (low + high)
        excess = excess_db(middle)
        if abs(excess) <= _PSNR_TOLERANCE_DB:
            break
        if excess < 0.0:
            low = middle
        else:
            high = middle
    return 10.0**middle
