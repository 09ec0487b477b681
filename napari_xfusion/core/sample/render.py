"""The sequence renderer: :func:`simulate_sequence` and its ground truth, :class:`SampleState`.

The scene is described in :mod:`napari_xfusion.core.sample`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from napari_xfusion.core.sample.elements import (
    _carve_keyhole,
    _keyhole_motion,
    _melt_pool_and_bead,
    _pores,
    _powder,
    _spatter,
)
from napari_xfusion.core.sample.helpers import (
    _KEYHOLE_DEPTH_UM,
    _PLATE_THICKNESS_UM,
    _POWDER_LAYER_UM,
    _SURFACE_FRACTION,
    _flat_field,
    _frame_blocks,
    _stamp_spheres,
    _transmitted_intensity,
)


@dataclass(frozen=True)
class SampleState:
    """Ground truth of a simulated sequence (all positions in HR pixels, frame-by-frame).

    Attributes
    ----------
    pixel_size_um : float
        HR pixel size in micrometres.
    surface_row : float
        Row of the plate's top surface (rows grow downwards into the metal).
    keyhole_x : ndarray, float64, shape (T,)
        Column of the keyhole mouth centre (may lie outside the frame).
    keyhole_depth : ndarray, float64, shape (T,)
        Keyhole depth below the surface in pixels.
    keyhole_radius : ndarray, float64, shape (T,)
        Keyhole radius below the mouth funnel, in pixels.
    keyhole_tilt_deg : ndarray, float64, shape (T,)
        Backward tilt of the keyhole centre line from vertical, in degrees.
    spatter_yx : ndarray, float64, shape (T, N, 2)
        Spatter centres (row, column); NaN before a particle is ejected.
    spatter_radius : ndarray, float64, shape (N,)
        Spatter radii in pixels.
    pore_yx : ndarray, float64, shape (T, P, 2)
        Pore centres (row, column); NaN before a pore forms.
    pore_radius : ndarray, float64, shape (P,)
        Pore radii in pixels.
    pore_trapped : ndarray, bool, shape (T, P)
        Whether each pore has been frozen in place by the solidification front.
    flat_field : ndarray, float32, shape (H, W)
        The static multiplicative detector/beam pattern.
    intensity_range : tuple of float
        ``(low, high)`` transmitted intensities mapped to 0 and 1.
    """

    pixel_size_um: float
    surface_row: float
    keyhole_x: np.ndarray
    keyhole_depth: np.ndarray
    keyhole_radius: np.ndarray
    keyhole_tilt_deg: np.ndarray
    spatter_yx: np.ndarray
    spatter_radius: np.ndarray
    pore_yx: np.ndarray
    pore_radius: np.ndarray
    pore_trapped: np.ndarray
    flat_field: np.ndarray
    intensity_range: tuple[float, float]

    def spatter_speed(self) -> np.ndarray:
        """Spatter displacement per frame in pixels, shape (T-1, N), NaN where undefined."""
        step = np.diff(self.spatter_yx, axis=0)
        return np.hypot(step[..., 0], step[..., 1])

    def spatter_visible(self, shape: tuple[int, int]) -> np.ndarray:
        """Whether each spatter particle's centre lies inside a frame of ``shape``, (T, N) bool."""
        y, x = self.spatter_yx[..., 0], self.spatter_yx[..., 1]
        with np.errstate(invalid="ignore"):
            return (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])


@overload
def simulate_sequence(
    n_frames: int = ...,
    shape: tuple[int, int] = ...,
    seed: int = ...,
    speed: float = ...,
    noise: bool = ...,
    *,
    photons: float = ...,
    n_pores: int | None = ...,
    n_spatter: int | None = ...,
    scan_px_per_frame: float = ...,
    pixel_size_um: float = ...,
    return_state: Literal[False] = ...,
) -> np.ndarray: ...


@overload
def simulate_sequence(
    n_frames: int = ...,
    shape: tuple[int, int] = ...,
    seed: int = ...,
    speed: float = ...,
    noise: bool = ...,
    *,
    photons: float = ...,
    n_pores: int | None = ...,
    n_spatter: int | None = ...,
    scan_px_per_frame: float = ...,
    pixel_size_um: float = ...,
    return_state: Literal[True],
) -> tuple[np.ndarray, SampleState]: ...


def simulate_sequence(
    n_frames: int = 100,
    shape: tuple[int, int] = (400, 1024),
    seed: int = 0,
    speed: float = 1.0,
    noise: bool = True,
    *,
    photons: float = 2000.0,
    n_pores: int | None = None,
    n_spatter: int | None = None,
    scan_px_per_frame: float = 5.0,
    pixel_size_um: float = 2.0,
    return_state: bool = False,
) -> np.ndarray | tuple[np.ndarray, SampleState]:
    """Simulate an HR x-ray radiography sequence of a laser keyhole in a powder bed.

    See the module docstring for what the scene contains.

    Parameters
    ----------
    n_frames : int
        Number of frames T (>= 1), one per LR time step.
    shape : (int, int)
        Frame size (H, W) in HR pixels (each >= 8).
    seed : int
        Seed of every random choice: the same seed gives the same sequence.
    speed : float
        Multiplies every motion (scan speed, fluctuation rates, pore and spatter velocities);
        > 0.
    noise : bool
        Add photon shot noise (drawn from its own stream: the scene does not change).
    photons : float
        Detected photons per pixel at unit transmitted intensity (noise level); > 0.
    n_pores, n_spatter : int, optional
        Number of pores / spatter particles over the sequence (including some born before the
        first frame). Default: scaled with the number of frames and the frame width.
    scan_px_per_frame : float
        Keyhole scan speed in pixels per frame at ``speed=1``.
    pixel_size_um : float
        HR pixel size in micrometres; feature sizes are physical, so this zooms the scene.
    return_state : bool
        Also return the :class:`SampleState` ground truth (keyhole, pore and spatter tracks).

    Returns
    -------
    frames : ndarray, float32, shape (T, H, W)
        Normalised intensities in [0, 1] (bright = more transmission = less metal).
    state : SampleState
        Only with ``return_state=True``.

    Examples
    --------
    >>> frames = simulate_sequence(n_frames=8, shape=(64, 128), seed=1)
    >>> frames.shape, frames.dtype
    ((8, 64, 128), dtype('float32'))
    >>> frames, truth = simulate_sequence(n_frames=8, shape=(64, 128), return_state=True)
    >>> truth.spatter_yx.shape[0]
    8
    """
    n_frames, height, width = _check_arguments(n_frames, shape, speed, photons, pixel_size_um)
    seeds = np.random.SeedSequence(seed).spawn(6)
    rng_keyhole, rng_powder, rng_pores, rng_spatter, rng_flat, rng_noise = (
        np.random.default_rng(s) for s in seeds
    )
    px_per_um = 1.0 / pixel_size_um
    surface = _SURFACE_FRACTION * height
    if n_pores is None:
        n_pores = max(2, round(0.2 * n_frames * width / 1024))
    if n_spatter is None:
        n_spatter = max(6, round(1.2 * n_frames * min(width / 1024, 1.0) + 4))
    for name, count in (("n_pores", n_pores), ("n_spatter", n_spatter)):
        if int(count) != count or count < 0:
            raise ValueError(f"{name} must be an integer >= 0 or None, got {count!r}")
    n_pores, n_spatter = int(n_pores), int(n_spatter)

    # The keyhole crosses the frame centre mid-sequence (from 10 % of the width at the latest).
    scan = speed * scan_px_per_frame
    x_start = max(width / 2 - scan * (n_frames - 1) / 2, 0.1 * width)
    x_start += rng_keyhole.normal(0, 0.03 * width)

    def keyhole_x(times: np.ndarray) -> np.ndarray:
        return x_start + scan * times

    depth_max = min(_KEYHOLE_DEPTH_UM * px_per_um, 0.75 * (height - surface))
    keyhole = _keyhole_motion(rng_keyhole, n_frames, speed, depth_max, px_per_um)
    kx = keyhole_x(np.arange(n_frames, dtype=np.float64))

    # --- projected metal thickness, in micrometres, per frame ----------------------------
    rows = np.arange(height, dtype=np.float64)
    cols = np.arange(width, dtype=np.float64)
    thickness = np.zeros((n_frames, height, width), dtype=np.float32)
    below = (rows >= surface).astype(np.float32)
    # Partial pixel at the surface keeps the edge sub-pixel exact.
    below[int(surface)] = 1 - (surface - int(surface))
    thickness += (_PLATE_THICKNESS_UM * below)[None, :, None]

    for i in range(n_frames):
        _carve_keyhole(
            thickness[i], rows, cols, surface, kx[i], keyhole.depth[i], keyhole.radius[i],
            keyhole.tilt_deg[i], keyhole.ripple_phase[i], pixel_size_um,
        )  # fmt: skip
        _melt_pool_and_bead(
            thickness[i], surface, kx[i], keyhole.radius[i], keyhole.melt_length[i],
            keyhole.melt_depth[i], pixel_size_um,
        )  # fmt: skip

    # --- powder bed, denuded as the keyhole passes ---------------------------------------
    layer = min(_POWDER_LAYER_UM * px_per_um, 0.5 * surface)
    _powder(thickness, rng_powder, surface, layer, x_start, scan, pixel_size_um)

    # --- pores: born at the keyhole tip, swirl backwards, trapped by solidification ------
    pore_yx, pore_radius, pore_trapped = _pores(
        rng_pores, n_pores, n_frames, speed, surface, keyhole_x, depth_max,
        keyhole.melt_length.mean(), px_per_um,
    )  # fmt: skip
    present = ~np.isnan(pore_yx[..., 0])
    fi, pi = np.nonzero(present)
    _stamp_spheres(
        thickness, fi, pore_yx[fi, pi, 0], pore_yx[fi, pi, 1], pore_radius[pi], -pixel_size_um
    )

    # --- spatter: droplets from the keyhole mouth and powder picked up from the bed ------
    spatter_yx, spatter_radius = _spatter(
        rng_spatter, n_spatter, n_frames, speed, surface, layer, keyhole_x, px_per_um
    )
    margin = spatter_radius[None, :] + 1
    with np.errstate(invalid="ignore"):  # NaN before ejection compares False
        on_canvas = (spatter_yx[..., 0] > -margin) & (spatter_yx[..., 0] < height + margin)
        on_canvas &= (spatter_yx[..., 1] > -margin) & (spatter_yx[..., 1] < width + margin)
    fi, si = np.nonzero(on_canvas)
    _stamp_spheres(
        thickness, fi, spatter_yx[fi, si, 0], spatter_yx[fi, si, 1], spatter_radius[si],
        pixel_size_um,
    )  # fmt: skip

    # --- x-ray image formation ----------------------------------------------------------
    flat = _flat_field(rng_flat, (height, width))
    intensity = _transmitted_intensity(thickness, flat, pixel_size_um)  # in place, no copy
    del thickness

    # Clip values from the noise-free stack, so noisy and clean versions share one mapping.
    step = max(1, n_frames // 25)
    low, high = np.percentile(intensity[::step], [0.35, 99.65])
    if high <= low:
        high = low + 1e-6
    if noise:
        for block in _frame_blocks(intensity):
            shot = rng_noise.standard_normal(block.shape, dtype=np.float32)
            sigma = np.maximum(block, 0)  # Poisson: variance = mean photon count
            sigma *= 1.0 / photons
            np.sqrt(sigma, out=sigma)
            shot *= sigma
            block += shot
    intensity -= low
    intensity *= 1.0 / (high - low)
    np.clip(intensity, 0.0, 1.0, out=intensity)
    frames = intensity.astype(np.float32, copy=False)
    if not return_state:
        return frames
    state = SampleState(
        pixel_size_um=float(pixel_size_um),
        surface_row=float(surface),
        keyhole_x=kx,
        keyhole_depth=keyhole.depth,
        keyhole_radius=keyhole.radius,
        keyhole_tilt_deg=keyhole.tilt_deg,
        spatter_yx=spatter_yx,
        spatter_radius=spatter_radius,
        pore_yx=pore_yx,
        pore_radius=pore_radius,
        pore_trapped=pore_trapped,
        flat_field=flat,
        intensity_range=(float(low), float(high)),
    )
    return frames, state


def _check_arguments(
    n_frames: int,
    shape: tuple[int, int],
    speed: float,
    photons: float,
    pixel_size_um: float,
) -> tuple[int, int, int]:
    """Validated ``(n_frames, height, width)``; a ValueError naming the bad argument."""
    if int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (height, width), got {shape!r}") from None
    if height < 8 or width < 8 or (height, width) != tuple(shape):
        raise ValueError(f"shape must be two integers >= 8, got {tuple(shape)!r}")
    for name, value in (("speed", speed), ("photons", photons), ("pixel_size_um", pixel_size_um)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    return int(n_frames), height, width
