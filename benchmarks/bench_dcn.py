"""Speed and memory of the DCNv2 backends against a plain 3x3 conv of the same shape.

Prints milliseconds (fastest of several runs) for a plain conv (the floor), the pure-PyTorch
DCNv2 (forward, and forward + backward since training uses it), torchvision's op where it
imports, their ratios to the floor, and the peak resident memory each adds (RSS, read from
/proc: tracemalloc does not see torch's allocations).

    python benchmarks/bench_dcn.py [--shape 1 64 100 256] [--groups 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from napari_xfusion.nn import dcn


def _rss_mib() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_reset() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) so each case reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(fn: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Fastest wall-clock and process-CPU milliseconds of ``fn``, and the peak RSS it added.

    The minimum, not the median: on a shared machine other processes only ever add time. CPU
    time counts every thread, so with N threads it is up to N times the wall time.
    """
    fn()  # warm-up: allocator pools, lazy initialisation
    gc.collect()
    rest = _rss_mib()
    _hwm_reset()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return min(wall), min(cpu), _hwm_mib() - rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[1, 64, 100, 256], metavar="BCHW")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--offset-scale", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    b, c, h, w = args.shape
    g = args.groups
    x = torch.randn(b, c, h, w)
    weight = torch.randn(c, c, 3, 3) / (3 * c**0.5)
    bias = torch.zeros(c)
    offset = args.offset_scale * torch.randn(b, 2 * g * 9, h, w)
    mask = torch.rand(b, g * 9, h, w)
    print(
        f"shape {b}x{c}x{h}x{w}, 3x3, {g} deformable groups, offsets ~N(0, {args.offset_scale}^2),"
        f" {torch.get_num_threads()} threads, torch {torch.__version__}"
    )

    def grad_inputs():
        return [t.detach().clone().requires_grad_() for t in (x, offset, mask, weight)]

    cases: dict[str, Callable[[], object]] = {}
    cases["plain conv fwd"] = lambda: _no_grad(lambda: F.conv2d(x, weight, bias, padding=1))

    def dcn_fwd(backend: str) -> Callable[[], object]:
        return lambda: _no_grad(
            lambda: dcn.modulated_deform_conv2d(
                x, offset, mask, weight, bias, deform_groups=g, backend=backend
            )
        )

    def dcn_fwd_bwd(backend: str) -> Callable[[], object]:
        def run() -> None:
            xi, oi, mi, wi = grad_inputs()
            out = dcn.modulated_deform_conv2d(
                xi, oi, mi, wi, bias, deform_groups=g, backend=backend
            )
            out.sum().backward()

        return run

    def conv_fwd_bwd() -> None:
        xi, _, _, wi = grad_inputs()
        F.conv2d(xi, wi, bias, padding=1).sum().backward()

    cases["plain conv fwd+bwd"] = conv_fwd_bwd
    cases["pure DCN fwd"] = dcn_fwd("pure")
    cases["pure DCN fwd+bwd"] = dcn_fwd_bwd("pure")
    if dcn._tv_deform_conv2d is not None:
        cases["torchvision DCN fwd"] = dcn_fwd("torchvision")
        cases["torchvision DCN fwd+bwd"] = dcn_fwd_bwd("torchvision")
    else:
        print("torchvision does not import: its op is not measured")

    results = {name: measure(fn, args.repeats) for name, fn in cases.items()}
    floor = {"fwd": results["plain conv fwd"][0], "fwd+bwd": results["plain conv fwd+bwd"][0]}
    floor_cpu = {"fwd": results["plain conv fwd"][1], "fwd+bwd": results["plain conv fwd+bwd"][1]}
    print(
        f"{'case':<26}{'wall ms':>10}{'x conv':>8}{'CPU ms':>10}{'x conv':>8}{'peak +RSS MiB':>15}"
    )
    for name, (ms, cpu, mib) in results.items():
        kind = "fwd+bwd" if name.endswith("fwd+bwd") else "fwd"
        print(
            f"{name:<26}{ms:>10.1f}{ms / floor[kind]:>8.2f}"
            f"{cpu:>10.1f}{cpu / floor_cpu[kind]:>8.2f}{mib:>15.1f}"
        )
    if "torchvision DCN fwd" in results:
        fwd = results["pure DCN fwd"][0] / results["torchvision DCN fwd"][0]
        bwd = results["pure DCN fwd+bwd"][0] / results["torchvision DCN fwd+bwd"][0]
        print(f"pure / torchvision (wall): fwd {fwd:.3f}, fwd+bwd {bwd:.3f}")


def _no_grad(fn: Callable[[], object]) -> object:
    with torch.no_grad():
        return fn()


if __name__ == "__main__":
    main()
