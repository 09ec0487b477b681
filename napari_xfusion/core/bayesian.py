"""Bayesian spatio-temporal fusion after Xue, Leung & Fung (2017): the maths, in plain numpy.

Xue, J., Leung, Y., Fung, T. (2017). A Bayesian data fusion approach to spatio-temporal fusion of
remotely sensed images. Remote Sensing 9(12), 1310.

Symbols (Xue et al.'s, adapted to one grey channel): ``x`` a high-resolution (HR) image, ``y`` a
low-resolution (LR) image, ``t_b``/``t_a`` the times of the HR key frames before/after the target
time ``t``, ``z = [x(t_b), x(t), x(t_a)]`` the pixel time series, ``o = (t_b, t_a)`` its observed
part. ``B`` is the 4x4 block mean, ``j`` an LR pixel and ``i`` one of its 16 HR pixels.
``(w_b, w_a) = ((t_a - t), (t - t_b)) / (t_a - t_b)`` are the linear-in-time weights of the keys
(clamped to [0, 1]).

1. Degradation (observation) model, calibrated per key pair on the HR/LR pairs at the key times::

       y_j = a B(x)_j + b + e_j,   e_j ~ N(0, sigma_j^2),   sigma_j^2 = sigma0^2 + kappa q_j

   ``a``, ``b`` by least squares over both pairs; ``q = a B(x) + b`` is the noise-free LR level.
   *Choice*: the noise variance depends on the level (photon shot noise, ``kappa``, plus a
   floor, ``sigma0^2``), fitted by least squares of the squared residuals on ``q``. A single
   ``sigma^2`` overstates the noise of dark pixels and understates that of bright ones, which
   at 20 dB LR PSNR inflates the class variances of bright classes several times. The
   calibrated LR frame ``y~ = (y - b) / a`` estimates ``B(x)`` with noise variance
   ``s2_j = sigma_j^2 / a^2``, at t evaluated at the keys' level ``q_j = a p_j + b`` (``p``
   below). (Degenerate fit, flat keys or ``a < 0.05``: ``a = 1``.)
2. Block-level series and classes. Per LR pixel the series ``z~_j = [B(x(t_b))_j, y~_j(t),
   B(x(t_a))_j]``. *Choice*: at the key times the block means are known exactly from the HR
   keys, so they replace the LR frames there (the paper's series uses the LR frames at the key
   times; they only add noise to what the keys give). K-means (by the caller, see
   :mod:`napari_xfusion.methods.bayesian`) runs on the features ``f_j = [B(x(t_b))_j,
   p_j + g (y~_j(t) - p_j), B(x(t_a))_j]``, ``p = w_b B(x(t_b)) + w_a B(x(t_a))``, where ``g =
   max(0, 1 - mean_j s2_j / mean_j (y~_j(t) - p_j)^2)`` is a Wiener factor: the LR frame at t steers
   the classes as far as it carries signal rather than noise. (With ``g = 1`` at high noise,
   K-means splits pixels by the sign of their noise at t, and the class means at t, biased by
   that selection, pass the noise into the prediction at full weight.)
   Per class ``c``: mean ``mu_c`` and ML covariance ``C_c`` of ``z~``, shrunk towards the
   pooled covariance ``C_g`` with ``n0`` pseudo-pixels, ``(n_c C_c + n0 C_g) / (n_c + n0)``
   (tiny classes stay usable), and corrected for the LR noise at t: ``S_c = C_c - s2_c e_t
   e_t^T`` (``s2_c`` the class's mean ``s2_j``, shrunk alike) projected onto the positive
   semi-definite cone.
3. HR classes: each HR pixel takes the class whose feature mean (the centroid) is nearest
   (Euclidean) to ``[x_i(t_b), p_i + g (y~_j(t) - p_j), x_i(t_a)]``, ``p_i = w_b x_i(t_b) +
   w_a x_i(t_a)``: its own keys, so class boundaries follow HR edges, not the 4x4 grid.
4. Prediction, the Gaussian conditional of ``x_i(t)`` given the HR keys ``x_o,i`` (Xue et al.'s
   temporal prediction), with the regression weights ``beta = S_to S_oo^-1`` regularised::

       beta    = beta0 + (S_oo + lambda I)^-1 (S_ot - S_oo beta0)
       mu_p,i  = mu_t + beta (x_o,i - mu_o)
       var_p,i = S_tt - 2 beta S_ot + beta S_oo beta^T        (class of pixel i)

   *Choice*: a Gaussian prior on ``beta`` centred on linear interpolation, ``beta0 = (w_b,
   w_a)``, as strong as the LR noise, ``lambda = s2_c``. With ``lambda = 0`` this is the plain
   conditional (``var_p = S_tt - S_to S_oo^-1 S_ot``); the prior matters for classes whose
   keys vary less than the noise, which the plain conditional would flatten to the class mean.
   The statistics are of block means and are applied to HR pixels (the paper's assumption).
5. Update, a linear Kalman step with the LR frame at ``t`` through ``y~_j = B(x)_j + e_j / a``
   (noise variance ``s2_j``).
   Blocks do not overlap, so it is closed form per LR pixel ``j`` over its 16 HR pixels.
   *Choice*: the prior covariance ``P`` of the 16 prediction errors of a block (diagonal
   ``var_p,i``):

   - ``"correlated"`` (default): ``P_ik = sd_i sd_k``, ``sd = sqrt(var_p)``: prediction errors
     of neighbouring pixels move together (a displaced edge), and a block of one class has the
     block-level variance ``var_p`` that step 2 estimated. With ``m_j = mean_k sd_k``::

         x_i   = mu_p,i + sd_i m_j (y~_j(t) - mean_k mu_p,k) / (m_j^2 + s2_j)
         var_i = var_p,i s2_j / (m_j^2 + s2_j)

   - ``"independent"``: ``P = diag(var_p)``, the textbook per-pixel choice::

         x_i   = mu_p,i + (var_p,i / 16) (y~_j(t) - mean_k mu_p,k) / (sum_k var_p,k / 256 + s2_j)
         var_i = var_p,i - (var_p,i / 16)^2 / (sum_k var_p,k / 256 + s2_j)

   Either way the block's residual goes to its pixels in proportion to their uncertainty (sd or
   variance): well-predicted classes (static background) hardly move, classes that change
   between the keys take the correction. ``var_i`` is the posterior variance map (HR intensity
   units squared). On the simulated 400x1024 sample with clean HR truth (key step 10, targets
   2, 5, 8) the correlated prior gave 37.5 / 38.9 dB at 40 / 60 dB LR PSNR against 36.2 /
   37.7 dB for the independent one, which was ahead only at 20 dB (31.5 against 31.3 dB).

0. Motion (``prior="motion"``, the default). The temporal prior above assumes a pixel keeps
   its place between the keys; on real motion that prediction is wrong wherever something
   moves, and the method lost 3-5 dB to bicubic on translating natural images. So, before step
   2, each key is *warped to t* along the optical flow of :mod:`napari_xfusion.core.flow`
   (DIS flow on the up-sampled LR frames, direct or chained per pixel, with a confidence
   ``c_k,i`` in [0, 1] from forward-backward and photometric consistency), and ``x(t_b)``,
   ``x(t_a)`` in steps 2-5 stand for the warped keys ``x^_k``. Where a warped key cannot be
   trusted it is replaced, in proportion to its distrust, by the best other guess ``g_i``
   (the confidence-weighted mean of the warped keys, and where neither is trusted the
   up-sampled calibrated LR frame at t, ``up(y~(t))``)::

       x'_k,i = c_k,i x^_k,i + (1 - c_k,i) g_i
       var_p,i <- var_p,i + e_i,   e_i = (1 - c_i) v_up,   c_i = 1 - prod_k (1 - c_k,i)
       var_i   <- var_i + e_i                                  (after step 5)

   ``v_up = mean (x(t_k) - up(B x(t_k)))^2`` over the keys is the error variance of the
   up-sampled LR frame (the detail bicubic cannot give): where no key is trusted the prior is
   as uncertain as bicubic and the update leans on the LR evidence; the posterior variance
   keeps ``e_i``, because that error is detail within the blocks, which the LR frame does not
   observe (its update only fixes the block means). The fallback ``up(y~(t))`` is smoothed to
   a noise level of 0.008 first (:func:`napari_xfusion.core.flow.denoise_width`), so it does
   not carry shot noise into the prior's detail. The calibration (step 1) stays on the
   unwarped key pairs, which are what the LR frames at the key times saw. ``prior="static"``
   is the model without this step (the paper's).

At a key time the HR frame is observed: the method returns the key with zero variance (the
maths above, given ``w = (1, 0)``, returns it up to the LR noise at t it still lets in). HR keys
are treated as exact (no HR noise term); the LR frames at ``t -+ s`` are not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames
from napari_xfusion.core.flow import KeyMotion, denoise_width, gaussian, warp
from napari_xfusion.core.resample import upscale_bicubic

__all__ = [
    "SCALE",
    "Degradation",
    "KeyPair",
    "ClassStatistics",
    "FusionResult",
    "default_n_classes",
    "interpolation_weights",
    "calibrate",
    "prepare_keys",
    "block_series",
    "noise_map",
    "feature_weight",
    "cluster_features",
    "class_statistics",
    "conditional_model",
    "assign_hr_classes",
    "upsampling_error_var",
    "motion_keys",
    "fuse_window",
]


BlockPrior = Literal["correlated", "independent"]
TemporalPrior = Literal["motion", "static"]

_MIN_GAIN = 0.05  # a calibrated gain below this is a failed fit, not a camera
_RIDGE = 1e-9  # relative ridge on S_oo: keeps the 2x2 solve finite when s2 ~ 0
_TINY = 1e-12  # floor on variances that end up in denominators
# Noise level (intensity sd) the motion prior's fallback up(y~(t)) is smoothed down to. Median
# PSNR between keys on the simulator (seed 123, k = 10), clean / 40 / 20 dB LR PSNR: unsmoothed
# 44.0 / 42.5 / 30.2, 0.004: 44.0 / 42.1 / 31.5, 0.008: 44.0 / 42.5 / 31.6 dB (the static prior:
# 39.8 / 38.4 / 32.2; camera 384x384 translated (3, 1) px/frame, k = 20, 0.008: 39.5 / 37.4 /
# 26.1 dB, static 22.3 / 22.2 / 20.0, bicubic 26.6 / 26.4 / 20.2).
_FALLBACK_NOISE = 0.008


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


def block_series(keys: KeyPair, lr_t: np.ndarray) -> np.ndarray:
    """Block-level series ``z~ = [B x(t_b), y~(t), B x(t_a)]`` of every LR pixel.

    Returns
    -------
    ndarray of float64, shape (h * w, 3)
        One row per LR pixel in C order.
    """
    yt = keys.degradation.invert(lr_t)
    return np.stack([keys.binned[0], yt, keys.binned[1]], axis=-1).reshape(-1, 3)


def noise_map(
    series: np.ndarray, weights: tuple[float, float], degradation: Degradation
) -> np.ndarray:
    """``s2_j``: noise variance of ``y~_j(t)`` at the keys' level ``p_j`` (HR units squared).

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    interp = weights[0] * series[:, 0] + weights[1] * series[:, 2]
    return degradation.calibrated_noise_var_at(interp)


def feature_weight(
    series: np.ndarray, weights: tuple[float, float], noise_var: float | np.ndarray
) -> float:
    """Wiener factor ``g = max(0, 1 - mean s2_j / mean (y~_j(t) - p_j)^2)`` of the LR frame at t.

    ``p = w_b B x(t_b) + w_a B x(t_a)``; ``series`` as from :func:`block_series`.
    """
    resid = series[:, 1] - (weights[0] * series[:, 0] + weights[1] * series[:, 2])
    power = float(resid @ resid) / max(resid.size, 1)
    noise = float(np.mean(noise_var))
    return max(0.0, 1.0 - noise / power) if power > 0 else 0.0


def _features(series: np.ndarray, weights: tuple[float, float], g: float) -> np.ndarray:
    interp = weights[0] * series[..., 0] + weights[1] * series[..., 2]
    out = np.array(series, dtype=np.float64, copy=True)
    out[..., 1] = interp + g * (series[..., 1] - interp)
    return out


def cluster_features(
    series: np.ndarray, weights: tuple[float, float], noise_var: float | np.ndarray
) -> tuple[np.ndarray, float]:
    """K-means features ``f = [B x(t_b), p + g (y~(t) - p), B x(t_a)]`` and ``g``.

    Parameters
    ----------
    series : ndarray, shape (N, 3)
        From :func:`block_series`.
    weights : (float, float)
        ``(w_b, w_a)`` from :func:`interpolation_weights`.
    noise_var : float or ndarray, shape (N,)
        ``s2_j`` (:func:`noise_map`).
    """
    g = feature_weight(series, weights, noise_var)
    return _features(series, weights, g), g


def class_statistics(
    series: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    noise_var: float | np.ndarray,
    prior_weight: float = 8.0,
) -> ClassStatistics:
    """Per-class mean and noise-corrected covariance of the block-level series.

    Parameters
    ----------
    series : ndarray, shape (N, 3)
        From :func:`block_series`.
    labels : ndarray of int, shape (N,)
        Class of each LR pixel, in ``[0, n_classes)``.
    n_classes : int
        K.
    noise_var : float or ndarray, shape (N,)
        ``s2_j``, the noise variance of ``y~_j(t)``; its class mean is subtracted from the
        (t, t) entry.
    prior_weight : float
        ``n0``, pseudo-pixels of the pooled covariance mixed into each class covariance.
    """
    series = np.asarray(series, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if labels.shape[0] != series.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {series.shape[0]} LR pixels")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"class labels must lie in [0, {n_classes - 1}], got {labels.min()}..{labels.max()}"
        )
    if not prior_weight >= 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight}")
    counts = np.bincount(labels, minlength=n_classes).astype(np.int64)
    sums = np.stack(
        [np.bincount(labels, weights=series[:, d], minlength=n_classes) for d in range(3)], axis=1
    )
    global_mean = series.mean(axis=0)
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], global_mean)
    # Two-pass (centred) second moments: E[zz^T] - mu mu^T would lose digits to cancellation.
    dev = series - means[labels]
    scatter = np.empty((n_classes, 3, 3))
    for p in range(3):
        for q in range(p, 3):
            s = np.bincount(labels, weights=dev[:, p] * dev[:, q], minlength=n_classes)
            scatter[:, p, q] = scatter[:, q, p] = s
    gdev = series - global_mean
    global_cov = gdev.T @ gdev / max(series.shape[0], 1)
    weight = np.maximum(counts + prior_weight, _TINY)
    cov = (scatter + prior_weight * global_cov) / weight[:, None, None]
    noise = np.broadcast_to(np.asarray(noise_var, dtype=np.float64), labels.shape)
    class_noise = (
        np.bincount(labels, weights=noise, minlength=n_classes) + prior_weight * noise.mean()
    ) / weight
    cov[:, 1, 1] -= class_noise
    # Project onto the PSD cone: the noise correction can push quiet classes negative.
    evals, evecs = np.linalg.eigh(cov)
    cov = (evecs * np.clip(evals, 0.0, None)[:, None, :]) @ np.swapaxes(evecs, 1, 2)
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return ClassStatistics(means=means, covariances=cov, counts=counts, noise_var=class_noise)


def conditional_model(
    stats: ClassStatistics, beta0: tuple[float, float], strength: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian conditional of ``x(t)`` given ``x(t_b), x(t_a)`` per class, regularised.

    ``beta = beta0 + (S_oo + lambda I)^-1 (S_ot - S_oo beta0)``: the regression of ``x(t)`` on
    the keys with a Gaussian prior centred on ``beta0``.

    Parameters
    ----------
    stats : ClassStatistics
    beta0 : (float, float)
        Prior regression weights of the keys (:func:`interpolation_weights`).
    strength : float or ndarray, shape (K,)
        ``lambda`` (HR intensity units squared), >= 0; per class or for all.

    Returns
    -------
    beta : ndarray of float64, shape (K, 2)
        Regression weights of ``(x(t_b), x(t_a))``.
    intercept : ndarray of float64, shape (K,)
        ``mu_t - beta . mu_o``, so that ``mu_p = intercept + beta . x_o``.
    var_p : ndarray of float64, shape (K,)
        ``S_tt - 2 beta . S_ot + beta^T S_oo beta`` (>= 0), the prediction error variance.
    """
    s = stats.covariances
    s_oo = s[:, [0, 2]][:, :, [0, 2]]
    s_to = s[:, 1, [0, 2]]
    b0 = np.asarray(beta0, dtype=np.float64)
    ridge = strength + _RIDGE * np.trace(s_oo, axis1=1, axis2=2) / 2 + _TINY
    lhs = s_oo + ridge[:, None, None] * np.eye(2)
    rhs = s_to - s_oo @ b0
    beta = b0 + np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]
    var_p = (
        s[:, 1, 1]
        - 2 * np.einsum("kp,kp->k", beta, s_to)
        + np.einsum("kp,kpq,kq->k", beta, s_oo, beta)
    )
    var_p = np.clip(var_p, 0.0, None)
    intercept = stats.means[:, 1] - np.einsum("kp,kp->k", beta, stats.means[:, [0, 2]])
    return beta, intercept, var_p


def _blocks(a: np.ndarray) -> np.ndarray:
    """(H, W) -> (H/4, 4, W/4, 4) view: the 16 HR pixels of LR pixel (j0, j1) at [j0, :, j1, :]."""
    h, w = a.shape[0] // SCALE, a.shape[1] // SCALE
    return a.reshape(h, SCALE, w, SCALE)


def assign_hr_classes(
    keys: KeyPair,
    lr_t_calibrated: np.ndarray,
    weights: tuple[float, float],
    g: float,
    centroids: np.ndarray,
    valid: np.ndarray,
) -> np.ndarray:
    """Class of each HR pixel: the nearest centroid to ``[x_i(t_b), p_i + g r_j, x_i(t_a)]``.

    ``p_i = w_b x_i(t_b) + w_a x_i(t_a)`` and ``r_j = y~_j(t) - B(p)_j``.

    Parameters
    ----------
    keys : KeyPair
    lr_t_calibrated : ndarray, shape (H/4, W/4)
        ``y~(t)``.
    weights : (float, float)
        ``(w_b, w_a)``.
    g : float
        Weight of the LR frame at t (:func:`feature_weight`).
    centroids : ndarray, shape (K, 3)
        Class means of the K-means features.
    valid : ndarray of bool, shape (K,)
        Classes that may be chosen (those with LR pixels).

    Returns
    -------
    ndarray of int64, shape (H, W)
    """
    xb = _blocks(keys.hr_keys[0])
    xa = _blocks(keys.hr_keys[1])
    interp_lr = weights[0] * keys.binned[0] + weights[1] * keys.binned[1]
    shift = (g * (np.asarray(lr_t_calibrated, dtype=np.float64) - interp_lr))[:, None, :, None]
    ft = weights[0] * xb + weights[1] * xa + shift
    best = np.full(xb.shape, np.inf)
    labels = np.zeros(xb.shape, dtype=np.int64)
    # A loop over the K classes (about 10), vectorised over pixels; the squared distance is
    # formed term by term so the result does not depend on how a caller expands it.
    for c in np.flatnonzero(valid):
        d = (xb - centroids[c, 0]) ** 2 + (ft - centroids[c, 1]) ** 2 + (xa - centroids[c, 2]) ** 2
        closer = d < best
        best = np.where(closer, d, best)
        labels[closer] = c
    return labels.reshape(keys.hr_keys.shape[1:])


def upsampling_error_var(keys: KeyPair) -> float:
    """``v_up = mean (x(t_k) - up(B x(t_k)))^2`` over both keys: the error variance of the
    bicubic up-sampled LR frame (HR intensity units squared), step 0's fallback variance."""
    up = upscale_bicubic(keys.binned.astype(np.float32), SCALE)
    return float(np.mean((keys.hr_keys - up) ** 2))


def motion_keys(
    keys: KeyPair, motions: list[KeyMotion], lr_t: np.ndarray, v_up: float | None = None
) -> tuple[KeyPair, np.ndarray, np.ndarray]:
    """The keys warped to t, distrusted pixels replaced, and the extra prediction variance.

    Step 0 of the module docstring.

    Parameters
    ----------
    keys : KeyPair
        The unwarped keys with their calibration (:func:`prepare_keys`).
    motions : list of KeyMotion, length 2
        Flow from t to each key with its confidence, in the order of the keys
        (:meth:`napari_xfusion.core.flow.FlowFuser.motion`).
    lr_t : ndarray, shape (h, w)
        LR frame at t.
    v_up : float, optional
        :func:`upsampling_error_var` of ``keys`` (computed when not given; a stream passes it
        once per key pair).

    Returns
    -------
    warped : KeyPair
        ``x'_k`` and their block means, with ``keys``' degradation model.
    extra_variance : ndarray of float32, shape (H, W)
        ``(1 - c_i) v_up``, added to the prediction variance.
    confidence : ndarray of float32, shape (H, W)
        ``c_i`` in [0, 1].
    """
    if len(motions) != 2:
        raise ValueError(f"need the motion to both keys, got {len(motions)}")
    shape = keys.hr_keys.shape[1:]
    if any(m.flow.shape[:2] != shape or m.confidence.shape != shape for m in motions):
        raise ValueError(
            f"motions of shape {motions[0].confidence.shape} for HR keys of shape {shape}"
        )
    if v_up is None:
        v_up = upsampling_error_var(keys)
    # float32 throughout: these are HR-sized and only feed the float64 statistics at the end.
    warped = [warp(keys.hr_keys[j].astype(np.float32), m.flow) for j, m in enumerate(motions)]
    conf = [np.clip(m.confidence, 0.0, 1.0).astype(np.float32) for m in motions]
    # up(y~(t)), smoothed down to the noise level the flow method works at: with a noisy LR
    # stream the unsmoothed one would put the shot noise into the prior's detail.
    noise_sd = float(np.sqrt(keys.degradation.calibrated_noise_var))
    width = denoise_width(noise_sd, _FALLBACK_NOISE)
    yt = gaussian(keys.degradation.invert(lr_t).astype(np.float32), width)
    fallback = upscale_bicubic(yt, SCALE)
    trust = [c * np.float32(m.weight) for c, m in zip(conf, motions, strict=True)]
    total = trust[0] + trust[1]
    miss = (1.0 - conf[0]) * (1.0 - conf[1])
    combined = 1.0 - miss
    # Best other guess: the trusted keys' mean, drawn towards up(y~(t)) as trust vanishes.
    guess = (trust[0] * warped[0] + trust[1] * warped[1]) / np.maximum(total, np.float32(1e-12))
    guess = combined * guess + miss * fallback
    blended = np.stack([c * x + (1.0 - c) * guess for c, x in zip(conf, warped, strict=True)])
    binned = bin_frames(blended, SCALE).astype(np.float64)
    out = KeyPair(hr_keys=blended.astype(np.float64), binned=binned, degradation=keys.degradation)
    return out, (miss * np.float32(v_up)).astype(np.float32), combined.astype(np.float32)


def fuse_window(
    keys: KeyPair,
    lr_t: np.ndarray,
    lr_labels: np.ndarray,
    n_classes: int,
    *,
    weights: tuple[float, float] = (0.5, 0.5),
    block_prior: BlockPrior = "correlated",
    prior_weight: float = 8.0,
    extra_variance: np.ndarray | None = None,
) -> FusionResult:
    """Bayesian fusion of one target frame, given the LR pixel classes (steps 2-5 above).

    Parameters
    ----------
    keys : KeyPair
        The HR keys around t with their calibration (:func:`prepare_keys`).
    lr_t : ndarray, shape (h, w)
        LR frame at the target time ``t``.
    lr_labels : ndarray of int, shape (h, w)
        Class of each LR pixel (K-means on :func:`cluster_features`), in ``[0, n_classes)``.
    n_classes : int
        K.
    weights : (float, float)
        ``(w_b, w_a)``, the linear-in-time weights of the keys (:func:`interpolation_weights`).
    block_prior : {"correlated", "independent"}
        Prior covariance of the prediction errors within a 4x4 block (see the module docstring).
    prior_weight : float
        ``n0`` of the covariance shrinkage.
    extra_variance : ndarray, shape (H, W), optional
        Added to the prediction variance of each HR pixel and kept in the posterior variance
        (step 0: where the warped keys are not trusted).

    Returns
    -------
    FusionResult
    """
    lr_t = np.asarray(lr_t)
    if lr_t.shape != keys.binned.shape[1:]:
        raise ValueError(
            f"the LR frame at t {lr_t.shape} does not match the LR frames at the keys "
            f"{keys.binned.shape[1:]}"
        )
    _check_finite("LR frame at t", lr_t)
    lr_labels = np.asarray(lr_labels)
    if lr_labels.shape != lr_t.shape:
        raise ValueError(f"LR labels {lr_labels.shape} do not match the LR frame {lr_t.shape}")
    if block_prior not in ("correlated", "independent"):
        raise ValueError(f"block_prior must be 'correlated' or 'independent', got {block_prior!r}")
    deg = keys.degradation
    series = block_series(keys, lr_t)
    s2 = noise_map(series, weights, deg)
    labels = lr_labels.ravel()
    stats = class_statistics(series, labels, n_classes, s2, prior_weight)
    beta, intercept, var_class = conditional_model(stats, weights, stats.noise_var)

    g = feature_weight(series, weights, s2)
    centroids = _features(stats.means, weights, g)  # features are linear in the series
    yt = series[:, 1].reshape(lr_t.shape)
    hr_labels = assign_hr_classes(keys, yt, weights, g, centroids, stats.counts > 0)
    lab = _blocks(hr_labels)
    mu_p = intercept[lab] + beta[lab, 0] * _blocks(keys.hr_keys[0])
    mu_p += beta[lab, 1] * _blocks(keys.hr_keys[1])
    var_p = var_class[lab]
    extra = None if extra_variance is None else _blocks(np.asarray(extra_variance, np.float64))
    if extra is not None:
        var_p = var_p + extra

    # Kalman update per block (axes 1 and 3 run over the 16 HR pixels of one LR pixel).
    residual = (yt - mu_p.mean(axis=(1, 3)))[:, None, :, None]
    s2 = s2.reshape(lr_t.shape)[:, None, :, None]
    if block_prior == "correlated":
        sd = np.sqrt(var_p)
        m = sd.mean(axis=(1, 3), keepdims=True)
        denom = m * m + s2
        mean = mu_p + sd * (m * residual / denom)
        var = var_p * (s2 / denom)
    else:
        denom = var_p.mean(axis=(1, 3), keepdims=True) / SCALE**2 + s2
        k = var_p / SCALE**2
        mean = mu_p + k * (residual / denom)
        var = var_p - k * k / denom
    if extra is not None:
        # The fallback's error is detail within the blocks, which the LR frame does not observe:
        # the update shrinks only its block mean, so it comes back into the posterior variance.
        # (Left in var_p above it sets the gain: the block means follow the LR evidence.)
        var = var + extra
    shape = keys.hr_keys.shape[1:]
    return FusionResult(
        mean=mean.reshape(shape).astype(np.float32),
        variance=np.clip(var, 0.0, None).reshape(shape).astype(np.float32),
        prediction=mu_p.reshape(shape).astype(np.float32),
        prediction_variance=var_p.reshape(shape).astype(np.float32),
        hr_labels=hr_labels,
        feature_weight=g,
        degradation=deg,
        statistics=stats,
    )
