"""Issue 14's targets for the networks, read from a benchmark run of ``evaluate_methods.py``.

Prints, per set (real motion, simulator), key step and LR noise, from the run's ``frames.csv``
(medians of per-frame differences, paired frame by frame as in the benchmark's own tables):

- ``edvr-stf-flow`` against the better of ``flow`` and ``edvr-stf`` (target >= +1 dB) and its
  SSIM against ``bayesian``'s (target: no worse);
- the paper's ordering ``edvr-stf`` - ``edvr`` (target >= +1 dB), ``edvr`` - ``bicubic``
  (target >= +3 dB) and the PSNR ``edvr-stf`` loses in the key ablation (target >= 1 dB).

Each cell is followed by ``ok`` or by how far it is from its target. The model cards and the
README quote these tables::

    python benchmarks/network_targets.py docs/benchmarks/real-motion
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from evaluate_methods import KEY_STEPS, NOISE, _paired, read_frames

PSNR_MARGIN_DB = 1.0
"""edvr-stf-flow over the better of flow and edvr-stf; edvr-stf over edvr; key ablation."""
EDVR_OVER_BICUBIC_DB = 3.0


def _mark(value: float, target: float) -> str:
    return f"{value:+.2f} ok" if value >= target else f"{value:+.2f} ({target - value:.2f} short)"


def targets_tables(rows: list[dict]) -> str:
    """The two markdown tables (one line per set, k and noise) for the rows of one run."""

    def pick(set_name: str, k: int, noise: str, method: str, keys: str = "hr") -> list[dict]:
        return [
            r
            for r in rows
            if (r["set"], r["key_step"], r["noise"], r["method"], r["keys"])
            == (set_name, k, noise, method, keys)
        ]

    methods = {r["method"] for r in rows}
    needed = {"bicubic", "bayesian", "flow", "edvr", "edvr-stf", "edvr-stf-flow"}
    if not needed <= methods:
        raise SystemExit(f"the run lacks {sorted(needed - methods)}: rerun or --combine")
    sets = list(dict.fromkeys(r["set"] for r in rows))
    steps = [k for k in KEY_STEPS if any(r["key_step"] == k for r in rows)]
    noises = [n for n in NOISE if any(r["noise"] == n for r in rows)]
    flow_lines = [
        "| set | k | LR | edvr-stf-flow - flow | - edvr-stf | - better of the two (>= +1) "
        "| SSIM edvr-stf-flow - bayesian (>= 0) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    paper_lines = [
        "| set | k | LR | edvr-stf - edvr (>= +1) | edvr - bicubic (>= +3) "
        "| edvr-stf key ablation (>= 1) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for set_name in sets:
        for k in steps:
            for noise in noises:
                got = {m: pick(set_name, k, noise, m) for m in needed}
                vs_flow = float(np.median(_paired(got["edvr-stf-flow"], got["flow"])))
                vs_stf = float(np.median(_paired(got["edvr-stf-flow"], got["edvr-stf"])))
                ssim = float(
                    np.median([r["ssim"] for r in got["edvr-stf-flow"]])
                    - np.median([r["ssim"] for r in got["bayesian"]])
                )
                label = f"| {set_name} | {k} | {'clean' if noise == 'clean' else noise + ' dB'}"
                flow_lines.append(
                    f"{label} | {vs_flow:+.2f} | {vs_stf:+.2f} | "
                    f"{_mark(min(vs_flow, vs_stf), PSNR_MARGIN_DB)} | "
                    f"{ssim:+.4f} {'ok' if ssim >= 0 else 'worse'} |"
                )
                stf_edvr = float(np.median(_paired(got["edvr-stf"], got["edvr"])))
                edvr_bic = float(np.median(_paired(got["edvr"], got["bicubic"])))
                ablated = pick(set_name, k, noise, "edvr-stf", "lr-up")
                ablation = (
                    _mark(float(np.median(_paired(got["edvr-stf"], ablated))), PSNR_MARGIN_DB)
                    if ablated
                    else "not run"
                )
                paper_lines.append(
                    f"{label} | {_mark(stf_edvr, PSNR_MARGIN_DB)} | "
                    f"{_mark(edvr_bic, EDVR_OVER_BICUBIC_DB)} | {ablation} |"
                )
    return "\n".join(
        ["**edvr-stf-flow** (medians of per-frame differences, dB)", "", *flow_lines, ""]
        + ["**The paper's ordering** (medians of per-frame differences, dB)", "", *paper_lines]
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a folder written by evaluate_methods.py --out")
    args = p.parse_args(argv)
    print(targets_tables(read_frames(args.run / "frames.csv")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
