"""Pools of frame sources: simulated x-ray sequences, real-motion stills, user stacks, textures.

Each pool hands out one :class:`~napari_xfusion.train.datasets.sources.FrameSource` per
training item; see :mod:`napari_xfusion.train.datasets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

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
from napari_xfusion.train.datasets.sources import (
    TRAINING_SEED_MIN,
    ArraySource,
    FrameSource,
    MovingTexture,
    bundled_textures,
)

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
