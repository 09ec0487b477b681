"""Refinement by direct intensity alignment: Gauss-Newton on the sum over keys.

Step 2 of :mod:`napari_xfusion.core.registration.estimate` (see there for the method).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.core.registration.grid import _blur, antialias_sigma, grid_to_lr_matrix
from napari_xfusion.core.registration.levels import _bin_level, _level_matrix
from napari_xfusion.core.registration.transform import RegistrationError

_GN_ITERATIONS = 25
_GN_TOLERANCE_PX = 1e-3  # stop when the update moves no corner by more (level pixels)


# -- refinement: Gauss-Newton on the sum over keys ------------------------------------------------
def _gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kernel = np.array([[-0.5, 0.0, 0.5]], dtype=np.float32)
    gx = cv2.filter2D(image, cv2.CV_32F, kernel, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(image, cv2.CV_32F, kernel.T, borderType=cv2.BORDER_REPLICATE)
    return gx, gy


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _photometric(model: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual and slope of the least-squares gain and offset from HR to LR intensities.

    Linear on purpose: a free (binned) intensity curve was tried and absorbs part of a
    misplaced edge on a two-level image (a calibration grid: 0.08 against 0.01 LR px).
    """
    design = np.column_stack([model, np.ones_like(model)])
    (gain, offset), *_ = np.linalg.lstsq(design, target, rcond=None)
    return gain * model + offset - target, np.full(model.shape, gain)


def _binned(image: np.ndarray, f: int, valid: np.ndarray) -> np.ndarray:
    """Means of the ``f x f`` blocks of ``image`` at the ``valid`` level pixels, float64."""
    if f == 1:
        return image[valid].astype(np.float64)
    h, w = valid.shape
    # INTER_AREA at an integer factor is the exact block mean, and much faster than numpy's.
    means = cv2.resize(
        np.ascontiguousarray(image, dtype=np.float32), (w, h), interpolation=cv2.INTER_AREA
    )
    return means[valid].astype(np.float64)


def _warp(image: np.ndarray, to_src: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    """``image`` sampled at ``to_src @ (x, y, 1)`` for every pixel of a ``size`` (w, h) grid."""
    return cv2.warpAffine(image, to_src, size, flags=interp | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def _refine(
    hr: np.ndarray,
    lr: np.ndarray,
    matrix: np.ndarray,
    flips: tuple[bool, bool],
    model: str,
    levels: list[int],
) -> tuple[np.ndarray, np.ndarray, int]:
    """Refined HR -> LR matrix, the per-key correlation at full resolution, the overlap (px).

    On binned levels an LR pixel is modelled as the HR image blurred to its footprint and
    sampled at its centre; on the full-resolution level exactly as the fusion will see it: the
    mean of the 4 x 4 samples of the LR pixel's grid (what ``resample_keys`` then
    ``bin_frames`` give), which removes the few-hundredths-of-a-pixel bias of the blur model.
    """
    hh, ww = hr.shape[1:]
    fsign = np.array([-1.0 if flips[0] else 1.0, -1.0 if flips[1] else 1.0])
    t = np.array(matrix, dtype=np.float64)
    for c in [*levels, None]:
        final = c is None
        c = 1 if final else c
        lr_c = _bin_level(lr, c).astype(np.float64)
        hc, wc = lr_c.shape[1:]
        d_c = _level_matrix(c)
        scale = math.sqrt(abs(np.linalg.det(t[:2, :2])))
        if c == 1:  # f x f samples per LR pixel, binned: exactly resample_keys + bin_frames
            f = SCALE
            sigma = antialias_sigma(1.0 / (SCALE * scale))
            edge = 2.0 + 2.0 * sigma + 0.5 / scale
        else:
            f = 1
            sigma = antialias_sigma(c / scale)
            edge = 1.0 + 2.0 * sigma  # the blur reflects at the HR border: keep clear of it
        hb = [_blur(np.asarray(k, dtype=np.float32), sigma) for k in hr]
        grads = [_gradients(k) for k in hb]
        rho = 0.5 * max(hc, wc)
        norm = np.array([[rho, 0, (wc - 1) / 2], [0, rho, (hc - 1) / 2], [0, 0, 1.0]])
        ys, xs = np.mgrid[0:hc, 0:wc].astype(np.float64)
        xn, yn = (xs - (wc - 1) / 2) / rho, (ys - (hc - 1) / 2) / rho
        # Sample offsets inside each level pixel, normalised, tiled over the sample grid.
        sub = ((np.arange(f) + 0.5) / f - 0.5) / rho
        off_x = np.tile(sub, wc)[None, :].astype(np.float32)
        off_y = np.tile(sub, hc)[:, None].astype(np.float32)
        grid_to_norm = np.linalg.inv(norm) @ grid_to_lr_matrix(f)
        m = np.linalg.inv(d_c @ t) @ norm  # normalised level coords -> HR
        if model == "similarity":
            g = np.diag([*fsign, 1.0]) @ m
            theta = np.array([g[0, 0], g[1, 0], g[0, 2], g[1, 2]])
        else:
            theta = m[:2].ravel().copy()

        def build(th: np.ndarray) -> np.ndarray:
            if model == "similarity":
                a, b, tx, ty = th
                return np.diag([*fsign, 1.0]) @ np.array([[a, -b, tx], [b, a, ty], [0, 0, 1.0]])
            return np.vstack([th.reshape(2, 3), [0, 0, 1.0]])

        iterations = 0 if final else _GN_ITERATIONS
        scores = np.zeros(len(hr))
        n_valid = 0
        size = (wc * f, hc * f)
        for it in range(iterations + 1):
            m = build(theta)
            qx = m[0, 0] * xn + m[0, 1] * yn + m[0, 2]
            qy = m[1, 0] * xn + m[1, 1] * yn + m[1, 2]
            valid = (qx >= edge) & (qx <= ww - 1 - edge) & (qy >= edge) & (qy <= hh - 1 - edge)
            if valid.sum() < 32:
                raise RegistrationError("the HR view left the LR image during refinement")
            n_valid = int(valid.sum()) * c * c  # in LR pixels
            px, py = xn[valid], yn[valid]
            to_hr = (m @ grid_to_norm)[:2]
            scoring = final or it == iterations
            n_par = theta.size
            big_h = np.zeros((n_par, n_par))
            big_g = np.zeros(n_par)
            for k in range(len(hr)):
                hw = _binned(_warp(hb[k], to_hr, size, cv2.INTER_CUBIC), f, valid)
                target = lr_c[k][valid]
                if scoring:
                    scores[k] = _pearson(hw, target)
                    continue
                ux = _warp(grads[k][0], to_hr, size, cv2.INTER_LINEAR)
                uy = _warp(grads[k][1], to_hr, size, cv2.INTER_LINEAR)
                if model == "similarity":
                    ux *= fsign[0]
                    uy *= fsign[1]
                ax, bx = _binned(ux, f, valid), _binned(uy, f, valid)
                if f == 1:
                    adx = ady = bdx = bdy = 0.0
                else:
                    adx, ady = _binned(ux * off_x, f, valid), _binned(ux * off_y, f, valid)
                    bdx, bdy = _binned(uy * off_x, f, valid), _binned(uy * off_y, f, valid)
                if model == "similarity":
                    jac = np.column_stack([ax * px + adx + bx * py + bdy,
                                           -(ax * py + ady) + bx * px + bdx, ax, bx])  # fmt: skip
                else:
                    jac = np.column_stack([ax * px + adx, ax * py + ady, ax,
                                           bx * px + bdx, bx * py + bdy, bx])  # fmt: skip
                res, slope = _photometric(hw, target)
                # Shot noise: variance grows with the signal, so weigh each pixel by the
                # inverse of its predicted level (Poisson), then Huber on the whitened residual.
                level = np.abs(target + res)  # the predicted LR value
                inv_var = 1.0 / np.maximum(level, 0.05 * float(np.mean(level)) + 1e-12)
                white = res * np.sqrt(inv_var)
                mad = 1.4826 * float(np.median(np.abs(white - np.median(white)))) + 1e-12
                weight = inv_var * np.minimum(1.0, 1.345 * mad / np.maximum(np.abs(white), 1e-12))
                jac *= slope[:, None]
                wj = jac * weight[:, None]
                big_h += wj.T @ jac
                big_g += wj.T @ res
            if scoring:
                break
            step = -np.linalg.solve(big_h + 1e-9 * np.trace(big_h) * np.eye(theta.size), big_g)
            theta = theta + step
            # Convergence: how far the update moves the level image's corners (level px).
            dm = build(theta) - m
            half = np.array([[wc / (2 * rho)], [hc / (2 * rho)], [1.0]])
            corners = np.array([[-1, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], float).T * half
            move_hr = np.abs((dm @ corners)[:2]).max()
            if move_hr * scale / c < _GN_TOLERANCE_PX:
                break
        t = np.linalg.inv(d_c) @ norm @ np.linalg.inv(build(theta))
        if final:
            return t, scores, n_valid
    raise AssertionError("unreachable")
