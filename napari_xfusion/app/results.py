"""One result schema: per-frame rows, metrics against the truth (computed here, once),
summaries and CSV text, for the CLI, the GUI docks and ``xfusion evaluate`` alike.

Summary rule: per method, the mean *and* median of PSNR / AAD / SSIM over the frames that are
not HR key frames (at a key the method is given the answer); key frames are summarised
separately (``key_*`` columns). A fused frame identical to the truth has an undefined
(infinite) PSNR: it is stored as NaN (blank in a CSV), left out of the PSNR statistics and
counted in ``identical_frames``; no table ever holds ``inf``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["METRICS", "FrameRow", "ResultTable", "format_table", "rows_to_csv_text"]

METRICS = ("psnr", "aad", "ssim")
"""Metric names, in table order (core.metrics on [0, 1] data)."""

ATTENTION = ("backward", "forward", "backward_norm", "forward_norm")

_NAN = math.nan


@dataclass
class FrameRow:
    """The numbers of one reconstructed frame of one method.

    Attributes
    ----------
    method : str; index : int
        Method name and LR time index t.
    is_key : bool
        Whether t is an HR key time.
    seconds : float
        Wall time of the frame (NaN when unknown, e.g. in ``evaluate``).
    psnr, aad, ssim : float
        Against the truth (NaN without truth; PSNR NaN when identical, see ``identical``).
    identical : bool
        The frame equals the truth exactly (PSNR undefined).
    backward, forward, backward_norm, forward_norm : float
        Raw and normalised attention scores (NaN when the method has none).
    """

    method: str
    index: int
    is_key: bool = False
    seconds: float = _NAN
    psnr: float = _NAN
    aad: float = _NAN
    ssim: float = _NAN
    identical: bool = False
    backward: float = _NAN
    forward: float = _NAN
    backward_norm: float = _NAN
    forward_norm: float = _NAN

    @property
    def has_metrics(self) -> bool:
        return math.isfinite(self.aad)

    @property
    def has_attention(self) -> bool:
        return math.isfinite(self.backward) or math.isfinite(self.forward)


def _f(value: Any) -> float:
    """float or NaN (None and non-finite become NaN)."""
    if value is None:
        return _NAN
    value = float(value)
    return value if math.isfinite(value) else _NAN


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def rows_to_csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of dict rows (first row's keys as header); NaN/inf as empty cells, floats
    in full precision (round-trips)."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Plain-text table of ``rows``: ``columns`` are ``(key, header)`` pairs."""
    cells = [[h for _, h in columns]]
    for row in rows:
        line = []
        for key, _ in columns:
            v = row.get(key)
            if isinstance(v, float):
                line.append(f"{v:.4f}" if math.isfinite(v) else "-")
            else:
                line.append("-" if v is None else str(v))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_SUMMARY_TEXT_COLUMNS = (
    ("method", "method"),
    ("frames_between_keys", "frames"),
    *((f"{m}_{stat}", f"{m.upper()} {stat}") for m in METRICS for stat in ("mean", "median")),
    ("key_psnr_mean", "key PSNR"),
)


class ResultTable:
    """Rows of one run (or one evaluation), per method, with metrics and summaries.

    Parameters
    ----------
    key_indices : sequence of int
        The HR key times (for ``is_key``, the summary split and attention normalisation).
    truth_frame : callable, optional
        ``t -> (H, W) float32 in [0, 1]`` (or None); metrics are computed when it is given.
    """

    def __init__(
        self,
        key_indices: Iterable[int] = (),
        truth_frame: Callable[[int], np.ndarray | None] | None = None,
    ) -> None:
        self.key_indices = np.asarray(list(key_indices), dtype=np.int64)
        self._keys = {int(k) for k in self.key_indices}
        self._truth_frame = truth_frame
        self._rows: dict[str, dict[int, FrameRow]] = {}

    @property
    def has_truth(self) -> bool:
        return self._truth_frame is not None

    @property
    def methods(self) -> list[str]:
        """Methods with at least one row, in first-added order."""
        return [m for m, rows in self._rows.items() if rows]

    def add(self, result: Any) -> FrameRow:
        """Record an engine :class:`~napari_xfusion.engine.FrameResult` (metrics computed)."""
        return self.add_frame(
            result.method,
            int(result.index),
            result.frame,
            seconds=result.seconds,
            backward=result.backward,
            forward=result.forward,
            backward_norm=result.backward_norm,
            forward_norm=result.forward_norm,
        )

    def add_frame(
        self,
        method: str,
        index: int,
        frame: np.ndarray | None,
        *,
        seconds: float | None = None,
        backward: float | None = None,
        forward: float | None = None,
        backward_norm: float | None = None,
        forward_norm: float | None = None,
    ) -> FrameRow:
        """Record one frame (float32 [0, 1] ``(H, W)``) of ``method`` at LR time ``index``."""
        from napari_xfusion.core import metrics  # module attribute: tests may wrap it

        row = FrameRow(
            method=method,
            index=int(index),
            is_key=int(index) in self._keys,
            seconds=_f(seconds),
            backward=_f(backward),
            forward=_f(forward),
            backward_norm=_f(backward_norm),
            forward_norm=_f(forward_norm),
        )
        truth = self._truth_frame(int(index)) if self._truth_frame and frame is not None else None
        if truth is not None:
            values = metrics.frame_metrics(np.asarray(frame, dtype=np.float32), truth)
            psnr = float(values["psnr"])
            row.identical = math.isinf(psnr) and psnr > 0
            row.psnr, row.aad, row.ssim = _f(psnr), _f(values["aad"]), _f(values["ssim"])
        self._rows.setdefault(method, {})[row.index] = row
        return row

    def rows(self, method: str | None = None) -> list[FrameRow]:
        """Rows by method then frame index; normalised attention recomputed over all rows of
        the method (grouped by the preceding key, divided by the key's own score)."""
        methods = self.methods if method is None else [method]
        out: list[FrameRow] = []
        for m in methods:
            rows = [self._rows.get(m, {})[i] for i in sorted(self._rows.get(m, {}))]
            out += self._renormalised(rows)
        return out

    def _renormalised(self, rows: list[FrameRow]) -> list[FrameRow]:
        if self.key_indices.size < 2 or not any(r.has_attention for r in rows):
            return rows
        from napari_xfusion.core.attention import normalise_scores

        index = np.array([r.index for r in rows], dtype=np.int64)
        out = [FrameRow(**asdict(r)) for r in rows]
        for name in ("backward", "forward"):
            raw = np.array([getattr(r, name) for r in rows], dtype=np.float64)
            norm = np.asarray(normalise_scores(index, raw, self.key_indices), dtype=np.float64)
            for r, value in zip(out, norm, strict=False):
                if math.isfinite(value):
                    setattr(r, f"{name}_norm", float(value))
        return out

    def metric_columns(self, method: str) -> dict[str, list[float]]:
        """``{"psnr": [...], "aad": [...], "ssim": [...]}`` over the method's frames."""
        rows = self.rows(method)
        return {m: [getattr(r, m) for r in rows] for m in METRICS}

    def summary(self) -> list[dict[str, Any]]:
        """One dict per method: ``method, frames, frames_between_keys, key_frames,
        seconds_per_frame, {psnr,aad,ssim}_{mean,median}`` (non-key frames),
        ``key_{psnr,aad,ssim}_mean`` (key frames), ``identical_frames``. NaN where undefined."""
        out = []
        for method in self.methods:
            rows = self.rows(method)
            between = [r for r in rows if not r.is_key]
            keyed = [r for r in rows if r.is_key]
            seconds = [r.seconds for r in rows if math.isfinite(r.seconds)]
            entry: dict[str, Any] = {
                "method": method,
                "frames": len(rows),
                "frames_between_keys": len(between),
                "key_frames": len(keyed),
                "seconds_per_frame": float(np.mean(seconds)) if seconds else _NAN,
            }
            for m in METRICS:
                values = np.array([getattr(r, m) for r in between], dtype=np.float64)
                values = values[np.isfinite(values)]
                entry[f"{m}_mean"] = float(values.mean()) if values.size else _NAN
                entry[f"{m}_median"] = float(np.median(values)) if values.size else _NAN
            for m in METRICS:
                values = np.array([getattr(r, m) for r in keyed], dtype=np.float64)
                values = values[np.isfinite(values)]
                entry[f"key_{m}_mean"] = float(values.mean()) if values.size else _NAN
            entry["identical_frames"] = sum(r.identical for r in rows)
            out.append(entry)
        return out

    def to_csv_text(self, method: str | None = None) -> str:
        """Per-frame CSV: ``method, frame, is_key, seconds, psnr, aad, ssim, identical``
        (metric columns only with truth) and the attention columns when the method has them."""
        rows = self.rows(method)
        if not rows:
            return ""
        with_metrics = any(r.has_metrics for r in rows)
        with_attention = any(r.has_attention for r in rows)
        table = []
        for r in rows:
            d: dict[str, Any] = {"method": r.method, "frame": r.index, "is_key": r.is_key,
                                 "seconds": r.seconds}  # fmt: skip
            if with_metrics:
                d.update(psnr=r.psnr, aad=r.aad, ssim=r.ssim, identical=r.identical)
            if with_attention:
                d.update({k: getattr(r, k) for k in ATTENTION})
            table.append(d)
        return rows_to_csv_text(table)

    def summary_csv_text(self) -> str:
        return rows_to_csv_text(self.summary())

    def summary_text(self) -> str:
        """The summary as a printed table (PSNR/AAD/SSIM mean and median between keys)."""
        return format_table(self.summary(), _SUMMARY_TEXT_COLUMNS)

    def attention_columns(
        self, method: str, indices: Iterable[int] | None = None
    ) -> dict[str, list]:
        """Per-frame values for export metadata: ``index`` plus the attention columns when the
        method has them (None where unknown), over ``indices`` (default all rows)."""
        rows = self.rows(method)
        if indices is not None:
            wanted = {int(i) for i in indices}
            rows = [r for r in rows if r.index in wanted]
        cols: dict[str, list[Any]] = {"index": [r.index for r in rows]}
        if any(r.has_attention for r in rows):
            for k in ATTENTION:
                cols[k] = [
                    None if not math.isfinite(getattr(r, k)) else getattr(r, k) for r in rows
                ]
        return cols

    def extend(self, rows: Iterable[FrameRow]) -> None:
        """Add rows computed elsewhere (another torchrun rank)."""
        for r in rows:
            self._rows.setdefault(r.method, {})[r.index] = r


FRAME_ROW_FIELDS = tuple(f.name for f in fields(FrameRow))
