"""Bayesian fusion's types and step 1, the calibration of the LR observation model.

The model and its departures from Xue et al. are in :mod:`napari_xfusion.core.bayesian`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames

BlockPrior = Literal["correlated", "independent"]
TemporalPrior = Literal["motion", "static"]

_MIN_GAIN = 0.05  # a calibrated gain below this is a failed fit, not a camera
_RIDGE = 1e-9  # relative ridge on S_oo: keeps the 2x2 solve finite when s2 ~ 0
_TINY = 1e-12  # floor on variances that end up in denominators


@dataclass(frozen=True)
class Degradation:
    """LR observation model ``y = gain B(x) + offset + N(0, noise_floor + noise_slope q)``.

    ``q = gain B(x) + offset`` is the noise-free LR level.

    Attributes
    ----------
    gain, offset : float
        ``a`` and ``b`` (LR intensity per HR intensity; LR intensity units).
    noise_var : float
        Mean noise variance over the calibration pairs (LR intensity units squared).
    noise_floor, noise_slope : float
        ``sigma0^2`` and ``kappa`` of the level-dependent noise variance.
    """

    gain: float
    offset: float
    noise_var: float
    noise_floor: float = 0.0
    noise_slope: float = 0.0

    @property
    def calibrated_noise_var(self) -> float:
        """Mean ``s2 = sigma^2 / a^2``: noise variance of ``y~`` in HR units squared."""
        return self.noise_var / self.gain**2

    def calibrated_noise_var_at(self, level: np.ndarray) -> np.ndarray:
        """``s2 = (sigma0^2 + kappa q) / a^2`` at HR-unit levels ``level`` (``q = a level + b``).

        Floored at 1 % of the mean (a fitted line can cross zero at the dark end).
        """
        q = self.gain * np.asarray(level, dtype=np.float64) + self.offset
        var = self.noise_floor + self.noise_slope * q
        return np.maximum(var, 0.01 * self.noise_var + _TINY) / self.gain**2

    def invert(self, lr: np.ndarray) -> np.ndarray:
        """``y~ = (y - b) / a`` as float64, an estimate of the block mean ``B(x)``."""
        return (np.asarray(lr, dtype=np.float64) - self.offset) / self.gain


@dataclass(frozen=True)
class KeyPair:
    """What depends on the two HR keys alone: reusable for every target between them.

    Attributes
    ----------
    hr_keys : ndarray of float64, shape (2, H, W)
        ``x(t_b)``, ``x(t_a)``.
    binned : ndarray of float64, shape (2, H/4, W/4)
        Their block means ``B(x)``.
    degradation : Degradation
        Calibrated on the keys and the LR frames at the key times.
    """

    hr_keys: np.ndarray
    binned: np.ndarray
    degradation: Degradation


@dataclass(frozen=True)
class ClassStatistics:
    """Per-class Gaussian model of the block-level series ``z~ = [B x(t_b), y~(t), B x(t_a)]``.

    Attributes
    ----------
    means : ndarray of float64, shape (K, 3)
        ``mu_c`` (the global mean for a class without pixels).
    covariances : ndarray of float64, shape (K, 3, 3)
        ``S_c``: shrunk, noise-corrected, positive semi-definite.
    counts : ndarray of int64, shape (K,)
        LR pixels per class.
    noise_var : ndarray of float64, shape (K,)
        ``s2_c``, the mean noise variance of ``y~(t)`` in the class (shrunk like the covariance).
    """

    means: np.ndarray
    covariances: np.ndarray
    counts: np.ndarray
    noise_var: np.ndarray


@dataclass(frozen=True)
class FusionResult:
    """Posterior of one target frame.

    Attributes
    ----------
    mean, variance : ndarray of float32, shape (H, W)
        Posterior mean (HR intensity, not clipped) and variance.
    prediction, prediction_variance : ndarray of float32, shape (H, W)
        ``mu_p`` and ``var_p`` before the LR update.
    hr_labels : ndarray of int64, shape (H, W)
        Class of each HR pixel.
    feature_weight : float
        ``g`` of the LR frame at t in the class features.
    degradation : Degradation
    statistics : ClassStatistics
    """

    mean: np.ndarray
    variance: np.ndarray
    prediction: np.ndarray
    prediction_variance: np.ndarray
    hr_labels: np.ndarray
    feature_weight: float
    degradation: Degradation
    statistics: ClassStatistics


def default_n_classes(lr_shape: tuple[int, int]) -> int:
    """The paper's rule: about 5 % of the LR pixels per axis, geometric mean over the axes.

    ``round(0.05 * sqrt(h * w))``, at least 2: 8 for a 100x256 LR frame.
    """
    h, w = lr_shape
    return max(2, round(0.05 * float(np.sqrt(h * w))))


def interpolation_weights(target: int, key_before: int, key_after: int) -> tuple[float, float]:
    """Linear-in-time weights ``(w_b, w_a)`` of the two keys, clamped to [0, 1].

    ``(1, 0)`` at ``t_b``, ``(0, 1)`` at ``t_a``; outside the key interval the nearer key.
    """
    if key_after <= key_before:
        raise ValueError(f"key_after ({key_after}) must come after key_before ({key_before})")
    w_a = min(max((target - key_before) / (key_after - key_before), 0.0), 1.0)
    return 1.0 - w_a, w_a


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain {np.count_nonzero(~np.isfinite(arr))} non-finite values")


def calibrate(hr_keys: np.ndarray, lr_at_keys: np.ndarray) -> Degradation:
    """Fit ``y = a B(x) + b + e`` on the HR/LR pairs at the key times by least squares.

    Parameters
    ----------
    hr_keys : ndarray, shape (2, H, W)
        HR key frames ``x(t_b)``, ``x(t_a)``; H, W multiples of 4.
    lr_at_keys : ndarray, shape (2, H/4, W/4)
        LR frames at the same times.

    Returns
    -------
    Degradation
        With ``gain = 1`` and the mean offset when the fit is degenerate (flat keys or a gain
        below 0.05, which no real camera pair has).
    """
    return _calibrate_binned(bin_frames(np.asarray(hr_keys), SCALE), lr_at_keys)


def _calibrate_binned(binned: np.ndarray, lr_at_keys: np.ndarray) -> Degradation:
    x = np.asarray(binned, dtype=np.float64).ravel()
    y = np.asarray(lr_at_keys, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(
            f"binned HR keys {np.shape(binned)} do not match the LR frames at the keys "
            f"{np.shape(lr_at_keys)}"
        )
    xc = x - x.mean()
    sxx = float(xc @ xc)
    gain = float(xc @ (y - y.mean())) / sxx if sxx > _TINY * x.size else 0.0
    if gain < _MIN_GAIN:
        gain = 1.0
    offset = float(y.mean() - gain * x.mean())
    level = gain * x + offset
    sq = (y - level) ** 2
    noise_var = float(sq.sum()) / max(y.size - 2, 1)
    # Squared residuals against the level: E[r^2] = sigma0^2 + kappa q (shot noise + floor).
    lc = level - level.mean()
    sll = float(lc @ lc)
    slope = float(lc @ (sq - sq.mean())) / sll if sll > _TINY * x.size else 0.0
    floor = noise_var - slope * float(level.mean())
    return Degradation(gain, offset, noise_var, noise_floor=floor, noise_slope=slope)


def prepare_keys(hr_keys: np.ndarray, lr_at_keys: np.ndarray) -> KeyPair:
    """Check the key pair, bin the HR keys and calibrate the degradation model on them.

    Parameters
    ----------
    hr_keys : ndarray, shape (2, H, W)
        HR keys at ``t_b`` and ``t_a``, H and W multiples of 4.
    lr_at_keys : ndarray, shape (2, H/4, W/4)
        LR frames at ``t_b`` and ``t_a``.
    """
    hr_keys = np.asarray(hr_keys)
    lr_at_keys = np.asarray(lr_at_keys)
    if hr_keys.ndim != 3 or hr_keys.shape[0] != 2:
        n = hr_keys.shape[0] if hr_keys.ndim == 3 else "?"
        raise ValueError(
            f"need exactly 2 HR key frames (before and after t) as an array (2, H, W), got "
            f"{n} (shape {hr_keys.shape})"
        )
    if lr_at_keys.ndim != 3 or lr_at_keys.shape[0] != 2:
        raise ValueError(
            f"need the 2 LR frames at the key times as an array (2, h, w), got shape "
            f"{lr_at_keys.shape}"
        )
    h, w = lr_at_keys.shape[1:]
    if hr_keys.shape[1:] != (SCALE * h, SCALE * w):
        raise ValueError(
            f"HR keys must be exactly {SCALE}x the LR frames in each axis: LR {h}x{w} needs HR "
            f"{SCALE * h}x{SCALE * w}, got HR {hr_keys.shape[1]}x{hr_keys.shape[2]}"
        )
    _check_finite("HR keys", hr_keys)
    _check_finite("LR frames at the keys", lr_at_keys)
    binned = bin_frames(hr_keys, SCALE)
    return KeyPair(
        hr_keys=hr_keys.astype(np.float64),
        binned=binned.astype(np.float64),
        degradation=_calibrate_binned(binned, lr_at_keys),
    )
