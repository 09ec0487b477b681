"""Frame times of one camera: :class:`FrameTimes` and :func:`frame_times_from_rate`.

Times are float64 seconds on the camera's own time axis, **t = 0 at the camera's trigger**
when its metadata says where the trigger is (Phantom: frame number 0 / ``TriggerTime``;
Shimadzu: its ``ImageRelative`` zero), else at its first frame. Two cameras are put on one axis
by the offset between their triggers (``match_frames(..., offset_s=)``) or, with the Phantom's
event input wired to the other camera's record signal, by :meth:`FrameTimes.since_first_event`
(how the paper's reference code pairs a Phantom with a Shimadzu). Relative float64 seconds keep
sub-ns precision over any recording (absolute 1970-based seconds would not: 1.7e9 s has a
resolution of 240 ns), so the absolute clock time of t = 0 is kept apart as an integer
(:attr:`FrameTimes.origin_unix_ns`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from napari_xfusion.core.cameras.errors import CameraMetadataError


def format_seconds(t_s: float) -> str:
    """``t_s`` seconds as a short signed string at ns resolution: ``+250 ns``,
    ``-12.345 us``, ``+1.234567 ms``, ``+2.000000001 s``."""
    if not math.isfinite(t_s):
        return str(t_s)
    ns = round(t_s * 1e9)
    sign = "-" if ns < 0 else "+"
    ns = abs(ns)
    if ns < 1000:
        return f"{sign}{ns} ns"
    if ns < 1_000_000:
        return f"{sign}{ns / 1e3:.3f} us"
    if ns < 1_000_000_000:
        return f"{sign}{ns / 1e6:.6f} ms"
    return f"{sign}{ns / 1e9:.9f} s"


@dataclass(frozen=True, eq=False)
class FrameTimes:
    """When each frame of one camera's stack was taken.

    Parameters
    ----------
    times_s : ndarray, float64, shape (N,)
        Time of each frame of the stack, in seconds, strictly increasing (see the module
        docstring for the zero).
    frame_numbers : ndarray, int64, shape (N,)
        The camera's own number of each frame (Phantom: relative to the trigger, negative
        before it; Shimadzu: 1 .. N).
    source : str
        Where the times came from: the file name, or ``"user rate"``; error messages name it.
    trigger_frame : int or None
        Index (into ``times_s``) of the frame at the trigger, when the file says.
    exposure_s : float or None
        Exposure time per frame in seconds (the median when it varies), when known.
    camera : str
        Camera model or kind (``"Phantom"``, ``"Shimadzu HPV-X2"``), for reports.
    event : ndarray of bool, shape (N,), or None
        The camera's event-input flag per frame (Phantom XML ``E`` flag), when recorded.
    origin_unix_ns : int or None
        Absolute clock time of t = 0 in ns since 1970 (as the camera wrote it, read as UTC).
    """

    times_s: np.ndarray
    frame_numbers: np.ndarray
    source: str
    trigger_frame: int | None = None
    exposure_s: float | None = None
    camera: str = ""
    event: np.ndarray | None = None
    origin_unix_ns: int | None = None

    def __post_init__(self) -> None:
        times = np.array(self.times_s, dtype=np.float64).reshape(-1)
        numbers = np.asarray(self.frame_numbers)
        if numbers.dtype.kind not in "iu" and numbers.size:
            if not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers)):
                raise CameraMetadataError(self.source, "frame numbers must be integers",
                                          field="frame_numbers")  # fmt: skip
        numbers = numbers.astype(np.int64).reshape(-1)
        if times.size == 0:
            raise CameraMetadataError(self.source, "no frame times (0 frames)", field="times")
        if numbers.shape != times.shape:
            raise CameraMetadataError(
                self.source,
                f"{times.size} frame times but {numbers.size} frame numbers",
                field="frame_numbers",
            )
        bad = np.flatnonzero(~np.isfinite(times))
        if bad.size:
            raise CameraMetadataError(
                self.source,
                f"frame time of frame {numbers[bad[0]]} is {times[bad[0]]}: expected a finite "
                "number of seconds",
                field="times",
            )
        steps = np.diff(times)
        back = np.flatnonzero(steps <= 0)
        if back.size:
            i = int(back[0])
            raise CameraMetadataError(
                self.source,
                f"frame times are not increasing: frame {numbers[i + 1]} at "
                f"{format_seconds(times[i + 1])} comes after frame {numbers[i]} at "
                f"{format_seconds(times[i])}",
                field="times",
            )
        event = self.event
        if event is not None:
            event = np.asarray(event, dtype=bool).reshape(-1)
            if event.shape != times.shape:
                raise CameraMetadataError(
                    self.source, f"{event.size} event flags for {times.size} frames",
                    field="event",
                )  # fmt: skip
        trigger = self.trigger_frame
        if trigger is not None:
            trigger = int(trigger)
            if not 0 <= trigger < times.size:
                raise CameraMetadataError(
                    self.source,
                    f"trigger frame index {trigger} outside the {times.size} frames",
                    field="trigger_frame",
                )
        exposure = self.exposure_s
        if exposure is not None:
            exposure = float(exposure)
            if not math.isfinite(exposure) or exposure < 0:
                raise CameraMetadataError(
                    self.source, f"exposure {exposure!r} s: expected a finite time >= 0",
                    field="exposure",
                )  # fmt: skip
        times.setflags(write=False)
        numbers.setflags(write=False)
        if event is not None:
            event.setflags(write=False)
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "frame_numbers", numbers)
        object.__setattr__(self, "event", event)
        object.__setattr__(self, "trigger_frame", trigger)
        object.__setattr__(self, "exposure_s", exposure)
        if self.origin_unix_ns is not None:
            object.__setattr__(self, "origin_unix_ns", int(self.origin_unix_ns))

    def __len__(self) -> int:
        return int(self.times_s.size)

    @property
    def interval_s(self) -> float:
        """Median spacing of the frames in seconds (NaN for a single frame)."""
        if self.times_s.size < 2:
            return math.nan
        return float(np.median(np.diff(self.times_s)))

    @property
    def rate_hz(self) -> float:
        """Frame rate in Hz from :attr:`interval_s` (NaN for a single frame)."""
        return 1.0 / self.interval_s

    def shifted(self, offset_s: float) -> FrameTimes:
        """The same frames with ``offset_s`` added to every time (the origin moves back)."""
        origin = self.origin_unix_ns
        if origin is not None:
            origin -= round(offset_s * 1e9)
        return replace(self, times_s=self.times_s + float(offset_s), origin_unix_ns=origin)

    def since_first_event(self) -> FrameTimes:
        """Times re-zeroed on the first frame with the event flag set.

        With the Phantom's event input fed by the other camera's recording signal, that frame
        is where the other camera starts: the paper's code pairs the two cameras this way.

        Raises
        ------
        CameraMetadataError
            When the file recorded no event flags, or none is set.
        """
        if self.event is None or not self.event.any():
            what = "has no event flags" if self.event is None else "has no frame flagged"
            raise CameraMetadataError(
                self.source,
                f"{what} (event input 'E'): cannot synchronise on the other camera's "
                "record signal; give the trigger delay instead",
                field="event",
            )
        first = int(np.argmax(self.event))
        return self.shifted(-float(self.times_s[first]))

    def select(self, indices: np.ndarray | slice) -> FrameTimes:
        """The times of a subset of the frames (e.g. the frames saved as HR keys)."""
        idx = np.arange(len(self))[indices]
        trigger = self.trigger_frame
        new_trigger = None
        if trigger is not None and trigger in idx:
            new_trigger = int(np.flatnonzero(idx == trigger)[0])
        return replace(
            self,
            times_s=self.times_s[idx],
            frame_numbers=self.frame_numbers[idx],
            event=None if self.event is None else self.event[idx],
            trigger_frame=new_trigger,
        )

    def check_count(self, n_frames: int | None) -> FrameTimes:
        """Return self; raise :class:`CameraMetadataError` when ``n_frames`` (the image stack's
        frame count) is given and differs from the number of frame times."""
        if n_frames is not None and int(n_frames) != len(self):
            raise CameraMetadataError(
                self.source,
                f"holds times of {len(self)} frames but the image stack has {int(n_frames)} "
                "frames: expected one time per frame (is this the metadata of that stack?)",
                field="frame count",
            )
        return self

    def describe(self) -> str:
        """One line for reports: camera, frame count, rate, span."""
        rate = self.rate_hz
        rate_txt = "single frame" if not math.isfinite(rate) else f"{rate:,.1f} fps"
        name = f"{self.camera} " if self.camera else ""
        return (
            f"{name}{self.source}: {len(self)} frames, {rate_txt}, "
            f"{format_seconds(self.times_s[0])} .. {format_seconds(self.times_s[-1])}"
        )


def frame_times_from_rate(
    n_frames: int,
    rate_hz: float,
    *,
    trigger_delay_s: float = 0.0,
    first_frame_number: int = 0,
    source: str = "user rate",
    camera: str = "",
    exposure_s: float | None = None,
) -> FrameTimes:
    """Frame times of a camera running at a constant, user-given rate.

    Frame number ``n`` is taken at ``trigger_delay_s + n / rate_hz``: frame number 0 is the
    trigger frame, ``trigger_delay_s`` late (the delay between the common trigger and this
    camera's frame 0; negative when the camera starts early).

    Parameters
    ----------
    n_frames : int
        Number of frames N (>= 1).
    rate_hz : float
        Frames per second (> 0).
    trigger_delay_s : float
        Time of frame number 0 in seconds.
    first_frame_number : int
        Camera number of the stack's first frame (e.g. -100 for 100 frames before trigger).
    source, camera : str
        Names for reports and errors.
    exposure_s : float, optional
        Exposure per frame in seconds.

    Returns
    -------
    FrameTimes
        ``trigger_frame`` is the index of frame number 0 when the stack holds it.
    """
    if int(n_frames) != n_frames or n_frames < 1:
        raise CameraMetadataError(None, f"{source}: frame count {n_frames!r}: expected an "
                                  "integer >= 1", field="n_frames")  # fmt: skip
    rate = float(rate_hz)
    if not math.isfinite(rate) or rate <= 0:
        raise CameraMetadataError(None, f"{source}: frame rate {rate_hz!r} Hz: expected a "
                                  "finite rate > 0", field="rate_hz")  # fmt: skip
    delay = float(trigger_delay_s)
    if not math.isfinite(delay):
        raise CameraMetadataError(None, f"{source}: trigger delay {trigger_delay_s!r} s: "
                                  "expected a finite time", field="trigger_delay_s")  # fmt: skip
    numbers = int(first_frame_number) + np.arange(int(n_frames), dtype=np.int64)
    trigger = None
    if numbers[0] <= 0 <= numbers[-1]:
        trigger = int(-numbers[0])
    return FrameTimes(
        times_s=delay + numbers / rate,
        frame_numbers=numbers,
        source=source,
        trigger_frame=trigger,
        exposure_s=exposure_s,
        camera=camera,
    )
