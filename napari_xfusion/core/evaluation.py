"""Inputs of an evaluation run made from an HR ground-truth sequence.

The benchmark (``benchmarks/evaluate_methods.py``) and the study command build their test cases
here, so both measure the same thing: LR = 4x4 binning of the truth (``core.degrade.bin_frames``),
optional seeded shot noise at a target LR PSNR (``core.degrade.solve_b0`` and
``add_shot_noise``), two HR keys bracketing one key interval, and an evenly spaced subset of the
frames between them as targets. The key ablation replaces the HR keys by the bicubic-up-sampled
LR frames of the key times (:func:`ablated_keys`): no HR detail, same times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.resample import upscale_bicubic

__all__ = ["EvalInputs", "centred_interval", "between_keys", "make_eval_inputs", "ablated_keys"]


@dataclass(frozen=True)
class EvalInputs:
    """What a method gets and what it is scored against.

    Attributes
    ----------
    lr : numpy.ndarray, float32, shape (T, h, w)
        LR stream in [0, 1] (noisy when ``lr_psnr_db`` is set).
    key_indices : numpy.ndarray of int64, shape (2,)
        LR times of the two HR keys.
    hr_keys : numpy.ndarray, float32, shape (2, H, W)
        The HR truth at those times.
    targets : numpy.ndarray of int64, shape (N,)
        Frames to reconstruct and score, all strictly between the keys.
    lr_psnr_db : float or None
        Target LR PSNR of the shot noise; None: noise-free.
    b0 : float or None
        Blank-scan factor that gives it.
    noise_seed : int
        Seed of the noise draw.
    """

    lr: np.ndarray
    key_indices: np.ndarray
    hr_keys: np.ndarray
    targets: np.ndarray
    lr_psnr_db: float | None
    b0: float | None
    noise_seed: int


def centred_interval(n_frames: int, key_step: int) -> tuple[int, int]:
    """The key interval ``(a, a + key_step)`` centred in a sequence of ``n_frames``.

    Raises
    ------
    ValueError
        When the sequence cannot hold the interval plus one LR neighbour on each side
        (``n_frames < key_step + 1``) or ``key_step < 2``.
    """
    if key_step < 2:
        raise ValueError(f"key_step must be >= 2 (frames between keys), got {key_step}")
    if n_frames < key_step + 1:
        raise ValueError(
            f"a key interval of {key_step} needs at least {key_step + 1} frames, got {n_frames}"
        )
    a = (n_frames - 1 - key_step) // 2
    return a, a + key_step


def between_keys(key_before: int, key_after: int, n: int | None = None) -> np.ndarray:
    """``n`` evenly spaced frames strictly between two keys (all of them when None or larger).

    Examples
    --------
    >>> between_keys(0, 20, 3).tolist()
    [5, 10, 15]
    """
    inside = np.arange(key_before + 1, key_after, dtype=np.int64)
    if n is None or n >= inside.size:
        return inside
    if n < 1:
        raise ValueError(f"need at least 1 target between keys, got {n}")
    gap = key_after - key_before
    picks = np.round(key_before + gap * np.arange(1, n + 1) / (n + 1)).astype(np.int64)
    return np.unique(np.clip(picks, key_before + 1, key_after - 1))


def make_eval_inputs(
    hr: np.ndarray,
    key_step: int,
    *,
    lr_psnr_db: float | None = None,
    noise_seed: int = 0,
    targets_per_gap: int | None = None,
) -> EvalInputs:
    """LR stream, keys and targets of one evaluation case.

    Parameters
    ----------
    hr : numpy.ndarray, shape (T, H, W)
        HR ground truth in [0, 1]; H and W multiples of 4.
    key_step : int
        Frames between the two HR keys (one interval, :func:`centred_interval`).
    lr_psnr_db : float, optional
        Shot noise on the LR at this PSNR (20 .. 60 dB); None: noise-free.
    noise_seed : int
        Seeds the noise (and the ``b0`` solver's draw).
    targets_per_gap : int, optional
        Score this many evenly spaced frames between the keys (None: all).

    Returns
    -------
    EvalInputs
    """
    hr = np.asarray(hr, dtype=np.float32)
    if hr.ndim != 3:
        raise ValueError(f"HR truth must be a (T, H, W) stack, got shape {hr.shape}")
    a, b = centred_interval(hr.shape[0], key_step)
    lr = bin_frames(hr)
    b0 = None
    if lr_psnr_db is not None:
        b0 = solve_b0(lr, float(lr_psnr_db), seed=noise_seed)
        lr = add_shot_noise(lr, b0, np.random.default_rng(noise_seed))
    keys = np.array([a, b], dtype=np.int64)
    return EvalInputs(
        lr=lr,
        key_indices=keys,
        hr_keys=hr[keys].copy(),
        targets=between_keys(a, b, targets_per_gap),
        lr_psnr_db=None if lr_psnr_db is None else float(lr_psnr_db),
        b0=b0,
        noise_seed=int(noise_seed),
    )


def ablated_keys(inputs: EvalInputs) -> np.ndarray:
    """Key frames without HR detail: the up-sampled LR frames of the key times.

    Returns
    -------
    numpy.ndarray, float32, shape (2, H, W)
        ``upscale_bicubic(lr[key_indices])`` clipped to [0, 1] (keys must lie in [0, 1]).
    """
    up = upscale_bicubic(inputs.lr[inputs.key_indices])
    return np.clip(up, 0.0, 1.0, out=up)
