"""The named real-motion validation suite, rendered from the validation stills only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from napari_xfusion.core.motion.camera import CameraMotion, render_camera
from napari_xfusion.core.motion.layers import Layer, apply_brightness, composite_layers
from napari_xfusion.core.motion.stills import load_still

SUITE: dict[str, str] = {
    "drift": "sub-pixel drift, 0.4 px/frame (motorcycle_right): keys should transfer almost "
    "unchanged",
    "pan-slow": "camera pan, 2.6 px/frame diagonal (motorcycle_left)",
    "pan-ramp": "camera pan accelerating from 0 to 40 px/frame along x (motorcycle_right)",
    "zoom": "zoom from 0.7x to 1x about the centre with a 3 px/frame drift (motorcycle_left)",
    "rotation": "rotation 1 degree/frame about the centre, 1 px/frame drift (grace_hopper)",
    "shake": "hand-held shake: 4 px and 0.3 degree jitter per frame over a 3 px/frame pan "
    "(jacksboro_dem)",
    "layers": "4 objects cut from other stills, 4..36 px/frame in different directions, "
    "crossing and occluding each other over a 2 px/frame background pan (motorcycle_right; "
    "patches from grace_hopper, mri_s1045, jacksboro_dem, motorcycle_left)",
    "nonrigid": "smooth random deformation, 12 px amplitude (about 2 px/frame), over a "
    "2 px/frame pan (grace_hopper)",
    "brightness": "exposure drift (gain 0.8 -> 1.25), 3 % flicker and a moving light spot "
    "(+40 %) over a 4 px/frame pan (motorcycle_left)",
}
"""Names and descriptions of the sequences of :func:`validation_suite`, in order."""


def _suite_layers(shape: tuple[int, int], n_frames: int, rng: np.random.Generator) -> list[Layer]:
    h, w = shape
    t_mid = (n_frames - 1) / 2
    scale = min(h / 400, w / 1024)  # the suite's geometry is designed at 400x1024
    out = []
    for still, speed, radii in (
        ("grace_hopper", 4.0, (90, 70)),
        ("mri_s1045", 12.0, (70, 90)),
        ("jacksboro_dem", 24.0, (80, 120)),
        ("motorcycle_left", 36.0, (60, 80)),
    ):
        direction = rng.uniform(0, 2 * math.pi)
        v = speed * np.array([math.sin(direction) * 0.4, math.cos(direction)])
        v = v * speed / max(np.hypot(*v), 1e-9)
        # Every layer passes near the frame centre mid-sequence: they cross and occlude.
        meet = np.array([(h - 1) / 2, (w - 1) / 2]) + rng.uniform(-0.15, 0.15, 2) * (h, w)
        out.append(
            Layer(
                still=still,
                radii=(radii[0] * scale, radii[1] * scale),
                position=tuple(meet - v * scale * t_mid),
                velocity=tuple(v * scale),
                spin_deg=float(rng.uniform(-1.0, 1.0)),
                source=tuple(rng.uniform(0.35, 0.65, 2)),
                softness=4.0 * scale,
            )
        )
    return out


def validation_suite(
    shape: tuple[int, int] = (400, 1024),
    n_frames: int = 21,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """The named real-motion validation sequences (validation stills only).

    Parameters
    ----------
    shape : (int, int)
        Frame size ``(H, W)`` in HR pixels. Speeds are given at 400x1024 and scale with
        ``min(H / 400, W / 1024)`` so a small test frame sees the same relative motion.
    n_frames : int
        Frames per sequence (21 holds one key interval of 20).
    seed : int
        Seeds every random choice (shake, deformation, layer paths, flicker).
    names : sequence of str, optional
        A subset of :data:`SUITE` (default: all, in order).

    Returns
    -------
    list of (str, numpy.ndarray)
        ``(name, frames)`` with frames float32 ``(n_frames, H, W)`` in [0, 1] (HR truth).
    """
    names = list(SUITE) if names is None else list(names)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise ValueError(f"unknown sequence(s) {unknown}; choose from {', '.join(SUITE)}")
    k = min(shape[0] / 400, shape[1] / 1024)
    out = []
    for i, name in enumerate(SUITE):
        if name not in names:
            continue
        s = seed * 1000 + i  # each sequence its own stream: a subset renders the same frames
        rng = np.random.default_rng(s)
        if name == "drift":
            frames = render_camera(
                load_still("motorcycle_right"), shape, n_frames,
                CameraMotion(velocity=(0.15 * k, 0.37 * k)), s,
            )  # fmt: skip
        elif name == "pan-slow":
            frames = render_camera(
                load_still("motorcycle_left"), shape, n_frames,
                CameraMotion(velocity=(1.0 * k, 2.4 * k)), s,
            )  # fmt: skip
        elif name == "pan-ramp":
            accel = 40.0 / max(n_frames - 1, 1)
            frames = render_camera(
                load_still("motorcycle_right"), shape, n_frames,
                CameraMotion(velocity=(0.0, 0.0), acceleration=(0.0, -accel * k)), s,
            )  # fmt: skip
        elif name == "zoom":
            frames = render_camera(
                load_still("motorcycle_left"), shape, n_frames,
                CameraMotion(velocity=(1.0 * k, -2.8 * k), zoom=(0.7, 1.0)), s,
            )  # fmt: skip
        elif name == "rotation":
            frames = render_camera(
                load_still("grace_hopper"), shape, n_frames,
                CameraMotion(velocity=(0.5 * k, 0.9 * k), rotation_deg=1.0), s,
            )  # fmt: skip
        elif name == "shake":
            frames = render_camera(
                load_still("jacksboro_dem"), shape, n_frames,
                CameraMotion(velocity=(0.8 * k, 2.9 * k), shake_px=4.0 * k, shake_deg=0.3), s,
            )  # fmt: skip
        elif name == "layers":
            background = render_camera(
                load_still("motorcycle_right"), shape, n_frames,
                CameraMotion(velocity=(-0.6 * k, 1.9 * k)), s,
            )  # fmt: skip
            frames = composite_layers(background, _suite_layers(shape, n_frames, rng))
        elif name == "nonrigid":
            frames = render_camera(
                load_still("grace_hopper"), shape, n_frames,
                CameraMotion(velocity=(0.6 * k, -1.9 * k), warp_px=12.0 * k,
                             warp_corr_px=max(48.0 * k, 4.0)), s,
            )  # fmt: skip
        else:  # brightness
            still = 0.1 + 0.65 * np.asarray(load_still("motorcycle_left"))  # headroom for gain
            frames = render_camera(
                still, shape, n_frames, CameraMotion(velocity=(1.2 * k, 3.8 * k)), s
            )
            frames = apply_brightness(
                frames, gain=(0.8, 1.25), flicker=0.03, local_amplitude=0.4,
                local_sigma_px=80.0 * k, local_position=(0.3 * shape[0], 0.2 * shape[1]),
                local_velocity=(0.0, 20.0 * k), seed=s,
            )  # fmt: skip
        out.append((name, frames))
    return out
