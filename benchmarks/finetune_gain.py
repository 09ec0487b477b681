"""Gain of fine-tuning edvr-stf on an experiment's own keys, by leave-one-key-out and by truth.

For each case (the x-ray simulator at a seed no shipped network was trained on, >= 20260, and
real-motion sequences of :func:`napari_xfusion.core.motion.validation_suite`, made from the
validation stills no network has seen): HR truth ``(T, H, W)``, LR = 4x4 binning plus shot
noise at ``--lr-psnr`` dB, HR keys every ``--key-step`` frames. Then

1. :func:`napari_xfusion.app.finetune.finetune` trains the shipped ``edvr-stf-small`` weights
   for ``--minutes`` on the training keys and scores both weights by leave-one-key-out on the
   held-out keys (``loo before`` / ``loo after``); the fine-tuned weights are saved whatever
   the score (``min_gain_db=-inf``) so that they can be measured against the truth too, and
   ``kept`` says what the normal rule (strictly better LOO) would have kept;
2. both weights fuse every ``--every``-th non-key frame through :func:`app.job.run_job`, and
   their mean PSNR against the true HR frame is the ``truth`` column (the frames between the
   keys: what a user gets).

Run (1 torch thread; ~4-5 minutes per case at 3 minutes of training on a shared 2-core CPU)::

    python benchmarks/finetune_gain.py --minutes 3 --out docs/benchmarks/finetune

It writes ``summary.md`` (the table) and ``rows.csv`` to ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = ("pan-slow", "nonrigid", "brightness")


def cases(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    from napari_xfusion.core.motion import validation_suite
    from napari_xfusion.core.sample import simulate_sequence

    shape = tuple(args.shape)
    out = [
        (
            f"simulated (seed {args.seed})",
            simulate_sequence(args.frames, shape, seed=args.seed, noise=False),
        )
    ]
    names = [n for n in args.real if n]
    if names:
        out += [
            (f"real-motion {n}", f)
            for n, f in validation_suite(shape, args.frames, seed=args.seed, names=names)
        ]
    return out


def degrade(truth: np.ndarray, lr_psnr: float | None, seed: int) -> np.ndarray:
    from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0

    lr = bin_frames(truth)
    if lr_psnr is None:
        return lr
    b0 = solve_b0(lr, lr_psnr, seed=seed)
    return add_shot_noise(lr, b0, np.random.default_rng(seed)).astype(np.float32)


def truth_psnr(config, prepared, weights: Path, targets: list[int]) -> float:
    """Mean PSNR of edvr-stf with ``weights`` against the truth at ``targets``."""
    from napari_xfusion.app.config import MethodChoice
    from napari_xfusion.app.job import FrameEvent, run_job

    run = config.replace(methods=(MethodChoice("edvr-stf", weights=str(weights)),))
    values = [
        e.row.psnr for e in run_job(run, prepared, targets=targets) if isinstance(e, FrameEvent)
    ]
    return float(np.nanmean(values))


def run_case(name: str, truth: np.ndarray, args: argparse.Namespace, folder: Path) -> dict:
    from napari_xfusion.app.config import KeyRule, RunConfig
    from napari_xfusion.app.finetune import FinetuneSettings, finetune
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.methods.network import shipped_weights

    config = RunConfig(keys=KeyRule(step=args.key_step), device="cpu")
    lr = degrade(truth, args.lr_psnr, args.seed)
    # The full-rate HR stack is both the keys' source and the truth of every frame.
    prepared = prepare_inputs(config, lr=lr, hr=truth)
    keys = set(prepared.keys.indices.tolist())
    targets = [t for t in range(prepared.n_frames) if t not in keys][:: args.every]
    out = folder / f"{len(list(folder.iterdir()))}.pt"
    t0 = time.monotonic()
    settings = FinetuneSettings(threads=1, min_gain_db=-math.inf)
    result = finetune(
        config,
        prepared,
        method="edvr-stf",
        minutes=args.minutes,
        out=out,
        settings=settings,
        seed=args.seed,
    )
    source = shipped_weights("edvr-stf")
    before, after = (
        truth_psnr(config, prepared, source, targets),
        truth_psnr(config, prepared, out, targets),
    )
    row = {
        "case": name,
        "keys": f"{len(keys)} (held out {','.join(map(str, result.split.validation))})",
        "steps": result.steps,
        "train_s": round(result.seconds),
        "loo_before": result.loo_before.psnr,
        "loo_after": result.loo_after.psnr,
        "loo_gain": result.loo_after.psnr - result.loo_before.psnr,
        "truth_before": before,
        "truth_after": after,
        "truth_gain": after - before,
        "truth_frames": len(targets),
        "kept": "finetuned" if result.loo_after.psnr > result.loo_before.psnr else "original",
        "total_s": round(time.monotonic() - t0),
    }
    print(f"{name}: {row}", file=sys.stderr, flush=True)
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| case | keys | steps (s) | LOO before | LOO after | LOO gain | truth before | "
        "truth after | truth gain | kept by LOO |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['keys']} | {r['steps']} ({r['train_s']}) | "
            f"{r['loo_before']:.2f} | {r['loo_after']:.2f} | {r['loo_gain']:+.2f} | "
            f"{r['truth_before']:.2f} | {r['truth_after']:.2f} | {r['truth_gain']:+.2f} | "
            f"{r['kept']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="training per case (3)")
    p.add_argument("--frames", type=int, default=61, help="frames per sequence (61)")
    p.add_argument("--shape", type=int, nargs=2, default=[200, 512], help="HR H W (200 512)")
    p.add_argument("--key-step", type=int, default=10, help="key every K frames (10)")
    p.add_argument("--lr-psnr", type=float, default=40.0, help="LR shot noise, dB (40)")
    p.add_argument("--seed", type=int, default=20260, help="simulator/suite seed (>= 20260)")
    p.add_argument("--real", nargs="*", default=list(REAL), help="real-motion sequences")
    p.add_argument("--every", type=int, default=3, help="truth on every N-th non-key frame (3)")
    p.add_argument("--out", type=Path, default=None, help="folder for summary.md and rows.csv")
    args = p.parse_args(argv)
    if args.seed < 20260:
        p.error("--seed must be >= 20260 (lower seeds were used to train or select weights)")
    from napari_xfusion.engine import configure_torch_threads

    configure_torch_threads(1)  # the engine's once-per-process setting: 1 thread everywhere
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, truth in cases(args):
            rows.append(run_case(name, truth, args, Path(tmp)))
    text = table(rows)
    command = "python benchmarks/finetune_gain.py " + " ".join(argv or sys.argv[1:])
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "rows.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (args.out / "summary.md").write_text(
            f"# Fine-tuning gain\n\n`{command.strip()}`\n\nPSNR in dB. LOO: leave-one-key-out "
            "on the held-out keys; truth: mean over every "
            f"{args.every}-th non-key frame against the true HR frame.\n\n{text}\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
