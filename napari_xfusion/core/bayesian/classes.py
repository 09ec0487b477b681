"""Bayesian fusion's steps 2-4: block series, noise, K-means features and the class statistics.

The model is in :mod:`napari_xfusion.core.bayesian`.
"""

from __future__ import annotations

import numpy as np

from napari_xfusion.core.bayesian.model import _RIDGE, _TINY, ClassStatistics, Degradation, KeyPair
from napari_xfusion.core.degrade import SCALE


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
