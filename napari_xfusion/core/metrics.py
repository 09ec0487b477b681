"""Image-quality metrics on normalised data in [0, 1]: PSNR, AAD and SSIM.

All three take a prediction and the ground truth of equal shape: one ``(H, W)`` frame or a stack
``(..., H, W)``. On a stack PSNR and AAD pool all pixels (one mean squared / absolute error), and
SSIM averages the per-frame SSIM maps; for per-frame values, loop over frames.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DATA_RANGE", "SSIM_SIGMA", "psnr", "aad", "ssim", "frame_metrics"]

DATA_RANGE = 1.0
"""Dynamic range of normalised data: the ``L`` (peak) in PSNR and in SSIM's constants."""

SSIM_SIGMA = 1.5
"""Standard deviation in pixels of SSIM's Gaussian window (Wang et al. 2004)."""

# scikit-image's Gaussian window is truncated at 3.5 sigma: 2 * int(3.5 * 1.5 + 0.5) + 1 = 11 px,
# Wang's 11x11 window. Frames smaller than that have no valid window position.
_SSIM_WINDOW = 11


def _as_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction and ground truth must have the same shape, got {pred.shape} and "
            f"{truth.shape}"
        )
    if pred.size == 0:
        raise ValueError(f"cannot compare empty arrays of shape {pred.shape}")
    return pred, truth


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for data range 1.

    Parameters
    ----------
    pred, truth : numpy.ndarray, shape (..., H, W)
        Prediction and ground truth in [0, 1], same shape.

    Returns
    -------
    float
        ``10 log10(1 / MSE)`` over all pixels; ``inf`` when the arrays are identical.
    """
    pred, truth = _as_pair(pred, truth)
    mse = float(np.mean(np.square(pred.astype(np.float64) - truth)))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(DATA_RANGE**2 / mse)


def aad(pred: np.ndarray, truth: np.ndarray) -> float:
    """Average absolute difference (mean of ``|pred - truth|`` over all pixels), in data units.

    Parameters
    ----------
    pred, truth : numpy.ndarray, shape (..., H, W)
        Prediction and ground truth in [0, 1], same shape.
    """
    pred, truth = _as_pair(pred, truth)
    return float(np.mean(np.abs(pred.astype(np.float64) - truth)))


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    """Structural similarity as defined by Wang, Bovik, Sheikh & Simoncelli (2004).

    Gaussian-weighted local statistics (sigma 1.5 px, window truncated at 3.5 sigma = 11x11),
    population (biased) variances and covariance, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with
    ``L = 1``; the mean of the SSIM map over the pixels whose window lies inside the frame.
    Computed by :func:`skimage.metrics.structural_similarity`, which implements exactly this
    (``tests/test_metrics.py`` checks it against a direct implementation).

    Parameters
    ----------
    pred, truth : numpy.ndarray, shape (..., H, W)
        Prediction and ground truth in [0, 1], same shape, H and W >= 11.

    Returns
    -------
    float
        SSIM in [-1, 1]; for a stack the mean over frames.
    """
    from skimage.metrics import structural_similarity

    pred, truth = _as_pair(pred, truth)
    if pred.ndim < 2 or min(pred.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs frames of at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels (its Gaussian "
            f"window), got shape {pred.shape}"
        )
    h, w = pred.shape[-2:]
    pred_frames = pred.reshape(-1, h, w).astype(np.float64, copy=False)
    truth_frames = truth.reshape(-1, h, w).astype(np.float64, copy=False)
    scores = [
        structural_similarity(
            p,
            t,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
            data_range=DATA_RANGE,
        )
        for p, t in zip(pred_frames, truth_frames, strict=True)
    ]
    return float(np.mean(scores))


def frame_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """PSNR (dB), AAD and SSIM of one frame (or a stack) as ``{"psnr", "aad", "ssim"}``."""
    return {"psnr": psnr(pred, truth), "aad": aad(pred, truth), "ssim": ssim(pred, truth)}
