"""Training data: one window sampler over three kinds of frame sources.

Every training item is built the same way (the paper's recipe), whatever the frames come from:

1. a frame source (a simulated x-ray sequence, a stack from disk, or a natural texture in
   motion) is drawn from a weighted mixture;
2. LR separation ``s`` uniform in ``separations`` (default {1, 2, 3}); key offsets ``a, b``
   uniform integers in ``key_offsets`` (default [1, 20]); target ``t`` uniform among the times
   at which the HR keys ``t - s*a`` and ``t + s*b`` both exist;
3. :func:`napari_xfusion.core.windows.window` turns ``(t, s, keys)`` into the LR indices and
   the bracketing keys, exactly as at inference;
4. an HR crop (on the 4-pixel LR grid) of the frames at those times, the same random flips and
   90-degree rotation for all of them, the LR frames = 4x4 binning of the HR crops, and Poisson
   shot noise on the LR only with ``log10(b0)`` uniform in ``log10_b0``.

For ``edvr-stf-flow`` (:mod:`napari_xfusion.nn.edvr_flow`) the sampler also computes the flow
inputs per item (``flow=FlowSampling(...)``): every frame from the key before to the key after
is read on a *context* box around the crop (the flow needs more field of view than the 64 px
crop), binned and given the same shot noise, the ``flow`` method's fuser runs on it exactly as
at inference (chained flows through every LR frame between the keys), and the flow frame, the
warped keys and their confidences are cropped with the target. Measured: ~0.1-0.4 s per item
(crop 64, context 128, 2-core shared CPU), about a quarter of a small model's training step;
precomputing per sequence would tie the crops to a few windows.

Sources implement :class:`FrameSource`: ``n_frames``, ``shape`` and ``read(indices, box)``.
Reading only the frames and the crop a sample needs lets the natural textures render just those
frames and lets stacks on disk stay memory-mapped.

Randomness: every stream is a :class:`numpy.random.Generator` seeded from
``(seed, rank, worker, stream)``, so a run is reproducible and DDP ranks / loader workers draw
different samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import IterableDataset, get_worker_info

from napari_xfusion.core.degrade import SCALE, add_shot_noise, bin_frames
from napari_xfusion.core.motion import (
    CameraMotion,
    Layer,
    apply_brightness,
    composite_layers,
    load_still,
    render_camera,
    training_stills,
    validation_stills,
)
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.core.windows import Window, window

__all__ = [
    "SCALE",
    "TRAINING_SEED_MIN",
    "FrameSource",
    "ArraySource",
    "FlowSampling",
    "RealMotionPool",
    "MovingTexture",
    "SourcePool",
    "SimulatedPool",
    "StackFolder",
    "TexturePool",
    "WindowSampler",
    "Sample",
    "TrainingWindows",
    "bundled_textures",
    "flip_rotate",
]

TRAINING_SEED_MIN = 1_000_000
"""Simulated training sequences use seeds >= this; held-out evaluation seeds stay below it."""

Box = tuple[int, int, int, int]  # (y0, x0, height, width) in HR pixels


class FrameSource(Protocol):
    """A (possibly virtual) HR sequence at the LR frame rate, values in [0, 1]."""

    @property
    def n_frames(self) -> int: ...

    @property
    def shape(self) -> tuple[int, int]: ...

    def read(self, indices: Sequence[int], box: Box) -> np.ndarray:
        """Frames at ``indices`` cropped to ``box``: float32, shape (len(indices), h, w)."""
        ...


class ArraySource:
    """A ``(T, H, W)`` array (in memory or memory-mapped) as a frame source.

    Parameters
    ----------
    stack : numpy.ndarray, shape (T, H, W)
        Float data already in [0, 1], or integer detector counts mapped to [0, 1] with
        ``low``/``high``.
    low, high : float, optional
        Linear map ``(x - low) / (high - low)`` clipped to [0, 1] applied on read; use the
        project's percentile normalisation values for raw stacks.
    """

    def __init__(self, stack: np.ndarray, low: float | None = None, high: float | None = None):
        if stack.ndim != 3:
            raise ValueError(f"a frame source needs a (T, H, W) stack, got shape {stack.shape}")
        self.stack = stack
        self.low, self.high = low, high

    @property
    def n_frames(self) -> int:
        return int(self.stack.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.stack.shape[1]), int(self.stack.shape[2])

    def read(self, indices: Sequence[int], box: Box) -> np.ndarray:
        y0, x0, h, w = box
        frames = np.asarray(self.stack[list(indices), y0 : y0 + h, x0 : x0 + w], dtype=np.float32)
        if self.low is not None and self.high is not None:
            frames = (frames - self.low) / max(self.high - self.low, 1e-12)
            np.clip(frames, 0.0, 1.0, out=frames)
        return frames


# ---------------------------------------------------------------------------------------------
# Natural textures in motion
# ---------------------------------------------------------------------------------------------

# scikit-image images that ship inside the wheel (the others are downloaded on first use).
_BUNDLED = (
    "camera", "coins", "moon", "page", "text", "brick", "grass", "gravel", "clock", "cell",
    "rocket", "astronaut", "coffee", "chelsea", "cat", "hubble_deep_field",
    "immunohistochemistry", "retina",
)  # fmt: skip


def bundled_textures(names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Grey float32 [0, 1] images bundled with scikit-image (no download).

    Parameters
    ----------
    names : sequence of str, optional
        ``skimage.data`` function names; default: all bundled natural images.

    Returns
    -------
    list of numpy.ndarray, float32, shape (H, W) each
    """
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb

    images = []
    for name in names or _BUNDLED:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 3 and img.shape[-1] == 4:
            img = rgba2rgb(img)
        if img.ndim == 3:
            img = rgb2gray(img)
        img = img.astype(np.float64)
        lo, hi = np.percentile(img, [0.35, 99.65])
        images.append(np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32))
    return images


@dataclass
class _Occluder:
    """A soft-edged ellipse moving on a straight line, opaque or x-ray-like (attenuating)."""

    centre: np.ndarray  # (2,) at t = 0, in output pixels
    velocity: np.ndarray  # (2,) pixels per frame
    radii: np.ndarray  # (2,)
    angle: float
    value: float  # grey level (opaque) or transmission factor (attenuating)
    opaque: bool


class MovingTexture:
    """A natural image seen through smooth random motion, with moving occluders.

    Frame ``t`` samples the image at ``c + R(t) S(t) (p - c) + d(t) + e(p, t)`` for output pixel
    ``p``: rotation ``R`` and isotropic scale ``S`` drifting linearly with a slow wobble, a
    translation ``d`` with constant velocity plus a wobble, and a smooth elastic field ``e`` that
    oscillates in time. Occluding ellipses move on straight lines on top (opaque, like a
    foreground object, or attenuating, like an x-ray projection of a particle). The motion is
    an analytic function of ``t``, so any frame is rendered on its own and only at the crop.

    Parameters
    ----------
    image : numpy.ndarray, float32, shape (H, W)
        Texture in [0, 1]; sampled with reflection beyond its border.
    n_frames : int
        Length of the virtual sequence.
    shape : (int, int)
        Frame size in HR pixels.
    rng : numpy.random.Generator
        Draws the motion and the occluders.
    max_speed : float
        Largest translation speed in HR pixels per frame.
    """

    def __init__(
        self,
        image: np.ndarray,
        n_frames: int,
        shape: tuple[int, int],
        rng: np.random.Generator,
        max_speed: float = 2.0,
    ) -> None:
        self.image = image
        self._n_frames = int(n_frames)
        self._shape = (int(shape[0]), int(shape[1]))
        h, w = image.shape
        self.origin = np.array([rng.uniform(0, h), rng.uniform(0, w)])
        speed = rng.uniform(0, max_speed)
        direction = rng.uniform(0, 2 * np.pi)
        self.velocity = speed * np.array([np.sin(direction), np.cos(direction)])
        self.angle0 = rng.uniform(0, 2 * np.pi)
        self.spin = rng.normal(0, 0.004)  # radians per frame
        self.zoom0 = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
        self.zoom_rate = rng.normal(0, 0.002)  # relative per frame
        self.wobble_amp = rng.uniform(0, 3.0, size=2)
        self.wobble_freq = rng.uniform(0.02, 0.2, size=2)
        self.wobble_phase = rng.uniform(0, 2 * np.pi, size=2)
        # Elastic field: two smooth random displacement fields mixed by a slow oscillation.
        grid = (max(self._shape[0] // 16, 2), max(self._shape[1] // 16, 2))
        amp = rng.uniform(0, 3.0)
        self.elastic = amp * rng.standard_normal((2, 2, *grid))
        self.elastic_freq = rng.uniform(0.01, 0.1)
        self.occluders = [self._occluder(rng) for _ in range(rng.integers(0, 4))]

    def _occluder(self, rng: np.random.Generator) -> _Occluder:
        h, w = self._shape
        opaque = bool(rng.random() < 0.5)
        return _Occluder(
            centre=np.array([rng.uniform(0, h), rng.uniform(0, w)]),
            velocity=rng.normal(0, 3.0, size=2),
            radii=rng.uniform(3, max(min(h, w) / 6, 4), size=2),
            angle=rng.uniform(0, np.pi),
            value=rng.uniform(0, 1) if opaque else rng.uniform(0.3, 0.9),
            opaque=opaque,
        )

    @property
    def n_frames(self) -> int:
        return self._n_frames

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _frame(self, t: float, box: Box) -> np.ndarray:
        y0, x0, h, w = box
        yy, xx = np.meshgrid(
            np.arange(y0, y0 + h, dtype=np.float64),
            np.arange(x0, x0 + w, dtype=np.float64),
            indexing="ij",
        )
        cy, cx = self._shape[0] / 2, self._shape[1] / 2
        angle = self.angle0 + self.spin * t
        zoom = self.zoom0 * math.exp(self.zoom_rate * t)
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        wobble = self.wobble_amp * np.sin(self.wobble_freq * t + self.wobble_phase)
        shift = self.origin + self.velocity * t + wobble
        phase = self.elastic_freq * t
        field = math.cos(phase) * self.elastic[0] + math.sin(phase) * self.elastic[1]
        # The coarse field is spread over the whole frame, then read at the crop.
        zoom_y = self._shape[0] / field.shape[1]
        zoom_x = self._shape[1] / field.shape[2]
        ey = ndimage.map_coordinates(field[0], [yy / zoom_y, xx / zoom_x], order=1, mode="nearest")
        ex = ndimage.map_coordinates(field[1], [yy / zoom_y, xx / zoom_x], order=1, mode="nearest")
        dy, dx = yy - cy, xx - cx
        src_y = shift[0] + cos * dy - sin * dx + ey
        src_x = shift[1] + sin * dy + cos * dx + ex
        frame = ndimage.map_coordinates(self.image, [src_y, src_x], order=1, mode="mirror")
        for occ in self.occluders:
            centre = occ.centre + occ.velocity * t
            ca, sa = math.cos(occ.angle), math.sin(occ.angle)
            u = ((yy - centre[0]) * ca + (xx - centre[1]) * sa) / occ.radii[0]
            v = (-(yy - centre[0]) * sa + (xx - centre[1]) * ca) / occ.radii[1]
            # Soft edge about one pixel wide: no aliasing when the crop is binned 4x4.
            r = np.sqrt(u * u + v * v)
            alpha = np.clip((1.0 - r) * min(occ.radii) + 0.5, 0.0, 1.0)
            if occ.opaque:
                frame = frame * (1 - alpha) + occ.value * alpha
            else:
                frame = frame * (1 - alpha * (1 - occ.value))
        return frame.astype(np.float32)

    def read(self, indices: Sequence[int], box: Box) -> np.ndarray:
        return np.stack([self._frame(float(t), box) for t in indices])


# ---------------------------------------------------------------------------------------------
# Pools of sources
# ---------------------------------------------------------------------------------------------


class SourcePool(Protocol):
    """Hands out a frame source per training item."""

    def draw(self, rng: np.random.Generator) -> FrameSource: ...


class SimulatedPool:
    """Simulated x-ray sequences (:func:`core.sample.simulate_sequence`) with random parameters.

    Simulating a sequence costs seconds, so a pool of ``pool_size`` sequences is kept and one of
    them is replaced by a fresh one every ``refresh_every`` draws.

    Parameters
    ----------
    pool_size : int
        Sequences kept in memory (each ``n_frames * H * W * 4`` bytes).
    refresh_every : int
        Draws between two replacements.
    n_frames : int
        Frames per sequence; >= 1 + 2 * max(s) * max(a, b) gives every (s, a, b) a place.
    shape : (int, int)
        Frame size of the simulation in HR pixels (the scene is physical: a smaller frame is a
        smaller field of view, not a zoomed-out scene).
    speed : (float, float)
        Range of the motion-speed factor, drawn log-uniformly.
    pixel_size_um : (float, float)
        Range of the HR pixel size (zoom of the scene), drawn uniformly.
    spatter : (float, float), optional
        Range of the spatter-count factor (times the simulator's default count, which scales
        with frames and width), drawn log-uniformly; None: the default count. With ``speed``
        up to 4 this gives faster and denser spatter and faster keyhole fluctuation (the
        simulator's ``speed`` multiplies every motion, the keyhole's oscillation included).
    drift : float
        Largest drift of the whole field of view (plate, powder and all: a stage or sample
        drift) in HR px/frame; each sequence draws a direction and a speed in [0, drift]. The
        simulator has no such option, so the frames are translated here (bilinear, edges
        reflected). 0: no drift.
    """

    def __init__(
        self,
        pool_size: int = 4,
        refresh_every: int = 64,
        n_frames: int = 128,
        shape: tuple[int, int] = (400, 512),
        speed: tuple[float, float] = (0.5, 2.0),
        pixel_size_um: tuple[float, float] = (1.5, 3.0),
        spatter: tuple[float, float] | None = None,
        drift: float = 0.0,
    ) -> None:
        self.pool_size = int(pool_size)
        self.refresh_every = int(refresh_every)
        self.n_frames = int(n_frames)
        self.shape = (int(shape[0]), int(shape[1]))
        self.speed = speed
        self.pixel_size_um = pixel_size_um
        self.spatter = spatter
        self.drift = float(drift)
        self._pool: list[ArraySource] = []
        self._draws = 0
        self._next = 0  # pool slot replaced next (the oldest)

    def _simulate(self, rng: np.random.Generator) -> ArraySource:
        seed = int(rng.integers(TRAINING_SEED_MIN, 2**31 - 1))
        speed = math.exp(rng.uniform(math.log(self.speed[0]), math.log(self.speed[1])))
        n_spatter = None
        if self.spatter is not None:
            factor = math.exp(rng.uniform(math.log(self.spatter[0]), math.log(self.spatter[1])))
            # The simulator's default count (its docstring): ~ frames x width; 1 per 8 px-frames
            # of width per 100 frames is of its order; the factor scales it.
            n_spatter = max(1, int(factor * self.n_frames * self.shape[1] / 2000))
        stack = simulate_sequence(
            self.n_frames,
            self.shape,
            seed=seed,
            speed=speed,
            noise=False,  # the HR target is clean; LR noise is added per sample
            pixel_size_um=float(rng.uniform(*self.pixel_size_um)),
            n_spatter=n_spatter,
        )
        if self.drift > 0:
            stack = _drift(stack, rng.uniform(0, self.drift), rng.uniform(0, 2 * math.pi))
        return ArraySource(stack)

    def draw(self, rng: np.random.Generator) -> FrameSource:
        if len(self._pool) < self.pool_size:
            self._pool.append(self._simulate(rng))
        elif self._draws and self._draws % self.refresh_every == 0:
            self._pool[self._next] = self._simulate(rng)
            self._next = (self._next + 1) % self.pool_size
        self._draws += 1
        return self._pool[int(rng.integers(len(self._pool)))]


def _drift(stack: np.ndarray, speed: float, direction: float) -> np.ndarray:
    """``stack`` (T, H, W) translated by ``speed`` px/frame along ``direction`` (radians)."""
    import cv2

    vy, vx = speed * math.sin(direction), speed * math.cos(direction)
    out = np.empty_like(stack)
    h, w = stack.shape[1:]
    for t in range(stack.shape[0]):
        m = np.array([[1.0, 0.0, vx * t], [0.0, 1.0, vy * t]], np.float32)
        out[t] = cv2.warpAffine(stack[t], m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)  # fmt: skip
    return out


class RealMotionPool:
    """Real-motion sequences (:mod:`napari_xfusion.core.motion`) from the *training* stills.

    Each sequence is a camera moving over a random training still (pan with an optional speed
    ramp, zoom, rotation, shake, smooth non-rigid deformation, drawn at random), with 0-3
    foreground patches cut from other training stills crossing it at their own speeds
    (occlusion) and, sometimes, brightness changes. The validation stills
    (:func:`~napari_xfusion.core.motion.validation_stills`) are never used: the constructor
    refuses them. Rendering costs ~1 s per sequence (64 frames, 256x256), so a pool is kept and
    refreshed like :class:`SimulatedPool`'s.

    Parameters
    ----------
    pool_size, refresh_every, n_frames : int
        As :class:`SimulatedPool`.
    shape : (int, int)
        Frame size (HR px).
    max_speed : float
        Largest camera speed (HR px/frame); layers move up to twice as fast.
    stills : sequence of str, optional
        Names to draw from (default: :func:`~napari_xfusion.core.motion.training_stills`).
    """

    def __init__(
        self,
        pool_size: int = 4,
        refresh_every: int = 64,
        n_frames: int = 64,
        shape: tuple[int, int] = (256, 256),
        max_speed: float = 12.0,
        stills: Sequence[str] | None = None,
    ) -> None:
        self.stills = tuple(training_stills() if stills is None else stills)
        reserved = sorted(set(self.stills) & set(validation_stills()))
        if reserved:
            raise ValueError(
                f"stills {reserved} are reserved for validation (core.motion.validation_stills) "
                "and must never be trained on"
            )
        if not self.stills:
            raise ValueError("give at least one training still")
        self.pool_size = int(pool_size)
        self.refresh_every = int(refresh_every)
        self.n_frames = int(n_frames)
        self.shape = (int(shape[0]), int(shape[1]))
        self.max_speed = float(max_speed)
        self._pool: list[ArraySource] = []
        self._draws = 0
        self._next = 0
        self.rendered: list[str] = []  # every still used so far (tests check the split)

    def _pick(self, rng: np.random.Generator) -> str:
        name = self.stills[int(rng.integers(len(self.stills)))]
        assert name not in validation_stills(), name  # the split is a hard rule
        self.rendered.append(name)
        return name

    def _render(self, rng: np.random.Generator) -> ArraySource:
        h, w = self.shape
        n = self.n_frames
        speed = rng.uniform(0, self.max_speed) * rng.uniform(0.2, 1.0)
        direction = rng.uniform(0, 2 * math.pi)
        velocity = (speed * math.sin(direction), speed * math.cos(direction))
        ramp = rng.random() < 0.2
        accel = (0.0, 0.0)
        if ramp:  # a speed ramp from 0 to max_speed over the sequence
            a = self.max_speed / max(n - 1, 1)
            accel, velocity = (a * math.sin(direction), a * math.cos(direction)), (0.0, 0.0)
        z0 = rng.uniform(0.7, 1.0) if rng.random() < 0.3 else 1.0
        motion = CameraMotion(
            velocity=velocity,
            acceleration=accel,
            rotation_deg=float(rng.normal(0, 0.5)) if rng.random() < 0.3 else 0.0,
            zoom=(z0, 1.0) if rng.random() < 0.5 else (1.0, z0),
            shake_px=float(rng.uniform(0, 3)) if rng.random() < 0.3 else 0.0,
            shake_deg=float(rng.uniform(0, 0.3)) if rng.random() < 0.2 else 0.0,
            warp_px=float(rng.uniform(0, 10)) if rng.random() < 0.3 else 0.0,
            warp_corr_px=float(rng.uniform(24, 64)),
            warp_period=float(rng.uniform(20, 80)),
        )
        seed = int(rng.integers(2**31 - 1))
        frames = render_camera(load_still(self._pick(rng)), (h, w), n, motion, seed)
        layers = []
        for _ in range(int(rng.integers(0, 4))):
            ang = rng.uniform(0, 2 * math.pi)
            v = rng.uniform(0, 2 * self.max_speed) * np.array([math.sin(ang), math.cos(ang)])
            meet = rng.uniform(0.2, 0.8, 2) * (h, w)
            r = rng.uniform(0.08, 0.25, 2) * min(h, w)
            layers.append(
                Layer(
                    still=self._pick(rng),
                    radii=(float(r[0]), float(r[1])),
                    position=tuple(meet - v * (n - 1) / 2),
                    velocity=(float(v[0]), float(v[1])),
                    spin_deg=float(rng.uniform(-1, 1)),
                    source=tuple(rng.uniform(0.3, 0.7, 2)),
                    softness=float(rng.uniform(1, 4)),
                )
            )
        if layers:
            frames = composite_layers(frames, layers)
        if rng.random() < 0.3:
            frames = apply_brightness(
                0.1 + 0.8 * frames,
                gain=(1.0, float(rng.uniform(0.8, 1.25))),
                flicker=float(rng.uniform(0, 0.03)),
                local_amplitude=float(rng.uniform(-0.3, 0.4)),
                local_sigma_px=float(rng.uniform(20, 80)),
                local_velocity=tuple(rng.normal(0, 3, 2)),
                seed=seed,
            )
        return ArraySource(np.ascontiguousarray(frames, np.float32))

    def draw(self, rng: np.random.Generator) -> FrameSource:
        if len(self._pool) < self.pool_size:
            self._pool.append(self._render(rng))
        elif self._draws and self._draws % self.refresh_every == 0:
            self._pool[self._next] = self._render(rng)
            self._next = (self._next + 1) % self.pool_size
        self._draws += 1
        return self._pool[int(rng.integers(len(self._pool)))]


class StackFolder:
    """Every stack under a folder: multipage TIFFs and folders of single-frame TIFFs.

    Stacks are memory-mapped where possible (:func:`core.io.read_stack`). Floating-point stacks
    are taken as already normalised to [0, 1]; integer stacks are mapped with the project's
    percentile normalisation (0.35 / 99.65 %, estimated on up to 32 frames).

    Parameters
    ----------
    root : path-like
        A folder holding ``*.tif``/``*.tiff`` stacks and/or sub-folders of frames, or one stack.
    min_frames : int
        Stacks shorter than this are skipped (they hold no window).
    """

    def __init__(self, root: str | Path, min_frames: int = 3) -> None:
        from napari_xfusion.core.io import read_stack

        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"training data folder {root} does not exist")
        if root.is_dir():
            paths = sorted(p for p in root.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
            # Sub-folders count as stacks only when they hold frames (not e.g. a run folder).
            paths += sorted(
                p
                for p in root.iterdir()
                if p.is_dir()
                and not p.name.startswith(".")
                and any(f.suffix.lower() in (".tif", ".tiff") for f in p.iterdir())
            )
        else:
            paths = [root]
        self.sources: list[ArraySource] = []
        self.paths: list[Path] = []
        for path in paths:
            stack = read_stack(path)
            if stack.shape[0] < min_frames:
                continue
            if np.issubdtype(stack.dtype, np.floating):
                source = ArraySource(stack)
            else:
                step = max(stack.shape[0] // 32, 1)
                lo, hi = np.percentile(np.asarray(stack[::step]), [0.35, 99.65])
                source = ArraySource(stack, float(lo), float(hi))
            self.sources.append(source)
            self.paths.append(path)
        if not self.sources:
            raise ValueError(f"no stack with >= {min_frames} frames found in {root}")

    def draw(self, rng: np.random.Generator) -> FrameSource:
        return self.sources[int(rng.integers(len(self.sources)))]


class TexturePool:
    """A fresh :class:`MovingTexture` of a random bundled image per draw.

    Parameters
    ----------
    n_frames : int
        Length of each virtual sequence.
    shape : (int, int)
        Virtual frame size; the sampler crops from it, so only the crop is rendered.
    images : list of numpy.ndarray, optional
        Textures (default :func:`bundled_textures`).
    max_speed : float
        Largest translation speed in HR pixels per frame.
    """

    def __init__(
        self,
        n_frames: int = 128,
        shape: tuple[int, int] = (256, 256),
        images: list[np.ndarray] | None = None,
        max_speed: float = 2.0,
    ) -> None:
        self.n_frames = int(n_frames)
        self.shape = shape
        self.images = images if images is not None else bundled_textures()
        self.max_speed = max_speed

    def draw(self, rng: np.random.Generator) -> FrameSource:
        image = self.images[int(rng.integers(len(self.images)))]
        return MovingTexture(image, self.n_frames, self.shape, rng, self.max_speed)


# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSampling:
    """How :class:`WindowSampler` computes the ``edvr-stf-flow`` inputs of an item.

    Attributes
    ----------
    context : int
        HR size of the square box the flow is computed on, centred on the crop where the
        frame allows (a multiple of 4, >= the crop): the flow needs field of view to follow
        motion; at inference it sees the whole frame.
    preset : str
        DIS preset of the fuser (the ``flow`` method's default: ``"fast"``).
    """

    context: int = 128
    preset: str = "fast"

    def __post_init__(self) -> None:
        if self.context % SCALE or self.context < 4 * SCALE:
            raise ValueError(f"flow context must be a multiple of {SCALE} and >= 16, got "
                             f"{self.context}")  # fmt: skip


@dataclass
class Sample:
    """One training item (numpy, float32 in [0, 1]).

    Attributes
    ----------
    lr : shape (3, 1, h, w)
        Noisy LR frames at ``window.lr_indices``.
    hr : shape (2, 1, 4h, 4w)
        HR keys at ``window.key_before`` and ``window.key_after``.
    target : shape (1, 4h, 4w)
        HR frame at ``window.target``.
    window : Window
    b0 : float
        Blank-scan factor of the LR noise.
    hr_flow : shape (2, 3, 4h, 4w), optional
        With :class:`FlowSampling`: the ``edvr-stf-flow`` key inputs (per key: the key warped
        to t, its confidence, the flow frame), :func:`napari_xfusion.nn.edvr_flow.flow_key_inputs`
        on the noisy LR frames.
    """

    lr: np.ndarray
    hr: np.ndarray
    target: np.ndarray
    window: Window
    b0: float
    hr_flow: np.ndarray | None = None


class WindowSampler:
    """Draws a :class:`Sample` from a frame source (the recipe in the module docstring).

    Parameters
    ----------
    crop : int
        HR crop size (square, a multiple of 4); the LR crop is ``crop // 4``.
    separations : sequence of int
        LR separations s drawn uniformly.
    key_offsets : (int, int)
        Inclusive range of the key offsets a, b (in units of s).
    log10_b0 : (float, float) or None
        Range of log10 of the LR blank-scan factor; None: noise-free LR.
    augment : bool
        Random flips and 90-degree rotations.
    focus : int
        Candidate crop positions per item; the one whose target frame has the largest
        standard deviation is kept (1: uniform crops). Simulated frames are mostly flat gas and
        plate; a short run learns more from the edges.
    """

    def __init__(
        self,
        crop: int = 64,
        separations: Sequence[int] = (1, 2, 3),
        key_offsets: tuple[int, int] = (1, 20),
        log10_b0: tuple[float, float] | None = (1.0, 7.0),
        augment: bool = True,
        focus: int = 1,
        flow: FlowSampling | None = None,
    ) -> None:
        if crop % SCALE or crop < SCALE:
            raise ValueError(f"HR crop must be a positive multiple of {SCALE}, got {crop}")
        if key_offsets[0] < 1 or key_offsets[1] < key_offsets[0]:
            raise ValueError(f"key offsets must be a range [a, b] with 1 <= a <= b: {key_offsets}")
        self.crop = int(crop)
        self.separations = tuple(int(s) for s in separations)
        self.key_offsets = (int(key_offsets[0]), int(key_offsets[1]))
        self.log10_b0 = log10_b0
        self.augment = augment
        self.focus = max(int(focus), 1)
        if flow is not None and flow.context < self.crop:
            raise ValueError(f"flow context {flow.context} is smaller than the crop {self.crop}")
        self.flow = flow
        self._fuser = None
        if flow is not None:
            from napari_xfusion.nn.edvr_flow import RecordingFlowFuser

            self._fuser = RecordingFlowFuser(preset=flow.preset)

    def draw_window(self, n_frames: int, rng: np.random.Generator) -> Window:
        """Draw ``(s, a, b, t)`` fitting a sequence of ``n_frames`` and return its window.

        With enough frames (``1 + 2 * max(s) * max(a)``) s, a and b are independent uniforms.
        Shorter sequences cap a and b to what fits, with a and b in random order so neither
        side is favoured.
        """
        fitting = [s for s in self.separations if 2 * s * self.key_offsets[0] <= n_frames - 1]
        if not fitting:
            raise ValueError(
                f"a sequence of {n_frames} frames holds no window with separation in "
                f"{self.separations} and key offsets >= {self.key_offsets[0]}"
            )
        s = fitting[int(rng.integers(len(fitting)))]
        span = (n_frames - 1) // s  # a + b may not exceed this
        lo, hi = self.key_offsets
        a = int(rng.integers(lo, min(hi, span - lo) + 1))
        b = int(rng.integers(lo, min(hi, span - a) + 1))
        if rng.random() < 0.5:
            a, b = b, a
        t = int(rng.integers(s * a, n_frames - s * b))
        return window(t, n_frames, s, [t - s * a, t + s * b])

    def draw(self, source: FrameSource, rng: np.random.Generator) -> Sample:
        """Draw one training item from ``source``."""
        height, width = source.shape
        if height < self.crop or width < self.crop:
            raise ValueError(
                f"frames of {height}x{width} px are smaller than the HR crop {self.crop}"
            )
        win = self.draw_window(source.n_frames, rng)
        # Crop on the LR grid so the LR crop is exactly the binned HR crop of the full frame.
        boxes = [
            (
                SCALE * int(rng.integers((height - self.crop) // SCALE + 1)),
                SCALE * int(rng.integers((width - self.crop) // SCALE + 1)),
                self.crop,
                self.crop,
            )
            for _ in range(self.focus)
        ]
        if len(boxes) > 1:
            boxes.sort(key=lambda box: -float(source.read([win.target], box).std()))
        if self.flow is not None:
            return self._draw_flow(source, win, boxes[0], rng)
        times = [*win.lr_indices, win.key_before, win.key_after]
        frames = source.read(times, boxes[0])  # (5, P, P)
        if self.augment:
            if rng.random() < 0.5:
                frames = frames[:, :, ::-1]
            if rng.random() < 0.5:
                frames = frames[:, ::-1, :]
            frames = np.rot90(frames, int(rng.integers(4)), axes=(1, 2))
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        lr = bin_frames(frames[:3], SCALE)
        b0 = math.inf
        if self.log10_b0 is not None:
            b0 = 10.0 ** rng.uniform(*self.log10_b0)
            lr = add_shot_noise(lr, b0, rng)
        return Sample(
            lr=lr[:, None],
            hr=frames[3:, None].copy(),
            target=frames[1:2].copy(),
            window=win,
            b0=b0,
        )

    def _augment(self, arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """The same random flips and 90-degree rotation of the last two axes of every array."""
        return flip_rotate(arrays, rng) if self.augment else arrays

    def _draw_flow(
        self, source: FrameSource, win: Window, box: Box, rng: np.random.Generator
    ) -> Sample:
        """An item with the ``edvr-stf-flow`` inputs (see the module docstring)."""
        from napari_xfusion.nn.edvr_flow import flow_key_inputs

        assert self.flow is not None and self._fuser is not None
        height, width = source.shape
        y0, x0 = box[:2]
        c = self.flow.context
        ch, cw = min(c, height - height % SCALE), min(c, width - width % SCALE)

        # The context box: centred on the crop, shifted to stay inside the frame, LR grid.
        def place(start: int, size: int, full: int) -> int:
            half = (size - self.crop) // 2 // SCALE * SCALE
            return min(max(start - half, 0), (full - size) // SCALE * SCALE)

        cy, cx = place(y0, ch, height), place(x0, cw, width)
        first, last = win.key_before, win.key_after
        frames = source.read(range(first, last + 1), (cy, cx, ch, cw))  # (n, ch, cw)
        lr_all = bin_frames(frames, SCALE)
        b0 = math.inf
        if self.log10_b0 is not None:
            b0 = 10.0 ** rng.uniform(*self.log10_b0)
            lr_all = add_shot_noise(lr_all, b0, rng)
        lr_all = lr_all.astype(np.float32, copy=False)
        # A new sequence every item: the fuser's caches are keyed by frame index only.
        self._fuser.reset()
        t, kb, ka = win.target - first, 0, last - first
        inputs = flow_key_inputs(
            self._fuser, t, (kb, ka), lr_all[t], frames[[kb, ka]], lr_all[[kb, ka]],
            read_lr=lambda i: lr_all[i],
        )  # fmt: skip
        packed = inputs.packed()  # (2, 3, ch, cw)
        # Back to the crop, in context coordinates (the crop lies inside the context).
        oy, ox = y0 - cy, x0 - cx
        hr_sl = (slice(oy, oy + self.crop), slice(ox, ox + self.crop))
        lr_sl = tuple(slice(s.start // SCALE, s.stop // SCALE) for s in hr_sl)
        lr = lr_all[[i - first for i in win.lr_indices]][(slice(None), *lr_sl)]
        keys = frames[[kb, ka]][(slice(None), *hr_sl)]
        target = frames[t][hr_sl][None]
        hr_flow = packed[(slice(None), slice(None), *hr_sl)]
        lr, keys, target, hr_flow = self._augment([lr, keys, target, hr_flow], rng)
        return Sample(
            lr=lr[:, None], hr=keys[:, None], target=target, window=win, b0=b0, hr_flow=hr_flow
        )


def flip_rotate(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flips and 90-degree rotation of the last two axes of every array.

    Returns C-contiguous float32 copies (views of flipped arrays cannot become tensors).
    Used by :class:`WindowSampler` and by fine-tuning on a user's own key pairs
    (:mod:`napari_xfusion.app.finetune`).
    """
    flip_x, flip_y, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
    out = []
    for a in arrays:
        if flip_x:
            a = a[..., :, ::-1]
        if flip_y:
            a = a[..., ::-1, :]
        out.append(np.ascontiguousarray(np.rot90(a, turns, axes=(-2, -1)), dtype=np.float32))
    return out


def _stream_rng(seed: int, rank: int, worker: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, rank, worker, stream]))


class TrainingWindows(IterableDataset):
    """Endless stream of training items from a weighted mixture of source pools.

    Items are dicts of tensors ``lr (3, 1, h, w)``, ``hr (2, 1, 4h, 4w)``, ``target (1, 4h,
    4w)`` for a :class:`torch.utils.data.DataLoader` (which stacks them into batches). Each
    (rank, loader worker) pair draws from its own generator seeded with ``(seed, rank, worker)``.

    Parameters
    ----------
    pools : sequence of SourcePool
    weights : sequence of float
        Relative frequencies of the pools.
    sampler : WindowSampler
    seed : int
    rank : int
        Distributed rank (different ranks must see different data).
    stream : int
        A further seed component (the training loop passes the start step, so a resumed run
        draws new items instead of repeating the first ones).
    """

    def __init__(
        self,
        pools: Sequence[SourcePool],
        weights: Sequence[float],
        sampler: WindowSampler,
        seed: int = 0,
        rank: int = 0,
        stream: int = 0,
    ) -> None:
        if len(pools) != len(weights) or not pools:
            raise ValueError("give one weight per source pool, and at least one pool")
        p = np.asarray(weights, dtype=np.float64)
        if np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"pool weights must be >= 0 with a positive sum, got {weights}")
        self.pools = list(pools)
        self.p = p / p.sum()
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.stream = stream

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        rng = _stream_rng(self.seed, self.rank, info.id if info is not None else 0, self.stream)
        while True:
            pool = self.pools[int(rng.choice(len(self.pools), p=self.p))]
            item = self.sampler.draw(pool.draw(rng), rng)
            out = {
                "lr": torch.from_numpy(item.lr),
                "hr": torch.from_numpy(item.hr),
                "target": torch.from_numpy(item.target),
            }
            if item.hr_flow is not None:
                out["hr_flow"] = torch.from_numpy(item.hr_flow)
            yield out
