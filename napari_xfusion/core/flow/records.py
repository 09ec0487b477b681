"""What :class:`~napari_xfusion.core.flow.FlowFuser` works with: its tuning constants,
:class:`KeyMotion` (the motion to one key) and ``_Pair`` (per-key-pair parameters).

The model is in :mod:`napari_xfusion.core.flow`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-6
_DIS_MIN_SIZE = 12  # OpenCV's DIS needs a frame at least this wide or high
# Gaussian widths in LR pixels, measured on skimage's camera translated (3, 1) px/frame, k = 20,
# 384x384 (median PSNR between keys, noise-free / 40 / 20 dB LR PSNR):
# - the LR frames are blurred by at least this before DIS: bicubic up-sampling of a binned
#   frame keeps its aliasing, which moves differently from the scene (0: 30.0 / 35.3 / 22.5 dB;
#   0.7: 38.5 / 35.7 / 22.5 dB; 1.5: 37.6 / 34.1 dB);
_FLOW_SMOOTHING = 0.7
# - with noise, by this fraction of the denoising width: DIS needs the texture that full
#   denoising removes (20 dB: 1.0 -> 22.5 dB, 0.25 -> 23.9 dB, 0 -> 22.7 dB);
_FLOW_DENOISE = 0.25
_FLOW_NOISE = 0.004  # ... of the width that smooths the noise down to this sd
# - the correction term Ud_t - W(Ud_k) is smoothed by at least this (aliasing again: 0 -> 35.0
#   / 35.4 dB, 1 -> 38.5 / 35.7 dB, 2 -> 38.6 / 35.8 dB; 20 dB unchanged).
_DETAIL_SMOOTHING = 1.0
# The "no motion" candidate (see FlowFuser.motion). It pays support * min((|F| / consistency -
# _STILL_FREE)^2, _STILL_CAP) for contradicting a forward-backward consistent flow F, and is
# never taken at a cost above _STILL_MAX_COST (confidence exp(-1)): where every candidate is
# poor (the flow leaves the frame) the selected flow stays DIS's, so the bilinear up-sampling of
# the flow does not mix zero into the trusted neighbours. Measured (median PSNR between keys,
# clean / 40 / 20 dB; camera 384x384 translated (3, 1) px/frame, k = 20; simulator seed 123,
# k = 20): without the candidate camera 38.4 / 35.6 / 24.0, sim 41.4 / 37.8 / 24.3 dB; free,
# unpenalised camera 36.9 / 34.7 / 24.1, sim 42.2 / 39.2 / 29.4 dB; as set camera 38.4 / 35.6 /
# 24.6, sim 41.8 / 38.8 / 27.8 dB (free 1: sim 41.7 / 38.5 / 27.3; free 4: camera 38.2 dB).
_STILL_FREE = 2.0
_STILL_CAP = 50.0
_STILL_MAX_COST = 2.0


@dataclass
class KeyMotion:
    """The motion from a target time to one HR key, on the HR grid.

    Attributes
    ----------
    key : int
        LR time index of the key.
    flow : numpy.ndarray, float32, shape (H, W, 2)
        Selected flow ``t -> key`` (HR pixels): ``frame_t(x) ~ key(x + flow(x))``.
    confidence : numpy.ndarray, float32, shape (H, W)
        In [0, 1]; low where the flow is inconsistent or occluded.
    weight : float
        Normalised inverse temporal distance of the key (the two keys' weights sum to 1).
    chained : numpy.ndarray of bool, shape (H, W) on the flow grid
        Where the chained flow was selected over the direct one.
    """

    key: int
    flow: np.ndarray
    confidence: np.ndarray
    weight: float
    chained: np.ndarray


@dataclass(frozen=True)
class _Pair:
    """Per key pair: the 8-bit mapping and the noise handling (a cache key)."""

    lo: float
    hi: float
    denoise: float  # Gaussian width (LR pixels) for the correction and the residual (0: none)
    flow_width: float  # Gaussian width (LR pixels) applied to the frames DIS sees
    flow_noise_var: float  # noise variance left in those frames
    grid: int  # HR pixels per flow-grid pixel
