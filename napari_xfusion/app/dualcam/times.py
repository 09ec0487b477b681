"""The time side of the alignment: each camera's stack and frame times, from its metadata
file, a ``.cine`` or a user-given rate (:mod:`napari_xfusion.core.cameras` does the reading)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion.app.dualcam.config import DualCameraError

if TYPE_CHECKING:
    from napari_xfusion.core.cameras import FrameTimes

__all__ = ["METADATA_SUFFIXES", "find_metadata", "load_camera", "camera_times"]

METADATA_SUFFIXES = (".xml", ".cine", ".ini")
"""Camera metadata files looked for beside a stack (Phantom XML, Phantom cine, Shimadzu)."""


def find_metadata(stack: Path) -> Path | None:
    """The metadata file beside ``stack``: same stem (``hr.tif`` -> ``hr.xml`` / ``hr.cine`` /
    ``hr.ini``); for a folder of frames, ``folder.xml`` beside it or the one metadata file
    inside it. None when there is none; several candidates -> :class:`DualCameraError`."""
    if stack.suffix.lower() == ".cine":
        return stack
    if stack.is_dir():
        found = [stack.with_name(stack.name + s) for s in METADATA_SUFFIXES]
        found = [p for p in found if p.is_file()]
        if not found:
            found = sorted(
                p for p in stack.iterdir() if p.suffix.lower() in METADATA_SUFFIXES and p.is_file()
            )
    else:
        found = [stack.with_suffix(s) for s in METADATA_SUFFIXES]
        found = [p for p in found if p.is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DualCameraError(
            f"{stack}: several camera metadata files beside it ({names}); choose one "
            "(--lr-times / --hr-times)"
        )
    return found[0] if found else None


def load_camera(path: Path, role: str) -> tuple[np.ndarray, FrameTimes | None]:
    """A camera's ``(N, H, W)`` stack, and its times when the file carries them (``.cine``)."""
    from napari_xfusion.core.io import read_stack

    if path.suffix.lower() == ".cine":
        from napari_xfusion.core.cameras import read_cine

        frames, times = read_cine(path)
        return np.asarray(frames), times
    return read_stack(path, role=role), None


def camera_times(
    n_frames: int,
    *,
    role: str,
    stack: Path | None,
    times_file: Path | None,
    rate_hz: float | None,
    carried: FrameTimes | None = None,
    rate_option: str,
    times_option: str,
) -> FrameTimes:
    """One camera's frame times: an explicit ``times_file``, else an explicit ``rate_hz``,
    else what the stack carries (``.cine``) or the metadata file beside it; checked against
    the stack's ``n_frames``. Nothing found -> :class:`DualCameraError` saying what to give."""
    from napari_xfusion.core.cameras import frame_times_from_rate, read_frame_times

    source: Any
    if times_file is not None:
        times, source = read_frame_times(times_file), times_file
    elif rate_hz is not None:
        times, source = frame_times_from_rate(n_frames, rate_hz), f"{rate_option} {rate_hz:g}"
    elif carried is not None:
        times, source = carried, stack
    else:
        found = find_metadata(stack) if stack is not None else None
        if found is None:
            if stack is None:
                where = f"{role}: no frame times (an array has no metadata file beside it)"
            else:
                looked = (
                    f" (looked for {', '.join(stack.stem + s for s in METADATA_SUFFIXES)})"
                    if not stack.is_dir()
                    else ""
                )
                where = f"{role} {stack}: no camera metadata beside it{looked}"
            raise DualCameraError(
                f"{where} and no frame rate given: give {times_option} FILE (Phantom "
                f".xml/.cine, Shimadzu .ini) or {rate_option} HZ"
            )
        times, source = read_frame_times(found), found
    if len(times) != n_frames:
        raise DualCameraError(
            f"{role} {source}: has {len(times)} frame times but the stack "
            f"{stack if stack is not None else ''} has {n_frames} frames; expected one time per "
            "frame (the metadata of this very recording)"
        )
    return times
