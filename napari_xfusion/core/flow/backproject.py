"""The ``flow`` method's noise handling and LR consistency: noise level, denoising width,
Gaussian smoothing, x4 up/down-sampling and iterative back-projection.

The model is in :mod:`napari_xfusion.core.flow`.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames


def key_noise_sigma(hr_keys: np.ndarray, lr_at_keys: np.ndarray) -> float:
    """LR noise standard deviation measured at the key times (intensity units).

    The keys give the noise-free LR frames there, ``B(key)``; what the LR frames add to them is
    the noise (plus any mismatch of the camera model, which the back-projection should not put
    back either). Per key the residual's mean is removed (a brightness offset is not noise).
    """
    resid = np.asarray(lr_at_keys, dtype=np.float64) - bin_frames(hr_keys, SCALE)
    resid -= resid.mean(axis=(-2, -1), keepdims=True)
    return float(np.sqrt(np.mean(resid**2)))


def denoise_width(noise_sigma: float, noise_target: float) -> float:
    """Gaussian width (LR pixels) that leaves ``noise_target`` of white noise ``noise_sigma``.

    A 2-D Gaussian of standard deviation ``s`` scales white noise by ``1 / (2 sqrt(pi) s)``;
    returns 0 (no smoothing) when the noise is already below the target.
    """
    if noise_target <= 0:
        raise ValueError(f"noise_target must be > 0, got {noise_target!r}")
    width = noise_sigma / (2.0 * math.sqrt(math.pi) * noise_target)
    return 0.0 if width < 0.5 else float(width)


def _up(lr: np.ndarray) -> np.ndarray:
    """x4 bicubic up-sampling; OpenCV's equals
    :func:`~napari_xfusion.core.resample.upscale_bicubic` (to 3e-7, measured on
    random frames, edges included) at a sixth of the cost."""
    h, w = lr.shape
    return cv2.resize(lr, (SCALE * w, SCALE * h), interpolation=cv2.INTER_CUBIC)


def _bin(hr: np.ndarray) -> np.ndarray:
    """4x4 block means; OpenCV's area resize at an integer factor is exactly
    :func:`bin_frames` (to 2e-7) and 10x faster."""
    h, w = hr.shape
    return cv2.resize(hr, (w // SCALE, h // SCALE), interpolation=cv2.INTER_AREA)


def gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 2-D float32 image by ``sigma`` pixels (0: unchanged), edges
    reflected."""
    return _gauss(np.asarray(image, dtype=np.float32), sigma)


def _gauss(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def back_project(
    frame: np.ndarray, lr: np.ndarray, iterations: int = 4, smoothing: float = 0.0
) -> np.ndarray:
    """Iterative back-projection: make the 4x4 block means of ``frame`` reproduce ``lr``.

    ``x <- x + up(G * (lr - B(x)))`` with ``up`` bicubic x4 and ``G`` a Gaussian of
    ``smoothing`` LR pixels (0: none).

    Parameters
    ----------
    frame : numpy.ndarray, float32, shape (4h, 4w)
    lr : numpy.ndarray, float32, shape (h, w)
    iterations : int
        Number of updates (>= 0).
    smoothing : float
        Width of ``G`` in LR pixels; with a noisy ``lr`` it keeps the shot noise out.
    """
    out = np.array(frame, dtype=np.float32, copy=True)
    lr = np.asarray(lr, dtype=np.float32)
    for _ in range(iterations):
        out += _up(_gauss(lr - _bin(out), smoothing))
    return out
