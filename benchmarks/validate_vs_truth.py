"""How far to trust leave-one-key-out: LOO PSNR against the true PSNR, per method.

Leave-one-key-out (:func:`napari_xfusion.app.validation.leave_one_key_out`) needs no ground
truth; this benchmark has one, and asks whether LOO tells a user what the truth would:

- **LOO**: keys every k frames; each interior key withheld, reconstructed from the keys around
  it (a gap of 2k), scored against the real key; median over the keys.
- **true, gap 2k**: the same data with keys every 2k (the gap LOO measures), every frame
  between keys scored against the truth; median. The same gap, all its frames (LOO sees only
  its middle).
- **true, gap k**: the user's own run (keys every k), every frame between keys; median.

Per data set: the Spearman rank correlation across methods of LOO with each truth (1 = LOO
ranks the methods exactly as the truth does), and the offset LOO - true (2k).

Data: the simulated x-ray sample (``xfusion sample``'s simulator, seed 0) and real-motion
sequences of :func:`napari_xfusion.core.motion.validation_suite` (validation stills only: no
shipped network saw them). LR = HR binned 4x4 with shot noise at ``--lr-psnr`` (seeded), s = 1.
Everything runs through the app layer (``prepare_inputs``, ``run_job``) like ``xfusion fuse``.

    python benchmarks/validate_vs_truth.py --out docs/benchmarks/validate-vs-truth  # ~5 min, CPU
    python benchmarks/validate_vs_truth.py --quick --out /tmp/loo-vs-truth-quick
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig
from napari_xfusion.app.inputs import prepare_inputs
from napari_xfusion.app.job import run_job
from napari_xfusion.app.validation import leave_one_key_out
from napari_xfusion.core.motion import validation_suite
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.engine import configure_torch_threads
from napari_xfusion.methods.registry import available_methods

SEQUENCES = ("pan-slow", "zoom", "layers", "nonrigid")
COLUMNS = ("dataset", "method", "loo_psnr", "loo_keys", "true_psnr_gap2k", "true_psnr_gap_k",
           "loo_minus_true_gap2k", "frames_gap2k", "frames_gap_k")  # fmt: skip


def _spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 values."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    return float(spearmanr(a[ok], b[ok]).statistic)


def _datasets(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    shape = args.size
    out = [("sample", simulate_sequence(args.frames, shape, seed=0))]
    names = [n for n in args.sequences.split(",") if n]
    out += [(f"real:{n}", f) for n, f in validation_suite(shape, args.frames, seed=0, names=names)]
    return out


def _true_psnr(config: RunConfig, truth: np.ndarray, cache: dict[str, Any]) -> dict[str, Any]:
    """Per method: median truth PSNR over the frames between keys of a run of ``config``."""
    prepared = prepare_inputs(config, hr=truth)
    keys = set(int(k) for k in prepared.keys.indices)
    targets = [t for t in range(int(prepared.keys.indices[0]), int(prepared.keys.indices[-1]))
               if t not in keys]  # fmt: skip
    values: dict[str, list[float]] = {}
    for event in list(run_job(config, prepared, method_cache=cache, targets=targets))[1:]:
        values.setdefault(event.row.method, []).append(event.row.psnr)
    return {m: (float(np.nanmedian(v)), len(v)) for m, v in values.items()}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    configure_torch_threads(args.threads)
    methods = tuple(MethodChoice(m) for m in args.methods.split(","))
    cache: dict[str, Any] = {}
    rows = []
    for name, truth in _datasets(args):
        tic = time.perf_counter()
        config = RunConfig(simulate=True, keys=KeyRule(step=args.key_step), lr_psnr=args.lr_psnr,
                           seed=0, device="cpu", methods=methods)  # fmt: skip
        prepared = prepare_inputs(config, hr=truth)
        result = leave_one_key_out(config, prepared, method_cache=cache)
        loo = {s["method"]: s for s in result.summary()}
        gap2k = _true_psnr(config.replace(keys=KeyRule(step=2 * args.key_step)), truth, cache)
        gapk = _true_psnr(config, truth, cache)
        for m in (c.name for c in methods):
            rows.append({
                "dataset": name, "method": m, "loo_psnr": loo[m]["psnr_median"],
                "loo_keys": loo[m]["keys_scored"], "true_psnr_gap2k": gap2k[m][0],
                "true_psnr_gap_k": gapk[m][0],
                "loo_minus_true_gap2k": loo[m]["psnr_median"] - gap2k[m][0],
                "frames_gap2k": gap2k[m][1], "frames_gap_k": gapk[m][1],
            })  # fmt: skip
        print(f"{name}: {time.perf_counter() - tic:.0f} s", flush=True)
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Markdown: the per-method table, then Spearman per data set."""
    lines = [
        f"Keys every k = {args.key_step} (LOO gap {2 * args.key_step}), {args.frames} frames "
        f"{args.size[0]}x{args.size[1]} HR, LR shot noise {args.lr_psnr:g} dB, s = 1; PSNR "
        "medians in dB.",
        "",
        "| data | method | LOO | true, gap 2k | true, gap k | LOO - true (2k) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['loo_psnr']:.2f} | {r['true_psnr_gap2k']:.2f} "
            f"| {r['true_psnr_gap_k']:.2f} | {r['loo_minus_true_gap2k']:+.2f} |"
        )
    lines += ["", "| data | Spearman(LOO, true 2k) | Spearman(LOO, true k) |", "|---|---:|---:|"]
    rho2k, rhok = [], []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        sel = [r for r in rows if r["dataset"] == name]
        a = _spearman([r["loo_psnr"] for r in sel], [r["true_psnr_gap2k"] for r in sel])
        b = _spearman([r["loo_psnr"] for r in sel], [r["true_psnr_gap_k"] for r in sel])
        rho2k.append(a)
        rhok.append(b)
        lines.append(f"| {name} | {a:.2f} | {b:.2f} |")
    lines.append(f"| **median** | {np.nanmedian(rho2k):.2f} | {np.nanmedian(rhok):.2f} |")
    offsets = np.array([r["loo_minus_true_gap2k"] for r in rows])
    lines += ["", f"LOO - true (gap 2k) over all rows: median {np.median(offsets):+.2f} dB, "
              f"range {offsets.min():+.2f} .. {offsets.max():+.2f} dB."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for rows.csv and summary.md")
    p.add_argument("--quick", action="store_true", help="64x128, 2 sequences, 3 methods")
    p.add_argument("--frames", type=int, default=41)
    p.add_argument("--size", default="128x256", help="HR HxW (multiples of 4)")
    p.add_argument("--key-step", type=int, default=10)
    p.add_argument("--lr-psnr", type=float, default=35.0)
    p.add_argument("--methods", default=",".join(available_methods()))
    p.add_argument("--sequences", default=",".join(SEQUENCES))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.sequences = "64x128", "pan-slow,zoom"
        args.methods = "bicubic,bayesian,flow"
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    rows = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    text = report(rows, args)
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
