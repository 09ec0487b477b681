"""Helpers of the simulated x-ray sequence: the scene's physical constants, random motion and
fields, the flat field, sphere stamping and the x-ray image formation (blur, Beer-Lambert,
phase fringes).

The scene is described in :mod:`napari_xfusion.core.sample`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

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
