"""Peak memory of fitting the clip values of a uint16 stack: 250, 2,000, 8,000 frames (memmap).

Issue 13, item 11: the percentiles used to be taken over a full copy of the LR stack (900 MiB
peak at 8,000 frames). Each size runs in a fresh subprocess that writes the stack with
:func:`napari_xfusion.core.io.write_stack`, memory-maps it with ``read_stack`` and fits
:func:`napari_xfusion.core.normalise.fit_normalisation`; the peak resident set size of that
process is the child's ``ru_maxrss`` (it includes the interpreter, the imports and the pages of
the memmap the fit reads); the file is written by another process beforehand. Also printed:
the clip values next to exact percentiles from a full in-memory copy (computed afterwards, not
counted).

Run: ``PYTHONPATH=$PWD python benchmarks/bench_normalise.py [--shape 100 256] [--sizes 250 8000]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WRITER = r"""
import sys
import numpy as np
from napari_xfusion.core.io import StackWriter

n, h, w, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
with StackWriter(path, (n, h, w), np.uint16) as out:  # streamed: never the whole stack
    for t in range(n):
        level = 20000 + 8000 * np.sin(t / 300)
        out.write(np.clip(rng.normal(level, 1500, (h, w)), 0, 65535).astype(np.uint16))
"""

CHILD = r"""
import json, os, resource, sys, time
import numpy as np
from napari_xfusion.core.io import read_stack
from napari_xfusion.core.normalise import fit_normalisation

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024

path = sys.argv[1]
stack = read_stack(path)
before = rss_kib()
t0 = time.perf_counter()
params = fit_normalisation(stack)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
low, high = np.percentile(np.asarray(stack), [0.35, 99.65])  # exact, after the measurement
print(json.dumps({"frames": stack.shape[0], "stack_mib": stack.nbytes / 2**20,
                  "peak_rss_mib": peak / 1024, "rss_before_mib": before / 1024,
                  "seconds": seconds, "low": params.low, "high": params.high,
                  "exact_low": float(low), "exact_high": float(high)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(100, 256), metavar=("H", "W"))
    parser.add_argument("--sizes", type=int, nargs="+", default=(250, 2000, 8000))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"lr_{n}.tif"
            size = [str(n), *map(str, args.shape), str(path)]
            subprocess.run([sys.executable, "-c", WRITER, *size], check=True)
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                check=True,
            )  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            path.unlink()
    h, w = args.shape
    print(f"fit_normalisation on a memory-mapped uint16 stack of {h}x{w} frames")
    print("RSS before = after imports and read_stack; peak = the process's maximum RSS, "
          "which includes the memmap pages the fit read")  # fmt: skip
    print(f"{'frames':>7} {'stack MiB':>10} {'RSS before':>11} {'peak RSS MiB':>13} {'s':>6} "
          f"{'low (exact)':>18} {'high (exact)':>18}")  # fmt: skip
    for r in rows:
        print(f"{r['frames']:>7} {r['stack_mib']:>10.1f} {r['rss_before_mib']:>11.1f} "
              f"{r['peak_rss_mib']:>13.1f} "
              f"{r['seconds']:>6.2f} {r['low']:>8.0f} ({r['exact_low']:>7.0f}) "
              f"{r['high']:>8.0f} ({r['exact_high']:>7.0f})")  # fmt: skip
    b = rows[-1]
    for a in rows[:-1]:
        ratio = b["peak_rss_mib"] / max(a["peak_rss_mib"], 1e-9)
        print(
            f"peak RSS ratio {b['frames']} / {a['frames']} frames: {ratio:.2f} "
            f"(stack size ratio {b['stack_mib'] / a['stack_mib']:.0f})"
        )
    print("A stack under SAMPLE_FRAMES (256) frames is read whole; from there on the same 256 "
          "frames' pages are touched whatever T is (plus the kernel's fault-around pages "
          "next to each).")  # fmt: skip


if __name__ == "__main__":
    main()
