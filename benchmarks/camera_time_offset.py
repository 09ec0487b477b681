"""Accuracy of ``core.cameras.refine_time_offset`` (issue 17): HR keys at a known sub-frame
time offset, recovered from the images, clean and with LR shot noise.

The scene is the simulated x-ray sample at ``--fine`` time steps per LR frame
(``speed=1/fine``), binned 4x4 into the LR grid; LR frames are every ``fine``-th step and HR
keys (binned) sit ``offset`` LR frames after their LR index, taken either from the finer steps
(``fine``: real sub-frame motion) or as a linear blend of two LR frames (``interp``). Prints
the error of the joint offset (estimate - truth, LR frames) per kernel, offset, PSNR and noise
seed, and the largest |error| per kernel and PSNR.

    .venv/bin/python benchmarks/camera_time_offset.py [--frames 41] [--shape 128 256]
        [--fine 10] [--key-step 4] [--seeds 3] [--kernels bspline cubic linear]
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_xfusion.core.cameras import refine_time_offset
from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.sample import simulate_sequence

OFFSETS = (0.3, -0.4, 0.0, 0.5, 0.1)
PSNRS = (None, 30.0, 25.0, 20.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=41, help="LR frames")
    parser.add_argument("--shape", type=int, nargs=2, default=(128, 256), help="HR H W")
    parser.add_argument("--fine", type=int, default=10, help="time steps per LR frame")
    parser.add_argument("--key-step", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3, help="noise draws per case")
    parser.add_argument("--kernels", nargs="+", default=["bspline", "cubic", "linear"])
    args = parser.parse_args()

    fine = args.fine
    steps = simulate_sequence(n_frames=args.frames * fine, shape=tuple(args.shape), seed=3,
                              speed=1 / fine, noise=False, n_pores=3, n_spatter=12)  # fmt: skip
    fine_lr = bin_frames(steps)
    lr_clean = fine_lr[::fine]
    keys = np.arange(args.key_step, args.frames - args.key_step, args.key_step)
    noise_b0 = {db: solve_b0(lr_clean, db) for db in PSNRS if db is not None}
    print(f"LR {lr_clean.shape}, {keys.size} keys at {keys.tolist()}")
    for kernel in args.kernels:
        worst = {db: 0.0 for db in PSNRS}
        for mode in ("interp", "fine"):
            for offset in OFFSETS:
                if mode == "fine":
                    hr = fine_lr[keys * fine + round(offset * fine)]
                else:
                    lo = int(np.floor(offset))
                    a = offset - lo
                    hr = (1 - a) * lr_clean[keys + lo] + a * lr_clean[keys + lo + 1]
                row = []
                for db in PSNRS:
                    draws = [lr_clean] if db is None else [
                        add_shot_noise(lr_clean, noise_b0[db], seed) for seed in range(args.seeds)
                    ]  # fmt: skip
                    errors = [
                        refine_time_offset(lr, hr, keys, kernel=kernel).offset_frames - offset
                        for lr in draws
                    ]
                    worst[db] = max(worst[db], max(abs(e) for e in errors))
                    label = "clean" if db is None else f"{db:g} dB"
                    row.append(f"{label}: " + " ".join(f"{e:+.3f}" for e in errors))
                print(f"{kernel:8s} {mode:6s} {offset:+.1f}  " + " | ".join(row))
        summary = ", ".join(
            f"{'clean' if db is None else f'{db:g} dB'} {err:.3f}" for db, err in worst.items()
        )
        print(f"{kernel}: largest |error| (LR frames): {summary}")


if __name__ == "__main__":
    main()
