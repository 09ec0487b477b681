"""``bayesian``: Bayesian data fusion after Xue, Leung & Fung (2017), vectorised.

The equations, their symbols and the choices made where the paper leaves room are written down
in :mod:`napari_xfusion.core.bayesian`, which holds the maths in plain numpy. This module adds the
K-means classification of the LR pixels (scikit-learn, seeded), the shortcut at key times (the
HR frame is observed there) and, for time-ordered streams, the per-key-pair cache of the binned
keys and the calibrated degradation model. With ``prior="motion"`` (default) the keys are first
warped to t along optical flow (:class:`napari_xfusion.core.flow.FlowFuser`, which caches the
consecutive-frame flows of a time-ordered stream); ``prior="static"`` is the paper's model.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from napari_xfusion.core.bayesian import (
    BlockPrior,
    KeyPair,
    TemporalPrior,
    block_series,
    cluster_features,
    default_n_classes,
    fuse_window,
    interpolation_weights,
    motion_keys,
    noise_map,
    prepare_keys,
    upsampling_error_var,
)
from napari_xfusion.core.flow import FlowFuser
from napari_xfusion.methods.base import Reconstruction, Reconstructor, WindowInputs

__all__ = ["Bayesian", "kmeans_labels"]


def kmeans_labels(features: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """K-means (Euclidean, k-means++ seeding, one seeded run) of the LR pixels' features.

    Parameters
    ----------
    features : ndarray, shape (N, 3)
        Features of the LR pixels (:func:`~napari_xfusion.core.bayesian.cluster_features`,
        HR intensity units).
    n_classes : int
        K. With fewer distinct series than K some labels stay unused (classes without
        pixels are ignored downstream).
    seed : int
        Seed of the k-means++ initialisation.

    Returns
    -------
    ndarray of int64, shape (N,)
        Labels in ``[0, K)``.
    """
    # float32 halves the memory traffic of Lloyd's iterations; the class statistics are then
    # computed in float64 from the labels alone, so the precision of the centres is irrelevant.
    x = np.ascontiguousarray(features, dtype=np.float32)
    k = min(int(n_classes), x.shape[0])
    if k < 2:
        return np.zeros(x.shape[0], dtype=np.int64)
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=100, random_state=seed)
    # One OpenMP thread: ~25,000 3-D points gain nothing from two, and on shared cores
    # (the GUI, other methods, training) OpenMP's spin-waiting threads made the fit 15-25x
    # slower (0.5-0.8 s instead of 0.03 s per frame at load 7 on 2 cores).
    with threadpool_limits(limits=1, user_api="openmp"), warnings.catch_warnings():
        # Fewer distinct series than K (flat test images): harmless, the surplus classes are
        # empty. Counting distinct rows first would cost more than the K-means itself.
        warnings.simplefilter("ignore", ConvergenceWarning)
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
    prior : {"motion", "static"}
        Temporal prior: ``"motion"`` (default) predicts from the keys warped to t along optical
        flow and falls back to the LR evidence where the flow is not trusted; ``"static"`` is
        the paper's model (a pixel keeps its place between the keys), for comparisons.
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
        prior: TemporalPrior = "motion",
    ) -> None:
        if n_classes is not None and (int(n_classes) != n_classes or n_classes < 1):
            raise ValueError(f"n_classes must be an integer >= 1 or None, got {n_classes!r}")
        if block_prior not in ("correlated", "independent"):
            raise ValueError(
                f"block_prior must be 'correlated' or 'independent', got {block_prior!r}"
            )
        if not prior_weight >= 0:
            raise ValueError(f"prior_weight must be >= 0, got {prior_weight!r}")
        if prior not in ("motion", "static"):
            raise ValueError(f"prior must be 'motion' or 'static', got {prior!r}")
        self.n_classes = None if n_classes is None else int(n_classes)
        self.seed = int(seed)
        self.block_prior: BlockPrior = block_prior
        self.prior_weight = float(prior_weight)
        self.clip = bool(clip)
        self.prior: TemporalPrior = prior
        self._flow = FlowFuser() if prior == "motion" else None

    def reconstruct(self, inputs: WindowInputs) -> Reconstruction:
        return self._fuse(inputs, None)

    def reconstruct_stream(self, inputs: Iterable[WindowInputs]) -> Iterator[Reconstruction]:
        """As :meth:`reconstruct`, binning and calibrating the keys once per key pair.

        Only that depends on the key pair alone; the classes depend on the LR frame at t, so
        they are recomputed for every target (results equal :meth:`reconstruct`'s).
        """
        cached: tuple[tuple[int, int], KeyPair, float | None] | None = None
        for item in inputs:
            if cached is None or cached[0] != item.window.keys:
                keys = self._prepare(item)
                v_up = upsampling_error_var(keys) if self._flow is not None else None
                cached = (item.window.keys, keys, v_up)
            yield self._fuse(item, cached[1], cached[2])

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "n_classes": self.n_classes,
            "seed": self.seed,
            "block_prior": self.block_prior,
            "prior_weight": self.prior_weight,
            "clip": self.clip,
            "prior": self.prior,
        }

    def reset(self) -> None:
        if self._flow is not None:
            self._flow.reset()

    @staticmethod
    def _prepare(inputs: WindowInputs) -> KeyPair:
        try:
            return prepare_keys(inputs.hr_keys, inputs.lr_at_keys)
        except ValueError as err:
            raise ValueError(f"bayesian, target frame {inputs.window.target}: {err}") from None

    def _fuse(
        self, inputs: WindowInputs, keys: KeyPair | None, v_up: float | None = None
    ) -> Reconstruction:
        _check_finite(inputs)
        win = inputs.window
        if win.target in win.keys:
            # The HR frame at t is observed: the posterior is the key itself, with no variance.
            key = inputs.hr_keys[win.keys.index(win.target)]
            frame = np.asarray(key, dtype=np.float32).copy()
            return Reconstruction(frame=frame, variance=np.zeros_like(frame))
        if keys is None:
            keys = self._prepare(inputs)
        lr_t = inputs.lr[1]
        weights = interpolation_weights(win.target, win.key_before, win.key_after)
        deg = keys.degradation
        extra_variance = confidence = None
        if self._flow is not None:
            motions = self._flow.motion(
                win.target, win.keys, inputs.hr_keys, inputs.lr_at_keys, inputs.read_lr, lr_t
            )
            keys, extra_variance, confidence = motion_keys(keys, motions, lr_t, v_up)
        n_classes = self.n_classes or default_n_classes(lr_t.shape)
        series = block_series(keys, lr_t)
        features, _ = cluster_features(series, weights, noise_map(series, weights, deg))
        labels = kmeans_labels(features, n_classes, self.seed)
        result = fuse_window(
            keys,
            lr_t,
            labels.reshape(lr_t.shape),
            n_classes,
            weights=weights,
            block_prior=self.block_prior,
            prior_weight=self.prior_weight,
            extra_variance=extra_variance,
        )
        frame = np.clip(result.mean, 0.0, 1.0) if self.clip else result.mean
        return Reconstruction(
            frame=frame,
            variance=result.variance,
            extras={
                "gain": deg.gain,
                "offset": deg.offset,
                "noise_var": deg.noise_var,
                "feature_weight": result.feature_weight,
                **({} if confidence is None else {"confidence": confidence}),
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
