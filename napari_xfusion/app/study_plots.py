"""Figures and the Markdown summary of a study (:mod:`napari_xfusion.app.study`).

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
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ordering", "stats", "summary_markdown", "write_report"]

METRICS = (("psnr", "PSNR (dB)"), ("aad", "AAD"), ("ssim", "SSIM"))
_PAPER_NAMES = {1: "fig6", 2: "figS3", 3: "figS4"}


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


# ---------------------------------------------------------------------------- figures


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


def _attention_methods(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[str]:
    return [
        m for m in methods
        if any(r["method"] == m and math.isfinite(r["backward"]) for r in rows)
    ]  # fmt: skip


def _attention_curves(
    rows: Sequence[dict[str, Any]], method: str, settings: Sequence[Any], n_frames: int | None
) -> Any:
    from napari_xfusion.app.study import _keys_of

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


def _key_settings(config: Any, settings: Sequence[Any], s: int) -> list[Any]:
    """The key sweep's settings at separation ``s``, in ``config.key_steps`` order."""
    order = {k: i for i, k in enumerate(config.key_steps)}
    chosen = [x for x in settings if "keys" in x.sweeps and x.separation == s]
    return sorted(chosen, key=lambda x: order.get(x.key_step, len(order)))


def _noise_settings(settings: Sequence[Any]) -> list[Any]:
    return sorted((x for x in settings if "noise" in x.sweeps), key=lambda x: _noise_key(x.lr_psnr))


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


# ---------------------------------------------------------------------------- summary


def _fmt(st: dict[str, float], digits: int) -> str:
    if not st["n"]:
        return "-"
    return f"{st['median']:.{digits}f} ({st['iqr']:.{digits}f})"


def _setting_table(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[str]:
    lines = ["| method | frames | PSNR median (IQR) | AAD median (IQR) | SSIM median (IQR) | "
             "s/frame median |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        if not sel:
            continue
        sec = stats([r["seconds"] for r in sel])
        lines.append(
            f"| {m} | {len(sel)} | {_fmt(stats([r['psnr'] for r in sel]), 2)} | "
            f"{_fmt(stats([r['aad'] for r in sel]), 4)} | "
            f"{_fmt(stats([r['ssim'] for r in sel]), 4)} | {sec['median']:.3g} |"
        )
    return lines


def _glance_table(
    settings: Sequence[Any], rows: Sequence[dict[str, Any]], methods: Sequence[str]
) -> list[str]:
    """Median PSNR (dB): one line per setting, one column per method; best in bold."""
    lines = ["Median PSNR (dB) at a glance:", "",
             "| setting | " + " | ".join(methods) + " |",
             "|---|" + "---:|" * len(methods)]  # fmt: skip
    for x in settings:
        sel = _select(rows, setting=x.id)
        meds = [_median(sel, m) for m in methods]
        top = max((v for v in meds if math.isfinite(v)), default=math.nan)
        cells = ["-" if not math.isfinite(v) else (f"**{v:.2f}**" if v == top else f"{v:.2f}")
                 for v in meds]  # fmt: skip
        lines.append(f"| {x.id} | " + " | ".join(cells) + " |")
    return lines


def _median(rows: Sequence[dict[str, Any]], method: str, metric: str = "psnr") -> float:
    return stats([r[metric] for r in rows if r["method"] == method])["median"]


_FLAT_DB = 0.1  # a spread of medians below this is called flat


def _trend(values: Sequence[float], want: str, along: str) -> str:
    """``"rises ..."`` / ``"falls ..."`` / ``"about flat ..."`` / ``"not monotone ..."``."""
    spread = max(values) - min(values)
    if spread < _FLAT_DB:
        return f"about flat (spread {spread:.2f} dB < {_FLAT_DB} dB) {along}"
    steps = np.diff(values)
    sign = 1.0 if want == "rises" else -1.0
    if np.all(sign * steps >= -0.05):
        return f"{want} {along} (by {spread:.2f} dB)"
    other = "falls" if want == "rises" else "rises"
    if np.all(-sign * steps >= -0.05):
        return f"{other} {along} (by {spread:.2f} dB)"
    return f"not monotone {along} (spread {spread:.2f} dB)"


def _comparison(config: Any, settings: Sequence[Any], rows: Sequence[dict[str, Any]],
                methods: Sequence[str]) -> list[str]:  # fmt: skip
    """Sentences comparing the numbers with the paper's findings (generated, not tuned)."""
    out: list[str] = []
    by_id = {x.id: _select(rows, setting=x.id) for x in settings}
    # 1. bicubic ignores the keys: flat across key steps
    if "bicubic" in methods:
        for s in config.separations:
            meds = [_median(by_id[x.id], "bicubic") for x in _key_settings(config, settings, s)]
            meds = [v for v in meds if math.isfinite(v)]
            if len(meds) > 1:
                spread = max(meds) - min(meds)
                out.append(
                    f"- Bicubic across key steps (s = {s}): median PSNR spread {spread:.2g} dB - "
                    + ("flat, as in the paper (it does not use the keys)." if spread < 1e-6 else
                       "NOT flat: the inputs differ between key steps (a bug to report).")
                )  # fmt: skip
    # 2. ordering edvr-stf > edvr > bicubic
    chain = [m for m in ("edvr-stf", "edvr", "bicubic") if m in methods]
    if len(chain) >= 2:
        holds, total, fails = 0, 0, []
        for x in settings:
            meds = [_median(by_id[x.id], m) for m in chain]
            if not all(math.isfinite(v) for v in meds):
                continue
            total += 1
            if all(a > b for a, b in zip(meds[:-1], meds[1:], strict=False)):
                holds += 1
            else:
                fails.append(x.id)
        if total:
            verdict = "as in the paper" if holds == total else "the paper finds it in every setting"
            out.append(
                f"- Ordering {' > '.join(chain)} (median PSNR) holds in {holds} of {total} "
                f"settings ({verdict})" + (f"; not in: {', '.join(fails)}." if fails else ".")
            )
    best = Counter(
        ordering(by_id[x.id], methods)[0][0] for x in settings if ordering(by_id[x.id], methods)
    )
    if best:
        counts = ", ".join(f"{m} in {n}" for m, n in best.most_common())
        agrees = set(best) == {"edvr-stf"}
        out.append(
            f"- Best method (median PSNR) per setting: {counts} of {len(settings)} settings"
            + (" (the paper: EDVR-STF best throughout; agrees)." if agrees else
               " (the paper: EDVR-STF best throughout; here not everywhere).")
        )  # fmt: skip
    if "bayesian" in methods and "bicubic" in methods:
        below = [x.id for x in settings
                 if _median(by_id[x.id], "bayesian") < _median(by_id[x.id], "bicubic")]  # fmt: skip
        out.append(
            f"- Bayesian below bicubic (median PSNR) in {len(below)} of {len(settings)} settings"
            + (f": {', '.join(below)}." if below else ".")
        )
    # 3. noise: every method gains as the LR gets cleaner
    noise = _noise_settings(settings)
    if len(noise) > 1:
        for m in methods:
            meds = [_median(by_id[x.id], m) for x in noise]
            if not all(math.isfinite(v) for v in meds):
                continue
            out.append(
                f"- {m} vs noise: median PSNR {meds[0]:.2f} dB at {noise[0].noise_label} -> "
                f"{meds[-1]:.2f} dB at {noise[-1].noise_label}; "
                + _trend(meds, "rises", "as the LR noise falls")
                + " (the paper: every method gains as the LR noise falls)."
            )  # fmt: skip
    # 4. key step: methods using the keys lose as keys get sparser
    from napari_xfusion.methods.registry import get_spec

    for m in methods:
        try:
            uses_keys = get_spec(m).uses_hr_keys
        except ValueError:
            continue
        if not uses_keys:
            continue
        for s in config.separations:
            keyed = _key_settings(config, settings, s)
            meds = [(str(x.key_step), _median(by_id[x.id], m)) for x in keyed]
            meds = [(k, v) for k, v in meds if math.isfinite(v)]
            if len(meds) < 2:
                continue
            values = [v for _, v in meds]
            out.append(
                f"- {m}, s = {s}: median PSNR " + ", ".join(f"k={k}: {v:.2f}" for k, v in meds)
                + " - " + _trend(values, "falls", "as the keys get sparser")
                + " (the paper: methods using the keys lose as the keys get sparser)."
            )  # fmt: skip
    # 5. attention: backward falls, forward rises across the gap
    key_rows = [r for r in rows if "keys" in r["sweeps"] and r["offset"] > 0]
    for m in _attention_methods(rows, methods):
        sel = [r for r in key_rows if r["method"] == m]
        parts = []
        for name, want in (("backward_norm", "falls"), ("forward_norm", "rises")):
            pairs = np.array([(r["offset"], r[name]) for r in sel if math.isfinite(r[name])])
            if len(pairs) < 3 or np.ptp(pairs[:, 0]) == 0:
                continue
            slope = float(np.polyfit(pairs[:, 0], pairs[:, 1], 1)[0])
            last = pairs[pairs[:, 0] >= np.percentile(pairs[:, 0], 75), 1]
            got = "falls" if slope < 0 else "rises"
            parts.append(
                f"{name.split('_')[0]} {got} with the offset (slope {slope:+.3g}/frame, median "
                f"{np.median(last):.2f} over the last quarter of offsets; paper: {want}"
                + (", agrees)" if got == want else ", DISAGREES)")
            )
        if parts:
            out.append(f"- {m} attention (normalised, key sweep): " + "; ".join(parts) + ".")
    return out


def _run_log_lines(out_dir: Path | None) -> list[str]:
    """One line per run call from ``runs/log.jsonl`` (wall time, rows, load average)."""
    import json

    path = None if out_dir is None else out_dir / "runs" / "log.jsonl"
    if path is None or not path.is_file():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            e = json.loads(text)
        except ValueError:
            continue
        load = e.get("load_start")
        lines.append(
            f"- Run {e.get('started')} UTC: {e.get('rows_computed')} rows in "
            f"{e.get('seconds')} s on {e.get('cores')} cores ({e.get('cpu')}), device "
            f"{e.get('device')}, load average at start {load[0] if load else '?'} "
            "(timings on a busy machine are slower than it can do)"
        )
    return lines


def summary_markdown(
    config: Any,
    rows: Sequence[dict[str, Any]],
    *,
    targets: Sequence[int] | None = None,
    truth_label: str | None = None,
    figures: Sequence[Path] = (),
    out_dir: Path | None = None,
) -> str:
    """``summary.md``: inputs, then per sweep and setting median (IQR) per method and the
    methods' ordering (reported, not asserted), then the comparison with the paper."""
    from napari_xfusion.app.study import study_settings

    settings = study_settings(config)
    methods = _methods(rows, config)
    truth = truth_label or (config.truth or "built-in sample")
    lines = [
        "# Study summary",
        "",
        f"- Truth: {truth}",
        f"- Methods: {', '.join(methods)}",
        f"- Settings: {len(settings)}; rows: {len(rows)}; LR noise seed {config.noise_seed}",
    ]
    if targets is not None:
        lines.append(
            f"- Target frames (the same in every setting and method): "
            f"{', '.join(str(int(t)) for t in targets)}"
        )
    lines += _run_log_lines(out_dir)
    lines += ["", "Cells: median (IQR = Q3 - Q1) over the target frames. Ordering: by median "
              "PSNR, best first (reported, not asserted).", ""]  # fmt: skip
    for sweep, title in (
        ("noise", "Noise sweep (Fig. 5)"),
        ("keys", "Key-step sweep (Figs 6, S3, S4)"),
    ):
        if sweep == "noise":
            chosen = _noise_settings(settings)
        else:
            chosen = [x for s in config.separations for x in _key_settings(config, settings, s)]
        if not chosen:
            continue
        lines += [f"## {title}", ""]
        lines += _glance_table(chosen, rows, methods) + [""]
        for x in chosen:
            sel = _select(rows, setting=x.id)
            lines += [
                f"### {x.id}: key step {x.key_step}, s = {x.separation}, LR {x.noise_label}",
                "",
            ]
            if not sel:
                lines += ["(not run yet)", ""]
                continue
            lines += _setting_table(sel, methods)
            order = ordering(sel, methods)
            lines += ["", "Ordering: " + " > ".join(f"{m} ({v:.2f})" for m, v in order), ""]
    lines += ["## Compared with the paper", "",
              "Generated from the numbers above; where they disagree with the paper's findings "
              "this says so.", ""]  # fmt: skip
    lines += _comparison(config, settings, rows, methods) or ["- (not enough settings to compare)"]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"- [{p.name}]({p.name})" for p in figures if p.suffix == ".png"]
    return "\n".join(lines) + "\n"


def write_report(
    out: Path,
    config: Any,
    rows: Sequence[dict[str, Any]],
    *,
    targets: Sequence[int] | None = None,
    truth_label: str | None = None,
) -> list[Path]:
    """Figures + ``summary.md`` in ``out``; returns the files written."""
    from napari_xfusion.app.study import truth_frames
    from napari_xfusion.core.io import write_text_atomic

    n_frames = truth_frames(config)
    figures = write_figures(out, config, rows, n_frames)
    text = summary_markdown(
        config, rows, targets=targets, truth_label=truth_label, figures=figures, out_dir=out
    )
    return [*figures, write_text_atomic(out / "summary.md", text)]
