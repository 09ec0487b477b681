"""One method in two runs of ``evaluate_methods.py`` (e.g. before and after a retraining).

Per set, key step and LR noise: the median of the per-frame PSNR differences (new - old,
paired frame by frame as the benchmark's own tables) and the difference of the median SSIMs.
The model card of a retrained network quotes this table::

    python benchmarks/compare_runs.py docs/benchmarks/real-motion/parts/session3 \\
        docs/benchmarks/real-motion/parts/session4 --method edvr-stf-flow
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from evaluate_methods import KEY_STEPS, NOISE, _paired, read_frames


def compare(old: list[dict], new: list[dict], method: str) -> str:
    """The markdown table of ``method``'s rows (HR keys) in ``new`` against ``old``."""

    def pick(rows: list[dict], setting: tuple) -> list[dict]:
        want = (method, "hr", *setting)
        return [
            r for r in rows if (r["method"], r["keys"], r["set"], r["key_step"], r["noise"]) == want
        ]

    settings = list(dict.fromkeys((r["set"], r["key_step"], r["noise"]) for r in new))
    settings.sort(key=lambda s: (s[0], KEY_STEPS.index(s[1]), NOISE.index(s[2])))
    lines = [
        f"**{method}**, new - old (PSNR: median of per-frame differences; SSIM: of the medians)",
        "",
        "| set | k | LR | frames | PSNR (dB) | SSIM |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for setting in settings:
        a, b = pick(old, setting), pick(new, setting)
        diffs = _paired(b, a)
        if not diffs:
            raise SystemExit(f"{method}: no frames in both runs at {setting}")
        ssim = np.median([r["ssim"] for r in b]) - np.median([r["ssim"] for r in a])
        set_name, k, noise = setting
        label = "clean" if noise == "clean" else f"{noise} dB"
        lines.append(
            f"| {set_name} | {k} | {label} | {len(diffs)} | {np.median(diffs):+.2f} | {ssim:+.4f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="a folder written by evaluate_methods.py --out")
    p.add_argument("new", type=Path, help="another one, with the same budget")
    p.add_argument("--method", required=True)
    args = p.parse_args(argv)
    old, new = (read_frames(d / "frames.csv") for d in (args.old, args.new))
    print(compare(old, new, args.method))
    return 0


if __name__ == "__main__":
    sys.exit(main())
