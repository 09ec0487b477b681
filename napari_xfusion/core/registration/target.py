"""Calibration from a grid target image pair (e.g. a copper TEM grid seen by both cameras).

A grid gives sharp, high-contrast edges everywhere, so scale and rotation come out precisely,
but it is periodic: shifting the match by one period (or mirroring a symmetric lattice) fits
the bars and holes just as well. :func:`estimate_from_target` resolves this one of two ways:

- **with a coarse estimate** (``coarse=``, e.g. :func:`estimate_transform` on the experiment's
  keys, or a transform file): the mirror is taken from it and only placements within
  ``0.4 x`` the grid period of it are searched, so the grid refines the coarse estimate;
- **without**: every mirror and the placements one period around the best are refined, and
  the best wins only if every other leaves ``ambiguity`` (5 %) more of the LR image's variance
  unexplained (``1 - r``): that margin
  comes from what is *not* periodic in view (the grid's rim, a centre mark, a bent bar, dust).
  Otherwise a ``RegistrationError`` says the pair is ambiguous and asks for ``coarse=``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from napari_xfusion.core.registration.coarse import _Candidate, _coarse, _search
from napari_xfusion.core.registration.estimate import (
    _KEEP,
    FLIPS,
    _best,
    _check_options,
    _check_pair,
    _finish,
    refine_each,
)
from napari_xfusion.core.registration.levels import _coarse_level, _standardise
from napari_xfusion.core.registration.result import Registration
from napari_xfusion.core.registration.transform import CameraTransform, RegistrationError

__all__ = ["estimate_from_target", "grid_period", "lattice_vectors"]

_PERIODIC = 0.3  # an off-centre autocorrelation peak above this makes the image periodic


def _autocorrelation(image: np.ndarray) -> np.ndarray:
    """Normalised autocorrelation, zero shift at the centre, shifts up to half the image."""
    image = np.asarray(image, dtype=np.float32)
    # High-pass first: a large dark region (the grid's rim) would otherwise dominate.
    sigma = max(min(image.shape) / 6.0, 2.0)
    f = _standardise(image - cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT))
    h, w = f.shape
    size = (2 * h, 2 * w)
    spec = np.fft.rfft2(f, size)
    ones = np.fft.rfft2(np.ones_like(f), size)
    ac = np.fft.irfft2(spec * np.conj(spec), size)
    n = np.round(np.fft.irfft2(ones * np.conj(ones), size))
    ac = np.fft.fftshift(ac / np.maximum(n, 1.0))
    ac /= ac[h, w]
    return ac[h - h // 2 : h + h // 2 + 1, w - w // 2 : w + w // 2 + 1]


def lattice_vectors(image: np.ndarray) -> np.ndarray | None:
    """The two shortest independent repeat vectors (dx, dy) of a periodic image, in pixels.

    Parameters
    ----------
    image : numpy.ndarray, shape (H, W)

    Returns
    -------
    numpy.ndarray, float64, shape (2, 2), or None
        Rows are the vectors; None when the image does not repeat (no autocorrelation peak
        above 0.3 beyond the central lobe).
    """
    ac = _autocorrelation(np.asarray(image, dtype=np.float64))
    cy, cx = ac.shape[0] // 2, ac.shape[1] // 2
    # The central lobe ends at the first minimum of the mean over rings (half a period for a
    # grid); a threshold would not do: the autocorrelation stays high along a grid's bars.
    yy, xx = np.indices(ac.shape)
    ring = np.round(np.hypot(yy - cy, xx - cx)).astype(np.int64)
    profile = np.bincount(ring.ravel(), ac.ravel()) / np.maximum(np.bincount(ring.ravel()), 1)
    limit = min(cy, cx)
    r0 = next((r for r in range(1, limit) if profile[r] <= profile[r + 1]), limit)
    outside = np.where(ring <= r0, -np.inf, ac).astype(np.float32)
    # Local maxima above the threshold, strongest first, nearer first at equal strength.
    peak = outside >= cv2.dilate(outside, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(peak & (outside > _PERIODIC))
    if ys.size == 0:
        return None
    strength = outside[ys, xs]
    strong = strength >= 0.7 * strength.max()  # the lattice's first peaks, not its harmonics
    vec = np.column_stack([xs - cx, ys - cy]).astype(np.float64)[strong]
    length = np.hypot(vec[:, 0], vec[:, 1])
    order = np.argsort(length, kind="stable")
    first = vec[order[0]]
    for i in order[1:]:
        v = vec[i]
        cross = abs(first[0] * v[1] - first[1] * v[0])
        if cross > 0.5 * np.hypot(*first) * np.hypot(*v):  # > 30 degrees apart
            return np.array([first, v])
    return np.array([first, [-first[1], first[0]]])  # stripes: the second one is arbitrary


def grid_period(image: np.ndarray) -> float | None:
    """Shortest repeat distance of a periodic image (pixels), or None when it does not repeat."""
    vectors = lattice_vectors(image)
    return None if vectors is None else float(np.hypot(*vectors[0]))


def _as_transform(coarse: object) -> CameraTransform:
    if isinstance(coarse, Registration):
        return coarse.transform
    if isinstance(coarse, CameraTransform):
        return coarse
    raise TypeError(
        f"coarse must be a CameraTransform or a Registration, got {type(coarse).__name__}"
    )


def estimate_from_target(
    hr_target: np.ndarray,
    lr_target: np.ndarray,
    *,
    coarse: CameraTransform | Registration | None = None,
    model: str = "similarity",
    allow_flip: bool = True,
    scale_hint: float | None = None,
    scale_tolerance: float = 0.05,
    max_rotation_deg: float = 10.0,
    min_overlap: float = 0.25,
    ambiguity: float = 0.05,
) -> Registration:
    """Estimate the camera transform from one image pair of a calibration grid.

    Parameters
    ----------
    hr_target, lr_target : numpy.ndarray, shape (H, W) and (h, w)
        The target seen by the HR and by the LR camera (flat-field corrected or not; compared
        up to a gain and offset). Several frames of each may be averaged beforehand.
    coarse : CameraTransform or Registration, optional
        A rough estimate (from the keys, or a previous transform file) that resolves the grid's
        period ambiguity (module docstring). It must be right to within 0.4 grid periods.
    model, allow_flip, scale_hint, scale_tolerance, max_rotation_deg, min_overlap
        As for :func:`estimate_transform` (``scale_hint`` defaults to the coarse estimate's).
    ambiguity : float
        Without ``coarse``: every placement one period away and every other mirror must leave
        at least this much more variance unexplained (``1 - r``, relative) than the best.

    Returns
    -------
    Registration
        ``source="target"``; the residual is measured on the target pair itself.

    Raises
    ------
    RegistrationError
        Ambiguous without ``coarse`` (a perfectly periodic view), or no placement found.
    """
    hr, lr = _check_pair(hr_target, lr_target)
    if hr.shape[0] != 1:
        raise ValueError(f"expected one target image per camera, got {hr.shape[0]}")
    _check_options(model, scale_hint, scale_tolerance, (0.15, 0.7), max_rotation_deg, min_overlap)
    lattice = lattice_vectors(lr[0])
    period = None if lattice is None else float(np.hypot(*lattice[0]))
    if coarse is not None:
        candidates = [_near_coarse(hr[0], lr[0], _as_transform(coarse), period, min_overlap)]
        refine_each(hr, lr, candidates, model)
        return _finish(hr, lr, candidates, model, "target")

    candidates = []
    for flips in FLIPS if allow_flip else FLIPS[:1]:
        found = _coarse(hr[0], lr[0], flips, scale_hint, scale_tolerance, (0.15, 0.7),
                        max_rotation_deg, min_overlap)  # fmt: skip
        if found is not None:
            for best in found[1]():
                candidates.append(_Candidate(flips, best[1], best[2], best[0]))
    if not candidates:
        raise RegistrationError("no placement of the HR target image overlaps the LR one enough")
    top = max(c.coarse_evidence for c in candidates)
    candidates = [c for c in candidates if c.coarse_evidence >= _KEEP * top]
    refine_each(hr, lr, candidates, model)
    refined = [c for c in candidates if c.evidence is not None]
    if lattice is not None and refined:
        # Every placement one lattice step away from the best, refined in turn.
        shifted = []
        for cand in [_best(refined)]:
            for i in (-1, 0, 1):
                for j in (-1, 0, 1):
                    if i or j:
                        move = np.eye(3)
                        move[:2, 2] = i * lattice[0] + j * lattice[1]
                        shifted.append(_Candidate(cand.flips, move @ cand.matrix, 0.0, 0.0))
        refine_each(hr, lr, shifted, model)
        candidates += [c for c in shifted if c.score is not None]
    _check_unambiguous(candidates, ambiguity, period)
    return _finish(hr, lr, candidates, model, "target")


def _near_coarse(
    hr: np.ndarray, lr: np.ndarray, coarse: CameraTransform, period: float | None,
    min_overlap: float,
) -> _Candidate:  # fmt: skip
    """Search scale, rotation and translation near a coarse estimate (within 0.4 period)."""
    p = CameraTransform(coarse.matrix, hr_shape=hr.shape).params()
    flips = (p["flip_x"], p["flip_y"])
    c = _coarse_level(lr.shape)
    radius_px = 0.5 * math.hypot(*hr.shape) * p["scale"] / c
    r_step = min(max(math.degrees(1.0 / radius_px), 0.1), 1.0)
    s_step = 1.0 / radius_px
    scales = p["scale"] * np.exp(np.arange(-2, 3) * s_step)
    rotations = p["rotation_deg"] + np.arange(-2, 3) * r_step
    centre = coarse.apply(np.array([(hr.shape[1] - 1) / 2, (hr.shape[0] - 1) / 2]))
    radius = 0.4 * period if period is not None else max(lr.shape)
    found = _search(hr, lr, c, flips, scales, rotations, min_overlap, centre, radius)
    if not found:
        raise RegistrationError(
            "the calibration target does not match near the coarse estimate: no placement "
            f"within {radius:.1f} LR px of it overlaps enough"
        )
    best = max(found, key=lambda r: r[0])
    return _Candidate(flips, best[1], best[2], best[0])


def _check_unambiguous(candidates: list[_Candidate], margin: float, period: float | None) -> None:
    refined = [c for c in candidates if c.evidence is not None]
    if not refined:
        raise RegistrationError("refinement failed for every placement of the calibration target")
    best = _best(refined)
    centre = np.array([0.0, 0.0, 1.0])
    for other in refined:
        if other is best:
            continue
        distinct = (
            other.flips != best.flips or np.abs((other.matrix - best.matrix) @ centre).max() > 0.5
        )
        # Compare what the fits leave unexplained (1 - r): noise makes r < 1 for both.
        similar = (1 - other.score) <= (1 + margin) * (1 - best.score)
        similar &= other.overlap >= 0.5 * best.overlap
        if distinct and similar:
            what = "mirror" if other.flips != best.flips else "placement one grid period away"
            raise RegistrationError(
                f"the calibration target is ambiguous: a {what} fits as well (correlation "
                f"{other.score:.4f} against {best.score:.4f}: unexplained variance within "
                f"{margin:.0%}; grid period "
                f"{period if period is None else round(period, 2)} LR px). Image the grid with "
                "its rim or a mark in view, or pass coarse= (e.g. the estimate from the keys)"
            )
