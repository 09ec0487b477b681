"""Both cameras -> the aligned pair the fusion takes: LR cropped to the common view, HR keys on
its exact 4x grid with the LR frame index of each key.

:func:`prepare_pair` reads the stacks and times and matches the frames (cheap: the GUI does it
once); :func:`align_prepared` estimates (or takes) the transform, refines the time offset from
the images, re-matches the keys when that moves one to another LR frame, resamples the keys,
maps their intensities into the LR's units and refuses a residual misregistration above the
limit. :func:`align_pair` is both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion.app.dualcam.config import DualCameraConfig, DualCameraError
from napari_xfusion.app.dualcam.report import AlignmentReport
from napari_xfusion.app.dualcam.times import camera_times, load_camera

if TYPE_CHECKING:
    from napari_xfusion.core.cameras import FrameMatch, FrameTimes
    from napari_xfusion.core.normalise import Normalisation
    from napari_xfusion.core.registration import CameraTransform

__all__ = [
    "AlignedPair",
    "PreparedPair",
    "align_pair",
    "align_prepared",
    "fit_intensity",
    "prepare_pair",
]

Progress = Callable[[str], None] | None


@dataclass
class PreparedPair:
    """Both cameras read, normalised to [0, 1] and matched in time (before any registration).

    ``lr`` (T, h, w) and ``hr`` (N, H, W) float32 in [0, 1]; ``match`` one LR frame per HR
    frame (:class:`core.cameras.FrameMatch`); ``lr_times`` / ``hr_times`` as read.
    """

    lr: np.ndarray
    hr: np.ndarray
    lr_times: FrameTimes
    hr_times: FrameTimes
    match: FrameMatch
    lr_normalisation: Normalisation | None
    hr_normalisation: Normalisation | None
    lr_source: str
    hr_source: str
    config: DualCameraConfig
    notes: list[str] = field(default_factory=list)

    @property
    def lr_index(self) -> np.ndarray:
        """(N,) int64: the LR frame each HR frame was matched to (from the times)."""
        return np.asarray(self.match.lr_index, dtype=np.int64)


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


def _say(progress: Progress, text: str) -> None:
    if progress is not None:
        progress(text)


def _unit(stack: Any, name: str, role: str, notes: list[str]) -> tuple[np.ndarray, Any]:
    """``stack`` as float32 [0, 1] by the fusion's normalisation rule (as is when float in
    [0, 1], else percentile clip values)."""
    from napari_xfusion.app.inputs import fit_stream

    norm = fit_stream(stack, range(int(stack.shape[0])), "auto", name, notes, role)
    data = np.asarray(stack)
    if norm is None:
        return data.astype(np.float32, copy=False), None
    return norm.apply(data).astype(np.float32, copy=False), norm


def _check_stack(stack: Any, name: str) -> None:
    if getattr(stack, "ndim", 0) != 3 or min(stack.shape) < 1:
        shape = getattr(stack, "shape", None)
        raise DualCameraError(f"{name}: expected a (T, H, W) image stack, got shape {shape}")


def prepare_pair(
    config: DualCameraConfig,
    *,
    lr: Any = None,
    hr: Any = None,
    lr_times: FrameTimes | None = None,
    hr_times: FrameTimes | None = None,
    names: tuple[str, str] = ("LR layer", "HR layer"),
) -> PreparedPair:
    """Read (or take) both stacks and their frame times and match the frames.

    Arrays win over the config's paths (GUI layers); ``lr_times`` / ``hr_times`` win over the
    config's times files, rates and metadata found beside the stacks.

    Raises
    ------
    DualCameraError
        A stack or metadata missing or not matching (names the file and what was expected).
    TimingError
        An HR frame that matches no LR frame within ``config.tolerance_frames``.
    """
    from napari_xfusion.core.cameras import match_frames

    notes: list[str] = []
    carried: dict[str, Any] = {"lr": None, "hr": None}
    stacks: dict[str, Any] = {"lr": lr, "hr": hr}
    sources: dict[str, str] = {"lr": names[0], "hr": names[1]}
    for key, option in (("lr", "--lr"), ("hr", "--hr")):
        path = getattr(config, key)
        if stacks[key] is None:
            if path is None:
                raise DualCameraError(f"{option}: no {key.upper()} stack given")
            stacks[key], carried[key] = load_camera(Path(path), option)
            sources[key] = str(path)
        _check_stack(stacks[key], sources[key])
    given = {"lr": lr_times, "hr": hr_times}
    from_file = {"lr": lr is None, "hr": hr is None}
    times: dict[str, FrameTimes] = {}
    for key in ("lr", "hr"):
        path = getattr(config, key)
        times[key] = given[key] or camera_times(
            int(stacks[key].shape[0]),
            role=f"--{key}",
            stack=Path(path) if from_file[key] else None,
            times_file=getattr(config, f"{key}_times"),
            rate_hz=getattr(config, f"{key}_rate_hz"),
            carried=carried[key],
            rate_option=f"--{key}-rate",
            times_option=f"--{key}-times",
        )
    match = match_frames(
        times["hr"],
        times["lr"],
        tolerance_frames=config.tolerance_frames,
        offset_s=config.trigger_delay_s,
    )
    _check_keys(np.asarray(match.lr_index), times["hr"], sources["hr"])
    lr01, lr_norm = _unit(stacks["lr"], sources["lr"], "LR", notes)
    hr01, hr_norm = _unit(stacks["hr"], sources["hr"], "HR", notes)
    return PreparedPair(
        lr=lr01,
        hr=hr01,
        lr_times=times["lr"],
        hr_times=times["hr"],
        match=match,
        lr_normalisation=lr_norm,
        hr_normalisation=hr_norm,
        lr_source=sources["lr"],
        hr_source=sources["hr"],
        config=config,
        notes=notes,
    )


def _check_keys(lr_index: np.ndarray, hr_times: FrameTimes, hr_name: str) -> None:
    """Refuse two HR frames on one LR frame and fewer than 2 keys (the fusion needs both)."""
    if lr_index.size < 2:
        raise DualCameraError(
            f"{hr_name}: {lr_index.size} HR frame(s) matched; the fusion needs at least 2 keys"
        )
    steps = np.diff(lr_index)
    if np.any(steps <= 0):
        i = int(np.flatnonzero(steps <= 0)[0])
        numbers = np.asarray(hr_times.frame_numbers)
        raise DualCameraError(
            f"{hr_name}: HR frames {int(numbers[i])} and {int(numbers[i + 1])} both match LR "
            f"frame {int(lr_index[i + 1])} (or go back in time); expected one HR frame per LR "
            "frame at most, in time order (is the HR camera faster than the LR one?)"
        )


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


def _transform(prepared: PreparedPair, lr_index: np.ndarray, progress: Progress) -> Any:
    """(transform, registration or None, source) by the config: a given transform, a file,
    a calibration target pair, or an estimate from the keys and their LR frames."""
    from napari_xfusion.core import registration as reg

    config = prepared.config
    if config.transform is not None:
        if isinstance(config.transform, Path):
            return reg.CameraTransform.load(config.transform), None, f"file {config.transform}"
        return config.transform, None, "given"
    if config.target_lr is not None:
        from napari_xfusion.core.io import read_stack

        _say(progress, "estimating the transform from the calibration target")
        notes: list[str] = []
        lr_t, _ = _unit(
            read_stack(config.target_lr, role="--target-lr")[:1],
            str(config.target_lr),
            "LR target",
            notes,
        )
        hr_t, _ = _unit(
            read_stack(config.target_hr, role="--target-hr")[:1],
            str(config.target_hr),
            "HR target",
            notes,
        )
        found = reg.estimate_from_target(hr_t[0], lr_t[0])
        return found.transform, found, f"calibration target {config.target_hr.name}"
    _say(progress, f"estimating the transform from {lr_index.size} keys")
    found = reg.estimate_transform(
        prepared.hr, prepared.lr[lr_index], model=config.model, allow_flip=config.allow_flip
    )
    return found.transform, found, "estimated from the keys"


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

    Raises
    ------
    RegistrationError
        The residual misregistration is above ``config.max_residual_lr_px`` (names the
        numbers), or the estimate failed.
    TimingError
        The refined offset moves a key past the tolerance of every LR frame.
    """
    from napari_xfusion.core.cameras import match_frames, refine_time_offset
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.registration import RegistrationError, measure_residual

    config = prepared.config
    match, lr_index = prepared.match, prepared.lr_index
    interval = float(match.lr_interval_s)
    notes = list(prepared.notes)
    if transform is not None:
        chosen: Any = (transform, None, "adjusted")
    else:
        chosen = _transform(prepared, lr_index, progress)
    refinement, correction, rematched = None, 0.0, False
    for attempt in range(3):
        tf, registration, source = chosen
        overlap = None if registration is None else registration.overlap_lr
        keys = _resample(prepared, tf, overlap)
        y0, y1, x0, x1 = (int(v) for v in keys.lr_crop)
        lr_crop = prepared.lr[:, y0:y1, x0:x1]
        hr_grid = np.asarray(keys.hr_on_grid, dtype=np.float32)
        binned = bin_frames(hr_grid)
        gain, offset = fit_intensity(binned, lr_crop[lr_index])
        if not config.refine_time or attempt == 2:
            break
        _say(progress, "refining the time offset from the images")
        refinement = refine_time_offset(
            lr_crop,
            np.clip(gain * binned + offset, 0.0, 1.0),
            lr_index,
            search_frames=config.search_frames,
        )
        residual_frames = np.asarray(match.residual_frames, dtype=np.float64)
        # The keys' true LR times are lr_index + offset; the metadata said lr_index + residual:
        # the HR clock is off by the mean difference. Re-match with it corrected.
        correction += float(refinement.offset_frames - residual_frames.mean())
        match = match_frames(
            prepared.hr_times,
            prepared.lr_times,
            tolerance_frames=config.tolerance_frames,
            offset_s=config.trigger_delay_s + correction * interval,
        )
        new_index = np.asarray(match.lr_index, dtype=np.int64)
        if np.array_equal(new_index, lr_index):
            break
        _check_keys(new_index, prepared.hr_times, prepared.hr_source)
        rematched, lr_index = True, new_index
        _say(progress, "keys moved to other LR frames: registering again")
        if registration is not None and config.target_lr is None:
            chosen = _transform(prepared, lr_index, progress)
    hr_keys = np.clip(gain * hr_grid + offset, 0.0, 1.0).astype(np.float32)
    # Measured the same way whatever the transform's source (estimate, file, hand-adjusted).
    median, per_key = measure_residual(hr_keys, lr_crop[lr_index])
    report = _report(prepared, match, lr_index, refinement, correction, rematched)
    report.transform_source, report.model = source, config.model
    report.transform = dict(tf.params())
    report.matrix = np.asarray(tf.matrix, dtype=float).tolist()
    report.residual_lr_px = float(median)
    report.per_key_residual_lr_px = [float(v) for v in np.atleast_1d(per_key)]
    report.max_residual_lr_px = config.max_residual_lr_px
    report.lr_crop = (y0, y1, x0, x1)
    report.valid_fraction = float(np.mean(keys.valid_fraction))
    report.hr_gain, report.hr_offset = gain, offset
    report.notes = notes
    if not np.isfinite(median) or median > config.max_residual_lr_px:
        raise RegistrationError(
            f"{prepared.hr_source}: residual misregistration {median:.3f} LR px (per key "
            f"{', '.join(f'{v:.2f}' for v in report.per_key_residual_lr_px)}) is above "
            f"{config.max_residual_lr_px:g} LR px: too poor to fuse ({source}); check the "
            "transform (a calibration target, --model affine) or raise the limit"
        )
    return AlignedPair(
        lr=np.ascontiguousarray(lr_crop, dtype=np.float32),
        hr_keys=hr_keys,
        key_indices=lr_index.copy(),
        transform=tf,
        report=report,
        lr_normalisation=prepared.lr_normalisation,
    )


def _report(
    prepared: PreparedPair,
    match: FrameMatch,
    lr_index: np.ndarray,
    refinement: Any,
    correction: float,
    rematched: bool,
) -> AlignmentReport:
    interval = float(match.lr_interval_s)
    residual = np.asarray(prepared.match.residual_frames, dtype=np.float64)
    final = np.asarray(match.residual_frames, dtype=np.float64)
    report = AlignmentReport(
        lr_source=prepared.lr_source,
        hr_source=prepared.hr_source,
        lr_times_source=str(prepared.lr_times.source),
        hr_times_source=str(prepared.hr_times.source),
        lr_interval_s=interval,
        hr_interval_s=float(prepared.hr_times.interval_s),
        n_lr_frames=int(prepared.lr.shape[0]),
        n_hr_frames=int(prepared.hr.shape[0]),
        lr_shape=(int(prepared.lr.shape[1]), int(prepared.lr.shape[2])),
        hr_frame_numbers=[int(v) for v in prepared.hr_times.frame_numbers],
        key_indices=[int(v) for v in lr_index],
        metadata_residual_ns=[float(v) * 1e9 for v in prepared.match.residual_s],
        metadata_residual_frames=[float(v) for v in residual],
        trigger_delay_s=prepared.config.trigger_delay_s,
        lr_pixel_um=prepared.config.lr_pixel_um,
        lr_normalisation=None
        if prepared.lr_normalisation is None
        else prepared.lr_normalisation.to_dict(),
        hr_normalisation=None
        if prepared.hr_normalisation is None
        else prepared.hr_normalisation.to_dict(),
    )
    if refinement is None:
        report.key_times_frames = [float(i + r) for i, r in zip(lr_index, final, strict=True)]
        return report
    report.refined = True
    # After the last re-match, the corrected metadata puts key j at lr_index + final[j].
    report.key_times_frames = [float(i + r) for i, r in zip(lr_index, final, strict=True)]
    report.subframe_offset_frames = float(np.mean(final))
    report.per_key_offset_frames = [float(v) for v in refinement.per_key_offset_frames]
    conf = getattr(refinement, "confidence", None)
    report.refinement_confidence = None if conf is None else float(conf)
    report.clock_correction_frames = float(correction)
    report.rematched = rematched
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
