"""Speed of the ``bicubic`` method: x4 bicubic up-sampling of one 100x256 LR frame to 400x1024.

The bar (issue 3) is < 10 ms per frame on the project's 2-core CPU machine. Prints the median
time per frame over repeats for the numpy core function, the ``bicubic`` Reconstructor and, for
reference, PyTorch's ``interpolate`` when torch imports.

    .venv/bin/python benchmarks/bench_bicubic.py [--repeats 50] [--shape 100 256]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.core.windows import Window
from napari_xfusion.methods import SCALE, WindowInputs, get_reconstructor


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(label: str, seconds: float) -> None:
    print(f"{label:<40s} {seconds * 1e3:8.3f} ms/frame {1.0 / seconds:9.1f} frames/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per variant")
    parser.add_argument("--shape", type=int, nargs=2, default=(100, 256), metavar=("H", "W"))
    args = parser.parse_args()
    h, w = args.shape
    rng = np.random.default_rng(0)
    frame = rng.random((h, w), dtype=np.float32)
    print(f"LR {h}x{w} -> HR {SCALE * h}x{SCALE * w}, median of {args.repeats} repeats")

    report(
        "core.resample.upscale_bicubic",
        median_seconds(lambda: upscale_bicubic(frame), args.repeats),
    )

    window = Window(target=1, lr_indices=(0, 1, 2), key_before=0, key_after=3, separation=1)
    inputs = WindowInputs(
        window=window,
        lr=rng.random((3, h, w), dtype=np.float32),
        hr_keys=rng.random((2, SCALE * h, SCALE * w), dtype=np.float32),
        lr_at_keys=rng.random((2, h, w), dtype=np.float32),
    )
    method = get_reconstructor("bicubic")
    report(
        "methods 'bicubic' reconstruct()",
        median_seconds(lambda: method.reconstruct(inputs), args.repeats),
    )

    try:
        import torch
    except ImportError:
        return
    tensor = torch.from_numpy(frame)[None, None]

    def torch_bicubic() -> object:
        return torch.nn.functional.interpolate(
            tensor, scale_factor=SCALE, mode="bicubic", align_corners=False
        )

    report(
        f"torch interpolate ({torch.get_num_threads()} threads)",
        median_seconds(torch_bicubic, args.repeats),
    )


if __name__ == "__main__":
    main()
