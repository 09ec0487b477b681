"""Rows, settings and statistics of a study that its figures (:mod:`.figures`) and its summary
(:mod:`.summary`) share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def stats(values: Sequence[float]) -> dict[str, float]:
    """``n``, ``median``, ``q1``, ``q3``, ``iqr`` of the finite values (NaN when none)."""
    arr = _finite(values)
    if not arr.size:
        return {"n": 0, "median": math.nan, "q1": math.nan, "q3": math.nan, "iqr": math.nan}
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {"n": int(arr.size), "median": float(med), "q1": float(q1), "q3": float(q3),
            "iqr": float(q3 - q1)}  # fmt: skip


def _methods(rows: Sequence[dict[str, Any]], config: Any) -> list[str]:
    seen = list(dict.fromkeys(r["method"] for r in rows))
    order = list(config.methods or ())
    return [m for m in order if m in seen] + [m for m in seen if m not in order]


def _select(rows: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def _noise_key(p: float | None) -> float:
    return math.inf if p is None else float(p)


def _noise_label(p: float | None) -> str:
    return "clean" if p is None else f"{p:g} dB"


def ordering(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[tuple[str, float]]:
    """Methods by median PSNR (best first), over ``rows`` of one setting."""
    medians = [(m, stats([r["psnr"] for r in rows if r["method"] == m])["median"]) for m in methods]
    medians = [(m, v) for m, v in medians if math.isfinite(v)]
    return sorted(medians, key=lambda mv: -mv[1])


def _attention_methods(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[str]:
    return [
        m for m in methods
        if any(r["method"] == m and math.isfinite(r["backward"]) for r in rows)
    ]  # fmt: skip


def _key_settings(config: Any, settings: Sequence[Any], s: int) -> list[Any]:
    """The key sweep's settings at separation ``s``, in ``config.key_steps`` order."""
    order = {k: i for i, k in enumerate(config.key_steps)}
    chosen = [x for x in settings if "keys" in x.sweeps and x.separation == s]
    return sorted(chosen, key=lambda x: order.get(x.key_step, len(order)))


def _noise_settings(settings: Sequence[Any]) -> list[Any]:
    return sorted((x for x in settings if "noise" in x.sweeps), key=lambda x: _noise_key(x.lr_psnr))
