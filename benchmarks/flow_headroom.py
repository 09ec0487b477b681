"""How much better than the ``flow`` frame could a network do by *choosing* among its inputs?

``edvr-stf-flow`` sees, per target frame, the ``flow`` method's fused frame and the two HR keys
warped to t along the same motion (plus confidences and the LR frames). This script measures,
on the frames of ``evaluate_methods.py`` (same sets, settings, key intervals and targets), an
**oracle selection**: every ``B x B`` HR block of the frame taken from whichever of the three
(flow frame, key before warped, key after warped) is closest to the truth there. The oracle
knows the truth, so its gain over the flow frame is an upper bound of what any per-region
choice between those inputs can add; what a network gains beyond it must come from repairing
the motion itself (re-aligning the keys) or from inventing detail. Beside it, the same choice
made with what a method does know, the LR frame at t (per block, the candidate whose 4x4
binning is closest to it): it shows whether the LR can tell the candidates apart. And one
training-free construction from the same inputs, **warped keys + BP**: the keys warped along
flow's motion, blended by flow's per-key weights and confidences (the flow frame where neither
key is trusted), then back-projected onto the LR frame at t with flow's own smoothing, where
``flow`` instead adds the keys' detail to the smoothed LR frame before back-projecting.

    python benchmarks/flow_headroom.py --out docs/benchmarks/flow-headroom
    python benchmarks/flow_headroom.py --quick

Reported per set and setting: median PSNR of the flow frame and median per-frame oracle gains
(dB) for each block size (``--blocks``, default 16 8 4; 4 HR pixels = one LR pixel, where the
oracle starts to fit the noise of the truth-vs-estimate difference rather than structure).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_xfusion.core.degrade import SCALE, bin_frames
from napari_xfusion.core.evaluation import make_eval_inputs
from napari_xfusion.core.flow.backproject import back_project
from napari_xfusion.core.flow.records import KeyMotion
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.motion import SUITE
from napari_xfusion.nn.edvr_flow import FlowKeyInputs, RecordingFlowFuser, flow_key_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The same sequences, settings and LR noise draws as the benchmark this explains.
from evaluate_methods import KEY_STEPS, NOISE, SIM_SEEDS, cases, noise_seed  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="folder for summary.md and rows.csv")
    p.add_argument("--size", type=int, nargs=2, default=(400, 1024), metavar=("H", "W"))
    p.add_argument("--key-steps", type=int, nargs="+", default=list(KEY_STEPS))
    p.add_argument("--noise", nargs="+", default=list(NOISE), choices=list(NOISE))
    p.add_argument("--sequences", nargs="+", choices=list(SUITE), help="default: all")
    p.add_argument("--sim-seeds", type=int, nargs="*", default=list(SIM_SEEDS))
    p.add_argument("--suite-seed", type=int, default=0, help="seed of the real-motion suite")
    p.add_argument("--targets-per-gap", type=int, default=3)
    p.add_argument(
        "--blocks", type=int, nargs="+", help="HR block sizes (default 16 8 4; --quick: 8 4)"
    )
    p.add_argument("--quick", action="store_true", help="200x512, 1 target, 1 simulator seed")
    args = p.parse_args(argv)
    if args.blocks is None:
        args.blocks = [8, 4] if args.quick else [16, 8, 4]
    if args.quick:
        args.size, args.targets_per_gap, args.sim_seeds = (200, 512), 1, args.sim_seeds[:1]
    args.frames = max(args.key_steps) + 1
    h, w = args.size
    bad = [b for b in args.blocks if b < 1 or h % b or w % b]
    if bad:
        p.error(f"--blocks {bad} do not divide the frame size {h}x{w}")
    return args


def oracle_selection(
    candidates: np.ndarray, truth: np.ndarray, block: int, compare: np.ndarray | None = None
) -> np.ndarray:
    """Per ``block x block`` tile, the candidate closest to ``truth`` (mean squared error).

    Parameters
    ----------
    candidates : numpy.ndarray, shape (N, H, W)
    truth : numpy.ndarray, shape (H, W), or (h, w) with ``compare``
    block : int
        Tile size in pixels of ``candidates``; divides H and W.
    compare : numpy.ndarray, shape (N, h, w), optional
        What is compared with ``truth`` instead of the candidates (e.g. their LR binning);
        a tile is ``block * h / H`` of its pixels.

    Returns
    -------
    numpy.ndarray, shape (H, W)
    """
    n, h, w = candidates.shape
    tiles = candidates.reshape(n, h // block, block, w // block, block)
    ref = candidates if compare is None else compare
    b = block * ref.shape[1] // h
    err = ref.reshape(n, h // block, b, w // block, b) - truth.reshape(1, h // block, b, -1, b)
    best = (err**2).mean(axis=(2, 4)).argmin(axis=0)  # (H/B, W/B)
    picked = np.take_along_axis(tiles, best[None, :, None, :, None], axis=0)[0]
    return picked.reshape(h, w)


def lr_selection(candidates: np.ndarray, lr_t: np.ndarray, block: int) -> np.ndarray:
    """Per ``block x block`` HR tile, the candidate whose 4x4 block means are closest to the LR
    frame at t (the non-oracle counterpart of :func:`oracle_selection`; ``block`` a multiple
    of 4)."""
    binned = np.stack([bin_frames(c[None])[0] for c in candidates])
    return oracle_selection(candidates, lr_t, block, compare=binned)


def warped_keys_back_projected(
    motions: Sequence[KeyMotion], got: FlowKeyInputs, lr_t: np.ndarray, smoothing: float,
    iterations: int,
) -> np.ndarray:  # fmt: skip
    """The "warped keys + BP" frame (see the module docstring), shape (H, W): ``motions`` the
    flow fuser's two key motions at t, ``smoothing`` its back-projection width (LR px)."""
    weights = np.stack([m.confidence * m.weight for m in motions])
    blend = (weights * got.warped).sum(axis=0) / np.maximum(weights.sum(axis=0), 1e-6)
    trusted = 1.0 - np.prod([1.0 - m.confidence for m in motions], axis=0)
    frame = trusted * blend + (1.0 - trusted) * got.frame
    return back_project(frame, lr_t, iterations, smoothing)


def measure(args: argparse.Namespace) -> list[dict]:
    """One row per scored frame: flow PSNR and the oracle's PSNR per block size."""
    rows = []
    for set_name, sequence, hr in cases(args):
        for noise in args.noise:
            seed = noise_seed(set_name, sequence, noise)
            for key_step in args.key_steps:
                db = None if noise == "clean" else float(noise)
                inputs = make_eval_inputs(
                    hr, key_step, lr_psnr_db=db, noise_seed=seed,
                    targets_per_gap=args.targets_per_gap,
                )  # fmt: skip
                fuser = RecordingFlowFuser()
                keys = tuple(int(k) for k in inputs.key_indices)
                lr_at_keys = inputs.lr[list(keys)]
                # flow's back-projection width: one per key pair, as the fuser computes it
                smoothing = fuser.pair_params(inputs.hr_keys, lr_at_keys).denoise
                for t in inputs.targets:
                    got = flow_key_inputs(
                        fuser, int(t), keys, inputs.lr[t], inputs.hr_keys, lr_at_keys,
                        read_lr=lambda i, lr=inputs.lr: lr[i],
                    )  # fmt: skip
                    truth = hr[t]
                    frame = np.clip(got.frame, 0.0, 1.0)
                    cands = np.concatenate([frame[None], np.clip(got.warped, 0.0, 1.0)])
                    row = {
                        "set": set_name, "sequence": sequence, "key_step": key_step,
                        "noise": noise, "index": int(t), "flow_psnr": psnr(frame, truth),
                    }  # fmt: skip
                    for b in args.blocks:
                        row[f"oracle_{b}_psnr"] = psnr(oracle_selection(cands, truth, b), truth)
                    for b in args.blocks:
                        if b % SCALE == 0:
                            chosen = lr_selection(cands, inputs.lr[t], b)
                            row[f"lr_choice_{b}_psnr"] = psnr(chosen, truth)
                    assert fuser.last_motion is not None  # targets lie between the keys
                    warped_bp = warped_keys_back_projected(
                        fuser.last_motion, got, inputs.lr[t], smoothing, fuser.bp_iterations
                    )
                    row["warped_bp_psnr"] = psnr(np.clip(warped_bp, 0.0, 1.0), truth)
                    rows.append(row)
        print(f"{set_name} {sequence}: done", flush=True)
    return rows


def summary(rows: list[dict], blocks: Sequence[int], command: str, seconds: float) -> str:
    lr_blocks = [b for b in blocks if b % SCALE == 0]
    lines = [
        "# Headroom of a per-region choice between edvr-stf-flow's inputs",
        "",
        f"`{command}` ({seconds / 60:.1f} min)",
        "",
        "Median over the scored frames; gains are medians of per-frame differences (dB). "
        "Oracle B: every BxB HR block from whichever of (flow frame, key before warped, key "
        "after warped) is closest to the truth.",
        "",
        "LR choice B: the same choice by the closest 4x4 binning to the LR frame at t. Warped "
        "keys + BP: the module docstring's training-free alternative to the flow frame.",
        "",
        "| set | k | LR | frames | flow PSNR | "
        + " | ".join(f"oracle {b} gain" for b in blocks)
        + " | "
        + " | ".join(f"LR choice {b} gain" for b in lr_blocks)
        + " | warped keys + BP gain |",
        "|---|---:|---|---:|---:|" + "---:|" * (len(blocks) + len(lr_blocks) + 1),
    ]
    settings = dict.fromkeys((r["set"], r["key_step"], r["noise"]) for r in rows)
    for set_name, k, noise in settings:
        sel = [r for r in rows if (r["set"], r["key_step"], r["noise"]) == (set_name, k, noise)]
        flow = np.array([r["flow_psnr"] for r in sel])
        names = [f"oracle_{b}_psnr" for b in blocks] + [f"lr_choice_{b}_psnr" for b in lr_blocks]
        names.append("warped_bp_psnr")
        gains = [np.median(np.array([r[name] for r in sel]) - flow) for name in names]
        label = "clean" if noise == "clean" else f"{noise} dB"
        lines.append(
            f"| {set_name} | {k} | {label} | {len(sel)} | {np.median(flow):.2f} | "
            + " | ".join(f"{g:+.2f}" for g in gains)
            + " |"
        )
    lines += [
        "",
        "Warped keys + BP gain over the flow frame per sequence, noise-free LR (median over its "
        "frames of both k, dB):",
        "",
        "| set | sequence | gain |",
        "|---|---|---:|",
    ]
    for set_name, sequence in dict.fromkeys((r["set"], r["sequence"]) for r in rows):
        sel = [r for r in rows if (r["set"], r["sequence"], r["noise"]) == (set_name, sequence,
                                                                          "clean")]  # fmt: skip
        if sel:
            gain = np.median([r["warped_bp_psnr"] - r["flow_psnr"] for r in sel])
            lines.append(f"| {set_name} | {sequence} | {gain:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/flow_headroom.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    t0 = time.monotonic()
    rows = measure(args)
    text = summary(rows, args.blocks, command.strip(), time.monotonic() - t0)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.md").write_text(text, encoding="utf-8")
        with open(args.out / "rows.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
