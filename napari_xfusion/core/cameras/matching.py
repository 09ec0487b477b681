"""Pair each HR frame with the LR frame taken at the same time: :func:`match_frames`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_xfusion.core.cameras.errors import TimingError
from napari_xfusion.core.cameras.times import FrameTimes, format_seconds


@dataclass(frozen=True, eq=False)
class FrameMatch:
    """The LR frame of each (kept) HR frame.

    Attributes
    ----------
    lr_index : ndarray, int64, shape (K,)
        Index in the LR stack of the LR frame nearest in time to each HR frame.
    residual_s : ndarray, float64, shape (K,)
        LR frame time minus (HR frame time + offset), seconds.
    residual_frames : ndarray, float64, shape (K,)
        The same in LR frame intervals.
    lr_interval_s : float
        The LR frame interval used (median spacing).
    hr_index : ndarray, int64, shape (K,)
        Index in the HR stack of each matched HR frame (all of them unless
        ``drop_outside`` dropped some).
    hr_frame_numbers : ndarray, int64, shape (K,)
        The HR camera's numbers of those frames.
    offset_s : float
        The offset added to the HR times.
    dropped : ndarray, int64
        Indices of HR frames dropped as recorded outside the LR recording.
    """

    lr_index: np.ndarray
    residual_s: np.ndarray
    residual_frames: np.ndarray
    lr_interval_s: float
    hr_index: np.ndarray
    hr_frame_numbers: np.ndarray
    offset_s: float = 0.0
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.lr_index.size)

    @property
    def max_abs_residual_frames(self) -> float:
        """Largest |residual| in LR frames (0 when empty)."""
        return float(np.abs(self.residual_frames).max()) if len(self) else 0.0

    def refined(self, offset_frames: float, n_lr_frames: int) -> FrameMatch:
        """The match after an image-based refinement (``TimeRefinement.offset_frames``): each
        key belongs at LR time ``lr_index + offset_frames`` (frames), so it moves to the
        nearest LR frame of that time and its residual becomes what is left over.

        Raises
        ------
        TimingError
            When a key would leave the LR stack or two keys would share an LR frame.
        """
        offset = float(offset_frames)
        true_index = self.lr_index + offset
        new_index = np.round(true_index).astype(np.int64)
        outside = (new_index < 0) | (new_index >= int(n_lr_frames))
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise TimingError(
                f"HR frame {self.hr_frame_numbers[k]} moved by {offset:+.3f} frames lands on LR "
                f"frame {new_index[k]}, outside the {int(n_lr_frames)} LR frames"
            )
        same = np.flatnonzero(np.diff(np.sort(new_index)) == 0)
        if same.size:
            raise TimingError(f"two HR frames land on LR frame {np.sort(new_index)[same[0]]} "
                              f"after moving by {offset:+.3f} frames")  # fmt: skip
        residual_frames = new_index - true_index
        return FrameMatch(
            lr_index=new_index,
            residual_s=residual_frames * self.lr_interval_s,
            residual_frames=residual_frames,
            lr_interval_s=self.lr_interval_s,
            hr_index=self.hr_index,
            hr_frame_numbers=self.hr_frame_numbers,
            offset_s=self.offset_s
            + float(np.median(self.residual_s))
            + offset * self.lr_interval_s,
            dropped=self.dropped,
        )

    def report(self, max_lines: int = 20) -> str:
        """Human summary: one line per HR frame (at most ``max_lines``), residuals in ns and
        LR frames, then the extremes."""
        lines = [
            f"{len(self)} HR frames matched to LR frames (LR interval "
            f"{format_seconds(self.lr_interval_s)[1:]}, HR offset "
            f"{format_seconds(self.offset_s)})"
        ]
        shown = range(len(self)) if len(self) <= max_lines else range(max_lines)
        for k in shown:
            lines.append(
                f"  HR frame {self.hr_frame_numbers[k]} (#{self.hr_index[k]}) -> LR frame "
                f"{self.lr_index[k]}: residual {round(self.residual_s[k] * 1e9):+d} ns "
                f"({self.residual_frames[k]:+.3f} frames)"
            )
        if len(self) > max_lines:
            lines.append(f"  ... {len(self) - max_lines} more")
        if len(self):
            worst = int(np.argmax(np.abs(self.residual_s)))
            lines.append(
                f"  max |residual| {abs(round(self.residual_s[worst] * 1e9))} ns "
                f"({abs(self.residual_frames[worst]):.3f} frames) at HR frame "
                f"{self.hr_frame_numbers[worst]}; median "
                f"{round(float(np.median(self.residual_s)) * 1e9):+d} ns"
            )
        if self.dropped.size:
            lines.append(
                f"  {self.dropped.size} HR frames recorded outside the LR recording were dropped"
            )
        return "\n".join(lines)


def match_frames(
    hr: FrameTimes,
    lr: FrameTimes,
    *,
    tolerance_frames: float = 0.5,
    offset_s: float = 0.0,
    drop_outside: bool = False,
) -> FrameMatch:
    """Match each HR frame to the LR frame nearest in time.

    The HR frame at ``t`` is compared with LR frames at ``t + offset_s`` (``offset_s``: the
    time on the LR axis of the HR axis' zero, e.g. the trigger delay between the cameras).

    Parameters
    ----------
    hr, lr : FrameTimes
        The two cameras' frame times (LR needs >= 2 frames for its interval).
    tolerance_frames : float
        Largest accepted |residual| in LR frame intervals (> 0; 0.5 accepts any HR frame
        inside the LR recording).
    offset_s : float
        Added to the HR times.
    drop_outside : bool
        Drop HR frames that lie before the first / after the last LR frame by more than the
        tolerance (a Phantom usually records longer than a Shimadzu) instead of raising.

    Returns
    -------
    FrameMatch

    Raises
    ------
    TimingError
        Naming the first HR frame (number and time) with no LR frame within the tolerance,
        or two HR frames that match the same LR frame.
    """
    tolerance = float(tolerance_frames)
    if not tolerance > 0:
        raise ValueError(f"tolerance_frames must be > 0, got {tolerance_frames!r}")
    if len(lr) < 2:
        raise TimingError(f"{lr.source}: needs at least 2 LR frames to know the LR frame "
                          f"interval, got {len(lr)}")  # fmt: skip
    interval = lr.interval_s
    lr_t = lr.times_s
    hr_t = hr.times_s + float(offset_s)
    right = np.clip(np.searchsorted(lr_t, hr_t), 1, len(lr) - 1)
    left = right - 1
    nearest = np.where(np.abs(lr_t[left] - hr_t) <= np.abs(lr_t[right] - hr_t), left, right)
    residual = lr_t[nearest] - hr_t
    residual_frames = residual / interval
    bad = np.abs(residual_frames) > tolerance
    keep = np.ones(len(hr), dtype=bool)
    if drop_outside:
        margin = tolerance * interval
        outside = (hr_t < lr_t[0] - margin) | (hr_t > lr_t[-1] + margin)
        keep &= ~outside
        bad &= ~outside
        if not keep.any():
            raise TimingError(
                f"no HR frame of {hr.source} lies within the LR recording of {lr.source} "
                f"(HR {format_seconds(hr_t[0])} .. {format_seconds(hr_t[-1])} with offset "
                f"{format_seconds(offset_s)}, LR {format_seconds(lr_t[0])} .. "
                f"{format_seconds(lr_t[-1])}): check the offset / trigger delay"
            )
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        where = ""
        if hr_t[k] < lr_t[0] or hr_t[k] > lr_t[-1]:
            where = (
                f"; it was recorded outside the LR recording ({format_seconds(lr_t[0])} .. "
                f"{format_seconds(lr_t[-1])}): check the offset / trigger delay, or drop such "
                "frames"
            )
        raise TimingError(
            f"HR frame {hr.frame_numbers[k]} (index {k}) of {hr.source} at "
            f"{format_seconds(hr.times_s[k])} (+ offset {format_seconds(offset_s)}) matches no "
            f"LR frame of {lr.source} within {tolerance:g} LR frames: the nearest, LR frame "
            f"{nearest[k]}, is {abs(residual_frames[k]):.3f} frames "
            f"({abs(round(residual[k] * 1e9))} ns) away{where}"
        )
    hr_index = np.flatnonzero(keep).astype(np.int64)
    chosen = nearest[hr_index].astype(np.int64)
    order = np.argsort(chosen, kind="stable")
    same = np.flatnonzero(np.diff(chosen[order]) == 0)
    if same.size:
        a, b = hr_index[order[same[0]]], hr_index[order[same[0] + 1]]
        raise TimingError(
            f"HR frames {hr.frame_numbers[a]} and {hr.frame_numbers[b]} of {hr.source} both "
            f"match LR frame {chosen[order[same[0]]]}: the HR camera runs faster than the LR "
            "one here; keep one HR frame per LR frame"
        )
    return FrameMatch(
        lr_index=chosen,
        residual_s=residual[hr_index],
        residual_frames=residual_frames[hr_index],
        lr_interval_s=float(interval),
        hr_index=hr_index,
        hr_frame_numbers=hr.frame_numbers[hr_index],
        offset_s=float(offset_s),
        dropped=np.flatnonzero(~keep).astype(np.int64),
    )
