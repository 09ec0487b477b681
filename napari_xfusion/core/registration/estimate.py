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

import numpy as np

from napari_xfusion.core.registration.coarse import _Candidate, _coarse, _evidence
from napari_xfusion.core.registration.grid import _check_stack, common_lr_crop, resample_keys
from napari_xfusion.core.registration.levels import _MIN_LEVEL_SIDE, _coarse_level
from napari_xfusion.core.registration.refine import _refine
from napari_xfusion.core.registration.residual import measure_residual
from napari_xfusion.core.registration.result import Registration
from napari_xfusion.core.registration.transform import CameraTransform, RegistrationError

__all__ = ["FLIPS", "MODELS", "Registration", "assess_transform", "estimate_transform"]

FLIPS = ((False, False), (True, False), (False, True), (True, True))
"""Mirror candidates (flip_x, flip_y) tried when flips are allowed."""

MODELS = ("similarity", "affine")

# Mirror candidates whose coarse evidence reaches this fraction of the best are refined.
_KEEP = 0.5


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


def refine_each(hr: np.ndarray, lr: np.ndarray, candidates: list[_Candidate], model: str,
                keep: float | None = None) -> None:  # fmt: skip
    """Refine (in place) every candidate, or with ``keep`` those whose coarse evidence is at
    least ``keep`` of the best; a candidate whose refinement fails keeps ``score`` None."""
    top = max(cand.coarse_evidence for cand in candidates) if keep is not None else 0.0
    levels = _levels_below(_coarse_level(lr.shape[1:]))
    for cand in candidates:
        if keep is not None and cand.coarse_evidence < keep * top:
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


def _refine_candidates(hr: np.ndarray, lr: np.ndarray, candidates: list[_Candidate], model: str,
                       keep: float = _KEEP) -> None:  # fmt: skip
    """:func:`refine_each` of the candidates within ``keep`` of the best; raises when none
    could be refined."""
    refine_each(hr, lr, candidates, model, keep)
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
