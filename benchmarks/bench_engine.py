"""Engine throughput and memory bound: a long LR stream fused to a TIFF, frame by frame.

Default: a 2,000-frame 100x256 LR stream and 400x1024 HR keys (every 20th frame), both
memory-mapped TIFFs in a temp folder, fused with ``bicubic`` through
:func:`napari_xfusion.engine.run` and written with :class:`~napari_xfusion.core.io.StackWriter`
(a 3.3 GB float32 output; the whole stack never sits in memory). Prints frames/s and the
process's peak RSS, which must stay under 2 GiB (issue 6).

    .venv/bin/python benchmarks/bench_engine.py
    .venv/bin/python benchmarks/bench_engine.py --frames 200 --methods bicubic,bayesian
    .venv/bin/python benchmarks/bench_engine.py --cache 40 --methods edvr-stf  # cache speed-up
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_xfusion.core.io import StackWriter, read_stack
from napari_xfusion.engine import KeyFrames, run

GIB = 2**30


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_anon_bytes() -> int | None:
    """Current anonymous (heap) resident memory, Linux only: the part that is not clean pages
    of the memory-mapped inputs, which the kernel can drop at any time."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def synthetic_frame(t: int, shape: tuple[int, int]) -> np.ndarray:
    """A cheap moving pattern in [0, 1] (the content does not matter for throughput)."""
    h, w = shape
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    return (0.5 + 0.25 * np.sin(8 * x + 0.05 * t) + 0.25 * np.cos(5 * y - 0.03 * t)).astype(
        np.float32
    )


def write_inputs(folder: Path, n_frames: int, lr_shape: tuple[int, int], key_step: int):
    """Write ``lr.tif`` (n_frames) and ``keys.tif`` (every key_step-th frame) frame by frame."""
    hr_shape = (4 * lr_shape[0], 4 * lr_shape[1])
    key_indices = np.arange(0, n_frames, key_step)
    with StackWriter(folder / "lr.tif", (n_frames, *lr_shape), np.float32) as out:
        for t in range(n_frames):
            out.write(synthetic_frame(t, lr_shape))
    with StackWriter(folder / "keys.tif", (key_indices.size, *hr_shape), np.float32) as out:
        for t in key_indices:
            out.write(synthetic_frame(int(t), hr_shape))
    return folder / "lr.tif", folder / "keys.tif", key_indices


def cache_speedup(method: str, n_frames: int, lr_shape: tuple[int, int], key_step: int) -> None:
    """Frames/s of ``method`` through the engine (time-ordered ``reconstruct_stream``: network
    methods reuse per-frame features) versus one independent ``reconstruct`` per window."""
    from napari_xfusion.core.windows import plan
    from napari_xfusion.engine import build_methods
    from napari_xfusion.methods import WindowInputs

    hr_shape = (4 * lr_shape[0], 4 * lr_shape[1])
    lr = np.stack([synthetic_frame(t, lr_shape) for t in range(n_frames)])
    key_idx = np.arange(0, n_frames, key_step)
    hr = np.stack([synthetic_frame(int(t), hr_shape) for t in key_idx])
    keys = KeyFrames(hr, key_idx)
    (reconstructor,) = build_methods(method)

    tic = time.perf_counter()
    streamed = [r.frame for r in run([reconstructor], lr, keys, separation=1)]
    stream_s = time.perf_counter() - tic

    tic = time.perf_counter()
    reconstructor.reset()
    single = []
    for w in plan(range(n_frames), n_frames, 1, key_idx):
        rows = [int(np.flatnonzero(key_idx == k)[0]) for k in w.keys]
        inputs = WindowInputs(w, lr[list(w.lr_indices)], hr[rows], lr[list(w.keys)])
        single.append(reconstructor.reconstruct(inputs).frame)
    single_s = time.perf_counter() - tic
    worst = max(float(np.abs(a - b).max()) for a, b in zip(streamed, single, strict=True))
    print(
        f"{method}: engine stream {n_frames / stream_s:.2f} frames/s, one window at a time "
        f"{n_frames / single_s:.2f} frames/s: speed-up x{single_s / stream_s:.2f} "
        f"(max |difference| {worst:.2e})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="LR frames (default 2000)")
    parser.add_argument("--lr-size", default="100x256", help="LR frame HxW (default 100x256)")
    parser.add_argument("--key-step", type=int, default=20, help="HR key every K frames")
    parser.add_argument("--methods", default="bicubic", help="comma-separated methods")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument(
        "--cache",
        type=int,
        metavar="N",
        help="instead: compare the engine's stream with per-window calls on N frames",
    )
    args = parser.parse_args(argv)
    lr_shape = tuple(int(v) for v in args.lr_size.split("x"))
    methods = args.methods.split(",")
    if args.cache:
        for method in methods:
            cache_speedup(method, args.cache, lr_shape, args.key_step)
        return 0

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        tic = time.perf_counter()
        lr_path, keys_path, key_indices = write_inputs(folder, args.frames, lr_shape, args.key_step)
        print(f"inputs written in {time.perf_counter() - tic:.1f} s")
        lr = read_stack(lr_path, check_finite=False)
        hr = read_stack(keys_path, check_finite=False)
        assert isinstance(lr, np.memmap) and isinstance(hr, np.memmap)
        keys = KeyFrames(hr, key_indices)
        rss_before = peak_rss_bytes()

        writers = {
            m: StackWriter(folder / f"fused_{m}.tif", (args.frames, *keys.frame_shape), np.float32)
            for m in methods
        }
        tic = time.perf_counter()
        engine_seconds = 0.0
        anon_peak = 0
        for result in run(methods, lr, keys, separation=1):
            engine_seconds += result.seconds
            writers[result.method].write(result.frame, index=result.index)
            if result.index % 50 == 0:
                anon_peak = max(anon_peak, rss_anon_bytes() or 0)
        for writer in writers.values():
            writer.close()
        wall = time.perf_counter() - tic
        out_bytes = sum((folder / f"fused_{m}.tif").stat().st_size for m in methods)

    n = args.frames * len(methods)
    peak = peak_rss_bytes()
    print(
        f"fused {args.frames} frames of {lr_shape[0]}x{lr_shape[1]} -> "
        f"{4 * lr_shape[0]}x{4 * lr_shape[1]} with {','.join(methods)}; "
        f"{key_indices.size} keys; output {out_bytes / GIB:.2f} GiB"
    )
    print(f"end to end (read, fuse, write): {n / wall:.1f} frames/s ({wall:.1f} s)")
    print(f"read + fuse (engine, no write): {n / engine_seconds:.1f} frames/s")
    print(f"peak RSS: {peak / GIB:.3f} GiB (after writing the inputs: {rss_before / GIB:.3f} GiB)")
    if anon_peak:
        # RSS also counts the memory-mapped input pages read so far (clean, reclaimable);
        # the anonymous part is what the engine itself holds: it must not grow with T.
        print(f"anonymous RSS, max sampled every 50 frames: {anon_peak / GIB:.3f} GiB")
    if peak >= 2 * GIB:
        print("FAIL: peak RSS is not under 2 GiB")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
