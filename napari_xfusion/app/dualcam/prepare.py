"""Both cameras read, normalised and matched in time: :func:`prepare_pair` (cheap: the GUI
does it once), before :func:`~napari_xfusion.app.dualcam.align_prepared` registers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion.app.dualcam.config import DualCameraConfig, DualCameraError
from napari_xfusion.app.dualcam.times import camera_times, load_camera

if TYPE_CHECKING:
    from napari_xfusion.core.cameras import FrameMatch, FrameTimes
    from napari_xfusion.core.normalise import Normalisation

__all__ = ["PreparedPair", "prepare_pair"]

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

    Arrays win over the config's paths (GUI layers; a path given with an array, e.g. the file
    a layer was opened from, is where its metadata is looked for); ``lr_times`` / ``hr_times``
    win over the config's times files, rates and metadata found beside the stacks.

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
    times: dict[str, FrameTimes] = {}
    for key in ("lr", "hr"):
        path = getattr(config, key)
        if given[key] is not None:
            times[key] = given[key]
            continue
        times[key] = camera_times(
            int(stacks[key].shape[0]),
            role=f"--{key}",
            # An array's metadata is looked for beside the config's path when it has one (a
            # layer opened from a file).
            stack=Path(path) if path is not None else None,
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
        drop_outside=config.drop_outside,
    )
    hr_stack = stacks["hr"]
    dropped = np.asarray(getattr(match, "dropped", ()), dtype=np.int64)
    if dropped.size:
        # Keep only the HR frames recorded while the LR camera was: every later step (the
        # refinement's re-match too) sees exactly the keys.
        kept = np.asarray(match.hr_index, dtype=np.int64)
        numbers = np.asarray(times["hr"].frame_numbers)[dropped]
        notes.append(
            f"{sources['hr']}: {dropped.size} HR frame(s) recorded outside the LR recording "
            f"dropped (numbers {', '.join(str(int(n)) for n in numbers[:8])}"
            f"{' ...' if numbers.size > 8 else ''})"
        )
        hr_stack, times["hr"] = hr_stack[kept], times["hr"].select(kept)
        match = match_frames(
            times["hr"], times["lr"], tolerance_frames=config.tolerance_frames,
            offset_s=config.trigger_delay_s,
        )  # fmt: skip
    _check_keys(np.asarray(match.lr_index), times["hr"], sources["hr"])
    lr01, lr_norm = _unit(stacks["lr"], sources["lr"], "LR", notes)
    hr01, hr_norm = _unit(hr_stack, sources["hr"], "HR", notes)
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
