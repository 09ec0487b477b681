"""The Markdown summary of a study (:mod:`napari_xfusion.app.study`): tables per setting, the
comparison with the paper, the run log; and :func:`write_report` (figures + ``summary.md``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.study.figures import write_figures
from napari_xfusion.app.study.stats import (
    _attention_methods,
    _key_settings,
    _methods,
    _noise_settings,
    _select,
    ordering,
    stats,
)


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
