"""Estimating the HR -> LR camera transform from HR keys and their LR frames.

Two well-known steps, for each mirror candidate (none, x, y, both):

1. **Coarse global search.** The mean of the HR keys is rendered into the LR geometry (anti-
   aliased, at a pyramid level of at most ~128 LR pixels across) for each scale and rotation of
   a grid fine enough that a step moves the image's edge by about one pixel, and compared with
   the mean of the LR frames at every translation at once by *masked* normalised cross-
   correlation in the Fourier domain (Padfield, "Masked object registration in the Fourier
   domain", IEEE TIP 2012; what ``skimage.registration.phase_cross_correlation`` does with
   masks). The masks make partial overlaps (each camera sees beyond the other) score fairly;
   overlaps under ``min_overlap`` of the smaller image are not considered. The mean over keys
   equals, by linearity, the binned mean of the scenes, so it is the same scene in both cameras
   with the LR shot noise reduced by sqrt(K).
2. **Refinement by direct intensity alignment.** Gauss-Newton (forward-additive Lucas-Kanade,
   as ``cv2.findTransformECC`` but with our own code) on the sum over keys of the squared
   difference between each LR frame and its HR key seen through the transform, coarse-to-fine
   over the LR pyramid. On binned levels an LR pixel is the HR key blurred to its footprint and
   sampled at its centre; on the full-resolution level it is exactly what the fusion will get:
   the mean of the pixel's 4 x 4 samples of the grid (``resample_keys`` then ``bin_frames``).
   Per key, HR intensities map to LR ones by a gain and an offset (the cameras' exposures
   differ); pixels are weighted for Poisson noise and by Huber (moving details at slightly
   different times). Gradients come from the clean HR side,
   so 20 dB LR noise averages out over the pixels.

The mirror is chosen by the final correlation. The result's residual is then measured
independently on the resampled keys (:func:`measure_residual`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames
from napari_xfusion.core.registration.grid import (
    _blur,
    _check_stack,
    antialias_sigma,
    common_lr_crop,
    grid_to_lr_matrix,
    resample_keys,
)
from napari_xfusion.core.registration.residual import measure_residual
from napari_xfusion.core.registration.transform import (
    CameraTransform,
    RegistrationError,
    _flip_matrix,
)

__all__ = ["FLIPS", "MODELS", "Registration", "assess_transform", "estimate_transform"]

FLIPS = ((False, False), (True, False), (False, True), (True, True))
"""Mirror candidates (flip_x, flip_y) tried when flips are allowed."""

MODELS = ("similarity", "affine")

# The coarse search works at a pyramid level where the LR image is at most this wide.
_COARSE_MAX_SIDE = 128
_MIN_LEVEL_SIDE = 12
_GN_ITERATIONS = 25
# Mirror candidates whose coarse evidence reaches this fraction of the best are refined.
_KEEP = 0.5
_GN_TOLERANCE_PX = 1e-3  # stop when the update moves no corner by more (level pixels)


@dataclass(frozen=True, eq=False)
class Registration:
    """An estimated camera transform and how well it fits.

    Attributes
    ----------
    transform : CameraTransform
        HR pixel -> LR pixel map.
    residual_lr_px : float
        Residual misregistration, LR pixels (:func:`measure_residual`: median local shift
        between the binned resampled keys and the LR frames; inf when unmeasurable).
    per_key_residual_lr_px : numpy.ndarray, float64, shape (K,)
        The same per key.
    overlap_lr : (y0, y1, x0, x1)
        LR crop both cameras see (end-exclusive LR pixel indices).
    score : float
        Mean correlation (Pearson, over the overlap) of the LR frames with the aligned HR keys
        blurred to the LR pixel footprint; ~1 for a perfect, clean match.
    model : str
        "similarity" or "affine".
    hr_shape, lr_shape : (int, int)
        Image sizes the estimate was made for.
    candidates : tuple of dict
        Per mirror candidate tried: ``flip_x``, ``flip_y``, ``coarse_score``, ``score`` (None
        when not refined).
    source : str
        "keys" or "target".
    """

    transform: CameraTransform
    residual_lr_px: float
    per_key_residual_lr_px: np.ndarray
    overlap_lr: tuple[int, int, int, int]
    score: float
    model: str = "similarity"
    hr_shape: tuple[int, int] = (0, 0)
    lr_shape: tuple[int, int] = (0, 0)
    candidates: tuple[dict[str, Any], ...] = field(default=())
    source: str = "keys"

    def info(self) -> dict[str, Any]:
        """JSON-ready summary (for ``CameraTransform.save(path, info=...)`` and reports)."""
        return {
            "source": self.source,
            "model": self.model,
            "residual_lr_px": float(self.residual_lr_px),
            "per_key_residual_lr_px": [float(v) for v in self.per_key_residual_lr_px],
            "overlap_lr": list(self.overlap_lr),
            "score": float(self.score),
            "hr_shape": list(self.hr_shape),
            "lr_shape": list(self.lr_shape),
            "candidates": [dict(c) for c in self.candidates],
        }

    def report(self) -> str:
        """A few lines for a person: the parameters, the overlap, the residual."""
        p = self.transform.params()
        flips = " and ".join(
            n for n, f in (("left-right", p["flip_x"]), ("top-bottom", p["flip_y"])) if f
        )
        y0, y1, x0, x1 = self.overlap_lr
        lines = [
            f"HR -> LR ({self.model}, from {self.source}): scale {p['scale']:.5f} LR px per HR px "
            f"(ratio {1 / p['scale']:.4f}), rotation {p['rotation_deg']:+.3f} deg, shift "
            f"({p['shift_xy'][0]:.2f}, {p['shift_xy'][1]:.2f}) LR px, mirrored "
            f"{flips or 'no'}" + (f", shear {p['shear']:+.4f}, aspect {p['aspect']:.4f}"
                                   if self.model == "affine" else ""),
            f"common area: LR rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1} ({y1 - y0} x {x1 - x0} "
            f"LR px)",
            f"residual misregistration {self.residual_lr_px:.3f} LR px (per key "
            + ", ".join(f"{v:.3f}" for v in self.per_key_residual_lr_px)
            + f"); correlation {self.score:.3f}",
        ]  # fmt: skip
        return "\n".join(lines)


# -- shared helpers --------------------------------------------------------------------------
def _level_matrix(c: int) -> np.ndarray:
    """LR pixel coordinates -> coordinates on the LR image binned ``c x c``."""
    return np.array([[1 / c, 0, 0.5 / c - 0.5], [0, 1 / c, 0.5 / c - 0.5], [0, 0, 1.0]])


def _bin_level(frames: np.ndarray, c: int) -> np.ndarray:
    if c == 1:
        return np.asarray(frames, dtype=np.float32)
    h, w = frames.shape[-2:]
    return bin_frames(frames[..., : h - h % c, : w - w % c], c)


def _coarse_level(lr_shape: tuple[int, int], max_side: int = _COARSE_MAX_SIDE) -> int:
    """Smallest power-of-two binning that makes the LR image at most ``max_side`` wide (while
    its short side stays >= ``_MIN_LEVEL_SIDE``)."""
    c = 1
    while max(lr_shape) / c > max_side and min(lr_shape) / (2 * c) >= _MIN_LEVEL_SIDE:
        c *= 2
    return c


def _rotation(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _standardise(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    std = float(image.std())
    return (image - image.mean()) / (std if std > 0 else 1.0)


# -- coarse: masked normalised cross-correlation over all translations -------------------------
class _MaskedNCC:
    """NCC of a fixed image with a masked moving image at every integer offset (Padfield 2012).

    ``offset`` d means moving pixel y sits at fixed pixel y + d.
    """

    def __init__(self, fixed: np.ndarray, max_moving: tuple[int, int], min_overlap: float) -> None:
        f = _standardise(fixed)
        self.fixed_shape = f.shape
        self.size = (
            cv2.getOptimalDFTSize(f.shape[0] + max_moving[0] - 1),
            cv2.getOptimalDFTSize(f.shape[1] + max_moving[1] - 1),
        )
        rf = np.fft.rfft2
        self.fa = rf(np.ones_like(f), self.size)
        self.ff = rf(f, self.size)
        self.fff = rf(f * f, self.size)
        self.min_overlap = float(min_overlap)

    def surface(self, moving: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NCC surface and overlap pixel counts (indexed by offset modulo ``size``; NCC -inf
        where the overlap is too small)."""
        b = (mask > 0).astype(np.float64)
        g = np.where(b > 0, moving, 0.0).astype(np.float64)
        inside = g[b > 0]
        if inside.size < 4:
            return np.full(self.size, -np.inf), np.zeros(self.size)
        g = np.where(b > 0, (g - inside.mean()) / (inside.std() or 1.0), 0.0)
        rf = np.fft.rfft2
        gb, gg, ggg = (np.conj(rf(x, self.size)) for x in (b, g, g * g))
        prods = np.stack(
            [self.fa * gb, self.ff * gb, self.fa * gg, self.fff * gb, self.fa * ggg, self.ff * gg]
        )
        n, sf, sg, sff, sgg, sfg = np.fft.irfft2(prods, self.size)
        n = np.round(n)
        self.overlap = n
        limit = self.min_overlap * min(float(b.sum()), float(np.prod(self.fixed_shape)))
        ok = n >= max(limit, 16.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = sfg - sf * sg / n
            var = (sff - sf * sf / n) * (sgg - sg * sg / n)
            ncc = np.where(ok & (var > 1e-9 * n * n), cov / np.sqrt(np.abs(var)), -np.inf)
        return ncc, n

    def offset(self, index: tuple[int, int]) -> tuple[int, int]:
        """(dy, dx) of an index of the surface."""
        pairs = zip(index, self.fixed_shape, self.size, strict=True)
        return tuple(i if i < fs else i - s for i, fs, s in pairs)  # type: ignore[return-value]


def _evidence(ncc: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Significance of a correlation ``r`` over ``n`` pixels: Fisher's ``atanh(r) * sqrt(n)``.

    Ranking by ``r`` alone favours small overlaps (fewer pixels to disagree: on the simulated
    keyhole scene a mirrored view overlapping 40 % scores 0.97 against 0.94 for the true one at
    20 dB); the significance weighs the overlap in.
    """
    with np.errstate(invalid="ignore"):
        return np.where(
            np.isfinite(ncc),
            np.arctanh(np.clip(ncc, -0.999, 0.999)) * np.sqrt(np.maximum(n, 0)),
            -np.inf,
        )


def _subpixel(surface: np.ndarray, iy: int, ix: int) -> tuple[float, float]:
    """Parabola vertex around a peak (0 offset where a neighbour is missing)."""
    out = []
    for axis, (i, n) in enumerate(((iy, surface.shape[0]), (ix, surface.shape[1]))):
        lo, hi = (i - 1) % n, (i + 1) % n
        if axis == 0:
            a, b, c = surface[lo, ix], surface[iy, ix], surface[hi, ix]
        else:
            a, b, c = surface[iy, lo], surface[iy, ix], surface[iy, hi]
        denom = a - 2 * b + c
        out.append(float(0.5 * (a - c) / denom) if np.isfinite(a + c) and denom < 0 else 0.0)
    return out[0], out[1]


@dataclass
class _Candidate:
    flips: tuple[bool, bool]
    matrix: np.ndarray  # HR -> LR
    coarse_score: float
    coarse_evidence: float
    score: float | None = None
    evidence: float | None = None
    overlap: int = 0


def _render_linear(
    hr_blur: np.ndarray, lin3: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the HR image under ``lin3`` (HR -> level, no translation) onto a tight canvas.

    Returns the image, its valid mask and the HR -> canvas matrix.
    """
    h, w = hr_blur.shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T
    mapped = (lin3 @ corners)[:2]
    lo = np.floor(mapped.min(axis=1))
    hi = np.ceil(mapped.max(axis=1))
    to_canvas = np.array([[1, 0, -lo[0]], [0, 1, -lo[1]], [0, 0, 1.0]]) @ lin3
    size = (int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1)
    inv = np.linalg.inv(to_canvas)[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    image = cv2.warpAffine(hr_blur, inv, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    ones = np.ones_like(hr_blur)
    mask = cv2.warpAffine(ones, inv, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    return image, (mask > 0.999).astype(np.float32), to_canvas


def _search(
    hr: np.ndarray,
    lr: np.ndarray,
    c: int,
    flips: tuple[bool, bool],
    scales: np.ndarray,
    rotations: np.ndarray,
    min_overlap: float,
    centre_lr: np.ndarray | None = None,
    radius_lr: float | None = None,
) -> list[tuple[float, np.ndarray, float, float, float]]:
    """Best (evidence, HR -> LR matrix, ncc, scale, rotation) per (scale, rotation), level ``c``.

    With ``centre_lr``/``radius_lr`` only translations that put the HR image's centre within
    ``radius_lr`` LR px of ``centre_lr`` count.
    """
    lr_c = _bin_level(lr, c)
    d_c = _level_matrix(c)
    hh, ww = hr.shape
    flip3 = _flip_matrix(*flips, (hh, ww))
    diag = math.hypot(hh, ww) * float(scales.max()) / c
    ncc = _MaskedNCC(lr_c, (int(diag) + 3, int(diag) + 3), min_overlap)
    results = []
    blurred: dict[float, np.ndarray] = {}
    for scale in scales:
        sigma = round(antialias_sigma(c / scale), 2)
        if sigma not in blurred:
            blurred[sigma] = _blur(hr.astype(np.float32), sigma)
        for rot in rotations:
            lin3 = (
                np.diag([1 / c, 1 / c, 1.0]) @ _rotation(rot) @ np.diag([scale, scale, 1.0]) @ flip3
            )
            image, mask, to_canvas = _render_linear(blurred[sigma], lin3)
            if min(image.shape) < 4:
                continue
            surface, overlap = ncc.surface(image, mask)
            if centre_lr is not None and radius_lr is not None:
                surface = _restrict(
                    surface, ncc, to_canvas, d_c, (hh, ww), centre_lr, radius_lr / c
                )
            evidence = _evidence(surface, overlap)
            flat = int(np.argmax(evidence))
            iy, ix = np.unravel_index(flat, surface.shape)
            if not np.isfinite(evidence[iy, ix]):
                continue
            dy, dx = ncc.offset((iy, ix))
            sy, sx = _subpixel(surface, iy, ix)
            to_level = np.array([[1, 0, dx + sx], [0, 1, dy + sy], [0, 0, 1.0]]) @ to_canvas
            results.append((float(evidence[iy, ix]), np.linalg.inv(d_c) @ to_level,
                            float(surface[iy, ix]), float(scale), float(rot)))  # fmt: skip
    return results


def _restrict(surface, ncc, to_canvas, d_c, hr_shape, centre_lr, radius_level):  # noqa: ANN001, ANN202
    """Keep offsets that put the HR centre within ``radius_level`` of ``centre_lr``."""
    hh, ww = hr_shape
    centre_canvas = to_canvas @ np.array([(ww - 1) / 2, (hh - 1) / 2, 1.0])
    target = d_c @ np.array([centre_lr[0], centre_lr[1], 1.0])
    iy = np.arange(surface.shape[0])
    ix = np.arange(surface.shape[1])
    dy = np.where(iy < ncc.fixed_shape[0], iy, iy - ncc.size[0])
    dx = np.where(ix < ncc.fixed_shape[1], ix, ix - ncc.size[1])
    ey = centre_canvas[1] + dy - target[1]
    ex = centre_canvas[0] + dx - target[0]
    near = ey[:, None] ** 2 + ex[None, :] ** 2 <= radius_level**2
    return np.where(near, surface, -np.inf)


def _scale_grid(lo: float, hi: float, step: float) -> np.ndarray:
    n = max(1, int(math.ceil(math.log(hi / lo) / step)))
    return np.exp(np.linspace(math.log(lo), math.log(hi), n + 1)) if hi > lo else np.array([lo])


def _rotation_grid(max_deg: float, step: float) -> np.ndarray:
    n = int(math.ceil(max_deg / step))
    return np.linspace(-n * step, n * step, 2 * n + 1) if n else np.array([0.0])


def _coarse(
    hr_mean: np.ndarray,
    lr_mean: np.ndarray,
    flips: tuple[bool, bool],
    scale_hint: float | None,
    scale_tolerance: float,
    scale_range: tuple[float, float],
    max_rotation_deg: float,
    min_overlap: float,
) -> tuple[float, Callable[[], list[tuple[float, np.ndarray, float]]]] | None:
    """Coarse search for one mirror candidate: (stage-1 evidence, stage 2).

    Stage 1 searches the whole scale and rotation range on a small image (<= 64 LR px wide);
    stage 2 (called when the candidate is worth it) re-searches around its three best on the
    <= 128 px level with steps to match and returns the best (evidence, matrix, ncc) (one,
    or one per distinct scale without a scale hint).
    """
    hh, ww = hr_mean.shape
    c1 = _coarse_level(lr_mean.shape, _COARSE_MAX_SIDE // 2)
    c2 = _coarse_level(lr_mean.shape, _COARSE_MAX_SIDE)

    def steps(scale: float, c: int) -> tuple[float, float]:
        """Relative scale and rotation (deg) steps that move the HR view's corner ~1 level px."""
        radius = max(0.5 * math.hypot(hh, ww) * scale / c, 4.0)
        return 1.0 / radius, min(max(math.degrees(1.0 / radius), 0.2), 3.0)

    def search(c: int, scales: np.ndarray, rotations: np.ndarray) -> list:
        return _search(hr_mean, lr_mean, c, flips, scales, rotations, min_overlap)

    if scale_hint is not None:
        s_step, r_step = steps(scale_hint, c1)
        lo, hi = scale_hint * (1 - scale_tolerance), scale_hint * (1 + scale_tolerance)
        found = search(c1, _scale_grid(lo, hi, s_step), _rotation_grid(max_rotation_deg, r_step))
        groups = [sorted(found, key=lambda r: -r[0])] if found else []
    else:
        # Scale first (fine scale steps, coarse rotations), then rotation around the best. The
        # three best *distinct* scales go on: a smooth scene correlates well at a wrong scale
        # with a larger overlap, which the refinement's correlation then tells apart.
        lo, hi = scale_range
        scales = [lo]
        while scales[-1] < hi:  # the correlation peak is ~1 px wide at the HR view's corner
            scales.append(scales[-1] * (1 + 0.7 * steps(scales[-1], c1)[0]))
        rotations = _rotation_grid(max_rotation_deg, max(max_rotation_deg / 2, 0.5))
        first = sorted(search(c1, np.array(scales), rotations), key=lambda r: -r[0])
        chosen: list[float] = []
        for _, _, _, s0, _ in first:
            if all(abs(math.log(s0 / other)) > 0.1 for other in chosen):
                chosen.append(s0)
            if len(chosen) == 3:
                break
        groups = []
        for s0 in chosen:
            s_step, r_step = steps(s0, c1)
            scales = s0 * np.exp(np.array([-1.0, 0.0, 1.0]) * s_step)
            group = search(c1, scales, _rotation_grid(max_rotation_deg, r_step))
            if group:
                groups.append(sorted(group, key=lambda r: -r[0]))
    if not groups:
        return None

    def finish() -> list[tuple[float, np.ndarray, float]]:
        out = []
        for group in groups:
            best = group
            if c2 < c1:
                finer = []
                for _, _, _, s0, r0 in group[:3]:
                    s_step, r_step = steps(s0, c2)
                    scales = s0 * np.exp(np.array([-1.0, 0.0, 1.0]) * s_step)
                    finer += search(c2, scales, r0 + np.array([-1.0, 0.0, 1.0]) * r_step)
                best = sorted(finer, key=lambda r: -r[0]) or group
            out.append(best[0][:3])
        return out

    return max(group[0][0] for group in groups), finish


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


# -- the public estimator ---------------------------------------------------------------------
def _check_pair(hr: np.ndarray, lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hr = _check_stack(hr, "HR keys").astype(np.float32)
    lr = _check_stack(lr, "LR frames").astype(np.float32)
    if hr.shape[0] != lr.shape[0]:
        raise ValueError(
            f"{hr.shape[0]} HR keys but {lr.shape[0]} LR frames: give the LR frame matched to "
            "each key"
        )
    for name, frames in (("HR keys", hr), ("LR frames", lr)):
        if not np.all(np.isfinite(frames)):
            k = int(np.nonzero(~np.isfinite(frames).all(axis=(1, 2)))[0][0])
            raise ValueError(f"{name}: frame {k} holds non-finite values")
        flat = np.ptp(frames, axis=(1, 2)) <= 1e-6 * max(float(np.abs(frames).max()), 1e-30)
        if flat.any():
            k = int(np.nonzero(flat)[0][0])
            raise ValueError(f"{name}: frame {k} is constant: nothing to register on")
        if min(frames.shape[1:]) < 2 * _MIN_LEVEL_SIDE:
            raise ValueError(
                f"{name}: frames of {frames.shape[1]}x{frames.shape[2]} px are too small to "
                "register"
            )
    return hr, lr


def _levels_below(c: int) -> list[int]:
    out = []
    while c >= 1:
        out.append(c)
        c //= 2
    return out


def _best(candidates: list[_Candidate]) -> _Candidate:
    """The refined candidate with the highest correlation among those overlapping at least
    half as much as the largest overlap (a tiny overlap correlates well by chance)."""
    refined = [cand for cand in candidates if cand.score is not None]
    largest = max(cand.overlap for cand in refined)
    return max((c for c in refined if c.overlap >= 0.5 * largest), key=lambda c: c.score)  # type: ignore[arg-type, return-value]


def _finish(
    hr: np.ndarray,
    lr: np.ndarray,
    candidates: list[_Candidate],
    model: str,
    source: str,
) -> Registration:
    best = _best(candidates)
    transform = CameraTransform(best.matrix, hr_shape=hr.shape[1:])
    lr_shape = lr.shape[1:]
    crop = common_lr_crop(transform, hr.shape[1:], lr_shape)
    keys = resample_keys(hr, transform, lr_shape, overlap=crop)
    y0, y1, x0, x1 = crop
    residual, per_key = measure_residual(keys.hr_on_grid, lr[:, y0:y1, x0:x1])
    info = tuple(
        {"flip_x": cand.flips[0], "flip_y": cand.flips[1],
         "coarse_score": None if math.isnan(cand.coarse_score) else round(cand.coarse_score, 4),
         "score": None if cand.score is None else round(float(cand.score), 4),
         "evidence": None if cand.evidence is None else round(float(cand.evidence), 1)}
        for cand in candidates
    )  # fmt: skip
    return Registration(
        transform, residual, per_key, crop, float(best.score), model, tuple(hr.shape[1:]),
        tuple(lr_shape), info, source,
    )  # fmt: skip


def _check_options(
    model: str,
    scale_hint: float | None,
    scale_tolerance: float,
    scale_range: tuple[float, float],
    max_rotation_deg: float,
    min_overlap: float,
) -> None:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if scale_hint is not None and not (math.isfinite(scale_hint) and 0 < scale_hint <= 1):
        hint = f" (did you mean 1/{scale_hint:g} = {1 / scale_hint:.4g}?)" if scale_hint > 1 else ""
        raise ValueError(
            f"scale_hint is LR pixels per HR pixel (HR pixel size / LR pixel size, e.g. 1.31/3.82 "
            f"= 0.343), a number in (0, 1]; got {scale_hint!r}{hint}"
        )
    if not 0 < scale_tolerance < 0.5:
        raise ValueError(f"scale_tolerance must be in (0, 0.5), got {scale_tolerance!r}")
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(
            f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}"
        )
    if not 0 <= max_rotation_deg <= 45:
        raise ValueError(f"max_rotation_deg must be in [0, 45], got {max_rotation_deg!r}")
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}")


def estimate_transform(
    hr: np.ndarray,
    lr: np.ndarray,
    *,
    model: str = "similarity",
    allow_flip: bool = True,
    scale_hint: float | None = None,
    scale_tolerance: float = 0.05,
    scale_range: tuple[float, float] = (0.15, 0.7),
    max_rotation_deg: float = 10.0,
    min_overlap: float = 0.25,
) -> Registration:
    """Estimate the HR -> LR camera transform from HR keys and their matched LR frames.

    Parameters
    ----------
    hr : numpy.ndarray, shape (K, H, W) or (H, W)
        HR keys (any real dtype and range; each key is compared up to a gain and offset).
    lr : numpy.ndarray, shape (K, h, w) or (h, w)
        The LR frame taken at each key's time (noisy is fine: 20 dB PSNR works).
    model : {"similarity", "affine"}
        Scale + rotation + shift (+ mirror), or a full affine (adds shear and aspect).
    allow_flip : bool
        Try the mirrored candidates (left-right, top-bottom, both) too.
    scale_hint : float, optional
        Expected scale, LR pixels per HR pixel = HR pixel size / LR pixel size (1.31 / 3.82 =
        0.343 for the paper's cameras); searched within ``scale_tolerance`` (relative). Without
        it, ``scale_range`` is searched (pixel ratios 1.4 to 6.7 by default; several times
        slower, and less safe on smooth or repetitive scenes: give the hint when you know the
        pixel sizes).
    max_rotation_deg : float
        Rotations searched: +-this many degrees.
    min_overlap : float
        Smallest overlap considered, as a fraction of the smaller image.

    Returns
    -------
    Registration
        With the residual measured on the resampled keys (:func:`measure_residual`); use
        :func:`check_residual` to refuse a poor one.

    Raises
    ------
    ValueError
        Bad input (shapes, counts, non-finite values, options).
    RegistrationError
        No candidate overlaps enough to be compared, or the result covers no whole LR pixel.
    """
    _check_options(model, scale_hint, scale_tolerance, scale_range, max_rotation_deg, min_overlap)
    hr, lr = _check_pair(hr, lr)
    hr_mean, lr_mean = hr.mean(axis=0), lr.mean(axis=0)
    stage1 = {}
    for flips in FLIPS if allow_flip else FLIPS[:1]:
        found = _coarse(hr_mean, lr_mean, flips, scale_hint, scale_tolerance, scale_range,
                        max_rotation_deg, min_overlap)  # fmt: skip
        if found is not None:
            stage1[flips] = found
    candidates: list[_Candidate] = []
    if stage1:
        top = max(evidence for evidence, _ in stage1.values())
        for flips, (evidence, finish) in stage1.items():
            if evidence >= _KEEP * top:
                for best in finish():
                    candidates.append(_Candidate(flips, best[1], best[2], best[0]))
    if not candidates:
        raise RegistrationError(
            f"no placement of the HR view ({hr.shape[1]}x{hr.shape[2]} px) overlaps the LR view "
            f"({lr.shape[1]}x{lr.shape[2]} px) by {min_overlap:.0%} at the scales searched; "
            "check scale_hint (LR px per HR px)"
        )
    _refine_candidates(hr, lr, candidates, model)
    return _finish(hr, lr, candidates, model, "keys")


def _refine_candidates(hr: np.ndarray, lr: np.ndarray, candidates: list[_Candidate], model: str,
                       keep: float = _KEEP) -> None:  # fmt: skip
    """Refine (in place) the candidates whose coarse evidence is at least ``keep`` of the best."""
    top = max(cand.coarse_evidence for cand in candidates)
    levels = _levels_below(_coarse_level(lr.shape[1:]))
    for cand in candidates:
        if cand.coarse_evidence < keep * top:
            continue
        try:
            # Similarity first: an affine from a coarse start can wander on noise.
            matrix, scores, n = _refine(hr, lr, cand.matrix, cand.flips, "similarity", levels)
            if model == "affine":
                matrix, scores, n = _refine(hr, lr, matrix, cand.flips, "affine", levels[-2:])
        except (RegistrationError, np.linalg.LinAlgError):
            continue
        cand.matrix, cand.score = matrix, float(np.mean(scores))
        cand.evidence = float(np.mean(_evidence(np.asarray(scores), np.full(len(scores), n))))
        cand.overlap = n
    if all(cand.score is None for cand in candidates):
        raise RegistrationError(
            "refinement failed for every candidate: the HR view leaves the LR image"
        )


def assess_transform(
    hr: np.ndarray, lr: np.ndarray, transform: CameraTransform, *, source: str = "file"
) -> Registration:
    """Measure how well a given transform (a transform file, a user's adjustment) fits.

    Parameters
    ----------
    hr, lr : numpy.ndarray, shape (K, H, W) and (K, h, w)
        HR keys and their LR frames, as for :func:`estimate_transform`.
    transform : CameraTransform
        HR pixel -> LR pixel map to assess (not changed).
    source : str
        Recorded in the result (e.g. "file", "user").

    Returns
    -------
    Registration
        Same fields as from :func:`estimate_transform` (``model`` "similarity" when the matrix
        has no shear or aspect, else "affine"); pass it to :func:`check_residual`.
    """
    hr, lr = _check_pair(hr, lr)
    if not isinstance(transform, CameraTransform):
        raise TypeError(f"transform must be a CameraTransform, got {type(transform).__name__}")
    transform = CameraTransform(transform.matrix, hr_shape=hr.shape[1:])
    p = transform.params()
    flips = (p["flip_x"], p["flip_y"])
    similar = abs(p["shear"]) < 1e-9 and abs(p["aspect"] - 1) < 1e-9
    model = "similarity" if similar else "affine"
    matrix, scores, n = _refine(hr, lr, transform.matrix, flips, model, [])
    cand = _Candidate(flips, transform.matrix, float("nan"), float("nan"), float(np.mean(scores)))
    cand.evidence = float(np.mean(_evidence(np.asarray(scores), np.full(len(scores), n))))
    cand.overlap = n
    return _finish(hr, lr, [cand], model, source)
