"""Speed and memory of the ``edvr`` / ``edvr-stf`` methods on 100x256 -> 400x1024 frames.

For each named config (``tiny``, ``small``; ``paper`` with ``--paper``) and both archs, in a
fresh subprocess each (so the peak RSS is that config's own), through the real inference path
(:mod:`napari_xfusion.methods.network` with a checkpoint of random weights; speed does not
depend on the weight values, but the DCN offset predictors are given small random weights so
the deformable sampling is not the degenerate zero-offset case of a fresh model):

- ``plain``: :meth:`reconstruct`, one window per forward, no feature reuse;
- ``stream``: :meth:`reconstruct_stream` over ``--frames`` consecutive targets (s = 1, keys
  every 10 frames), which encodes every LR frame and HR key once (the feature cache);
- the speed-up of ``stream`` over ``plain``, the peak RSS of the process, parameters.

Then ``bicubic`` (:func:`napari_xfusion.core.resample.upscale_bicubic`) frames/s for the
ratio. Random frames: run time does not depend on content.

    .venv/bin/python benchmarks/bench_networks.py [--paper] [--configs tiny small]
        [--frames 20] [--threads N] [--precision float32|bfloat16] [--channels-last 0|1]
        [--lr-shape 100 256]

Memory and time of one 1024x1024 output frame with the paper config:

    .venv/bin/python benchmarks/bench_networks.py --configs paper --archs edvr-stf \
        --lr-shape 256 256 --frames 2 --memory-only [--tile 64]

Measured on the project's shared 2-core AMD EPYC (avx512_bf16) CPU, torch 2.13, 1 thread,
while other jobs ran (so wall-clock frames/s swing; CPU seconds per frame are the stable
figure), ``--configs small --frames 20``, channels-last, float32:

    small edvr      plain 1.46 CPU-s/frame, stream 1.38 (1.06x), peak RSS 741 MiB
    small edvr-stf  plain 2.59 CPU-s/frame, stream 2.09 (1.24x), peak RSS 981 MiB
    bicubic         ~350 frames/s

Where a ``small`` EDVR-STF frame goes (float32, NCHW, CPU-s): PCD alignment of the 5 inputs
1.76, HR key encoder 0.97, LR encoder (3 frames) 0.30, TSA 0.08, reconstruction 0.05,
up-sampling head 0.24; total 3.2 (channels-last 2.6-2.8, channels-last + bfloat16 1.7-1.9).
The cache removes the encoders, so PCD (its offset convs and DCNs) bounds the streaming rate.
Paper config, EDVR-STF, 256x256 -> 1024x1024, one frame: 124 s and 3.3 GiB peak RSS untiled;
201 s and 1.1 GiB with ``--tile 64`` (16 px overlap).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LR_SHAPE = (100, 256)
KEY_STEP = 10


def _worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from napari_xfusion.core.windows import key_indices, plan
    from napari_xfusion.methods import WindowInputs, get_reconstructor
    from napari_xfusion.nn.checkpoint import save_checkpoint
    from napari_xfusion.nn.edvr import build_model, count_parameters, named_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = named_config(args.config, args.arch)
    model = build_model(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_offset" in name and name.endswith("weight"):
                p.normal_(0, 1e-2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pt"
        save_checkpoint(path, model, provenance={"purpose": "benchmark, random weights"})
        del model
        method = get_reconstructor(
            args.arch,
            weights=path,
            device="cpu",
            precision=args.precision,
            channels_last=bool(args.channels_last),
            tile=args.tile,
        )

    n = args.frames
    rng = np.random.default_rng(0)
    h, w = args.lr_shape
    lr = rng.random((n, h, w), dtype=np.float32)
    hr = rng.random((n, 4 * h, 4 * w), dtype=np.float32)
    keys = key_indices(n, KEY_STEP) if n > KEY_STEP else key_indices(n, first_last=True)
    items = [
        WindowInputs(
            window=win,
            lr=lr[list(win.lr_indices)],
            hr_keys=hr[list(win.keys)],
            lr_at_keys=lr[list(win.keys)],
        )
        for win in plan(range(n), n, 1, keys)
    ]

    wall = time.perf_counter()
    method.reconstruct(items[0])  # warm-up: allocator, thread pool, oneDNN primitives
    if args.memory_only:
        return {
            "config": args.config,
            "arch": args.arch,
            "params": count_parameters(config),
            "one_frame_s": time.perf_counter() - wall,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    n_plain = min(n, args.plain_frames)
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items[:n_plain]:
        method.reconstruct(item)
    plain = ((time.perf_counter() - wall) / n_plain, (time.process_time() - cpu) / n_plain)

    method.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in method.reconstruct_stream(items):
        pass
    stream = ((time.perf_counter() - wall) / n, (time.process_time() - cpu) / n)
    return {
        "config": args.config,
        "arch": args.arch,
        "params": count_parameters(config),
        "plain_s": plain[0],
        "plain_cpu_s": plain[1],
        "stream_s": stream[0],
        "stream_cpu_s": stream[1],
        "cache_misses": method.cache.misses,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _bicubic_fps(frames: int, shape: tuple[int, int]) -> float:
    import numpy as np

    from napari_xfusion.core.resample import upscale_bicubic

    lr = np.random.default_rng(0).random((frames, *shape), dtype=np.float32)
    upscale_bicubic(lr[0])
    tic = time.perf_counter()
    for frame in lr:
        upscale_bicubic(frame)
    return frames / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    parser.add_argument("--archs", nargs="+", default=["edvr", "edvr-stf"])
    parser.add_argument("--paper", action="store_true", help="also the paper-size config")
    parser.add_argument("--frames", type=int, default=20, help="targets in the stream window")
    parser.add_argument("--plain-frames", type=int, default=5, help="targets timed plainly")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--channels-last", type=int, default=1, choices=[0, 1])
    parser.add_argument("--lr-shape", type=int, nargs=2, default=LR_SHAPE, metavar=("H", "W"))
    parser.add_argument(
        "--memory-only", action="store_true", help="one frame per config: peak RSS and time"
    )
    parser.add_argument("--tile", type=int, default=None, help="LR tile size (default: none)")
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "ARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        args.config, args.arch = args.worker
        print(json.dumps(_worker(args)))
        return

    configs = list(args.configs) + (["paper"] if args.paper else [])
    h, w = args.lr_shape
    print(
        f"LR {h}x{w} -> HR {4 * h}x{4 * w}, "
        f"threads={args.threads}, precision={args.precision}, "
        f"channels_last={bool(args.channels_last)}, stream window {args.frames} frames "
        f"(s=1, keys every {KEY_STEP})"
    )
    header = (
        f"{'config':<7} {'arch':<9} {'params':>10} {'plain fps':>10} {'(cpu s/f)':>10} "
        f"{'stream fps':>11} {'(cpu s/f)':>10} {'speed-up':>9} {'peak RSS':>10}"
    )
    if not args.memory_only:
        print(header)
    for config in configs:
        for arch in args.archs:
            cmd = [sys.executable, __file__, "--worker", config, arch]
            cmd += [f"--frames={args.frames}", f"--plain-frames={args.plain_frames}"]
            cmd += [f"--threads={args.threads}", f"--precision={args.precision}"]
            cmd += [f"--channels-last={args.channels_last}", "--lr-shape", str(h), str(w)]
            cmd += ["--memory-only"] if args.memory_only else []
            cmd += [f"--tile={args.tile}"] if args.tile else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{config} {arch} failed:\n{proc.stderr}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if args.memory_only:
                print(
                    f"{config:<7} {arch:<9} {r['params']:>10,}  one frame {r['one_frame_s']:.1f} s,"
                    f" peak RSS {r['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
                continue
            print(
                f"{config:<7} {arch:<9} {r['params']:>10,} {1 / r['plain_s']:>10.3f} "
                f"{r['plain_cpu_s']:>10.2f} {1 / r['stream_s']:>11.3f} {r['stream_cpu_s']:>10.2f} "
                f"{r['plain_s'] / r['stream_s']:>8.2f}x {r['peak_rss_mib']:>7.0f} MiB",
                flush=True,
            )
    fps = _bicubic_fps(args.frames, (h, w))
    print(f"bicubic: {fps:.1f} frames/s (numpy, {h}x{w} -> x4)")


if __name__ == "__main__":
    main()
