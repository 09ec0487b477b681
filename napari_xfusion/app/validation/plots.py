"""The leave-one-key-out figure: per-key PSNR of each method and a box plot per method.

Matplotlib through :class:`matplotlib.figure.Figure` and the Agg canvas only (no pyplot, no
global backend switch): headless, and safe in a GUI worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_loo"]


def plot_loo(result: Any, path: Path) -> Path:
    """Draw ``result`` (a :class:`~napari_xfusion.app.validation.ValidationResult`) into the
    PNG ``path``, written atomically (a temp file renamed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    data, labels = [], []
    for method in result.methods:
        rows = sorted(result.rows_of(method), key=lambda r: r.key_index)
        x = np.array([r.key_index for r in rows])
        y = np.array([r.psnr for r in rows], dtype=np.float64)
        left.plot(x, y, marker="o", ms=4, label=method)
        finite = y[np.isfinite(y)]
        if finite.size:
            data.append(finite)
            labels.append(method)
    from matplotlib.ticker import MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("withheld key (LR frame)")
    left.set_ylabel("PSNR against the real key (dB)")
    left.set_title("leave-one-key-out, per key")
    if result.methods:
        left.legend(fontsize="small")
    left.grid(alpha=0.3)
    if data:
        key = "tick_labels" if _has_tick_labels() else "labels"
        right.boxplot(data, **{key: labels})
        right.tick_params(axis="x", labelrotation=30)
    right.set_ylabel("PSNR (dB)")
    right.set_title("per method")
    right.grid(alpha=0.3, axis="y")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _has_tick_labels() -> bool:
    """Matplotlib >= 3.9 names boxplot's ``labels`` ``tick_labels`` (the old name warns)."""
    import inspect

    from matplotlib.axes import Axes

    return "tick_labels" in inspect.signature(Axes.boxplot).parameters
