"""Speed and memory of the DCNv2 backends against a plain 3x3 conv of the same shape.

Prints milliseconds (fastest of several runs, wall clock and process CPU time) for a plain conv
(the floor), the pure-PyTorch DCNv2 (forward, and forward + backward since training uses it),
torchvision's op where it imports, their ratios to the floor, and the peak resident memory each
case adds above its inputs. Every case runs in a fresh subprocess, so each peak (VmHWM from
/proc; tracemalloc does not see torch's allocations) is its own.

    python benchmarks/bench_dcn.py [--shape 1 64 100 256] [--groups 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from napari_xfusion.nn import dcn

CASES = (
    "plain conv fwd",
    "plain conv fwd+bwd",
    "pure DCN fwd",
    "pure DCN fwd+bwd",
    "torchvision DCN fwd",
    "torchvision DCN fwd+bwd",
)


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _make_case(name: str, args: argparse.Namespace, shape: list[int]) -> Callable[[], object]:
    b, c, h, w = shape
    g = args.groups
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen)
    weight = torch.randn(c, c, 3, 3, generator=gen) / (3 * c**0.5)
    bias = torch.zeros(c)
    offset = args.offset_scale * torch.randn(b, 2 * g * 9, h, w, generator=gen)
    mask = torch.rand(b, g * 9, h, w, generator=gen)
    backward = name.endswith("fwd+bwd")

    def leaves() -> list[torch.Tensor]:
        if not backward:
            return [x, offset, mask, weight]
        return [t.detach().clone().requires_grad_() for t in (x, offset, mask, weight)]

    if name.startswith("plain conv"):

        def run() -> None:
            xi, _, _, wi = leaves()
            with torch.set_grad_enabled(backward):
                out = F.conv2d(xi, wi, bias, padding=1)
            if backward:
                out.sum().backward()

        return run
    backend = name.split()[0]

    def run_dcn() -> None:
        xi, oi, mi, wi = leaves()
        with torch.set_grad_enabled(backward):
            out = dcn.modulated_deform_conv2d(
                xi, oi, mi, wi, bias, deform_groups=g, backend=backend
            )
        if backward:
            out.sum().backward()

    return run_dcn


def _run_case(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Time one case in this process: fastest wall and CPU ms, peak RSS added in MiB.

    The peak is above the RSS with the inputs in place: outputs, temporaries, gradients.

    The minimum, not the median: on a shared machine other processes only ever add time. CPU
    time counts every thread, so with N threads it is up to N times the wall time.
    """
    torch.set_num_threads(args.threads)
    # A tiny run first loads the kernels' code pages, which count towards RSS.
    _make_case(name, args, [1, args.shape[1], 8, 8])()
    fn = _make_case(name, args, args.shape)
    rest = _status_mib("VmRSS")
    fn()  # warm-up: allocator pools, lazy initialisation
    wall, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {"wall": min(wall), "cpu": min(cpu), "peak": _status_mib("VmHWM") - rest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 64, 100, 256], metavar="BCHW")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--offset-scale", type=float, default=2.0)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, JSON out
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_run_case(args.case, args)))
        return

    b, c, h, w = args.shape
    print(
        f"shape {b}x{c}x{h}x{w}, 3x3, {args.groups} deformable groups, offsets ~N(0, "
        f"{args.offset_scale}^2), {args.threads} threads, torch {torch.__version__}"
    )
    cases = [n for n in CASES if dcn._tv_deform_conv2d is not None or "torchvision" not in n]
    if len(cases) < len(CASES):
        print("torchvision does not import: its op is not measured")
    results = {}
    for name in cases:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--case", name]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.splitlines()[-1])

    print(f"{'case':<26}{'wall ms':>10}{'x conv':>8}{'CPU ms':>10}{'x conv':>8}{'peak MiB':>10}")
    for name, r in results.items():
        floor = results["plain conv fwd+bwd" if name.endswith("fwd+bwd") else "plain conv fwd"]
        print(
            f"{name:<26}{r['wall']:>10.1f}{r['wall'] / floor['wall']:>8.2f}"
            f"{r['cpu']:>10.1f}{r['cpu'] / floor['cpu']:>8.2f}{r['peak']:>10.1f}"
        )
    if "torchvision DCN fwd" in results:
        for kind in ("fwd", "fwd+bwd"):
            pure, tv = results[f"pure DCN {kind}"], results[f"torchvision DCN {kind}"]
            print(
                f"pure / torchvision {kind}: wall {pure['wall'] / tv['wall']:.3f}, "
                f"CPU {pure['cpu'] / tv['cpu']:.3f}"
            )


if __name__ == "__main__":
    main()
