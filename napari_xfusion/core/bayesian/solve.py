"""Bayesian fusion's step 5, the per-pixel solve of one target frame.

The model is in :mod:`napari_xfusion.core.bayesian`.
"""

from __future__ import annotations

import numpy as np

from napari_xfusion.core.bayesian.classes import (
    _blocks,
    _features,
    assign_hr_classes,
    block_series,
    class_statistics,
    conditional_model,
    feature_weight,
    noise_map,
)
from napari_xfusion.core.bayesian.model import (
    BlockPrior,
    FusionResult,
    KeyPair,
    _check_finite,
)
from napari_xfusion.core.degrade import SCALE


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
