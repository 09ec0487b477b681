"""Optical-flow primitives of the ``flow`` method: DIS estimation, warping, composition and
forward-backward consistency.

The model is in :mod:`napari_xfusion.core.flow`.
"""

from __future__ import annotations

import cv2
import numpy as np

PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
"""OpenCV DIS presets by name."""

_FB_RELATIVE = 0.01  # Sundaram et al.'s relative forward-backward tolerance (of |F|^2)


def make_dis(preset: str = "fast") -> cv2.DISOpticalFlow:
    """An OpenCV DIS optical-flow estimator with a named preset (see :data:`PRESETS`)."""
    try:
        return cv2.DISOpticalFlow_create(PRESETS[preset])
    except KeyError:
        raise ValueError(
            f"unknown DIS preset {preset!r}; choose from {', '.join(PRESETS)}"
        ) from None


def flow_image(frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A float frame as the 8-bit image DIS needs, ``[lo, hi]`` stretched to ``[0, 255]``.

    The same ``lo``/``hi`` for every frame of a key pair keeps brightness constancy; the stretch
    keeps low-contrast x-ray frames from collapsing to a few grey levels.
    """
    scale = 255.0 / max(hi - lo, 1e-6)
    out = (np.asarray(frame, dtype=np.float32) - lo) * scale
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def dis_flow(dis: cv2.DISOpticalFlow, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow ``F_a->b`` (H, W, 2) float32 in pixels (x, y) with ``a(x) ~ b(x + F(x))``."""
    return dis.calc(a, b, None)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return _grid_cached(int(shape[0]), int(shape[1]))


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid_cached(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    grid = _GRIDS.get((h, w))
    if grid is None:
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        if len(_GRIDS) > 8:
            _GRIDS.clear()
        grid = _GRIDS[(h, w)] = (gx, gy)
    return grid


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: ``out(x) = image(x + flow(x))``, bilinear, edges replicated.

    Parameters
    ----------
    image : numpy.ndarray, float32, shape (H, W) or (H, W, C)
    flow : numpy.ndarray, float32, shape (H, W, 2)
        Displacements (x, y) in pixels of ``image``'s grid.
    """
    gx, gy = _grid(flow.shape[:2])
    return cv2.remap(
        image,
        gx + flow[..., 0],
        gy + flow[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def compose(f_ab: np.ndarray, f_bc: np.ndarray) -> np.ndarray:
    """``F_a->c(x) = F_a->b(x) + F_b->c(x + F_a->b(x))`` (flows (H, W, 2) on one grid)."""
    return f_ab + warp(f_bc, f_ab)


def fb_error(f_ab: np.ndarray, f_ba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward inconsistency ``|F_a->b(x) + F_b->a(x + F_a->b(x))|`` (pixels).

    Returns
    -------
    error : numpy.ndarray, float32, shape (H, W)
    tolerance2 : numpy.ndarray, float32, shape (H, W)
        The relative part of the tolerance, ``0.01 (|F_a->b|^2 + |F_b->a(x + F)|^2)``.
    """
    back = warp(f_ba, f_ab)
    err = np.hypot(*np.moveaxis(f_ab + back, -1, 0))
    rel = _FB_RELATIVE * ((f_ab**2).sum(-1) + (back**2).sum(-1))
    return err.astype(np.float32), rel.astype(np.float32)


def resize_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A flow field resampled to ``shape`` (H, W), values rescaled to the new pixel size.

    Down-sampling averages (area), up-sampling is bilinear; both pixel-centre aligned.
    """
    h, w = flow.shape[:2]
    if (h, w) == tuple(shape):
        return flow
    interp = cv2.INTER_AREA if shape[0] < h else cv2.INTER_LINEAR
    out = cv2.resize(flow, (int(shape[1]), int(shape[0])), interpolation=interp)
    out[..., 0] *= shape[1] / w
    out[..., 1] *= shape[0] / h
    return out


def _in_frame(flow: np.ndarray) -> np.ndarray:
    """Whether ``x + flow(x)`` lands inside the frame (bool (H, W))."""
    h, w = flow.shape[:2]
    gx, gy = _grid((h, w))
    x = gx + flow[..., 0]
    y = gy + flow[..., 1]
    return (x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)
