"""``bayesian``: Bayesian data fusion after Xue, Leung & Fung (2017), vectorised.

The equations, their symbols and the choices made where the paper leaves room are written down
in :mod:`napari_xfusion.core.bayesian`, which holds the maths in plain numpy. This module adds the
K-means classification of the LR pixel time series (scikit-learn, seeded) and the per-key-pair
cache of the calibrated degradation model for time-ordered streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from napari_xfusion.core.bayesian import (
    BlockPrior,
    Degradation,
    calibrate,
    calibrated_series,
    default_n_classes,
    fuse_window,
    interpolation_weights,
)
from napari_xfusion.methods.base import Reconstruction, Reconstructor, WindowInputs

__all__ = ["Bayesian", "classify_series"]


def classify_series(series: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """K-means (Euclidean, k-means++ seeding, one seeded run) of LR pixel time series.

    Parameters
    ----------
    series : ndarray, shape (N, 3)
        Calibrated LR series ``[y~(t_b), y~(t), y~(t_a)]`` (HR intensity units).
    n_classes : int
        K; reduced to the number of distinct series when there are fewer.
    seed : int
        Seed of the k-means++ initialisation.

    Returns
    -------
    ndarray of int64, shape (N,)
        Labels in ``[0, K)``.
    """
    # float32 halves the memory traffic of Lloyd's iterations; the class statistics are then
    # computed in float64 from the labels alone, so the precision of the centres is irrelevant.
    x = np.ascontiguousarray(series, dtype=np.float32)
    k = min(int(n_classes), len(np.unique(x, axis=0)))
    if k < 2:
        return np.zeros(x.shape[0], dtype=np.int64)
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=100, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


class Bayesian(Reconstructor):
    """Bayesian data fusion of the HR keys and the LR frame at t (Xue et al. 2017).

    Parameters
    ----------
    n_classes : int, optional
        Number of K-means classes; default the paper's rule
        (:func:`~napari_xfusion.core.bayesian.default_n_classes`: 8 for 100x256 LR frames).
    seed : int
        Seed of the K-means initialisation: the same seed gives the same frames.
    block_prior : {"correlated", "independent"}
        How the Kalman update of a 4x4 block is shared by its 16 HR pixels (see
        :mod:`napari_xfusion.core.bayesian`).
    prior_weight : float
        Pseudo-pixels of the pooled covariance mixed into each class covariance.
    clip : bool
        Clip the fused frame to [0, 1], the range of the data (the variance is left as is).
    """

    name = "bayesian"
    uses_hr_keys = True

    def __init__(
        self,
        n_classes: int | None = None,
        seed: int = 0,
        block_prior: BlockPrior = "correlated",
        prior_weight: float = 8.0,
        clip: bool = True,
    ) -> None:
        if n_classes is not None and (int(n_classes) != n_classes or n_classes < 1):
            raise ValueError(f"n_classes must be an integer >= 1 or None, got {n_classes!r}")
        if block_prior not in ("correlated", "independent"):
            raise ValueError(
                f"block_prior must be 'correlated' or 'independent', got {block_prior!r}"
            )
        if not prior_weight >= 0:
            raise ValueError(f"prior_weight must be >= 0, got {prior_weight!r}")
        self.n_classes = None if n_classes is None else int(n_classes)
        self.seed = int(seed)
        self.block_prior: BlockPrior = block_prior
        self.prior_weight = float(prior_weight)
        self.clip = bool(clip)

    def reconstruct(self, inputs: WindowInputs) -> Reconstruction:
        return self._fuse(inputs, None)

    def reconstruct_stream(self, inputs: Iterable[WindowInputs]) -> Iterator[Reconstruction]:
        """As :meth:`reconstruct`, calibrating the degradation model once per key pair.

        Only the calibration depends on the key pair alone; the classes depend on the LR frame
        at t, so they are recomputed for every target (results equal :meth:`reconstruct`'s).
        """
        cached_keys: tuple[int, int] | None = None
        degradation: Degradation | None = None
        for item in inputs:
            keys = item.window.keys
            if keys != cached_keys:
                _check_finite(item)
                degradation = calibrate(item.hr_keys, item.lr_at_keys)
                cached_keys = keys
            yield self._fuse(item, degradation)

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "n_classes": self.n_classes,
            "seed": self.seed,
            "block_prior": self.block_prior,
            "prior_weight": self.prior_weight,
            "clip": self.clip,
        }

    def _fuse(self, inputs: WindowInputs, degradation: Degradation | None) -> Reconstruction:
        _check_finite(inputs)
        win = inputs.window
        lr_t = inputs.lr[1]
        if degradation is None:
            degradation = calibrate(inputs.hr_keys, inputs.lr_at_keys)
        n_classes = self.n_classes or default_n_classes(lr_t.shape)
        series = calibrated_series(inputs.lr_at_keys, lr_t, degradation)
        labels = classify_series(series, n_classes, self.seed)
        result = fuse_window(
            inputs.hr_keys,
            inputs.lr_at_keys,
            lr_t,
            labels.reshape(lr_t.shape),
            n_classes,
            time_weights=interpolation_weights(win.target, win.key_before, win.key_after),
            target_is_key=(win.target == win.key_before, win.target == win.key_after),
            degradation=degradation,
            block_prior=self.block_prior,
            prior_weight=self.prior_weight,
        )
        frame = np.clip(result.mean, 0.0, 1.0) if self.clip else result.mean
        return Reconstruction(
            frame=frame,
            variance=result.variance,
            extras={
                "gain": degradation.gain,
                "offset": degradation.offset,
                "noise_var": degradation.noise_var,
            },
        )


def _check_finite(inputs: WindowInputs) -> None:
    for name in ("lr", "hr_keys", "lr_at_keys"):
        arr = getattr(inputs, name)
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"bayesian: {name} of target frame {inputs.window.target} contains "
                f"{np.count_nonzero(~np.isfinite(arr))} non-finite values (NaN or inf)"
            )
