"""Per-viewer live store of fusion results that the docks share.

The fusion widget writes frames into layers; the attention and metrics docks only need the
numbers. One :class:`FusionSession` per viewer holds them in the application layer's
:class:`~napari_xfusion.app.results.ResultTable` (the rows, summaries and CSV the CLI writes
too) and announces changes with psygnal signals (emitted on the GUI thread, by the fusion
widget's renderer), so each dock works whether it was opened by the widget or from the
Plugins menu, before or after a run.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from napari_xfusion.app.results import FrameRow, ResultTable

if TYPE_CHECKING:
    import napari

__all__ = ["FrameRecord", "FusionSession", "session_for"]

FrameRecord = FrameRow
"""The numbers of one reconstructed frame of one method (the app layer's row)."""


@dataclass
class _Run:
    n_frames: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    methods: tuple[str, ...] = ()
    has_truth: bool = False
    time_scale: float = 1.0  # napari world time of frame t: time_shift + time_scale * t
    time_shift: float = 0.0
    time_unit: str = "pixel"  # napari's unit of the time axis ("pixel": frames, no unit)


class FusionSession:
    """Results of the runs in one viewer: one :class:`ResultTable` over every method."""

    started = Signal(object)  # the session itself, after a run with new inputs began
    frames_added = Signal(object)  # list of FrameRow: the frames shown in one GUI update

    def __init__(self) -> None:
        self.run = _Run()
        self.table = ResultTable()

    def begin(
        self,
        n_frames: int,
        keys: Sequence[int],
        methods: Sequence[str],
        *,
        has_truth: bool,
        fresh: Sequence[str] = (),
        time: tuple[float, float] = (1.0, 0.0),
        time_unit: str = "pixel",
    ) -> None:
        """A run of ``methods`` starts; the rows of the ``fresh`` ones are forgotten (their
        layers were cleared: new inputs), those of other methods stay with their layers.
        ``time`` is the (scale, translate) of the result layers' time axis."""
        self.run = _Run(
            int(n_frames),
            np.asarray(keys, np.int64),
            tuple(methods),
            has_truth,
            float(time[0]),
            float(time[1]),
            str(time_unit),
        )
        self._rebuild(drop=set(fresh))
        self.started.emit(self)

    def _rebuild(self, drop: set[str]) -> None:
        kept = [r for r in self.table.rows() if r.method not in drop]
        self.table = ResultTable(self.run.keys)
        self.table.extend(kept)

    def forget(self, method: str) -> None:
        """Drop the rows of ``method`` (its layer was deleted) and tell the docks."""
        if method in self.table.methods:
            self._rebuild(drop={method})
            self.started.emit(self)

    def add_many(self, rows: Sequence[FrameRow]) -> list[FrameRow]:
        """Record rows (the app layer's, one per frame and method) and announce them in one
        signal (the docks redraw once per batch, not once per frame)."""
        rows = [r for r in rows if r is not None]
        self.table.extend(rows)
        if rows:
            self.frames_added.emit(rows)
        return rows

    def world_time(self, index: int) -> float:
        """napari's world coordinate of frame ``index`` on the results' time axis."""
        return self.run.time_shift + self.run.time_scale * index

    # --- views for the docks ----------------------------------------------------------

    def methods(self) -> list[str]:
        """Methods with at least one recorded frame, in first-run order."""
        return self.table.methods

    def ordered(self, method: str) -> list[FrameRow]:
        """Rows of ``method`` by frame index (attention normalised over all of them)."""
        return self.table.rows(method)

    def attention_series(self, method: str) -> dict[str, np.ndarray]:
        """Frame indices and backward/forward scores of ``method`` (raw and normalised).

        The normalised scores are the table's: recomputed from all raw scores recorded so
        far (grouped by the preceding key, divided by the score at the key's own time), so
        frames that arrive in any order, over several runs, give the same curve.
        """
        rows = [r for r in self.ordered(method) if r.has_attention]
        out: dict[str, np.ndarray] = {"index": np.array([r.index for r in rows], dtype=np.int64)}
        for name in ("backward", "forward", "backward_norm", "forward_norm"):
            out[name] = np.array([getattr(r, name) for r in rows], dtype=np.float64)
        return out


_SESSIONS: weakref.WeakKeyDictionary[Any, FusionSession] = weakref.WeakKeyDictionary()


def session_for(viewer: napari.Viewer) -> FusionSession:
    """The :class:`FusionSession` of ``viewer`` (created on first use)."""
    try:
        return _SESSIONS[viewer]
    except KeyError:
        session = _SESSIONS[viewer] = FusionSession()
        return session
