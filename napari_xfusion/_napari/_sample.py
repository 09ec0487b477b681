"""npe2 sample data: the simulated keyhole sequence as ground truth, LR stream and HR keys.

The LR stream is made the way the paper made its training data: 4x4 binning of the HR
sequence plus photon shot noise, here at a target LR PSNR. Layers are placed so they overlay:
the LR layer is shown up-scaled x4 (layer scale) and the HR key layer spans the time axis at
the key step, shifted so that each frame shows the key in force (the last key at or before it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xfusion._napari._layers import META, key_hold_translate, lr_overlay_transform
from napari_xfusion.core.degrade import SCALE, add_shot_noise, bin_frames, lr_psnr_for_b0, solve_b0
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.core.windows import key_indices

__all__ = ["make_sample", "sample_small", "sample_full", "SCALE"]

LayerData = tuple[Any, dict[str, Any], str]


def make_sample(
    n_frames: int = 50,
    shape: tuple[int, int] = (128, 256),
    *,
    key_step: int = 10,
    noise_psnr: float | None = 35.0,
    seed: int = 0,
) -> list[LayerData]:
    """Ground truth ``(T, H, W)``, LR ``(T, H/4, W/4)`` and HR keys ``(K, H, W)`` as layer data.

    Parameters
    ----------
    n_frames, shape, seed
        Passed to :func:`~napari_xfusion.core.sample.simulate_sequence`; H and W must be
        multiples of 4.
    key_step : int
        An HR key frame every ``key_step`` LR frames (0, k, 2k, ...).
    noise_psnr : float, optional
        Target PSNR in dB of the LR shot noise (20 .. 60); None for clean LR.
    """
    truth = simulate_sequence(n_frames, shape, seed=seed)
    lr = bin_frames(truth, SCALE)
    noise: dict[str, Any] = {"b0": None, "lr_psnr": None}
    if noise_psnr is not None:
        b0 = solve_b0(lr, noise_psnr, seed=seed)
        noise = {"b0": b0, "lr_psnr": lr_psnr_for_b0(lr, b0, seed=seed)}
        lr = add_shot_noise(lr, b0, np.random.default_rng(seed))
    keys = key_indices(n_frames, key_step)
    lr_scale, lr_translate = lr_overlay_transform((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), SCALE)
    source = {"sample": "keyhole", "seed": seed, "n_frames": n_frames, "shape": list(shape)}
    labels = ("frame", "y", "x")  # simulated: time in frames, lengths in HR pixels
    return [
        (
            truth,
            {
                "name": "ground truth",
                "axis_labels": labels,
                "contrast_limits": (0.0, 1.0),
                "visible": False,
                "metadata": {META: {"role": "truth", **source}},
            },
            "image",
        ),
        (
            truth[keys],
            {
                "name": "HR keys",
                "axis_labels": labels,
                "contrast_limits": (0.0, 1.0),
                "scale": (float(key_step), 1.0, 1.0),
                # Between two keys napari then shows the key in force, not the next one.
                "translate": (key_hold_translate(key_step), 0.0, 0.0),
                "metadata": {
                    META: {
                        "role": "hr_keys",
                        "key_indices": keys.tolist(),
                        "key_step": key_step,
                        **source,
                    }
                },
            },
            "image",
        ),
        (
            lr,
            {
                "name": "LR",
                "axis_labels": labels,
                "contrast_limits": (0.0, 1.0),
                "scale": lr_scale,
                "translate": lr_translate,
                "metadata": {META: {"role": "lr", "binning": SCALE, **noise, **source}},
            },
            "image",
        ),
    ]


def sample_small() -> list[LayerData]:
    """50 frames of 128x256 (LR 32x64), a key every 10 frames: shows instantly."""
    return make_sample(50, (128, 256), key_step=10)


def sample_full() -> list[LayerData]:
    """100 frames of 400x1024 (LR 100x256), a key every 20 frames: the paper's frame size."""
    return make_sample(100, (400, 1024), key_step=20)
