"""The LR side of the consistency check: its map into the HR keys' units and its noise.

See :mod:`napari_xfusion.app.validation.consistency` (units, noise) for what they are for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames

__all__ = [
    "LrMapping",
    "LrNoise",
    "detector_mapping",
    "estimate_lr_noise",
    "fit_mapping",
    "lr_mapping",
]

_NOISE_BINS = 8
_MIN_BIN_PIXELS = 256
# Immerkaer's noise kernel (a difference of two Laplacians): it cancels constant, linear and
# quadratic intensity, its L2 norm is 6, so sigma = MAD(response) / 0.6745 / 6.
_HP = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_HP_NORM = 6.0
_MAD = 1.4826


# ----------------------------------------------------------------------------- units


@dataclass(frozen=True)
class LrMapping:
    """An affine map of LR [0, 1] values into the HR keys' [0, 1] units:
    ``gain * lr01 + offset``.

    Attributes
    ----------
    gain, offset : float
    source : str
        ``"identity"``, ``"detector"`` (through the two normalisations) or ``"fit"`` (least
        squares on the binned keys against the LR at the key times).
    residual : float
        Median ``|binned key - mapped LR|`` over the keys it was checked on (NaN: unchecked).
    """

    gain: float = 1.0
    offset: float = 0.0
    source: str = "identity"
    residual: float = math.nan

    def apply(self, lr01: np.ndarray) -> np.ndarray:
        """LR values ([0, 1], any shape) in the HR keys' units, float32."""
        out = np.asarray(lr01, dtype=np.float64) * self.gain + self.offset
        return out.astype(np.float32)


def detector_mapping(lr_normalisation: Any, hr_normalisation: Any) -> LrMapping:
    """The map through detector units: LR [0, 1] -> LR detector values -> HR [0, 1].

    A None normalisation means that stream was float [0, 1] already (its detector value is its
    [0, 1] value). Exact when the two cameras count in the same units.
    """
    lr_low, lr_span = (0.0, 1.0) if lr_normalisation is None else _span(lr_normalisation)
    hr_low, hr_span = (0.0, 1.0) if hr_normalisation is None else _span(hr_normalisation)
    if hr_span <= 0:
        raise ValueError("the HR normalisation has no range (constant keys)")
    source = "identity" if lr_normalisation is None and hr_normalisation is None else "detector"
    return LrMapping(lr_span / hr_span, (lr_low - hr_low) / hr_span, source)


def _span(norm: Any) -> tuple[float, float]:
    return float(norm.low), float(norm.high) - float(norm.low)


def fit_mapping(binned_keys: np.ndarray, lr_at_keys: np.ndarray) -> LrMapping:
    """Least-squares ``binned = gain * lr + offset`` over the key times (two cameras with
    different gains or offsets).

    Parameters
    ----------
    binned_keys : numpy.ndarray, shape (K, h, w)
        HR keys binned 4x4, HR [0, 1] units.
    lr_at_keys : numpy.ndarray, shape (K, h, w)
        LR frames at the key times, LR [0, 1] units.
    """
    x = np.asarray(lr_at_keys, dtype=np.float64).ravel()
    y = np.asarray(binned_keys, dtype=np.float64).ravel()
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("cannot fit the LR -> HR units map: the LR frames at the keys are flat")
    gain, offset = np.polyfit(x, y, 1)
    return LrMapping(float(gain), float(offset), "fit")


def _residual(mapping: LrMapping, binned: np.ndarray, lr: np.ndarray) -> float:
    return float(np.median(np.abs(binned - mapping.apply(lr))))


def lr_mapping(prepared: Any, mode: str = "auto", max_keys: int = 8) -> LrMapping:
    """The LR -> HR units map of a :class:`~napari_xfusion.app.inputs.PreparedInputs`.

    ``mode``: ``"detector"`` (through the normalisations), ``"fit"`` (on the keys) or
    ``"auto"``: the detector map unless the fitted one explains the binned keys clearly better
    (median residual below 2/3 of the detector map's: different cameras). Checked on at most
    ``max_keys`` keys, evenly spaced.
    """
    if mode not in ("auto", "detector", "fit"):
        raise ValueError(f"LR mapping mode must be auto, detector or fit, got {mode!r}")
    keys = prepared.keys
    indices = [int(k) for k in keys.indices]
    if len(indices) > max_keys:
        picks = np.linspace(0, len(indices) - 1, max_keys).round().astype(int)
        indices = [indices[i] for i in picks]
    binned = np.stack([bin_frames(keys[k], SCALE) for k in indices])
    lr = np.stack([_lr_unit(prepared, k) for k in indices])
    detector = detector_mapping(prepared.lr_normalisation, keys.normalisation)
    detector = _with_residual(detector, _residual(detector, binned, lr))
    if mode == "detector":
        return detector
    fitted = fit_mapping(binned, lr)
    fitted = _with_residual(fitted, _residual(fitted, binned, lr))
    if mode == "fit" or fitted.residual < detector.residual * (2.0 / 3.0):
        return fitted
    return detector


def _with_residual(mapping: LrMapping, residual: float) -> LrMapping:
    return LrMapping(mapping.gain, mapping.offset, mapping.source, residual)


def _lr_unit(prepared: Any, t: int) -> np.ndarray:
    """LR frame ``t`` of ``prepared`` in its own [0, 1] units (as the engine reads it)."""
    frame = np.asarray(prepared.lr[int(t)])
    norm = prepared.lr_normalisation
    return norm.apply(frame) if norm is not None else frame.astype(np.float32)


# ----------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class LrNoise:
    """LR noise standard deviation as a function of the (local) LR level.

    Attributes
    ----------
    levels : numpy.ndarray (n,)
        Increasing LR levels (in the units it was estimated in) ...
    sigmas : numpy.ndarray (n,)
        ... and the noise standard deviation at each (linear in between, constant beyond).
    """

    levels: np.ndarray
    sigmas: np.ndarray

    @classmethod
    def constant(cls, sigma: float) -> LrNoise:
        """The same ``sigma`` at every level."""
        return cls(np.array([0.0]), np.array([float(sigma)]))

    def sigma(self, level: np.ndarray) -> np.ndarray:
        """Noise standard deviation at each value of ``level`` (any shape), float64."""
        return np.interp(np.asarray(level, dtype=np.float64), self.levels, self.sigmas)

    @property
    def median(self) -> float:
        """Median standard deviation over the levels (one number for a report)."""
        return float(np.median(self.sigmas))

    def scaled(self, gain: float) -> LrNoise:
        """The same noise after the map ``gain * x + offset`` (levels given after it too)."""
        return LrNoise(self.levels, self.sigmas * abs(float(gain)))


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean, edges replicated (same shape)."""
    p = np.pad(np.asarray(a, dtype=np.float64), 1, mode="edge")
    h, w = a.shape
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _highpass(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(high-pass response, local level) on the interior pixels of one (h, w) frame."""
    f = np.asarray(frame, dtype=np.float64)
    h, w = f.shape
    response = sum(_HP[i, j] * f[i : i + h - 2, j : j + w - 2] for i in range(3) for j in range(3))
    level = _box3(f)[1:-1, 1:-1]
    return response.ravel(), level.ravel()


def estimate_lr_noise(frames: np.ndarray, bins: int = _NOISE_BINS) -> LrNoise:
    """LR noise from the data: MAD of a second-difference high-pass, per intensity level.

    Parameters
    ----------
    frames : numpy.ndarray, shape (h, w) or (N, h, w)
        LR frame(s), any units (the result is in the same units); h, w >= 3.
    bins : int
        Intensity bins (quantiles of the 3x3 local mean); fewer when there are not
        :data:`_MIN_BIN_PIXELS` pixels per bin.

    Returns
    -------
    LrNoise
        Edges and texture raise the high-pass too; the median keeps them out as long as they
        cover a minority of each bin's pixels (smooth x-ray images: yes; busy textures: the
        estimate is high, i.e. the flags are lenient).
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or min(frames.shape[1:]) < 3:
        raise ValueError(f"expected (N, h, w) LR frames with h, w >= 3, got {frames.shape}")
    parts = [_highpass(f) for f in frames]
    response = np.concatenate([p[0] for p in parts])
    level = np.concatenate([p[1] for p in parts])
    bins = int(max(1, min(bins, response.size // _MIN_BIN_PIXELS)))
    edges = np.quantile(level, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, bins - 1)
    levels, sigmas = [], []
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        levels.append(float(np.median(level[sel])))
        sigmas.append(_MAD * float(np.median(np.abs(response[sel]))) / _HP_NORM)
    order = np.argsort(levels)
    return LrNoise(np.asarray(levels)[order], np.asarray(sigmas)[order])
