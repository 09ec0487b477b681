"""Bayesian fusion's step 0, the motion prior: the keys warped to t along the optical flow.

The model is in :mod:`napari_xfusion.core.bayesian`.
"""

from __future__ import annotations

import numpy as np

from napari_xfusion.core.bayesian.model import KeyPair
from napari_xfusion.core.degrade import SCALE, bin_frames
from napari_xfusion.core.flow import KeyMotion, denoise_width, gaussian, warp
from napari_xfusion.core.resample import upscale_bicubic

# Noise level (intensity sd) the motion prior's fallback up(y~(t)) is smoothed down to. Median
# PSNR between keys on the simulator (seed 123, k = 10), clean / 40 / 20 dB LR PSNR: unsmoothed
# 44.0 / 42.5 / 30.2, 0.004: 44.0 / 42.1 / 31.5, 0.008: 44.0 / 42.5 / 31.6 dB (the static prior:
# 39.8 / 38.4 / 32.2; camera 384x384 translated (3, 1) px/frame, k = 20, 0.008: 39.5 / 37.4 /
# 26.1 dB, static 22.3 / 22.2 / 20.0, bicubic 26.6 / 26.4 / 20.2).
_FALLBACK_NOISE = 0.008


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
