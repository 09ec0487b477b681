"""Camera geometry: motion paths, smooth deformation fields and rendering a still."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraMotion:
    """How the camera moves over the still (all rates per frame, in output pixels/degrees).

    Attributes
    ----------
    velocity : (float, float)
        Content velocity ``(vy, vx)`` at frame 0, px/frame.
    acceleration : (float, float)
        Change of the velocity per frame, px/frame^2 (speed ramps: 0 -> 40 px/frame).
    rotation_deg : float
        Rotation per frame about the frame centre, degrees (counter-clockwise as displayed).
    zoom : (float, float)
        Magnification at the first and the last frame (geometric in between); each in
        (0, 1]: 1 is the still's native scale, 0.7 shows a 1/0.7 times wider field.
    shake_px, shake_deg : float
        Standard deviation of the random per-frame camera jitter (translation per axis,
        rotation); frame 0 is not jittered.
    warp_px : float
        Amplitude (largest displacement) of a smooth random non-rigid deformation that
        oscillates with ``warp_period`` frames; 0 for rigid motion.
    warp_corr_px : float
        Correlation length of the deformation field (its smallest wiggle), output px.
    warp_period : float
        Period of the deformation's oscillation in frames.
    offset : (float, float)
        Content position at frame 0 relative to the still's centre, px.
    """

    velocity: tuple[float, float] = (0.0, 0.0)
    acceleration: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    zoom: tuple[float, float] = (1.0, 1.0)
    shake_px: float = 0.0
    shake_deg: float = 0.0
    warp_px: float = 0.0
    warp_corr_px: float = 48.0
    warp_period: float = 40.0
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not all(0 < z <= 1 for z in self.zoom):
            raise ValueError(
                f"zoom must be magnifications in (0, 1] (the camera never magnifies the still "
                f"beyond its native scale), got {self.zoom}"
            )
        if self.warp_period <= 0 or self.warp_corr_px <= 0:
            raise ValueError("warp_period and warp_corr_px must be > 0")


def camera_path(
    n_frames: int, motion: CameraMotion, rng: np.random.Generator | int | None = 0
) -> dict[str, np.ndarray]:
    """Per-frame camera parameters of ``motion``.

    Parameters
    ----------
    n_frames : int
        Number of frames T (>= 1).
    motion : CameraMotion
    rng : numpy.random.Generator or int
        Draws the shake (a seed gives the same path every time).

    Returns
    -------
    dict
        ``shift`` (T, 2) content displacement ``(dy, dx)`` from frame 0 plus ``offset``, px;
        ``angle`` (T,) degrees; ``zoom`` (T,) magnification.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    rng = np.random.default_rng(rng)
    t = np.arange(n_frames, dtype=np.float64)[:, None]
    shift = (
        np.asarray(motion.offset, np.float64)
        + np.asarray(motion.velocity, np.float64) * t
        + 0.5 * np.asarray(motion.acceleration, np.float64) * t**2
    )
    angle = motion.rotation_deg * t[:, 0]
    jitter_px = rng.normal(0.0, 1.0, (n_frames, 2))
    jitter_deg = rng.normal(0.0, 1.0, n_frames)
    jitter_px[0] = 0.0
    jitter_deg[0] = 0.0
    shift = shift + motion.shake_px * jitter_px
    angle = angle + motion.shake_deg * jitter_deg
    z0, z1 = motion.zoom
    frac = t[:, 0] / max(n_frames - 1, 1)
    zoom = z0 * (z1 / z0) ** frac
    return {"shift": shift, "angle": angle, "zoom": zoom}


def smooth_field(
    shape: tuple[int, int], corr_px: float, rng: np.random.Generator | int | None = 0
) -> np.ndarray:
    """A smooth random 2-D vector field scaled to a largest magnitude of 1.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)``.
    corr_px : float
        Gaussian correlation length in pixels (> 0).
    rng : numpy.random.Generator or int

    Returns
    -------
    numpy.ndarray, float64, shape (2, H, W)
        ``(dy, dx)`` per pixel; ``max |field| == 1``.
    """
    from skimage.filters import gaussian

    rng = np.random.default_rng(rng)
    # Filter on a 4x coarser grid and up-sample: same field, 16x cheaper at 400x1024.
    step = max(1, int(corr_px // 8))
    small = (max(2, -(-shape[0] // step) + 1), max(2, -(-shape[1] // step) + 1))
    noise = rng.normal(0.0, 1.0, (2, *small))
    coarse = np.stack([gaussian(n, sigma=corr_px / step, mode="wrap") for n in noise])
    from skimage.transform import resize

    fine = np.stack(
        [resize(c, (small[0] * step, small[1] * step), order=3)[: shape[0], : shape[1]]
         for c in coarse]
    )  # fmt: skip
    mag = np.sqrt((fine**2).sum(axis=0)).max()
    return fine / max(mag, 1e-12)


def _coords(
    out_shape: tuple[int, int],
    src_shape: tuple[int, int],
    shift: np.ndarray,
    angle_deg: float,
    zoom: float,
) -> np.ndarray:
    """Source ``(row, col)`` of every output pixel: ``q = c_s + R(-a) (p - c_o - shift) / z``."""
    h, w = out_shape
    yy, xx = np.meshgrid(
        np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
    )
    py = yy - (h - 1) / 2 - shift[0]
    px = xx - (w - 1) / 2 - shift[1]
    # Counter-clockwise as displayed with rows pointing down: content at (y, x) goes to
    # (y cos a - x sin a, ... ) with the y axis flipped, i.e. a clockwise turn in (row, col).
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    qy = (c * py + s * px) / zoom
    qx = (-s * py + c * px) / zoom
    return np.stack([qy + (src_shape[0] - 1) / 2, qx + (src_shape[1] - 1) / 2])


def _sample(image: np.ndarray, coords: np.ndarray, *, mode: str = "symmetric") -> np.ndarray:
    from skimage.transform import warp

    out = warp(image, coords, order=3, mode=mode, cval=0.0, preserve_range=True, clip=False)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _antialiased(image: np.ndarray, zoom: float) -> np.ndarray:
    """Pre-filter a still seen at magnification ``zoom`` < 1 (skimage.rescale's sigma)."""
    if zoom >= 0.999:
        return image
    from skimage.filters import gaussian

    return gaussian(image, sigma=(1.0 / zoom - 1.0) / 2.0, mode="mirror", preserve_range=True)


def render_camera(
    image: np.ndarray,
    shape: tuple[int, int],
    n_frames: int,
    motion: CameraMotion,
    seed: int = 0,
) -> np.ndarray:
    """Frames of a camera moving over a still.

    Parameters
    ----------
    image : numpy.ndarray, shape (h, w)
        The still, float in [0, 1] (reflected beyond its border).
    shape : (int, int)
        Output frame size ``(H, W)`` in HR pixels.
    n_frames : int
        Number of frames T.
    motion : CameraMotion
    seed : int
        Seeds the shake and the deformation field.

    Returns
    -------
    numpy.ndarray, float32, shape (T, H, W), values in [0, 1]
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be a 2-D grey still, got shape {image.shape}")
    rng = np.random.default_rng(seed)
    path = camera_path(n_frames, motion, rng)
    field = None
    if motion.warp_px > 0:
        field = motion.warp_px * smooth_field(shape, motion.warp_corr_px, rng)
        field2 = motion.warp_px * smooth_field(shape, motion.warp_corr_px, rng)
    out = np.empty((n_frames, *shape), dtype=np.float32)
    for t in range(n_frames):
        zoom = float(path["zoom"][t])
        coords = _coords(shape, image.shape, path["shift"][t], float(path["angle"][t]), zoom)
        if field is not None:
            # A deformation that starts at 0 and oscillates between two random fields.
            phase = 2 * math.pi * t / motion.warp_period
            coords += (math.sin(phase) * field + (1 - math.cos(phase)) * field2) / zoom
        out[t] = _sample(_antialiased(image, zoom), coords)
    return out
