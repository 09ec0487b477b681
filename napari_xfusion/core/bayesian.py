"""Bayesian spatio-temporal fusion after Xue, Leung & Fung (2017): the maths, in plain numpy.

Xue, J., Leung, Y., Fung, T. (2017). A Bayesian data fusion approach to spatio-temporal fusion of
remotely sensed images. Remote Sensing 9(12), 1310.

Symbols (Xue et al.'s, adapted to one grey channel): ``x`` a high-resolution (HR) image, ``y`` a
low-resolution (LR) image, ``t_b``/``t_a`` the times of the HR key frames before/after the target
time ``t``, ``z = [x(t_b), x(t), x(t_a)]`` the HR pixel time series, ``o = (t_b, t_a)`` the observed
("old") part of it. ``B`` is the 4x4 block mean, ``j`` an LR pixel and ``i`` one of its 16 HR
pixels.

1. Degradation (observation) model, calibrated per key pair on the HR/LR pairs at the key times::

       y_j = a * B(x)_j + b + e_j,   e_j ~ N(0, sigma^2)

   ``a``, ``b`` by least squares over both pairs, ``sigma^2`` from the residuals (n - 2 degrees
   of freedom). The calibrated LR image ``y~ = (y - b) / a`` estimates ``B(x)`` with noise
   variance ``s2 = sigma^2 / a^2``. (Degenerate fit, e.g. flat keys or ``a <= 0.05``: ``a = 1``.)
2. Classes: K-means (done by the caller, see :mod:`napari_xfusion.methods.bayesian`) on the
   calibrated LR series ``[y~(t_b), y~(t), y~(t_a)]`` of each LR pixel. Per class ``c``, from the
   series of its LR pixels: mean ``mu_c`` and covariance ``C_c`` (ML), shrunk towards the pooled
   covariance ``C_g`` with ``n0`` pseudo-pixels, ``(n_c C_c + n0 C_g) / (n_c + n0)`` (tiny classes
   stay usable). The series are *noisy block means*, so the covariance of the HR series is taken
   as ``S_c = C_c - s2 M`` projected onto the positive semi-definite cone, where ``M`` marks which
   entries share one noise realisation: the diagonal, plus ``(t, t_b)`` when ``t == t_b`` (the LR
   frame at t *is* the LR frame at the key), likewise for ``t_a``. Without this correction the
   regression of step 3 is attenuated towards the class mean at high noise (errors in variables).
3. HR classes: each HR pixel ``i`` takes the class whose mean is nearest (Euclidean) to
   ``[x_i(t_b), y~_j(t), x_i(t_a)]`` (its own HR keys, its block's calibrated LR value at ``t``),
   so class boundaries follow HR edges rather than the 4x4 block grid.
4. Prediction, the Gaussian conditional of ``x_i(t)`` given the HR keys ``x_o,i`` (Xue et al.'s
   temporal prediction), with ``beta = S_to S_oo^-1`` regularised::

       beta    = beta0 + (S_oo + lambda I)^-1 (S_ot - S_oo beta0)
       mu_p,i  = mu_t + beta (x_o,i - mu_o)
       var_p,i = S_tt - 2 beta S_ot + beta S_oo beta^T        (class of pixel i)

   ``beta0 = ((t_a - t), (t - t_b)) / (t_a - t_b)`` (linear interpolation in time) and
   ``lambda = s2``: a Gaussian prior on the regression weights, as strong as the LR noise. For
   ``lambda = 0`` this is the plain conditional (``var_p = S_tt - S_to S_oo^-1 S_ot``). The
   choice matters where a class varies less than the LR noise: the noise-corrected ``S_oo``
   is then ~0 and the plain conditional would predict the class mean, erasing the texture of
   the keys; the prior keeps it (and the key itself at a key time).

5. Update, a linear Kalman step with the LR frame at ``t`` through ``y~_j = B(x)_j + e_j / a``.
   Blocks do not overlap, so it is closed form per LR pixel ``j`` over its 16 HR pixels; the
   choice is the prior covariance ``P`` of the 16 prediction errors within a block (its diagonal
   is ``var_p,i``):

   - ``"correlated"`` (default): ``P_ik = sd_i sd_k``, ``sd = sqrt(var_p)`` (prediction errors
     of neighbouring pixels move together: a displaced edge). This is the model consistent with
     step 2, where ``S_c`` is estimated from block means: a block of one class has prior block
     variance ``var_p``. With ``m_j = mean_k sd_k``::

         x_i   = mu_p,i + sd_i m_j (y~_j - mean_k mu_p,k) / (m_j^2 + s2)
         var_i = var_p,i s2 / (m_j^2 + s2)

   - ``"independent"``: ``P = diag(var_p)`` (the textbook per-pixel choice)::

         x_i   = mu_p,i + (var_p,i / 16) (y~_j - mean_k mu_p,k) / (sum_k var_p,k / 256 + s2)
         var_i = var_p,i - (var_p,i / 16)^2 / (sum_k var_p,k / 256 + s2)

   Either way the block's residual goes to its pixels in proportion to their uncertainty (sd or
   variance): pixels of well-predicted classes (static background) hardly move, pixels of
   classes that change between the keys take the correction. ``var_i`` is the posterior
   variance map (HR intensity units squared).

At a key time (``t == t_b``) the series has ``y~(t) == y~(t_b)`` and ``M`` couples them, so
``S`` is singular along ``x(t) - x(t_b)`` and ``S_ot = S_oo beta0`` with ``beta0 = (1, 0)``:
step 4 gives ``beta = (1, 0)`` and ``mu_t = mu_b``, so ``mu_p = x(t_b)`` and ``var_p = 0``;
step 5 leaves it there, and the key comes back (to rounding).

HR keys are treated as exact (no HR noise term); the LR frames at ``t -+ s`` are not used (the
series is the one at the key times, as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from napari_xfusion.core.degrade import bin_frames

__all__ = [
    "SCALE",
    "Degradation",
    "ClassStatistics",
    "FusionResult",
    "default_n_classes",
    "calibrate",
    "calibrated_series",
    "class_statistics",
    "interpolation_weights",
    "noise_coupling",
    "conditional_model",
    "assign_hr_classes",
    "fuse_window",
]

SCALE = 4
"""HR pixels per LR pixel along each axis."""

BlockPrior = Literal["correlated", "independent"]

_MIN_GAIN = 0.05  # a calibrated gain below this is a failed fit, not a camera
_RIDGE = 1e-9  # relative ridge on S_oo: keeps the 2x2 solve finite when s2 ~ 0
_TINY = 1e-12  # floor on variances that end up in denominators


@dataclass(frozen=True)
class Degradation:
    """Linear LR observation model ``y = gain * B(x) + offset + N(0, noise_var)``.

    Attributes
    ----------
    gain, offset : float
        ``a`` and ``b`` (LR intensity per HR intensity; LR intensity units).
    noise_var : float
        ``sigma^2`` in LR intensity units squared.
    """

    gain: float
    offset: float
    noise_var: float

    @property
    def calibrated_noise_var(self) -> float:
        """``s2 = sigma^2 / a^2``: noise variance of ``y~`` in HR intensity units squared."""
        return self.noise_var / self.gain**2

    def invert(self, lr: np.ndarray) -> np.ndarray:
        """``y~ = (y - b) / a`` as float64, an estimate of the block mean ``B(x)``."""
        return (np.asarray(lr, dtype=np.float64) - self.offset) / self.gain


@dataclass(frozen=True)
class ClassStatistics:
    """Per-class Gaussian model of ``z = [x(t_b), x(t), x(t_a)]``.

    Attributes
    ----------
    means : ndarray of float64, shape (K, 3)
        ``mu_c`` (the global mean for a class without pixels).
    covariances : ndarray of float64, shape (K, 3, 3)
        ``S_c``: shrunk, noise-corrected, positive semi-definite.
    counts : ndarray of int64, shape (K,)
        LR pixels per class.
    """

    means: np.ndarray
    covariances: np.ndarray
    counts: np.ndarray


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
    degradation : Degradation
    statistics : ClassStatistics
    """

    mean: np.ndarray
    variance: np.ndarray
    prediction: np.ndarray
    prediction_variance: np.ndarray
    hr_labels: np.ndarray
    degradation: Degradation
    statistics: ClassStatistics


def default_n_classes(lr_shape: tuple[int, int]) -> int:
    """The paper's rule: about 5 % of the LR pixels per axis, geometric mean over the axes.

    ``round(0.05 * sqrt(h * w))``, at least 2: 8 for a 100x256 LR frame.
    """
    h, w = lr_shape
    return max(2, round(0.05 * float(np.sqrt(h * w))))


def _check_inputs(hr_keys: np.ndarray, lr_at_keys: np.ndarray, lr_t: np.ndarray) -> None:
    if lr_t.ndim != 2:
        raise ValueError(f"the LR frame at t must be 2-D (h, w), got shape {lr_t.shape}")
    h, w = lr_t.shape
    if hr_keys.ndim != 3 or hr_keys.shape[0] != 2:
        n = hr_keys.shape[0] if hr_keys.ndim == 3 else "?"
        raise ValueError(
            f"need exactly 2 HR key frames (before and after t) as an array (2, H, W), got "
            f"{n} (shape {hr_keys.shape})"
        )
    if hr_keys.shape[1:] != (SCALE * h, SCALE * w):
        raise ValueError(
            f"HR keys must be exactly {SCALE}x the LR frames in each axis: LR {h}x{w} needs HR "
            f"{SCALE * h}x{SCALE * w}, got HR {hr_keys.shape[1]}x{hr_keys.shape[2]}"
        )
    if lr_at_keys.shape != (2, h, w):
        raise ValueError(
            f"need the 2 LR frames at the key times as an array (2, {h}, {w}) matching the LR "
            f"frame at t, got shape {lr_at_keys.shape}"
        )
    for name, arr in (("HR keys", hr_keys), ("LR frames at the keys", lr_at_keys), ("LR", lr_t)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{name} contain {np.count_nonzero(~np.isfinite(arr))} non-finite values"
            )


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
    binned = bin_frames(np.asarray(hr_keys), SCALE).astype(np.float64).ravel()
    y = np.asarray(lr_at_keys, dtype=np.float64).ravel()
    if binned.shape != y.shape:
        raise ValueError(
            f"binned HR keys {bin_frames(np.asarray(hr_keys), SCALE).shape} do not match the LR "
            f"frames at the keys {np.shape(lr_at_keys)}"
        )
    xc = binned - binned.mean()
    yc = y - y.mean()
    sxx = float(xc @ xc)
    gain = float(xc @ yc) / sxx if sxx > _TINY * binned.size else 0.0
    if gain < _MIN_GAIN:
        gain = 1.0
    offset = float(y.mean() - gain * binned.mean())
    resid = y - gain * binned - offset
    noise_var = float(resid @ resid) / max(y.size - 2, 1)
    return Degradation(gain=gain, offset=offset, noise_var=noise_var)


def calibrated_series(
    lr_at_keys: np.ndarray, lr_t: np.ndarray, degradation: Degradation
) -> np.ndarray:
    """Calibrated LR pixel time series ``[y~(t_b), y~(t), y~(t_a)]``.

    Returns
    -------
    ndarray of float64, shape (h * w, 3)
        One row per LR pixel in C order.
    """
    y = np.stack([lr_at_keys[0], lr_t, lr_at_keys[1]], axis=-1).reshape(-1, 3)
    return degradation.invert(y)


def noise_coupling(target_is_key: tuple[bool, bool]) -> np.ndarray:
    """``M`` (3, 3): 1 where two entries of the LR series share one noise realisation."""
    m = np.eye(3)
    if target_is_key[0]:
        m[0, 1] = m[1, 0] = 1.0
    if target_is_key[1]:
        m[2, 1] = m[1, 2] = 1.0
    return m


def class_statistics(
    series: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    noise_cov: np.ndarray,
    prior_weight: float = 8.0,
) -> ClassStatistics:
    """Per-class mean and noise-corrected covariance of the calibrated LR series.

    Parameters
    ----------
    series : ndarray, shape (N, 3)
        Calibrated LR series (see :func:`calibrated_series`).
    labels : ndarray of int, shape (N,)
        Class of each LR pixel, in ``[0, n_classes)``.
    n_classes : int
        K.
    noise_cov : ndarray, shape (3, 3)
        ``s2 M``, subtracted from each class covariance.
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
    if prior_weight < 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight}")
    counts = np.bincount(labels, minlength=n_classes).astype(np.int64)
    sums = np.stack(
        [np.bincount(labels, weights=series[:, d], minlength=n_classes) for d in range(3)], axis=1
    )
    global_mean = series.mean(axis=0)
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], global_mean)
    # Two-pass (centred) second moments: the series are close to each other and cancellation in
    # E[zz^T] - mu mu^T would cost digits.
    dev = series - means[labels]
    scatter = np.empty((n_classes, 3, 3))
    for p in range(3):
        for q in range(p, 3):
            s = np.bincount(labels, weights=dev[:, p] * dev[:, q], minlength=n_classes)
            scatter[:, p, q] = scatter[:, q, p] = s
    gdev = series - global_mean
    global_cov = gdev.T @ gdev / max(series.shape[0], 1)
    cov = (scatter + prior_weight * global_cov) / np.maximum(counts + prior_weight, _TINY)[
        :, None, None
    ]
    cov = cov - np.asarray(noise_cov, dtype=np.float64)
    # Project onto the PSD cone: noise subtraction can push low-variance classes negative.
    evals, evecs = np.linalg.eigh(cov)
    cov = (evecs * np.clip(evals, 0.0, None)[:, None, :]) @ np.swapaxes(evecs, 1, 2)
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
    return ClassStatistics(means=means, covariances=cov, counts=counts)


def interpolation_weights(target: int, key_before: int, key_after: int) -> tuple[float, float]:
    """Linear-in-time weights ``beta0 = (w_b, w_a)`` of the two keys, clamped to [0, 1].

    ``(1, 0)`` at ``t_b``, ``(0, 1)`` at ``t_a``; outside the key interval the nearer key.
    """
    if key_after <= key_before:
        raise ValueError(f"key_after ({key_after}) must come after key_before ({key_before})")
    w_a = min(max((target - key_before) / (key_after - key_before), 0.0), 1.0)
    return 1.0 - w_a, w_a


def conditional_model(
    stats: ClassStatistics, beta0: tuple[float, float], strength: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian conditional of ``x(t)`` given ``x(t_b), x(t_a)`` per class, regularised.

    ``beta = beta0 + (S_oo + lambda I)^-1 (S_ot - S_oo beta0)``: the regression of ``x(t)`` on
    the keys with a Gaussian prior centred on linear interpolation in time (``beta0``).

    Parameters
    ----------
    stats : ClassStatistics
    beta0 : (float, float)
        Prior regression weights of the keys (see :func:`interpolation_weights`).
    strength : float
        ``lambda`` (HR intensity units squared), >= 0.

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
    hr_keys: np.ndarray, lr_t_calibrated: np.ndarray, centroids: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Nearest class mean of each HR pixel's ``[x_i(t_b), y~_j(t), x_i(t_a)]``.

    Parameters
    ----------
    hr_keys : ndarray, shape (2, H, W)
    lr_t_calibrated : ndarray, shape (H/4, W/4)
        ``y~(t)``.
    centroids : ndarray, shape (K, 3)
    valid : ndarray of bool, shape (K,)
        Classes that may be chosen (those with LR pixels).

    Returns
    -------
    ndarray of int64, shape (H, W)
    """
    xb = _blocks(np.asarray(hr_keys[0], dtype=np.float64))
    xa = _blocks(np.asarray(hr_keys[1], dtype=np.float64))
    yt = np.asarray(lr_t_calibrated, dtype=np.float64)[:, None, :, None]
    best = np.full(xb.shape, np.inf)
    labels = np.zeros(xb.shape, dtype=np.int64)
    # A loop over the K classes (about 10), vectorised over pixels; the squared distance is
    # formed term by term so the result does not depend on how a caller expands it.
    for c in np.flatnonzero(valid):
        d = (xb - centroids[c, 0]) ** 2 + (yt - centroids[c, 1]) ** 2 + (xa - centroids[c, 2]) ** 2
        closer = d < best
        best = np.where(closer, d, best)
        labels[closer] = c
    return labels.reshape(hr_keys.shape[1:])


def fuse_window(
    hr_keys: np.ndarray,
    lr_at_keys: np.ndarray,
    lr_t: np.ndarray,
    lr_labels: np.ndarray,
    n_classes: int,
    *,
    time_weights: tuple[float, float] = (0.5, 0.5),
    target_is_key: tuple[bool, bool] = (False, False),
    degradation: Degradation | None = None,
    block_prior: BlockPrior = "correlated",
    prior_weight: float = 8.0,
) -> FusionResult:
    """Bayesian fusion of one target frame, given the LR pixel classes (steps 1-5 above).

    Parameters
    ----------
    hr_keys : ndarray, shape (2, H, W)
        HR keys at ``t_b`` and ``t_a``, H = 4h, W = 4w.
    lr_at_keys : ndarray, shape (2, h, w)
        LR frames at ``t_b`` and ``t_a``.
    lr_t : ndarray, shape (h, w)
        LR frame at the target time ``t``.
    lr_labels : ndarray of int, shape (h, w)
        Class of each LR pixel (K-means on :func:`calibrated_series`), in ``[0, n_classes)``.
    n_classes : int
        K.
    time_weights : (float, float)
        ``beta0``, the prior regression weights of the two keys (linear interpolation in time,
        :func:`interpolation_weights`).
    target_is_key : (bool, bool)
        ``(t == t_b, t == t_a)``: the LR frame at t is the one at that key (shared noise).
    degradation : Degradation, optional
        Calibrated observation model; fitted with :func:`calibrate` when not given.
    block_prior : {"correlated", "independent"}
        Prior covariance of the prediction errors within a 4x4 block (see the module docstring).
    prior_weight : float
        ``n0`` of the covariance shrinkage.

    Returns
    -------
    FusionResult
    """
    hr_keys = np.asarray(hr_keys)
    lr_at_keys = np.asarray(lr_at_keys)
    lr_t = np.asarray(lr_t)
    _check_inputs(hr_keys, lr_at_keys, lr_t)
    lr_labels = np.asarray(lr_labels)
    if lr_labels.shape != lr_t.shape:
        raise ValueError(f"LR labels {lr_labels.shape} do not match the LR frame {lr_t.shape}")
    if block_prior not in ("correlated", "independent"):
        raise ValueError(f"block_prior must be 'correlated' or 'independent', got {block_prior!r}")
    deg = calibrate(hr_keys, lr_at_keys) if degradation is None else degradation
    s2 = max(deg.calibrated_noise_var, _TINY)

    series = calibrated_series(lr_at_keys, lr_t, deg)
    stats = class_statistics(
        series, lr_labels.ravel(), n_classes, s2 * noise_coupling(target_is_key), prior_weight
    )
    beta, intercept, var_class = conditional_model(stats, time_weights, s2)

    yt = deg.invert(lr_t)
    hr_labels = assign_hr_classes(hr_keys, yt, stats.means, stats.counts > 0)
    lab = _blocks(hr_labels)
    xb = _blocks(np.asarray(hr_keys[0], dtype=np.float64))
    xa = _blocks(np.asarray(hr_keys[1], dtype=np.float64))
    mu_p = intercept[lab] + beta[lab, 0] * xb + beta[lab, 1] * xa
    var_p = var_class[lab]

    # Kalman update per block (axes 1 and 3 run over the 16 HR pixels of one LR pixel).
    residual = (yt - mu_p.mean(axis=(1, 3)))[:, None, :, None]
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
    shape = hr_keys.shape[1:]
    return FusionResult(
        mean=mean.reshape(shape).astype(np.float32),
        variance=np.clip(var, 0.0, None).reshape(shape).astype(np.float32),
        prediction=mu_p.reshape(shape).astype(np.float32),
        prediction_variance=var_p.reshape(shape).astype(np.float32),
        hr_labels=hr_labels,
        degradation=deg,
        statistics=stats,
    )
