"""How accurately :func:`core.registration.estimate_transform` recovers a known camera transform.

Each case simulates a scene (:func:`core.sample.simulate_sequence`, noise-free truth on the 4x
grid of the LR camera), bins it 4x4 into the LR camera (+ shot noise at the given LR PSNR) and
renders the HR camera's view with :func:`core.registration.warp_hr_view` under a random transform:
both mirror flips drawn at random, rotation in +-5 degrees, a pixel ratio in 2.7..3.1 (the
paper's pair is 2.9), the HR view's centre within +-6 LR px of the LR centre. The estimate
(scale hint 1/2.9) is scored by the error of the overlap's four corners mapped through the true
and the estimated transform (LR px), the rotation error (degrees), the scale error (%) and
whether the flips were found. Reported: the worst and the median case per noise level.

    python benchmarks/registration_accuracy.py                      # clean, 30, 20 dB; 8 cases
    python benchmarks/registration_accuracy.py --lr-psnr 20 --keys 3 --cases 4
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.registration import CameraTransform, estimate_transform, warp_hr_view
from napari_xfusion.core.sample import simulate_sequence

TRUTH_SHAPE = (256, 512)
"""The scene on the 4x grid of a 64x128 LR camera."""
HR_SHAPE = (150, 300)
"""The HR camera's sensor (rows, columns): at ratio ~2.9 it sees about 52x103 LR pixels."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--lr-psnr", nargs="+", default=["clean", "30", "20"],
        help="LR noise: 'clean' and/or LR PSNRs in dB",
    )  # fmt: skip
    p.add_argument("--cases", type=int, default=8, help="random transforms per noise level")
    p.add_argument("--keys", type=int, default=5, help="HR keys used jointly (2 frames apart)")
    return p.parse_args(argv)


def random_transform(rng: np.random.Generator) -> CameraTransform:
    flip_x, flip_y = bool(rng.integers(2)), bool(rng.integers(2))
    rotation = float(rng.uniform(-5, 5))
    scale = 1.0 / float(rng.uniform(2.7, 3.1))
    centred = CameraTransform.from_params(scale, rotation, (0, 0), flip_x, flip_y, HR_SHAPE)
    hr_centre = np.array([(HR_SHAPE[1] - 1) / 2, (HR_SHAPE[0] - 1) / 2])
    lr_centre = np.array([(TRUTH_SHAPE[1] / 4 - 1) / 2, (TRUTH_SHAPE[0] / 4 - 1) / 2])
    shift = lr_centre - centred.apply(hr_centre[None])[0] + rng.uniform(-6, 6, 2)
    return CameraTransform.from_params(scale, rotation, tuple(shift), flip_x, flip_y, HR_SHAPE)


def run_case(seed: int, noise: str, n_keys: int) -> dict:
    rng = np.random.default_rng(seed)
    keys = list(range(0, 2 * n_keys, 2))
    truth = simulate_sequence(keys[-1] + 1, TRUTH_SHAPE, seed=100 + seed, noise=False)
    lr = bin_frames(truth)
    if noise != "clean":
        lr = add_shot_noise(lr, solve_b0(lr, float(noise)), seed)
    true = random_transform(rng)
    hr = warp_hr_view(truth[keys], true, HR_SHAPE)
    t0 = time.perf_counter()
    reg = estimate_transform(hr, lr[keys], scale_hint=1 / 2.9)
    seconds = time.perf_counter() - t0
    y0, y1, x0, x1 = reg.overlap_lr
    corners = np.array([[x, y] for y in (y0 - 0.5, y1 - 0.5) for x in (x0 - 0.5, x1 - 0.5)])
    corner_error = np.abs(reg.transform.apply(true.inverse().apply(corners)) - corners).max()
    est, ref = reg.transform.params(), true.params()
    return {
        "corner_lr_px": float(corner_error),
        "rotation_deg": abs(est["rotation_deg"] - ref["rotation_deg"]),
        "scale_pct": abs(est["scale"] / ref["scale"] - 1) * 100,
        "flips_ok": (est["flip_x"], est["flip_y"]) == (ref["flip_x"], ref["flip_y"]),
        "residual_lr_px": reg.residual_lr_px,
        "seconds": seconds,
    }


def _worst_median(rows: list[dict], key: str, digits: int = 3) -> str:
    values = np.array([r[key] for r in rows])
    return f"{values.max():.{digits}f} [{np.median(values):.{digits}f}]"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"{args.cases} random transforms per row, {args.keys} keys, scene {TRUTH_SHAPE} on the "
        f"4x grid, HR sensor {HR_SHAPE}; worst [median]\n"
    )
    print("| LR | corner error (LR px) | rotation error (deg) | scale error (%) | flips | s/case |")
    print("|---|---:|---:|---:|---:|---:|")
    for noise in args.lr_psnr:
        rows = [run_case(seed, noise, args.keys) for seed in range(args.cases)]
        label = "clean" if noise == "clean" else f"{noise} dB"
        flips = sum(r["flips_ok"] for r in rows)
        seconds = np.median([r["seconds"] for r in rows])
        print(
            f"| {label} | {_worst_median(rows, 'corner_lr_px')} | "
            f"{_worst_median(rows, 'rotation_deg')} | {_worst_median(rows, 'scale_pct')} | "
            f"{flips}/{len(rows)} | {seconds:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
