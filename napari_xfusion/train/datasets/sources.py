"""Frame sources of the training data: arrays in memory and natural textures in motion.

See :mod:`napari_xfusion.train.datasets` for how items are built from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

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
