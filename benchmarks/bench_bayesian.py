"""Speed, memory and quality of the ``bayesian`` method on full-size frames.

The bar (issue 5) is <= 0.77 s per 400x1024 output frame on the project's 2-core CPU machine
(100x faster than the 77.4 s of the paper's implementation) and <= 1 GiB extra memory for one
frame. Both temporal priors are timed: ``motion`` (the default: keys warped along optical
flow, OpenCV on ``--threads`` threads, the LR frames between the keys read as the engine gives
them) and ``static`` (the paper's model). The input is the simulated x-ray sample made LR by
``core.degrade`` (4x4 binning and shot noise at a target LR PSNR), with HR keys every
``--key-step`` frames. Timed are the targets between the keys (at a key ``bayesian`` returns
the key, which costs nothing), through the time-ordered ``reconstruct_stream`` as the engine
calls it. Prints s/frame and frames/s of both priors and of ``bicubic`` in the same run, their
ratios, the peak extra memory of one frame (tracemalloc: numpy's allocations), the process's
peak RSS, the load average, and the mean PSNR against the HR truth (which carries the sample's
detector noise unless ``--clean-hr``).

    .venv/bin/python benchmarks/bench_bayesian.py [--frames 20] [--shape 400 1024]
        [--key-step 10] [--psnr 40] [--repeats 3] [--clean-hr] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import tracemalloc

import cv2

from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.core.windows import key_indices, plan
from napari_xfusion.methods import Reconstruction, Reconstructor, WindowInputs, get_reconstructor


def timed_stream(
    method: Reconstructor, inputs: list[WindowInputs], repeats: int
) -> tuple[float, list[Reconstruction]]:
    """Best-of-``repeats`` mean seconds per frame over the stream, and the results."""
    results = list(method.reconstruct_stream(inputs[:1]))  # warm-up (imports, thread pools)
    per_frame = []
    for _ in range(repeats):
        method.reset()
        start = time.perf_counter()
        results = list(method.reconstruct_stream(inputs))
        per_frame.append((time.perf_counter() - start) / len(inputs))
    return min(per_frame), results


def peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB else


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="length of the sequence")
    parser.add_argument("--shape", type=int, nargs=2, default=(400, 1024), metavar=("H", "W"))
    parser.add_argument("--key-step", type=int, default=10, help="HR key every k-th frame")
    parser.add_argument("--psnr", type=float, default=40.0, help="target LR PSNR in dB")
    parser.add_argument("--separation", type=int, default=1, help="LR separation s")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the sequence")
    parser.add_argument(
        "--clean-hr", action="store_true", help="simulate the HR truth without detector noise"
    )
    parser.add_argument("--threads", type=int, default=2, help="OpenCV threads (optical flow)")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)

    hr = simulate_sequence(args.frames, tuple(args.shape), seed=0, noise=not args.clean_hr)
    clean = bin_frames(hr)
    lr = add_shot_noise(clean, solve_b0(clean, args.psnr), rng=0)
    keys = key_indices(args.frames, args.key_step)
    targets = [t for t in range(args.frames) if t not in keys]
    windows = plan(targets, args.frames, args.separation, keys)
    inputs = [
        WindowInputs(
            w, lr[list(w.lr_indices)], hr[list(w.keys)], lr[list(w.keys)], read_lr=lr.__getitem__
        )
        for w in windows
    ]
    h, w = lr.shape[1:]
    print(
        f"simulated sample: {args.frames} frames ({len(targets)} between keys timed), "
        f"LR {h}x{w} -> HR {hr.shape[1]}x{hr.shape[2]}, LR PSNR {args.psnr:g} dB, "
        f"key step {args.key_step}, s={args.separation}, "
        f"HR truth {'clean' if args.clean_hr else 'with detector noise'}; "
        f"best of {args.repeats} passes; load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores"
    )

    seconds = {}
    runs = {
        "bayesian": ("bayesian", {}, "bayesian"),
        "static": ("bayesian", {"prior": "static"}, "bayesian static"),
        "bicubic": ("bicubic", {}, "bicubic"),
    }
    for label, (name, options, shown) in runs.items():
        method = get_reconstructor(name, **options)
        seconds[label], results = timed_stream(method, inputs, args.repeats)
        quality = statistics.fmean(
            psnr(r.frame, hr[win.target]) for r, win in zip(results, windows, strict=True)
        )
        print(
            f"{shown:<16s} {seconds[label]:8.4f} s/frame {1 / seconds[label]:9.2f} frames/s   "
            f"mean PSNR {quality:6.2f} dB"
        )
    print(f"time ratio bayesian/bicubic: {seconds['bayesian'] / seconds['bicubic']:.0f}x")
    print(f"time ratio bayesian/bayesian static: {seconds['bayesian'] / seconds['static']:.1f}x")
    print(f"bar 0.77 s/frame: {'met' if seconds['bayesian'] <= 0.77 else 'NOT met'}")

    method = get_reconstructor("bayesian")
    method.reconstruct(inputs[0])
    tracemalloc.start()
    method.reconstruct(inputs[0])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak extra memory of one frame: {peak / 2**20:.1f} MiB (bar 1024 MiB)")
    print(f"peak RSS of the process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
