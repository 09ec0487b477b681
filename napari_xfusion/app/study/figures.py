"""Figures of a study (:mod:`napari_xfusion.app.study`).

Figures (PNG and SVG, the layout of the paper's):

- ``fig5_noise``: PSNR, AAD and SSIM (rows) against the LR noise level, a box per method;
- ``fig6_keys_s1``, ``figS3_keys_s2``, ``figS4_keys_s3``: the same against the HR key step, one
  figure per LR separation s (named after the paper's figure for s = 1, 2, 3; ``figS_keys_sN``
  beyond);
- ``fig7_attention_<method>``: raw and normalised backward / forward attention scores against
  the frame, one row per key step (s = the first separation, the key sweep's noise);
- ``figS5_attention_hist_<method>``: 2-D histograms of the normalised score against the offset
  from the preceding key, pooled over the key-step sweep.

Matplotlib is used through :class:`matplotlib.figure.Figure` and the Agg canvas only (no
pyplot, no global backend switch), so this runs in a worker thread of the GUI too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.study.stats import (
    _attention_methods,
    _finite,
    _key_settings,
    _methods,
    _noise_label,
    _noise_settings,
    _select,
)

METRICS = (("psnr", "PSNR (dB)"), ("aad", "AAD"), ("ssim", "SSIM"))
_PAPER_NAMES = {1: "fig6", 2: "figS3", 3: "figS4"}


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    import matplotlib

    paths = []
    for ext in ("png", "svg"):
        path = out / f"{stem}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        # No date, fixed SVG ids: the same rows give the same files (clean diffs in docs/).
        with matplotlib.rc_context({"svg.hashsalt": "napari-xfusion-study"}):
            fig.savefig(tmp, format=ext, dpi=120, metadata={"Date": None} if ext == "svg" else None)
        tmp.replace(path)  # never a half-written figure under the final name
        paths.append(path)
    return paths


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _box_figure(
    rows: Sequence[dict[str, Any]],
    methods: Sequence[str],
    groups: Sequence[tuple[str, list[dict[str, Any]]]],
    xlabel: str,
    title: str,
) -> Any:
    from matplotlib.patches import Patch

    fig, axes = _figure(len(METRICS), 1, (max(6.0, 1.2 * len(groups) * max(1, len(methods)) / 2
                                              + 2), 8.5))  # fmt: skip
    colours = _colours(len(methods))
    width = 0.8 / max(1, len(methods))
    for ax, (metric, label) in zip(axes[:, 0], METRICS, strict=True):
        for j, method in enumerate(methods):
            data, pos = [], []
            for i, (_, group_rows) in enumerate(groups):
                values = _finite([r[metric] for r in group_rows if r["method"] == method])
                if values.size:
                    data.append(values)
                    pos.append(i + (j - (len(methods) - 1) / 2) * width)
            if not data:
                continue
            parts = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                               manage_ticks=False, flierprops={"markersize": 2})  # fmt: skip
            for box in parts["boxes"]:
                box.set_facecolor(colours[j])
                box.set_alpha(0.75)
            for median in parts["medians"]:
                median.set_color("black")
        ax.set_xticks(range(len(groups)), [g for g, _ in groups])
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel)
    axes[0, 0].set_title(title)
    handles = [
        Patch(facecolor=c, alpha=0.75, label=m) for m, c in zip(methods, colours, strict=True)
    ]
    axes[0, 0].legend(handles=handles, loc="best", fontsize="small")
    return fig


def _attention_curves(
    rows: Sequence[dict[str, Any]], method: str, settings: Sequence[Any], n_frames: int | None
) -> Any:
    from napari_xfusion.app.study.targets import _keys_of

    fig, axes = _figure(len(settings), 2, (11, 2.4 * len(settings) + 0.8))
    for row_axes, setting in zip(axes, settings, strict=True):
        sel = sorted(_select(rows, setting=setting.id, method=method), key=lambda r: r["frame"])
        t = [r["frame"] for r in sel]
        for ax, suffix, what in ((row_axes[0], "", "raw"), (row_axes[1], "_norm", "normalised")):
            ax.plot(
                t, [r["backward" + suffix] for r in sel], "o-", ms=3, label="backward (key before)"
            )
            ax.plot(
                t, [r["forward" + suffix] for r in sel], "s-", ms=3, label="forward (key after)"
            )
            if n_frames is not None:
                keys = _keys_of(setting, n_frames)
                if len(keys) <= 12:
                    for k in keys:
                        ax.axvline(int(k), color="grey", lw=0.6, ls=":")
            ax.set_title(f"{method}, key step {setting.key_step}, s = {setting.separation}: {what}",
                         fontsize="small")  # fmt: skip
            ax.set_xlabel("frame")
            ax.grid(alpha=0.3)
        row_axes[1].axhline(1.0, color="grey", lw=0.6)
    axes[0, 0].legend(fontsize="x-small")
    return fig


def _attention_hist(rows: Sequence[dict[str, Any]], method: str) -> Any | None:
    sel = [r for r in rows if r["method"] == method]
    fig, axes = _figure(1, 2, (10, 4))
    drawn = False
    for ax, name in zip(axes[0], ("backward_norm", "forward_norm"), strict=True):
        pairs = [(r["offset"], r[name]) for r in sel if math.isfinite(r[name])]
        if not pairs:
            continue
        off = np.array([p[0] for p in pairs], dtype=np.float64)
        score = np.array([p[1] for p in pairs], dtype=np.float64)
        lo, hi = np.percentile(score, [1, 99])
        lo, hi = min(lo, 0.0), max(hi, 1.2)
        xbins = np.arange(-0.5, off.max() + 1.5, 1.0)
        h = ax.hist2d(off, np.clip(score, lo, hi), bins=[xbins, np.linspace(lo, hi, 31)],
                      cmap="viridis", cmin=1, rasterized=True)  # fmt: skip
        ax.figure.colorbar(h[3], ax=ax, label="frames")
        ax.set_xlabel("offset from the preceding key (frames)")
        ax.set_ylabel(f"normalised {name.split('_')[0]} score")
        ax.set_title(f"{method}: {name.split('_')[0]}", fontsize="small")
        drawn = True
    return fig if drawn else None


def write_figures(
    out: Path, config: Any, rows: Sequence[dict[str, Any]], n_frames: int | None = None
) -> list[Path]:
    """Every figure of the module docstring that has rows; returns the files written."""
    from napari_xfusion.app.study import study_settings

    settings = study_settings(config)
    methods = _methods(rows, config)
    written: list[Path] = []
    noise = _noise_settings(settings)
    if noise:
        groups = [(x.noise_label, _select(rows, setting=x.id)) for x in noise]
        if any(g for _, g in groups):
            fig = _box_figure(rows, methods, groups, "LR noise level (target LR PSNR)",
                              f"Noise: key step {config.noise_key_step}, s = "
                              f"{config.noise_separation}")  # fmt: skip
            written += _save(fig, out, "fig5_noise")
    for s in config.separations:
        keyed = _key_settings(config, settings, s)
        groups = [(str(x.key_step), _select(rows, setting=x.id)) for x in keyed]
        if not any(g for _, g in groups):
            continue
        noise_text = _noise_label(config.key_lr_psnr)
        fig = _box_figure(rows, methods, groups, "HR key step",
                          f"Key step: s = {s}, LR {noise_text}")  # fmt: skip
        written += _save(fig, out, f"{_PAPER_NAMES.get(s, 'figS')}_keys_s{s}")
    key_rows = [r for r in rows if "keys" in r["sweeps"]]
    first_s = config.separations[0] if config.separations else None
    for method in _attention_methods(rows, methods):
        curve_settings = [x for x in _key_settings(config, settings, first_s)
                          if _select(rows, setting=x.id, method=method)]  # fmt: skip
        if curve_settings:
            fig = _attention_curves(rows, method, curve_settings, n_frames)
            written += _save(fig, out, f"fig7_attention_{method}")
        fig = _attention_hist(key_rows or rows, method)
        if fig is not None:
            written += _save(fig, out, f"figS5_attention_hist_{method}")
    return written
