"""The exact 4x grid of the LR view, the common area of the two cameras, and resampling.

Pixel-centre convention: LR pixel ``(i, j)`` is the square ``[j - 0.5, j + 0.5] x [i - 0.5,
i + 0.5]`` in LR coordinates. A grid of ``factor`` samples per LR pixel over the LR crop whose
first pixel is ``(y0, x0)`` has its sample ``(r, u)`` at

    x = x0 + (u + 0.5) / factor - 0.5,    y = y0 + (r + 0.5) / factor - 0.5,

so each ``factor x factor`` block of the grid lies inside one LR pixel, and block-averaging the
grid (``core.degrade.bin_frames``) gives values on the LR crop's own pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.core.registration.transform import CameraTransform, RegistrationError

__all__ = [
    "ResampledKeys",
    "grid_to_lr_matrix",
    "common_lr_crop",
    "coverage_mask",
    "resample_keys",
    "warp_hr_view",
    "antialias_sigma",
]


def grid_to_lr_matrix(factor: int = SCALE, origin_yx: tuple[int, int] = (0, 0)) -> np.ndarray:
    """3x3 map of grid pixel coordinates (x, y) to LR pixel coordinates (module docstring)."""
    f = float(factor)
    y0, x0 = origin_yx
    return np.array(
        [[1 / f, 0.0, x0 + 0.5 / f - 0.5], [0.0, 1 / f, y0 + 0.5 / f - 0.5], [0.0, 0.0, 1.0]]
    )


def antialias_sigma(step_px: float) -> float:
    """Gaussian sigma (source pixels) before sampling every ``step_px`` source pixels.

    A destination pixel integrates the scene over ``step_px`` source pixels; each source pixel
    already integrated over one: the Gaussian supplies the missing variance of that box,
    ``(step^2 - 1) / 12`` (0 when the destination is finer, i.e. we interpolate).
    """
    return math.sqrt(max(step_px * step_px - 1.0, 0.0) / 12.0)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.05:
        return image
    return cv2.GaussianBlur(
        image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
    )


def _max_step(linear: np.ndarray) -> float:
    """Largest singular value: the longest source step per destination pixel."""
    return float(np.linalg.svd(linear, compute_uv=False)[0])


def _remap(image: np.ndarray, dst_to_src: np.ndarray, shape: tuple[int, int],
           border: int = cv2.BORDER_REPLICATE, value: float = 0.0,
           interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:  # fmt: skip
    """Sample ``image`` at ``dst_to_src @ (x, y, 1)`` for every pixel of a ``shape`` output."""
    return cv2.warpAffine(
        np.ascontiguousarray(image, dtype=np.float32),
        np.ascontiguousarray(dst_to_src[:2], dtype=np.float64),
        (int(shape[1]), int(shape[0])),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=value,
    )


def coverage_mask(
    transform: CameraTransform, hr_shape: tuple[int, int], lr_shape: tuple[int, int]
) -> np.ndarray:
    """LR pixels whose whole square the HR camera sees.

    An LR pixel counts when its four corners map (by the inverse transform) inside the hull of
    the HR pixel centres, ``[0, W - 1] x [0, H - 1]``: interpolation there never extrapolates.

    Returns
    -------
    numpy.ndarray, bool, shape lr_shape
    """
    h, w = lr_shape
    inv = transform.inverse().matrix
    hh, ww = hr_shape
    ok = np.ones((h, w), dtype=bool)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    eps = 1e-9
    for dy in (-0.5, 0.5):
        for dx in (-0.5, 0.5):
            qx = inv[0, 0] * (xs + dx) + inv[0, 1] * (ys + dy) + inv[0, 2]
            qy = inv[1, 0] * (xs + dx) + inv[1, 1] * (ys + dy) + inv[1, 2]
            ok &= (qx >= -eps) & (qx <= ww - 1 + eps) & (qy >= -eps) & (qy <= hh - 1 + eps)
    return ok


def _largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Largest axis-aligned all-True rectangle (y0, y1, x0, x1), end-exclusive (histogram stack)."""
    h, w = mask.shape
    heights = np.zeros(w + 1, dtype=np.int64)  # sentinel column of height 0
    best, best_area = None, 0
    for row in range(h):
        heights[:w] = np.where(mask[row], heights[:w] + 1, 0)
        stack: list[int] = []
        for col in range(w + 1):
            start = col
            while stack and heights[stack[-1]] >= heights[col]:
                top = stack.pop()
                height = int(heights[top])
                left = stack[-1] + 1 if stack else 0
                area = height * (col - left)
                if area > best_area:
                    best_area, best = area, (row - height + 1, row + 1, left, col)
                start = top
            del start
            stack.append(col)
    return best


def common_lr_crop(
    transform: CameraTransform, hr_shape: tuple[int, int], lr_shape: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The largest axis-aligned rectangle of whole LR pixels that the HR camera fully sees.

    Returns
    -------
    (y0, y1, x0, x1) : ints, end-exclusive LR pixel indices (``lr[:, y0:y1, x0:x1]``).

    Raises
    ------
    RegistrationError
        When the HR view covers no whole LR pixel.
    """
    rect = _largest_rectangle(coverage_mask(transform, hr_shape, lr_shape))
    if rect is None:
        raise RegistrationError(
            f"the HR camera's view ({hr_shape[0]}x{hr_shape[1]} px) covers no whole pixel of the "
            f"LR image ({lr_shape[0]}x{lr_shape[1]} px) under {transform!r}"
        )
    return tuple(int(v) for v in rect)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class ResampledKeys:
    """HR keys on the exact ``factor`` x grid of an LR crop.

    Attributes
    ----------
    hr_on_grid : numpy.ndarray, float32, shape (K, factor * h', factor * w')
        The keys resampled (anti-aliased when the HR camera is finer than the grid).
    lr_crop : (y0, y1, x0, x1)
        The LR crop (end-exclusive LR pixel indices) the grid covers; ``h' = y1 - y0``.
    valid_fraction : float
        Fraction of grid samples inside the HR view (1.0 for the default crop; samples outside
        repeat the HR image's edge).
    """

    hr_on_grid: np.ndarray
    lr_crop: tuple[int, int, int, int]
    valid_fraction: float


def _check_crop(crop: object, lr_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    try:
        y0, y1, x0, x1 = (int(v) for v in crop)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"overlap must be (y0, y1, x0, x1) integers, got {crop!r}") from None
    if not (0 <= y0 < y1 <= lr_shape[0] and 0 <= x0 < x1 <= lr_shape[1]):
        raise ValueError(
            f"overlap {crop!r} is not a non-empty crop (y0, y1, x0, x1) of the LR image of "
            f"{lr_shape[0]}x{lr_shape[1]} px"
        )
    return y0, y1, x0, x1


def _check_stack(frames: np.ndarray, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or min(frames.shape) < 1:
        raise ValueError(
            f"{name}: expected frames of shape (K, H, W) or (H, W), got {frames.shape}"
        )
    if not np.issubdtype(frames.dtype, np.number) or np.iscomplexobj(frames):
        raise ValueError(f"{name}: expected real numbers, got dtype {frames.dtype}")
    return frames


def resample_keys(
    hr: np.ndarray,
    transform: CameraTransform,
    lr_shape: tuple[int, int],
    *,
    factor: int = SCALE,
    overlap: tuple[int, int, int, int] | None = None,
) -> ResampledKeys:
    """Resample HR keys onto the exact ``factor`` x grid of the LR crop both cameras see.

    Parameters
    ----------
    hr : numpy.ndarray, shape (K, H, W) or (H, W)
        HR camera frames (any real dtype; float32 out, values unchanged in scale).
    transform : CameraTransform
        HR pixel -> LR pixel map.
    lr_shape : (int, int)
        LR image size (h, w).
    factor : int
        Grid samples per LR pixel along each axis (4: the fusion's scale).
    overlap : (y0, y1, x0, x1), optional
        LR crop to cover; default :func:`common_lr_crop` (whole LR pixels the HR view covers).

    Returns
    -------
    ResampledKeys
        ``hr_on_grid`` of shape (K, factor * (y1 - y0), factor * (x1 - x0)).

    Notes
    -----
    Each grid sample is the HR image (bicubic) at the sample's HR position. When a grid step is
    longer than an HR pixel (pixel ratio > ``factor``) the HR image is low-passed first with the
    Gaussian of :func:`antialias_sigma`, so the grid does not alias; at the paper's 2.9x ratio the
    grid is finer than the HR pixels and is simply interpolated.
    """
    hr = _check_stack(hr, "HR keys")
    hr_shape = hr.shape[1:]
    if overlap is None:
        crop = common_lr_crop(transform, hr_shape, lr_shape)
    else:
        crop = _check_crop(overlap, lr_shape)
    y0, y1, x0, x1 = crop
    out_shape = (factor * (y1 - y0), factor * (x1 - x0))
    grid_to_hr = transform.inverse().matrix @ grid_to_lr_matrix(factor, (y0, x0))
    sigma = antialias_sigma(_max_step(grid_to_hr[:2, :2]))
    out = np.empty((hr.shape[0], *out_shape), dtype=np.float32)
    for k, frame in enumerate(hr):
        out[k] = _remap(_blur(np.asarray(frame, dtype=np.float32), sigma), grid_to_hr, out_shape)
    ones = np.ones(hr_shape, dtype=np.float32)
    inside = _remap(ones, grid_to_hr, out_shape, cv2.BORDER_CONSTANT, 0.0, cv2.INTER_LINEAR)
    valid = float(np.mean(inside > 0.999))
    return ResampledKeys(out, crop, valid)


def warp_hr_view(
    scene: np.ndarray,
    transform: CameraTransform,
    hr_shape: tuple[int, int],
    *,
    factor: int = SCALE,
    fill: float | None = None,
) -> np.ndarray:
    """Render what an HR camera with ``transform`` sees of a scene given on the LR's 4x grid.

    Parameters
    ----------
    scene : numpy.ndarray, shape (H4, W4) or (T, H4, W4)
        The scene on the ``factor`` x grid of the whole LR field (LR = ``bin_frames(scene)``).
    transform : CameraTransform
        HR pixel -> LR pixel map of the simulated HR camera.
    hr_shape : (int, int)
        HR image size (H, W).
    factor : int
        Grid samples per LR pixel (4).
    fill : float, optional
        Value where the HR camera looks beyond the scene; default: the scene mirrored at its
        edges (plausible content, which the LR camera does not see).

    Returns
    -------
    numpy.ndarray, float32, shape hr_shape (or (T, *hr_shape))
        Each HR pixel integrates the scene over its footprint (Gaussian of
        :func:`antialias_sigma` when an HR pixel spans more than a grid sample), then bicubic.
    """
    frames = np.asarray(scene)
    single = frames.ndim == 2
    frames = _check_stack(frames, "scene")
    hr_shape = _check_shape(hr_shape)
    hr_to_grid = np.linalg.inv(grid_to_lr_matrix(factor)) @ transform.matrix
    sigma = antialias_sigma(_max_step(hr_to_grid[:2, :2]))
    border = cv2.BORDER_REFLECT if fill is None else cv2.BORDER_CONSTANT
    out = np.empty((frames.shape[0], *hr_shape), dtype=np.float32)
    for t, frame in enumerate(frames):
        out[t] = _remap(_blur(np.asarray(frame, dtype=np.float32), sigma), hr_to_grid, hr_shape,
                        border, 0.0 if fill is None else float(fill))  # fmt: skip
    return out[0] if single else out


def _check_shape(shape: object) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in shape)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"expected an image size (H, W), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"expected an image size (H, W) >= 1, got {shape!r}")
    return h, w
