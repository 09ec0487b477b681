"""A simulated high-speed x-ray radiography sequence of laser powder-bed fusion (LPBF).

The sample is the project's ground truth for tests, training and demos: a ``(T, H, W)`` float32
stack in [0, 1], generated on demand from a seed at any size, standing for the **HR** camera
recording at the **LR** frame rate (one frame per LR time). Degrading it to the LR stream and
picking HR key frames is :mod:`napari_xfusion.core.degrade`'s job, not this module's.

What is modelled (side view: the x-ray beam crosses a thin plate along its thickness; image x
is the laser scan direction, image y points down into the metal; HR pixel = 2 um by default)
----------------------------------------------------------------------------------------------
- **Plate**: a metal plate of constant thickness along the beam (200 um) below a flat top
  surface at 30 % of the frame height; above it gas.
- **Powder bed**: a ~50 um layer of spherical powder particles (radii ~8..25 um, ~50 %
  packing) on the surface, rendered as summed sphere chords, so it has a granular texture. The
  laser **denudes** it: particles disappear as the keyhole passes them (a few stay: powder off
  the track along the beam).
- **Keyhole**: a vapour depression that moves along +x at a constant scan speed (5 px/frame by
  default, ~0.5 m/s at 50 kfps), deepens over the first part of the sequence, fluctuates in
  depth, radius and tilt (a sum of random sinusoids plus occasional partial collapses), with a
  funnel-shaped mouth, a rounded tip, a backward-tilted centre line and travelling wall
  ripples. Its projected void is the chord of a circular cross-section.
- **Melt pool**: a liquid region (7 % less dense than solid) around and far behind the keyhole
  with a half-ellipse boundary that fluctuates with the keyhole, so its boundary shows faintly;
  behind it the solidified **track bead** stands above the original surface.
- **Pores**: gas pores born at the keyhole tip, carried backward by the melt flow on a
  swirling path, and **trapped** (frozen in place) once the solidification front passes them.
  Some are born before the first frame, so the sequence can start with trapped pores.
- **Spatter**: hot droplets ejected from the keyhole mouth, mostly backward, at ~1..30
  px/frame (log-normal around 5: a good fraction faster than 4 px = one LR pixel per frame),
  and cold powder particles picked up from the bed near the keyhole by the vapour-driven gas
  flow (1..3 px/frame, drawn towards the keyhole). Both fly ballistically (gravity bends a
  track by ~10 px over 100 frames); some are already in flight at the first frame.
- **Contrast**: Beer-Lambert transmission ``exp(-mu * t)`` of the projected metal thickness
  ``t`` (``mu`` = 5 /mm, roughly Ti-6Al-4V at ~25 keV), a small isotropic blur (source size /
  detector PSF), and propagation phase contrast as the transport-of-intensity first-order term
  ``1 + z * delta * laplacian(t)`` (bright/dark edge fringes).
- **Detector**: a static multiplicative flat field (beam profile, scintillator grain, dust
  spots; the same every frame) and photon shot noise (Gaussian approximation of Poisson noise,
  ``photons`` detected photons at unit intensity; optional, from its own seeded stream so the
  noisy and noise-free versions of a seed show the same scene).
- **Normalisation**: as the project's data convention: clip at the 0.35th and 99.65th
  percentiles of the noise-free stack (estimated on every ``T // 25``-th frame), then scale to
  [0, 1].

The keyhole passes the frame centre mid-sequence (or starts at 10 % of the width and leaves on
the right when the scan is too long to fit), so the default 100 frames sweep it across the
middle half of the frame.

What is not modelled
--------------------
Real 3-D melt flow (Marangoni convection, the pores' path is a kinematic model), the vapour
plume, powder sucked into the melt, spatter landing and coalescence, motion blur within
an exposure, scintillator afterglow, polychromatic beam hardening, detector read noise and
dead pixels, and heat-induced density changes of the solid. Feature sizes are physical (um
converted with ``pixel_size_um``), so a small frame shows a small field of view, not a scaled
down scene; at very small frames the keyhole depth is capped to the plate height.

Everything random is drawn from generators seeded by ``seed`` (``numpy.random.SeedSequence``
children, one per component), so a seed always gives the same sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, overload

import numpy as np

__all__ = ["SampleState", "simulate_sequence"]

# Physical constants of the default scene, in micrometres unless noted.
_PLATE_THICKNESS_UM = 200.0  # along the beam
_MU_PER_UM = 5.0e-3  # linear attenuation coefficient, 5 /mm
_POWDER_LAYER_UM = 50.0
_POWDER_PACKING = 0.5
_POWDER_REMAINING = 0.2  # fraction of powder along the beam that lies off the denuded track
_MELT_DENSITY_DEFICIT = 0.07  # liquid vs solid density
_MELT_WIDTH_UM = 150.0  # melt-pool width along the beam
_BEAD_HEIGHT_UM = 16.0
_KEYHOLE_RADIUS_UM = 40.0
_KEYHOLE_DEPTH_UM = 300.0
_MELT_LENGTH_UM = 300.0  # melt pool behind the keyhole
# Propagation distance x refractive-index decrement, z * delta (e.g. 2 cm x 1e-6): the first-order
# transport-of-intensity term is z * delta * laplacian(thickness).
_PHASE_Z_DELTA_UM = 0.02
_SURFACE_FRACTION = 0.3  # plate surface row as a fraction of the frame height


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


def _fluctuation(
    rng: np.random.Generator, t: np.ndarray, speed: float, n_modes: int = 3
) -> np.ndarray:
    """Zero-mean random motion in [-1, 1]: a sum of sinusoids of 3..30 frame periods."""
    freqs = rng.uniform(1 / 30, 1 / 3, n_modes) * speed  # cycles per frame
    phases = rng.uniform(0, 2 * np.pi, n_modes)
    weights = rng.uniform(0.5, 1.0, n_modes)
    wave = np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None])
    return (weights[:, None] * wave).sum(axis=0) / weights.sum()


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], corr_px: float) -> np.ndarray:
    """Gaussian-correlated noise with unit standard deviation, float64 of ``shape``."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * corr_px) ** 2 * (fy**2 + fx**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=shape)
    std = field.std()
    return field / std if std > 0 else field


def _flat_field(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Static detector/beam pattern: vertical beam profile, scintillator grain, dust spots."""
    h, w = shape
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    centre = rng.uniform(0.3, 0.7) * h
    beam = np.exp(-0.5 * ((rows - centre) / (1.2 * max(h, 1))) ** 2)  # slow vertical fall-off
    beam = beam * (1 + 0.03 * np.sin(2 * np.pi * rows / rng.uniform(40, 120) + rng.uniform(0, 6)))
    flat = beam * (1 + 0.02 * _smooth_noise(rng, shape, 40.0))
    flat *= 1 + 0.015 * _smooth_noise(rng, shape, 1.0)
    for _ in range(max(1, (h * w) // 60000)):  # dust and scintillator defects
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        radius = rng.uniform(2, 8)
        flat *= 1 - rng.uniform(0.05, 0.2) * np.exp(
            -0.5 * ((rows - cy) ** 2 + (cols - cx) ** 2) / radius**2
        )
    return (flat / flat.mean()).astype(np.float32)


def _stamp_spheres(
    canvas: np.ndarray,
    frame: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    radius: np.ndarray,
    scale: float | np.ndarray,
) -> None:
    """Add sphere chords ``scale * 2 sqrt(r^2 - d^2)`` (in pixel units) to ``canvas`` in place.

    ``canvas`` is (T, H, W); ``frame``, ``y``, ``x``, ``radius`` (and ``scale`` if an array)
    are 1-D arrays of the same length, one entry per sphere and frame. Negative ``scale``
    carves voids.
    """
    if frame.size == 0:
        return
    _, h, w = canvas.shape
    reach = int(np.ceil(radius.max())) + 1
    offsets = np.arange(-reach, reach + 1)
    cy = np.round(y).astype(np.int64)
    cx = np.round(x).astype(np.int64)
    yy = cy[:, None, None] + offsets[None, :, None]
    xx = cx[:, None, None] + offsets[None, None, :]
    dist2 = (yy - y[:, None, None]) ** 2 + (xx - x[:, None, None]) ** 2
    chord = 2 * np.sqrt(np.maximum(radius[:, None, None] ** 2 - dist2, 0.0))
    inside = (chord > 0) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    ff = np.broadcast_to(frame[:, None, None], inside.shape)
    yy = np.broadcast_to(yy, inside.shape)
    xx = np.broadcast_to(xx, inside.shape)
    chord *= np.reshape(scale, (-1, 1, 1))
    np.add.at(canvas, (ff[inside], yy[inside], xx[inside]), chord[inside])


def _blur_in_place(stack: np.ndarray) -> None:
    """Separable [1, 2, 1] / 4 blur over the last two axes of a (T, H, W) stack, in place.

    Stands for the x-ray source size and the detector PSF. The outermost rows and columns are
    blurred along one axis only. Written with ``out=`` buffers: one temporary stack in all.
    """
    _, height, width = stack.shape
    rows_blurred = stack.copy()
    if height >= 3:
        mid = rows_blurred[:, 1:-1]
        np.add(stack[:, :-2], stack[:, 2:], out=mid)
        mid += stack[:, 1:-1]
        mid += stack[:, 1:-1]
        mid *= 0.25
    if width >= 3:
        mid = stack[:, :, 1:-1]
        np.add(rows_blurred[:, :, :-2], rows_blurred[:, :, 2:], out=mid)
        mid += rows_blurred[:, :, 1:-1]
        mid += rows_blurred[:, :, 1:-1]
        mid *= 0.25
        stack[:, :, 0] = rows_blurred[:, :, 0]
        stack[:, :, -1] = rows_blurred[:, :, -1]
    else:
        stack[...] = rows_blurred


def _laplacian(stack: np.ndarray) -> np.ndarray:
    """5-point Laplacian over the last two axes (zero on the outermost rows and columns)."""
    lap = np.zeros_like(stack)
    if stack.shape[1] < 3 or stack.shape[2] < 3:
        return lap
    mid = lap[:, 1:-1, 1:-1]
    np.add(stack[:, :-2, 1:-1], stack[:, 2:, 1:-1], out=mid)
    mid += stack[:, 1:-1, :-2]
    mid += stack[:, 1:-1, 2:]
    mid -= 4 * stack[:, 1:-1, 1:-1]
    return lap


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


def _frame_blocks(stack: np.ndarray, max_bytes: int = 16 << 20) -> Iterator[np.ndarray]:
    """Views of consecutive frames of ``stack``, each at most ~``max_bytes`` (cache-sized)."""
    per_frame = max(stack[0].nbytes, 1)
    n = max(1, max_bytes // per_frame)
    for start in range(0, stack.shape[0], n):
        yield stack[start : start + n]


def _transmitted_intensity(
    thickness: np.ndarray, flat: np.ndarray, pixel_size_um: float
) -> np.ndarray:
    """Detected intensity from the projected thickness (um), computed in place, (T, H, W).

    Blur (source size and detector PSF), Beer-Lambert attenuation, the first-order
    transport-of-intensity phase term ``1 + z delta laplacian(t)`` and the flat field. Done a
    few frames at a time so the temporaries stay small.
    """
    np.maximum(thickness, 0, out=thickness)
    phase_per_px2 = _PHASE_Z_DELTA_UM / pixel_size_um**2  # the Laplacian below is per px^2
    for block in _frame_blocks(thickness):
        _blur_in_place(block)
        fringes = _laplacian(block)
        fringes *= phase_per_px2
        fringes += 1
        fringes *= flat
        block *= -_MU_PER_UM
        np.exp(block, out=block)
        block *= fringes
    return thickness


class _KeyholeMotion(NamedTuple):
    """Per-frame keyhole and melt-pool geometry, each float64 (T,), lengths in pixels."""

    depth: np.ndarray
    radius: np.ndarray
    tilt_deg: np.ndarray
    ripple_phase: np.ndarray  # radians
    melt_length: np.ndarray
    melt_depth: np.ndarray


def _keyhole_motion(
    rng: np.random.Generator, n_frames: int, speed: float, depth_max: float, px_per_um: float
) -> _KeyholeMotion:
    """Keyhole that deepens over the first quarter of the sequence and keeps fluctuating."""
    t = np.arange(n_frames, dtype=np.float64)
    ramp = 0.55 + 0.45 * (1 - np.exp(-t / max(0.25 * n_frames, 1.0)))
    depth = depth_max * ramp * (1 + 0.18 * _fluctuation(rng, t, speed))
    for centre in rng.uniform(0, n_frames, max(1, n_frames // 40)):
        # Partial collapses: the depth dips by up to a third for a few frames.
        depth *= 1 - 0.35 * np.exp(-0.5 * ((t - centre) * speed / 2.0) ** 2)
    radius = min(_KEYHOLE_RADIUS_UM * px_per_um, 0.25 * depth_max)
    radius = radius * (1 + 0.2 * _fluctuation(rng, t, speed))
    tilt_deg = 14 + 8 * _fluctuation(rng, t, speed)
    ripple_phase = rng.uniform(0, 2 * np.pi) + 0.9 * speed * t
    melt_length = _MELT_LENGTH_UM * px_per_um * (1 + 0.1 * _fluctuation(rng, t, speed))
    return _KeyholeMotion(depth, radius, tilt_deg, ripple_phase, melt_length, 1.1 * depth + radius)


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


def _carve_keyhole(
    frame: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    surface: float,
    x_mouth: float,
    depth: float,
    radius: float,
    tilt_deg: float,
    ripple_phase: float,
    pixel_size_um: float,
) -> None:
    """Subtract the keyhole's projected void (circular cross-section chords) from one frame."""
    height, width = frame.shape
    tilt = np.tan(np.deg2rad(tilt_deg))
    top = int(np.floor(surface))
    bottom = min(int(np.ceil(surface + depth)) + 1, height)
    reach = 2 * radius + 2
    left = max(int(x_mouth - tilt * depth - reach), 0)
    right = min(int(x_mouth + reach) + 1, width)
    if bottom <= top or right <= left:
        return
    z = np.clip(rows[top:bottom, None] - surface, 0, None) / max(depth, 1e-6)  # 0..1 down
    centre = x_mouth - tilt * depth * z**1.3  # front wall inclines backwards with depth
    r = radius * (1 - 0.45 * z) * np.sqrt(np.clip(1 - z**4, 0, None))  # tapering, round tip
    r = r * (1 + 0.6 * np.exp(-z / 0.12))  # funnel-shaped mouth
    r = r * (1 + 0.12 * np.sin(2 * np.pi * z * 4 - ripple_phase))  # travelling wall ripples
    dx = cols[None, left:right] - centre
    chord = 2 * np.sqrt(np.clip(r**2 - dx**2, 0, None)) * pixel_size_um
    frame[top:bottom, left:right] -= chord.astype(np.float32)


def _melt_pool_and_bead(
    frame: np.ndarray,
    surface: float,
    x_key: float,
    radius: float,
    melt_length: float,
    melt_depth: float,
    pixel_size_um: float,
) -> None:
    """Lower the density inside the melt pool; add the solidified bead behind the keyhole.

    The pool is two half-ellipses in x (short ahead of the keyhole, ``melt_length`` behind it)
    that also gets shallower towards its tail; only its bounding box is computed.
    """
    height, width = frame.shape
    ahead = 2.0 * radius
    top = int(np.floor(surface))
    bottom = min(int(np.ceil(surface + melt_depth)) + 2, height)
    left = max(int(np.floor(x_key - melt_length)) - 1, 0)
    right = min(int(np.ceil(x_key + ahead)) + 2, width)
    if bottom > top and right > left:
        dx = np.arange(left, right, dtype=np.float32) - np.float32(x_key)
        semi_axis = np.where(dx >= 0, ahead, melt_length)
        profile = np.sqrt(np.clip(1 - (dx / semi_axis) ** 2, 0, None))
        taper = 0.4 + 0.6 * np.exp(np.minimum(dx, 0) / (0.6 * melt_length))
        pool_depth = melt_depth * profile * taper
        z = np.arange(top, bottom, dtype=np.float32)[:, None] - np.float32(surface)
        # A one-pixel soft edge keeps the boundary a gradient, not aliased steps.
        inside = np.clip(pool_depth[None, :] - z + 0.5, 0, 1) * (z >= 0)
        frame[top:bottom, left:right] -= _MELT_WIDTH_UM * _MELT_DENSITY_DEFICIT * inside
    # Solidified bead: rises behind the keyhole over ~2 radii, constant along the track.
    bead_px = _BEAD_HEIGHT_UM / pixel_size_um
    end = min(int(np.ceil(x_key - radius)), width)
    b_top = max(int(np.floor(surface - bead_px)) - 1, 0)
    b_bottom = int(np.ceil(surface))
    if end > 0 and b_bottom > b_top:
        dx = np.arange(end, dtype=np.float32) - np.float32(x_key)
        bead = bead_px * np.clip(-(dx + radius) / (2 * radius + 1), 0, 1)
        height_above = np.float32(surface) - np.arange(b_top, b_bottom, dtype=np.float32)[:, None]
        fill = np.clip(bead[None, :] - height_above + 0.5, 0, 1) * (height_above > 0)
        frame[b_top:b_bottom, :end] += _MELT_WIDTH_UM * fill


def _powder(
    thickness: np.ndarray,
    rng: np.random.Generator,
    surface: float,
    layer: float,
    x_start: float,
    scan: float,
    pixel_size_um: float,
) -> None:
    """Add powder-particle chords; each particle vanishes when the keyhole reaches it."""
    n_frames, _, width = thickness.shape
    mean_r_um = 15.0
    volume_um3 = (width * pixel_size_um) * (layer * pixel_size_um) * _PLATE_THICKNESS_UM
    count = int(_POWDER_PACKING * volume_um3 / (4 / 3 * np.pi * mean_r_um**3 * 1.2))
    radius = np.clip(rng.lognormal(np.log(mean_r_um), 0.3, count), 8, 25) / pixel_size_um
    radius = np.minimum(radius, 0.5 * layer)
    x = rng.uniform(-radius, width + radius)
    # Bottom particles sink half a radius: they rest in the dips of the surface below.
    y = surface - rng.uniform(0.5 * radius, np.maximum(layer - radius, 0.5 * radius + 1e-3))
    # Frame at which the keyhole (plus a random denudation reach) passes the particle.
    reach = rng.uniform(0, 40 / pixel_size_um, count)
    gone = np.ceil((x - reach - x_start) / scan)
    gone[rng.uniform(size=count) < _POWDER_REMAINING] = np.inf  # off the track along the beam
    alive_frames = np.clip(gone, 0, n_frames).astype(np.int64)  # visible in frames < this
    keep = alive_frames > 0
    x, y, radius, alive_frames = x[keep], y[keep], radius[keep], alive_frames[keep]
    # Stamp each particle twice into a band of rows, +chord at frame 0 and -chord at the frame it
    # vanishes; a cumulative sum over time then gives every frame's powder at the cost of one.
    top = max(int(np.floor(surface - layer)) - 1, 0)
    bottom = int(np.ceil(surface)) + 1
    deltas = np.zeros((n_frames + 1, bottom - top, width), dtype=np.float32)
    frame = np.concatenate([np.zeros(x.size, dtype=np.int64), alive_frames])
    sign = np.concatenate([np.ones(x.size), -np.ones(x.size)])
    _stamp_spheres(
        deltas, frame, np.tile(y - top, 2), np.tile(x, 2), np.tile(radius, 2),
        sign * pixel_size_um,
    )  # fmt: skip
    np.cumsum(deltas, axis=0, out=deltas)
    thickness[:, top:bottom] += deltas[:n_frames]


def _pores(
    rng: np.random.Generator,
    n_pores: int,
    n_frames: int,
    speed: float,
    surface: float,
    keyhole_x: Callable[[np.ndarray], np.ndarray],
    depth_max: float,
    melt_length: float,
    px_per_um: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pore centres (T, P, 2) (NaN before birth), radii (P,) and trapped flags (T, P).

    A pore is born near the keyhole tip, drifts backwards with the melt on a circular swirl and
    freezes at the first frame where the melt pool's rear end (``melt_length`` behind the
    keyhole) has passed it. Pores born before frame 0 are followed from their birth, so the
    sequence can open with pores already trapped in the track.
    """
    born = rng.uniform(-0.3 * n_frames - 10, n_frames - 1, n_pores)
    radius = rng.uniform(8, 22, n_pores) * px_per_um
    y0 = surface + depth_max * rng.uniform(0.6, 1.0, n_pores)
    x0 = keyhole_x(born) - 0.3 * depth_max * rng.uniform(0, 1, n_pores)  # the tip lags behind
    drift = speed * rng.uniform(0.5, 2.5, n_pores)  # px/frame, backwards with the melt flow
    sink = drift * rng.uniform(-0.3, 0.3, n_pores)  # px/frame, up or down
    swirl = rng.uniform(4, 20, n_pores) * px_per_um
    omega = speed * rng.uniform(0.15, 0.5, n_pores) * rng.choice([-1, 1], n_pores)  # rad/frame
    phase = rng.uniform(0, 2 * np.pi, n_pores)

    first = int(np.floor(born.min(initial=0.0)))
    t = np.arange(first, n_frames, dtype=np.float64)[:, None]  # from the earliest birth
    age = t - born[None, :]
    angle = omega * age + phase
    x = x0 - drift * age + swirl * (np.cos(angle) - np.cos(phase))
    y = y0 + sink * age + swirl * (np.sin(angle) - np.sin(phase))
    y = np.maximum(y, surface + radius + 2)  # pores stay in the metal
    passed = (keyhole_x(t) - melt_length > x) & (age >= 0)
    trap_index = np.where(passed.any(axis=0), passed.argmax(axis=0), t.shape[0])
    trapped = np.arange(t.shape[0])[:, None] >= trap_index[None, :]
    frozen = np.minimum(trap_index, t.shape[0] - 1)
    cols = np.arange(n_pores)
    x = np.where(trapped, x[frozen, cols][None, :], x)
    y = np.where(trapped, y[frozen, cols][None, :], y)
    yx = np.stack([y, x], axis=-1)
    yx[age < 0] = np.nan
    keep = slice(t.shape[0] - n_frames, None)  # drop the frames before frame 0
    return yx[keep], radius, trapped[keep] & (age[keep] >= 0)


def _spatter(
    rng: np.random.Generator,
    n_spatter: int,
    n_frames: int,
    speed: float,
    surface: float,
    layer: float,
    keyhole_x: Callable[[np.ndarray], np.ndarray],
    px_per_um: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Spatter centres (T, N, 2) in pixels (NaN before ejection) and radii (N,).

    Two kinds, both flying in straight lines (gravity is a fraction of a pixel over a
    sequence at tens of kfps): hot droplets ejected from the keyhole mouth, mostly backwards and
    fast; and cold powder particles picked up from the bed around the keyhole by the
    vapour-driven gas flow, slower and drawn towards the keyhole as they lift.
    """
    born = rng.uniform(-0.15 * n_frames - 3, n_frames - 1, n_spatter)
    droplet = rng.uniform(size=n_spatter) < 0.65
    radius = np.where(droplet, rng.uniform(6, 30, n_spatter), rng.uniform(8, 22, n_spatter))
    radius *= px_per_um
    # Droplets: the inclined front wall throws melt mostly backwards (negative angles).
    backward = rng.uniform(size=n_spatter) < 0.75
    angle_droplet = np.where(
        backward, -rng.uniform(10, 70, n_spatter), rng.uniform(0, 50, n_spatter)
    )
    speed_droplet = np.clip(rng.lognormal(np.log(5.0), 0.6, n_spatter), 1.0, 30)
    # Entrained powder: starts 40..250 um from the keyhole, heads up and towards it.
    side = rng.choice([-1.0, 1.0], n_spatter)
    offset_powder = side * rng.uniform(40, 250, n_spatter) * px_per_um
    angle_powder = -side * rng.uniform(20, 70, n_spatter)
    speed_powder = rng.uniform(0.8, 3.0, n_spatter)

    angle = np.deg2rad(np.where(droplet, angle_droplet, angle_powder))
    v = speed * np.where(droplet, speed_droplet, speed_powder)  # px/frame
    vy, vx = -v * np.cos(angle), v * np.sin(angle)
    y0 = np.where(
        droplet,
        surface - radius - rng.uniform(0, 12, n_spatter) * px_per_um,
        surface - rng.uniform(radius, np.maximum(layer, radius + 1e-3)),
    )
    x0 = keyhole_x(born) + np.where(
        droplet, rng.normal(0, 16, n_spatter) * px_per_um, offset_powder
    )
    t = np.arange(n_frames, dtype=np.float64)[:, None]
    age = t - born[None, :]
    gravity = 0.002 * speed**2  # px/frame^2 (9.8 m/s^2 at 2 um/px and ~50 kfps)
    y = y0 + vy * age + 0.5 * gravity * age**2
    x = x0 + vx * age
    yx = np.stack([y, x], axis=-1)
    yx[age < 0] = np.nan
    return yx, radius
