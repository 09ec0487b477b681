"""Residual misregistration after resampling, the refusal to fuse, and the overlay check."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames
from napari_xfusion.core.registration.transform import RegistrationError

if TYPE_CHECKING:
    from napari_xfusion.core.registration.result import Registration

__all__ = ["measure_residual", "check_residual", "overlay"]

# A tile's shift counts only when its predicted standard error (noise / gradient energy) is
# below this (LR px): flat tiles and tiles that do not match at all say nothing about geometry.
_MAX_SHIFT_STD_LR_PX = 0.2
_LK_ITERATIONS = 8
_MAX_SHIFT_LR_PX = 4.0


def _gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kernel = np.array([[-0.5, 0.0, 0.5]], dtype=np.float32)
    gx = cv2.filter2D(image, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(image, cv2.CV_32F, kernel.T, borderType=cv2.BORDER_REPLICATE)
    return gx, gy


def _tile_shift(
    ref: np.ndarray, grads: tuple[np.ndarray, np.ndarray], target: np.ndarray,
    box: tuple[int, int, int, int],
) -> tuple[float, float, float]:  # fmt: skip
    """Shift ``d`` (LR px, (dx, dy)) with ``target(x) ~ a * ref(x + d) + b`` on a tile.

    Returns ``(dx, dy, predicted_std)``; ``predicted_std`` is inf for a flat tile.
    """
    y0, y1, x0, x1 = box
    t = target[y0:y1, x0:x1].astype(np.float64).ravel()
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.zeros(2)
    std = np.inf
    for _ in range(_LK_ITERATIONS):
        mx, my = xs + np.float32(d[0]), ys + np.float32(d[1])
        r = cv2.remap(ref, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE).ravel()
        gx, gy = grads
        gxs = cv2.remap(gx, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel()
        gys = cv2.remap(gy, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel()
        design = np.column_stack([r, np.ones_like(r)])
        (a, b), *_ = np.linalg.lstsq(design, t, rcond=None)
        res = a * r + b - t
        jac = a * np.column_stack([gxs, gys])
        h = jac.T @ jac
        evals = np.linalg.eigvalsh(h)
        if not evals[0] > 1e-12:
            return float(d[0]), float(d[1]), np.inf
        step = -np.linalg.solve(h, jac.T @ res)
        d += step
        if np.abs(d).max() > _MAX_SHIFT_LR_PX:
            d = np.clip(d, -_MAX_SHIFT_LR_PX, _MAX_SHIFT_LR_PX)
            break
        sigma = float(np.sqrt(np.mean(res * res)))
        std = sigma / float(np.sqrt(evals[0]))
        if np.abs(step).max() < 1e-3:
            break
    return float(d[0]), float(d[1]), std


def _tiles(shape: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    h, w = shape
    ny, nx = max(1, h // tile), max(1, w // tile)
    ty, tx = h // ny, w // nx
    return [(i * ty, (i + 1) * ty, j * tx, (j + 1) * tx) for i in range(ny) for j in range(nx)]


def measure_residual(
    hr_on_grid: np.ndarray, lr_crop_frames: np.ndarray, *, factor: int = SCALE, tile: int = 16
) -> tuple[float, np.ndarray]:
    """Residual misregistration of resampled HR keys against their LR frames, in LR pixels.

    Each key is binned ``factor x factor`` onto the LR crop and, tile by tile (``tile`` LR px),
    the local shift that best aligns it with the LR frame (Lucas-Kanade with a gain and offset)
    is measured; only tiles with enough structure for the noise (predicted error below 0.2 LR
    px) count. A perfect registration measures the noise floor (a few hundredths of a pixel on
    the simulated sample at 20 dB); a global error, a lens distortion or a wrong time shows as
    the typical local shift.

    Parameters
    ----------
    hr_on_grid : numpy.ndarray, shape (K, factor * h', factor * w') or (factor * h', factor * w')
        HR keys on the LR crop's grid (:func:`resample_keys`).
    lr_crop_frames : numpy.ndarray, shape (K, h', w') or (h', w')
        The LR frames at the keys' times, cropped to the same crop.

    Returns
    -------
    median_lr_px : float
        Median shift length over the measurable tiles of all keys (inf when no tile of any key
        is measurable: the images do not match, or hold no structure).
    per_key : numpy.ndarray, float64, shape (K,)
        The same per key (inf for a key without a measurable tile).
    """
    hr_on_grid = np.asarray(hr_on_grid, dtype=np.float32)
    lr = np.asarray(lr_crop_frames, dtype=np.float32)
    if hr_on_grid.ndim == 2:
        hr_on_grid = hr_on_grid[None]
    if lr.ndim == 2:
        lr = lr[None]
    if hr_on_grid.ndim != 3 or lr.ndim != 3 or hr_on_grid.shape[0] != lr.shape[0]:
        raise ValueError(
            f"expected keys (K, {factor}h, {factor}w) and LR frames (K, h, w), got shapes "
            f"{hr_on_grid.shape} and {lr.shape}"
        )
    expected = (lr.shape[1] * factor, lr.shape[2] * factor)
    if hr_on_grid.shape[1:] != expected:
        raise ValueError(
            f"keys of shape {hr_on_grid.shape[1:]} are not on the {factor}x grid of LR frames of "
            f"shape {lr.shape[1:]} (expected {expected})"
        )
    binned = bin_frames(hr_on_grid, factor)
    tiles = _tiles(lr.shape[1:], max(4, int(tile)))
    per_key = np.full(lr.shape[0], np.inf)
    every: list[float] = []
    for k in range(lr.shape[0]):
        lengths = []
        grads = _gradients(binned[k])
        for box in tiles:
            dx, dy, std = _tile_shift(binned[k], grads, lr[k], box)
            if std < _MAX_SHIFT_STD_LR_PX:
                lengths.append(float(np.hypot(dx, dy)))
        if lengths:
            per_key[k] = float(np.median(lengths))
            every.extend(lengths)
    median = float(np.median(every)) if every else float("inf")
    return median, per_key


def check_residual(
    registration: Registration, max_lr_px: float = 0.5, *, min_score: float = 0.3
) -> Registration:
    """Refuse a registration too poor to fuse; return it unchanged otherwise.

    Raises
    ------
    RegistrationError
        "too poor to fuse" with the residual (LR px, overall and per key), the limit, the
        correlation score and its limit, when the residual exceeds ``max_lr_px`` or the
        correlation of the aligned images is below ``min_score``.
    """
    residual = float(registration.residual_lr_px)
    score = float(registration.score)
    problems = []
    if residual == float("inf"):
        problems.append("residual misregistration not measurable (no part of the keys matches "
                        "its LR frame)")  # fmt: skip
    elif not residual <= max_lr_px:
        problems.append(f"residual misregistration {residual:.3g} LR px > {max_lr_px:g} allowed")
    if not score >= min_score:
        problems.append(f"correlation of the aligned images {score:.3f} < {min_score:g}")
    if problems:
        per_key = ", ".join(f"{v:.3g}" for v in np.asarray(registration.per_key_residual_lr_px))
        raise RegistrationError(
            "camera registration too poor to fuse: " + "; ".join(problems)
            + f" (per key: {per_key} LR px; {registration.transform!r}). Check that the HR and "
            "LR frames show the same scene at the same times, give a scale hint or a "
            "calibration target, or raise the limit"
        )  # fmt: skip
    return registration


def _normalised(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1.0, 99.0])
    return np.clip((image - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0).astype(np.float32)


def overlay(
    hr_on_grid_frame: np.ndarray,
    lr_frame_upsampled: np.ndarray,
    mode: str = "checkerboard",
    tile: int = 32,
) -> np.ndarray:
    """A visual check of the registration: HR key and up-sampled LR frame interleaved.

    Both images are first stretched to [0, 1] by their own 1st-99th percentiles, so the check
    shows geometry, not the cameras' different gains.

    Parameters
    ----------
    hr_on_grid_frame, lr_frame_upsampled : numpy.ndarray, shape (H, W)
        One resampled key and its LR frame up-sampled to the same grid.
    mode : {"checkerboard", "blend"}
        Alternate ``tile x tile`` squares of the two (edges break where misaligned), or their
        mean (misalignment doubles edges).
    tile : int
        Checkerboard square size in pixels.

    Returns
    -------
    numpy.ndarray, float32, shape (H, W), in [0, 1]
    """
    a, b = np.asarray(hr_on_grid_frame), np.asarray(lr_frame_upsampled)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"overlay needs two images of the same shape (H, W), got {a.shape} and {b.shape}"
        )
    a, b = _normalised(a), _normalised(b)
    if mode == "blend":
        return 0.5 * (a + b)
    if mode != "checkerboard":
        raise ValueError(f"overlay mode must be 'checkerboard' or 'blend', got {mode!r}")
    if int(tile) < 1:
        raise ValueError(f"tile must be >= 1 pixel, got {tile!r}")
    ys, xs = np.indices(a.shape)
    chooser = ((ys // int(tile)) + (xs // int(tile))) % 2 == 0
    return np.where(chooser, a, b).astype(np.float32)
