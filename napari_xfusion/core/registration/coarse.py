"""Coarse global search: masked normalised cross-correlation over flips, scale and rotation.

Step 1 of :mod:`napari_xfusion.core.registration.estimate` (see there for the method).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from napari_xfusion.core.registration.grid import _blur, antialias_sigma
from napari_xfusion.core.registration.levels import (
    _COARSE_MAX_SIDE,
    _bin_level,
    _coarse_level,
    _level_matrix,
    _rotation,
    _standardise,
)
from napari_xfusion.core.registration.transform import _flip_matrix


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
