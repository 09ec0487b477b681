"""Scene elements of the simulated x-ray sequence: keyhole, melt pool and bead in the plate,
powder, pores and spatter.

The scene is described in :mod:`napari_xfusion.core.sample`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from napari_xfusion.core.sample.helpers import (
    _BEAD_HEIGHT_UM,
    _KEYHOLE_RADIUS_UM,
    _MELT_DENSITY_DEFICIT,
    _MELT_LENGTH_UM,
    _MELT_WIDTH_UM,
    _PLATE_THICKNESS_UM,
    _POWDER_PACKING,
    _POWDER_REMAINING,
    _fluctuation,
    _stamp_spheres,
)


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
