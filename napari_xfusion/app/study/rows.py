"""A study's ``frames.csv`` (:mod:`napari_xfusion.app.study`): its columns, one row per method,
setting and frame, writing and typed reading.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_xfusion.app.study.config import Setting, StudyError

COLUMNS = (
    "setting", "sweeps", "method", "key_step", "separation", "lr_psnr", "lr_psnr_achieved",
    "b0", "frame", "offset", "is_key", "psnr", "aad", "ssim", "seconds",
    "backward", "forward", "backward_norm", "forward_norm",
)  # fmt: skip
"""Columns of ``frames.csv``: ``offset`` = frame - preceding key; ``lr_psnr`` = the target
(blank: noise-free), ``lr_psnr_achieved`` = measured on the simulated LR; attention columns
blank for methods without scores."""

_INT_COLUMNS = {"separation", "frame", "offset", "is_key"}
_TEXT_COLUMNS = {"setting", "sweeps", "method", "key_step"}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def _rows_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
    return buffer.getvalue()


def _parse(name: str, text: str) -> Any:
    if name in _TEXT_COLUMNS:
        return text
    if name in _INT_COLUMNS:
        return int(text)
    if name == "lr_psnr":
        return float(text) if text else None
    return float(text) if text else math.nan


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``frames.csv`` (typed: NaN for blank numbers, None for a clean ``lr_psnr``)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return []
        missing = [c for c in COLUMNS if c not in reader.fieldnames]
        if missing:
            raise StudyError(f"{path}: not a study frames.csv (no column {missing[0]!r})")
        out = []
        for line, raw in enumerate(reader, start=2):
            try:
                out.append({c: _parse(c, raw[c] or "") for c in COLUMNS})
            except ValueError as exc:
                raise StudyError(f"{path}: line {line}: {exc}") from None
    return out


def _row(setting: Setting, prepared: Any, fr: Any) -> dict[str, Any]:
    from napari_xfusion.core.attention import preceding_keys

    keys = prepared.keys.indices
    sim = prepared.simulated
    return {
        "setting": setting.id,
        "sweeps": "+".join(setting.sweeps),
        "method": fr.method,
        "key_step": str(setting.key_step),
        "separation": setting.separation,
        "lr_psnr": setting.lr_psnr,
        "lr_psnr_achieved": math.nan if sim is None or sim.lr_psnr is None else sim.lr_psnr,
        "b0": math.nan if sim is None or sim.b0 is None else float(sim.b0),
        "frame": fr.index,
        "offset": int(fr.index - preceding_keys([fr.index], keys)[0]),
        "is_key": bool(fr.is_key),
        "psnr": fr.psnr,
        "aad": fr.aad,
        "ssim": fr.ssim,
        "seconds": fr.seconds,
        "backward": fr.backward,
        "forward": fr.forward,
        "backward_norm": fr.backward_norm,
        "forward_norm": fr.forward_norm,
    }
