"""Per-viewer record of fusion results that the docks share.

The fusion widget writes frames into layers; the attention and metrics docks only need the
numbers. One :class:`FusionSession` per viewer holds them and announces changes with psygnal
signals (emitted on the GUI thread, by the fusion widget's worker handlers), so each dock
works whether it was opened by the widget or from the Plugins menu, before or after a run.
"""

from __future__ import annotations

import csv
import io
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

if TYPE_CHECKING:
    import napari

__all__ = ["FrameRecord", "FusionSession", "session_for"]

METRICS = ("psnr", "aad", "ssim")


@dataclass
class FrameRecord:
    """The numbers of one reconstructed frame of one method."""

    method: str
    index: int
    seconds: float = math.nan
    metrics: dict[str, float] | None = None
    backward: float | None = None
    forward: float | None = None
    backward_norm: float | None = None
    forward_norm: float | None = None


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


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
    """Results of the runs in one viewer: frames' metrics and attention scores per method."""

    started = Signal(object)  # the session itself, after a run with new inputs began
    frames_added = Signal(object)  # list of FrameRecord: the frames shown in one GUI update

    def __init__(self) -> None:
        self.run = _Run()
        self.records: dict[str, dict[int, FrameRecord]] = {}

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
        """A run of ``methods`` starts; the records of the ``fresh`` ones are forgotten (their
        layers were cleared: new inputs), those of other methods stay with their layers.
        ``time`` is the (scale, translate) of the result layers' time axis."""
        for method in fresh:
            self.records[method] = {}
        self.run = _Run(
            int(n_frames),
            np.asarray(keys, np.int64),
            tuple(methods),
            has_truth,
            float(time[0]),
            float(time[1]),
            str(time_unit),
        )
        for method in methods:
            self.records.setdefault(method, {})
        self.started.emit(self)

    def forget(self, method: str) -> None:
        """Drop the records of ``method`` (its layer was deleted) and tell the docks."""
        if self.records.pop(method, None):
            self.started.emit(self)

    def add(self, result: Any, metrics: dict[str, float] | None) -> FrameRecord:
        """Record the engine's ``FrameResult`` (and its metrics) and announce it."""
        (record,) = self.add_many([(result, metrics)])
        return record

    def add_many(self, items: Sequence[tuple[Any, dict[str, float] | None]]) -> list[FrameRecord]:
        """Record ``(FrameResult, metrics)`` pairs and announce them in one signal (the docks
        redraw once per batch, not once per frame)."""
        records = [self._record(result, metrics) for result, metrics in items]
        if records:
            self.frames_added.emit(records)
        return records

    def _record(self, result: Any, metrics: dict[str, float] | None) -> FrameRecord:
        record = FrameRecord(
            method=result.method,
            index=int(result.index),
            seconds=float(getattr(result, "seconds", math.nan) or math.nan),
            metrics=dict(metrics) if metrics is not None else None,
            backward=_float_or_none(getattr(result, "backward", None)),
            forward=_float_or_none(getattr(result, "forward", None)),
            backward_norm=_float_or_none(getattr(result, "backward_norm", None)),
            forward_norm=_float_or_none(getattr(result, "forward_norm", None)),
        )
        self.records.setdefault(record.method, {})[record.index] = record
        return record

    def world_time(self, index: int) -> float:
        """napari's world coordinate of frame ``index`` on the results' time axis."""
        return self.run.time_shift + self.run.time_scale * index

    # --- views for the docks and the export ---------------------------------------------

    def methods(self) -> list[str]:
        """Methods with at least one recorded frame, in first-run order."""
        return [m for m, frames in self.records.items() if frames]

    def ordered(self, method: str) -> list[FrameRecord]:
        """Records of ``method`` by frame index."""
        return [self.records[method][i] for i in sorted(self.records.get(method, {}))]

    def attention_series(self, method: str) -> dict[str, np.ndarray]:
        """Frame indices and backward/forward scores of ``method`` (raw and normalised).

        The normalised scores are recomputed from all raw scores recorded so far (grouped by
        the preceding key, divided by the score at the key's own time), so frames that arrive
        in any order, over several runs, give the same curve; where that is not possible the
        engine's own normalised values are used.
        """
        records = [r for r in self.ordered(method) if r.backward is not None]
        index = np.array([r.index for r in records], dtype=np.int64)
        out = {
            "index": index,
            "backward": np.array([r.backward for r in records], dtype=np.float64),
            "forward": np.array([r.forward for r in records], dtype=np.float64),
        }
        for name in ("backward", "forward"):
            engine_norm = np.array([getattr(r, f"{name}_norm") for r in records], dtype=np.float64)
            out[f"{name}_norm"] = self._normalised(index, out[name], engine_norm)
        return out

    def _normalised(self, index: np.ndarray, raw: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        if index.size == 0 or self.run.keys.size < 2:
            return fallback
        try:
            from napari_xfusion.core.attention import normalise_scores
        except ImportError:
            return fallback
        norm = np.asarray(normalise_scores(index, raw, self.run.keys), dtype=np.float64)
        return np.where(np.isfinite(norm), norm, fallback)

    def metrics_rows(self) -> list[dict[str, Any]]:
        """One row per (method, frame) with metrics: ``method, frame, psnr, aad, ssim``."""
        rows = []
        for method in self.methods():
            for r in self.ordered(method):
                if r.metrics is not None:
                    rows.append({"method": method, "frame": r.index, **r.metrics})
        return rows

    def metrics_summary(self) -> list[dict[str, Any]]:
        """Per method: frames measured and mean PSNR / AAD / SSIM."""
        rows = []
        for method in self.methods():
            measured = [r.metrics for r in self.ordered(method) if r.metrics is not None]
            if not measured:
                continue
            row: dict[str, Any] = {"method": method, "frames": len(measured)}
            for name in METRICS:
                values = [m[name] for m in measured if math.isfinite(m.get(name, math.nan))]
                row[name] = float(np.mean(values)) if values else math.nan
            rows.append(row)
        return rows

    def attention_rows(self) -> list[dict[str, Any]]:
        """One row per (method, frame) with attention scores, raw and normalised."""
        rows = []
        for method in self.methods():
            series = self.attention_series(method)
            for i, t in enumerate(series["index"]):
                rows.append(
                    {
                        "method": method,
                        "frame": int(t),
                        "backward": series["backward"][i],
                        "forward": series["forward"][i],
                        "backward_norm": series["backward_norm"][i],
                        "forward_norm": series["forward_norm"][i],
                    }
                )
        return rows


def rows_to_csv(rows: Sequence[dict[str, Any]], delimiter: str = ",") -> str:
    """CSV text of ``rows`` (dicts with the same keys); floats with 6 significant digits."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


_SESSIONS: weakref.WeakKeyDictionary[Any, FusionSession] = weakref.WeakKeyDictionary()


def session_for(viewer: napari.Viewer) -> FusionSession:
    """The :class:`FusionSession` of ``viewer`` (created on first use)."""
    try:
        return _SESSIONS[viewer]
    except KeyError:
        session = _SESSIONS[viewer] = FusionSession()
        return session
