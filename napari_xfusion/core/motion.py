"""Real-motion test sequences rendered from natural still images.

The simulator (:mod:`napari_xfusion.core.sample`) moves little and smoothly; real footage pans,
zooms, rotates, shakes, has independently moving objects that occlude each other, non-rigid
deformation and brightness changes. This module renders such sequences from natural stills that
ship with packages the project already depends on (scikit-image's bundled images, matplotlib's
sample data), so nothing is downloaded.

Rendering: every frame is sampled from the still at sub-pixel accurate source coordinates with
a cubic spline (``skimage.transform.warp``, order 3) and mirror reflection beyond the still's
border (so pans of hundreds of pixels stay sharp). The camera never magnifies the still (local
magnification <= 1): a frame is never blurrier than the still itself; zooms go from a wider
view (minified, anti-aliased) to the native scale.

Coordinates are ``(row, col)`` = ``(y, x)`` in output (HR) pixels; a velocity ``(vy, vx)`` moves
the image content by ``vy`` rows and ``vx`` columns per frame. Angles are in degrees,
counter-clockwise as displayed (``skimage.transform.rotate``'s convention).

Stills split
------------
:func:`training_stills` and :func:`validation_stills` are a fixed, disjoint split. The
validation stills are those that no shipped network has seen: the shipped weights were trained
on moving crops of every natural image bundled with scikit-image (``train.datasets``), so
validation uses scikit-image's stereo "motorcycle" pair (not in that list) and matplotlib's
sample images. Networks trained later must draw natural images from :func:`training_stills`
only.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "TRAINING_STILLS",
    "VALIDATION_STILLS",
    "SUITE",
    "CameraMotion",
    "Layer",
    "training_stills",
    "validation_stills",
    "load_still",
    "smooth_field",
    "camera_path",
    "render_camera",
    "composite_layers",
    "apply_brightness",
    "validation_suite",
]

TRAINING_STILLS: tuple[str, ...] = (
    "camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "clock", "cell",
    "rocket", "astronaut", "coffee", "chelsea", "cat", "hubble_deep_field",
    "immunohistochemistry", "retina",
)  # fmt: skip
"""Natural stills for training: every natural image bundled with scikit-image (the set the
shipped weights were trained on). ``cat`` and ``chelsea`` are the same photograph."""

VALIDATION_STILLS: tuple[str, ...] = (
    "motorcycle_left",  # skimage.data.stereo_motorcycle()[0]: 500x741 RGB, a real scene
    "motorcycle_right",  # [1]: the same scene from 1 stereo baseline away: never train on it
    "grace_hopper",  # matplotlib sample_data/grace_hopper.jpg: 600x512 RGB portrait
    "jacksboro_dem",  # matplotlib sample_data/jacksboro_fault_dem.npz, hill-shaded: 344x403
    "mri_s1045",  # matplotlib sample_data/s1045.ima.gz: 256x256 16-bit MRI slice
)
"""Natural stills never to be trained on: the real-motion validation set is made of these."""


def training_stills() -> tuple[str, ...]:
    """Names of the stills that training may use (see :func:`load_still`)."""
    return TRAINING_STILLS


def validation_stills() -> tuple[str, ...]:
    """Names of the stills reserved for validation (never trained on)."""
    return VALIDATION_STILLS


def _unit(img: np.ndarray) -> np.ndarray:
    """Grey float32 in [0, 1]: clip at the 0.35th / 99.65th percentiles, min-max scale."""
    img = np.asarray(img, dtype=np.float64)
    lo, hi = np.percentile(img, [0.35, 99.65])
    return np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)


def _grey(img: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2gray, rgba2rgb

    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = rgba2rgb(img)
    if img.ndim == 3:
        img = rgb2gray(img)
    return img


def _hillshade(elevation: np.ndarray, azimuth_deg: float = 315.0, altitude_deg: float = 45.0):
    """Lambertian shading of a height map lit from ``azimuth`` (its texture is the detail)."""
    dy, dx = np.gradient(np.asarray(elevation, dtype=np.float64))
    az, alt = np.deg2rad(azimuth_deg), np.deg2rad(altitude_deg)
    slope = np.arctan(np.hypot(dx, dy))
    aspect = np.arctan2(-dx, dy)
    return np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)


@lru_cache(maxsize=32)
def _load(name: str) -> np.ndarray:
    import skimage.data

    if name in TRAINING_STILLS:
        img = getattr(skimage.data, name)()
    elif name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    else:
        from matplotlib import cbook

        if name == "grace_hopper":
            from skimage.io import imread

            img = imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        elif name == "jacksboro_dem":
            with np.load(cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False)) as z:
                img = _hillshade(z["elevation"])
        elif name == "mri_s1045":
            path = cbook.get_sample_data("s1045.ima.gz", asfileobj=False)
            with gzip.open(path) as f:
                img = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
        else:
            known = ", ".join(TRAINING_STILLS + VALIDATION_STILLS)
            raise ValueError(f"unknown still {name!r}; choose from {known}")
    out = _unit(_grey(img))
    out.setflags(write=False)
    return out


def load_still(name: str) -> np.ndarray:
    """A still image by name, grey float32 in [0, 1] (read-only; copy to modify).

    Parameters
    ----------
    name : str
        One of :func:`training_stills` or :func:`validation_stills`.

    Returns
    -------
    numpy.ndarray, float32, shape (H, W)
        Clipped at its 0.35th / 99.65th percentiles and min-max scaled, as
        :mod:`napari_xfusion.core.normalise` does for detector data.
    """
    return _load(name)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Layers, occlusion and brightness
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A foreground object: an elliptical patch cut from a still, with a soft edge, moving
    rigidly over the frames (drawn in list order: later layers occlude earlier ones).

    Attributes
    ----------
    still : str
        Name of the still the patch is cut from (:func:`load_still`).
    radii : (float, float)
        Ellipse half-axes ``(ry, rx)`` in px.
    position : (float, float)
        Centre ``(y, x)`` in the output frame at frame 0, px.
    velocity : (float, float)
        px/frame.
    spin_deg : float
        Rotation per frame, degrees.
    source : (float, float)
        Centre of the patch in the still, as fractions of its height and width.
    softness : float
        Width of the soft edge, px.
    """

    still: str
    radii: tuple[float, float]
    position: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    spin_deg: float = 0.0
    source: tuple[float, float] = (0.5, 0.5)
    softness: float = 3.0


def _layer_frame(layer: Layer, image: np.ndarray, shape: tuple[int, int], t: int):
    """(texture, alpha) of ``layer`` at frame ``t``, each (H, W)."""
    h, w = shape
    centre = np.asarray(layer.position) + np.asarray(layer.velocity) * t
    # The same rigid map for texture and mask, in coordinates relative to the patch centre.
    rel = _coords(shape, (1, 1), centre - np.array([(h - 1) / 2, (w - 1) / 2]),
                  layer.spin_deg * t, 1.0)  # fmt: skip
    ry, rx = layer.radii
    r = np.sqrt((rel[0] / ry) ** 2 + (rel[1] / rx) ** 2)
    dist = (r - 1.0) * min(ry, rx)  # about the signed distance to the edge, px
    x = np.clip(0.5 - dist / max(layer.softness, 1e-6), 0.0, 1.0)
    alpha = (x * x * (3 - 2 * x)).astype(np.float32)  # smoothstep
    src = (
        rel
        + np.array(
            [layer.source[0] * (image.shape[0] - 1), layer.source[1] * (image.shape[1] - 1)]
        )[:, None, None]
    )
    return _sample(image, src), alpha


def composite_layers(
    frames: np.ndarray, layers: Sequence[Layer], *, return_alpha: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Draw moving foreground layers over a background sequence (alpha compositing).

    Parameters
    ----------
    frames : numpy.ndarray, shape (T, H, W)
        Background, float in [0, 1].
    layers : sequence of Layer
        Drawn in order, each over everything before it.
    return_alpha : bool
        Also return every layer's coverage.

    Returns
    -------
    numpy.ndarray, float32, shape (T, H, W)
        The composite.
    numpy.ndarray, float32, shape (T, L, H, W)
        Coverage (alpha) of each layer, only with ``return_alpha``.
    """
    frames = np.asarray(frames, dtype=np.float32)
    out = frames.copy()
    n, h, w = frames.shape
    alphas = np.zeros((n, len(layers), h, w), np.float32) if return_alpha else None
    for i, layer in enumerate(layers):
        image = np.asarray(load_still(layer.still), np.float64)
        for t in range(n):
            tex, alpha = _layer_frame(layer, image, (h, w), t)
            out[t] += alpha * (tex - out[t])
            if alphas is not None:
                alphas[t, i] = alpha
    np.clip(out, 0.0, 1.0, out=out)
    return (out, alphas) if return_alpha else out


def apply_brightness(
    frames: np.ndarray,
    *,
    gain: tuple[float, float] = (1.0, 1.0),
    offset: tuple[float, float] = (0.0, 0.0),
    flicker: float = 0.0,
    local_amplitude: float = 0.0,
    local_sigma_px: float = 60.0,
    local_position: tuple[float, float] | None = None,
    local_velocity: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> np.ndarray:
    """Brightness changes: ``clip(frame * g(t) * (1 + l(p, t)) + o(t), 0, 1)``.

    Parameters
    ----------
    frames : numpy.ndarray, shape (T, H, W)
        Float in [0, 1].
    gain, offset : (float, float)
        Global gain and offset at the first and the last frame (linear in between): exposure
        drift.
    flicker : float
        Standard deviation of a random per-frame relative gain change (frame 0 has none).
    local_amplitude : float
        Peak relative gain of a Gaussian spot of light (negative: a shadow).
    local_sigma_px : float
        Its standard deviation in px.
    local_position : (float, float), optional
        Its centre ``(y, x)`` at frame 0 (default: the frame centre).
    local_velocity : (float, float)
        Its velocity, px/frame.
    seed : int
        Seeds the flicker.

    Returns
    -------
    numpy.ndarray, float32, shape (T, H, W), values in [0, 1]
    """
    frames = np.asarray(frames, dtype=np.float32)
    n, h, w = frames.shape
    frac = np.arange(n) / max(n - 1, 1)
    g = gain[0] + (gain[1] - gain[0]) * frac
    o = offset[0] + (offset[1] - offset[0]) * frac
    jitter = np.random.default_rng(seed).normal(0.0, 1.0, n)
    jitter[0] = 0.0
    g = g * (1.0 + flicker * jitter)
    out = np.empty_like(frames)
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")  # fmt: skip
    centre = np.asarray(
        local_position if local_position is not None else ((h - 1) / 2, (w - 1) / 2)
    )
    for t in range(n):
        frame = frames[t] * np.float32(g[t])
        if local_amplitude:
            cy, cx = centre + np.asarray(local_velocity) * t
            spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * local_sigma_px**2))
            frame = frame * (1.0 + np.float32(local_amplitude) * spot)
        out[t] = frame + np.float32(o[t])
    return np.clip(out, 0.0, 1.0, out=out)


# ---------------------------------------------------------------------------------------------
# The named validation suite
# ---------------------------------------------------------------------------------------------


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
