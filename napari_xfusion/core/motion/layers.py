"""Moving foreground layers (occlusion) and brightness changes over a rendered sequence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_xfusion.core.motion.camera import _coords, _sample
from napari_xfusion.core.motion.stills import load_still


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
