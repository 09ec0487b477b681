"""Both cameras -> the aligned pair the fusion takes: LR cropped to the common view, HR keys on
its exact 4x grid with the LR frame index of each key.

:func:`prepare_pair` reads the stacks and times and matches the frames (cheap: the GUI does it
once); :func:`align_prepared` estimates (or takes) the transform, refines the time offset from
the images, re-matches the keys when that moves one to another LR frame, resamples the keys,
maps their intensities into the LR's units and refuses a residual misregistration above the
limit. :func:`align_pair` is both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion.app.dualcam.choose import _Chosen, _estimate, _initial
from napari_xfusion.app.dualcam.config import DualCameraConfig
from napari_xfusion.app.dualcam.prepare import (
    PreparedPair,
    Progress,
    _check_keys,
    _say,
    prepare_pair,
)
from napari_xfusion.app.dualcam.report import AlignmentReport

if TYPE_CHECKING:
    from napari_xfusion.core.normalise import Normalisation
    from napari_xfusion.core.registration import CameraTransform

__all__ = [
    "AlignedPair",
    "PreparedPair",
    "align_pair",
    "align_prepared",
    "fit_intensity",
    "lr_at_times",
    "prepare_pair",
]


@dataclass
class AlignedPair:
    """The aligned pair: ``lr`` (T, h', w') float32 [0, 1] cropped to the common view,
    ``hr_keys`` (K, 4h', 4w') float32 [0, 1] on its exact 4x grid in the LR's intensity
    units, ``key_indices`` (K,) int64 LR frame of each key, the ``transform`` (HR px -> LR px
    of the full LR frame) and the ``report``."""

    lr: np.ndarray
    hr_keys: np.ndarray
    key_indices: np.ndarray
    transform: CameraTransform
    report: AlignmentReport
    lr_normalisation: Normalisation | None = None


def fit_intensity(hr_binned: np.ndarray, lr_frames: np.ndarray) -> tuple[float, float]:
    """Least-squares ``gain, offset`` with ``gain * hr_binned + offset ~ lr_frames`` (the two
    cameras' gains and dark levels differ; the fusion assumes LR = bin(HR))."""
    x = np.asarray(hr_binned, dtype=np.float64).ravel()
    y = np.asarray(lr_frames, dtype=np.float64).ravel()
    var = x.var()
    if not var > 1e-12:
        return 1.0, float(y.mean() - x.mean())
    gain = float(((x - x.mean()) * (y - y.mean())).mean() / var)
    return gain, float(y.mean() - gain * x.mean())


def lr_at_times(lr: np.ndarray, times_frames: np.ndarray) -> np.ndarray:
    """LR frames at fractional LR times (in frames), linear in time, clamped to the stack:
    what the LR camera would have shown at each key's real time."""
    t = np.clip(np.asarray(times_frames, dtype=np.float64), 0.0, lr.shape[0] - 1.0)
    i = np.minimum(np.floor(t).astype(np.int64), lr.shape[0] - 2) if lr.shape[0] > 1 else t * 0
    i = i.astype(np.int64)
    a = (t - i).astype(np.float32)[:, None, None]
    upper = np.minimum(i + 1, lr.shape[0] - 1)
    return ((1.0 - a) * lr[i] + a * lr[upper]).astype(np.float32)


MIN_TIME_CONFIDENCE = 0.2
"""Below this confidence (:class:`core.cameras.TimeRefinement`) the refined time is not used."""


@dataclass
class _Timing:
    """The time state: match, LR index and real LR time (frames) of each key."""

    match: Any
    lr_index: np.ndarray
    refinement: Any = None
    correction: float = 0.0
    rematched: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def key_times(self) -> np.ndarray:
        # match_frames' residual is LR time - HR time.
        return self.lr_index - np.asarray(self.match.residual_frames, dtype=np.float64)


def _refine(
    prepared: PreparedPair, timing: _Timing, lr_crop: np.ndarray, binned: np.ndarray
) -> bool:
    """Refine the keys' times from the images and re-match; True when a key moved."""
    from napari_xfusion.core.cameras import TimingError, match_frames, refine_time_offset

    config = prepared.config
    refinement = refine_time_offset(
        lr_crop, binned, timing.lr_index, search_frames=config.search_frames
    )
    edge = np.asarray(getattr(refinement, "at_search_edge", np.zeros(1, bool)), dtype=bool)
    if float(refinement.confidence) < MIN_TIME_CONFIDENCE or edge.mean() > 0.5:
        # A refinement the images do not support (a wrong transform, a static scene) must not
        # move the keys: keep the metadata's times and say so.
        timing.notes.append(
            f"time refinement not applied: confidence {float(refinement.confidence):.2f}, "
            f"{int(edge.sum())} of {edge.size} keys at the edge of the +-{config.search_frames:g} "
            "frame search; the keys keep the metadata's times"
        )
        return False
    # The matched metadata put the keys at key_times, the images at lr_index + offset: the HR
    # clock is off by the (mean) difference. Re-match with it corrected.
    shift = timing.lr_index + float(refinement.offset_frames) - timing.key_times
    timing.correction += float(np.mean(shift))
    timing.refinement = refinement
    try:
        timing.match = match_frames(
            prepared.hr_times,
            prepared.lr_times,
            tolerance_frames=config.tolerance_frames,
            offset_s=config.trigger_delay_s + timing.correction * float(timing.match.lr_interval_s),
        )
    except TimingError as exc:
        raise TimingError(
            f"after the time refinement from the images (HR clock {timing.correction:+.3f} LR "
            f"frames, confidence {float(refinement.confidence):.2f}): {exc}"
        ) from None
    new_index = np.asarray(timing.match.lr_index, dtype=np.int64)
    if np.array_equal(new_index, timing.lr_index):
        return False
    _check_keys(new_index, prepared.hr_times, prepared.hr_source)
    timing.lr_index, timing.rematched = new_index, True
    return True


def _check_residual(
    prepared: PreparedPair, measured: tuple[float, Any], limit: float, chosen: _Chosen
) -> None:
    """Refuse a residual misregistration above ``limit`` LR px (``RegistrationError``)."""
    from napari_xfusion.core.registration import RegistrationError

    median, per_key = float(measured[0]), np.atleast_1d(measured[1])
    if np.isfinite(median) and median <= limit:
        return
    raise RegistrationError(
        f"{prepared.hr_source}: residual misregistration {median:.3f} LR px (per key "
        f"{', '.join(f'{v:.2f}' for v in per_key)}) is above {limit:g} LR px: too poor to "
        f"fuse ({chosen.source}); check the transform (a calibration target, --model affine, "
        "the pixel sizes) or raise the limit"
    )


def _resample(prepared: PreparedPair, transform: Any, overlap: Any) -> Any:
    from napari_xfusion.core.registration import resample_keys

    return resample_keys(prepared.hr, transform, prepared.lr.shape[1:], factor=4, overlap=overlap)


def align_prepared(
    prepared: PreparedPair,
    *,
    transform: CameraTransform | None = None,
    progress: Progress = None,
) -> AlignedPair:
    """Register and resample a :class:`PreparedPair` (see the module docstring).

    ``transform`` (e.g. adjusted by hand in the GUI) replaces the config's estimate or file.
    An estimate from the keys is made twice: first against the LR frames the times matched,
    then (after the time refinement) against the LR interpolated to the keys' real times with
    the first scale as a hint: a key 0.3 frames off its LR frame shows the motion of 0.3 frames
    as a false shift (measured on the simulated pair: 0.136 -> 0.059 LR px at the HR corners).

    Raises
    ------
    RegistrationError
        The residual misregistration is above ``config.max_residual_lr_px`` (names the
        numbers), or the estimate failed.
    TimingError
        The refined offset moves a key past the tolerance of every LR frame.
    """
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.registration import measure_residual

    config = prepared.config
    timing = _Timing(prepared.match, prepared.lr_index)
    chosen = (
        _Chosen(transform, "adjusted") if transform is not None else _initial(prepared, progress)
    )
    for attempt in range(4):
        registration = chosen.registration
        overlap = None if registration is None else registration.overlap_lr
        keys = _resample(prepared, chosen.transform, overlap)
        y0, y1, x0, x1 = (int(v) for v in keys.lr_crop)
        lr_crop = prepared.lr[:, y0:y1, x0:x1]
        hr_grid = np.asarray(keys.hr_on_grid, dtype=np.float32)
        binned = bin_frames(hr_grid)
        gain, offset = fit_intensity(binned, lr_at_times(lr_crop, timing.key_times))
        if not config.refine_time or attempt == 3:
            break
        if attempt == 0:
            # Refining the time with a hopeless transform only produces a confusing timing
            # error: refuse it first (with room for the keys' not yet refined times).
            lr_now = lr_at_times(lr_crop, timing.key_times)
            early = measure_residual(np.clip(gain * hr_grid + offset, 0, 1), lr_now)
            _check_residual(prepared, early, max(2 * config.max_residual_lr_px, 1.0), chosen)
        _say(progress, "refining the time offset from the images")
        moved = _refine(prepared, timing, lr_crop, np.clip(gain * binned + offset, 0.0, 1.0))
        if moved:
            _say(progress, "the keys moved to other LR frames")
        if chosen.from_keys and attempt == 0:
            lr_real = lr_at_times(prepared.lr, timing.key_times)
            chosen = _estimate(prepared, lr_real, float(chosen.transform.scale), progress)
            continue
        if not moved:
            break
    at_keys = lr_at_times(lr_crop, timing.key_times)
    gain, offset = fit_intensity(binned, at_keys)
    hr_keys = np.clip(gain * hr_grid + offset, 0.0, 1.0).astype(np.float32)
    # Measured the same way whatever the transform's source (estimate, file, hand-adjusted),
    # against the LR at each key's real time.
    median, per_key = measure_residual(hr_keys, at_keys)
    tf, source = chosen.transform, chosen.source
    lr_index = timing.lr_index
    report = _report(prepared, timing)
    report.transform_source, report.model = source, config.model
    report.transform = dict(tf.params())
    report.matrix = np.asarray(tf.matrix, dtype=float).tolist()
    report.residual_lr_px = float(median)
    report.per_key_residual_lr_px = [float(v) for v in np.atleast_1d(per_key)]
    report.max_residual_lr_px = config.max_residual_lr_px
    report.lr_crop = (y0, y1, x0, x1)
    report.valid_fraction = float(np.mean(keys.valid_fraction))
    report.hr_gain, report.hr_offset = gain, offset
    report.notes = [*prepared.notes, *timing.notes]
    _check_residual(prepared, (median, per_key), config.max_residual_lr_px, chosen)
    return AlignedPair(
        lr=np.ascontiguousarray(lr_crop, dtype=np.float32),
        hr_keys=hr_keys,
        key_indices=lr_index.copy(),
        transform=tf,
        report=report,
        lr_normalisation=prepared.lr_normalisation,
    )


def _report(prepared: PreparedPair, timing: _Timing) -> AlignmentReport:
    match, refinement = timing.match, timing.refinement
    norms = {
        name: None if norm is None else norm.to_dict()
        for name, norm in (("lr", prepared.lr_normalisation), ("hr", prepared.hr_normalisation))
    }
    report = AlignmentReport(
        lr_source=prepared.lr_source,
        hr_source=prepared.hr_source,
        lr_times_source=str(prepared.lr_times.source),
        hr_times_source=str(prepared.hr_times.source),
        lr_interval_s=float(match.lr_interval_s),
        hr_interval_s=float(prepared.hr_times.interval_s),
        n_lr_frames=int(prepared.lr.shape[0]),
        n_hr_frames=int(prepared.hr.shape[0]),
        lr_shape=(int(prepared.lr.shape[1]), int(prepared.lr.shape[2])),
        hr_frame_numbers=[int(v) for v in prepared.hr_times.frame_numbers],
        key_indices=[int(v) for v in timing.lr_index],
        metadata_residual_ns=[float(v) * 1e9 for v in prepared.match.residual_s],
        metadata_residual_frames=[float(v) for v in prepared.match.residual_frames],
        trigger_delay_s=prepared.config.trigger_delay_s,
        lr_pixel_um=prepared.config.lr_pixel_um,
        lr_normalisation=norms["lr"],
        hr_normalisation=norms["hr"],
        key_times_frames=[float(v) for v in timing.key_times],
    )
    if refinement is None:
        return report
    report.refined = True
    report.subframe_offset_frames = float(np.mean(timing.key_times - timing.lr_index))
    report.per_key_offset_frames = [float(v) for v in refinement.per_key_offset_frames]
    conf = getattr(refinement, "confidence", None)
    report.refinement_confidence = None if conf is None else float(conf)
    report.clock_correction_frames = float(timing.correction)
    report.rematched = timing.rematched
    return report


def align_pair(
    config: DualCameraConfig,
    *,
    lr: Any = None,
    hr: Any = None,
    progress: Progress = None,
) -> AlignedPair:
    """Read, match, register and resample a dual-camera pair (:func:`prepare_pair` then
    :func:`align_prepared`); ``lr`` / ``hr`` arrays win over the config's paths."""
    _say(progress, "reading both cameras and matching their frame times")
    return align_prepared(prepare_pair(config, lr=lr, hr=hr), progress=progress)
