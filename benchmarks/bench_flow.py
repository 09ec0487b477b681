"""Speed, memory and quality of the ``flow`` method on full-size frames, next to ``bicubic``.

The bar (issue 12) is <= 0.15 s per 400x1024 output frame with 2 threads, streaming in time
order. Both methods run through :func:`napari_xfusion.engine.run` on the same frames (the
targets between the keys; at a key ``flow`` returns the key), one method per pass, best of
``--repeats`` passes; the engine's frame reads are in both. Prints s/frame, frames/s, the ratio
to bicubic, the median PSNR of both against the clean HR truth, the peak memory numpy
allocated during one ``flow`` pass (tracemalloc; OpenCV's internal buffers are not in it), the
process's peak RSS and the machine's load average before and after (the machine is shared).

Sequences: ``sim`` (the simulated x-ray sample, seed ``--seed``, noise-free HR) or ``camera``
(scikit-image's camera, enlarged 2.7x, translated ``--speed`` HR px per frame along x and a
third of it along y).

    .venv/bin/python benchmarks/bench_flow.py [--sequence sim|camera] [--frames 21]
        [--shape 400 1024] [--key-step 20] [--psnr DB] [--threads 2] [--repeats 2]
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
import numpy as np

from napari_xfusion import engine
from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.sample import simulate_sequence


def camera_sequence(n_frames: int, shape: tuple[int, int], speed: float) -> np.ndarray:
    """scikit-image's camera enlarged and translated by (speed, speed / 3) px per frame."""
    from skimage import data

    img = data.camera().astype(np.float32) / 255
    need = max(shape) + int(speed * n_frames) + 64
    big = cv2.resize(img, (need, need), interpolation=cv2.INTER_CUBIC)
    frames = []
    for t in range(n_frames):
        m = np.float32([[1, 0, -(20 + speed * t)], [0, 1, -(20 + speed * t / 3)]])
        frames.append(cv2.warpAffine(big, m, (shape[1], shape[0]), flags=cv2.INTER_CUBIC))
    return np.clip(np.stack(frames), 0, 1).astype(np.float32)


def peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB else


def timed_run(name, lr, keys, targets, repeats):
    """Best-of-``repeats`` seconds per frame of one method, and its frames by index."""
    best = float("inf")
    frames: dict[int, np.ndarray] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        frames = {r.index: r.frame for r in engine.run(name, lr, keys, frames=targets)}
        best = min(best, (time.perf_counter() - start) / len(targets))
    return best, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", choices=("sim", "camera"), default="sim")
    parser.add_argument("--frames", type=int, default=21, help="length of the sequence")
    parser.add_argument("--shape", type=int, nargs=2, default=(400, 1024), metavar=("H", "W"))
    parser.add_argument("--key-step", type=int, default=20, help="HR key every k-th frame")
    parser.add_argument("--psnr", type=float, default=None, help="LR PSNR in dB (default clean)")
    parser.add_argument("--speed", type=float, default=3.0, help="camera: HR px per frame")
    parser.add_argument("--seed", type=int, default=123, help="sim: seed of the sample")
    parser.add_argument("--threads", type=int, default=2, help="OpenCV threads")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per method")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)

    shape = tuple(args.shape)
    if args.sequence == "sim":
        hr = simulate_sequence(args.frames, shape, seed=args.seed, noise=False)
    else:
        hr = camera_sequence(args.frames, shape, args.speed)
    lr = bin_frames(hr)
    if args.psnr is not None:
        lr = add_shot_noise(lr, solve_b0(lr, args.psnr), rng=0)
    keys = engine.KeyFrames.from_full_rate(hr, key_step=args.key_step)
    targets = [t for t in range(args.frames) if t not in keys and t < keys.indices[-1]]
    load_before = os.getloadavg()
    print(
        f"{args.sequence}: {args.frames} frames ({len(targets)} between keys timed), LR "
        f"{lr.shape[1]}x{lr.shape[2]} -> HR {shape[0]}x{shape[1]}, key step {args.key_step}, "
        f"LR {'clean' if args.psnr is None else f'{args.psnr:g} dB'}, {args.threads} OpenCV "
        f"threads, best of {args.repeats}; load average {load_before[0]:.2f} "
        f"(1 min) on {os.cpu_count()} cores"
    )
    seconds = {}
    for name in ("bicubic", "flow"):
        seconds[name], frames = timed_run(name, lr, keys, targets, args.repeats)
        quality = statistics.median(psnr(frames[t], hr[t]) for t in targets)
        print(
            f"{name:<8s} {seconds[name]:8.4f} s/frame {1 / seconds[name]:8.2f} frames/s   "
            f"median PSNR {quality:6.2f} dB"
        )
    print(f"time ratio flow/bicubic: {seconds['flow'] / seconds['bicubic']:.1f}x")
    print(f"bar 0.15 s/frame: {'met' if seconds['flow'] <= 0.15 else 'NOT met'}")

    tracemalloc.start()
    for _ in engine.run("flow", lr, keys, frames=targets):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak numpy memory of a flow pass: {peak / 2**20:.1f} MiB (inputs excluded)")
    print(f"peak RSS of the process: {peak_rss_mib():.0f} MiB")
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")


if __name__ == "__main__":
    main()
