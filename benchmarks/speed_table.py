"""Speed table: wall time per 400x1024 output frame of every registered method, next to the
paper's figures (its Fig. 8).

Per method, in a fresh subprocess (so its peak RSS is its own): the method is built once
(``engine.build_methods``), then ``--repeats`` + 1 passes of ``engine.run`` reconstruct
``--frames`` consecutive targets (s = 1, keys every 10 frames) of the built-in sample
(:func:`napari_xfusion.core.sample.simulate_sequence`, LR = 4x4 binning); the first pass is a
warm-up (allocator, thread pool, oneDNN / cuDNN kernels) and is excluded. Reported: the median
over passes of (pass wall time / frames), frames/s, the ratio to bicubic's time measured in the
same run (end to end through the engine: reading and stacking each window's LR frames and
keys costs about 2 ms a frame, so bicubic here is slower than its kernel alone,
``benchmarks/bench_bicubic.py``), the peak RSS of the process and its delta over the RSS just
before the method was built (imports and inputs excluded; on CUDA also torch's peak allocated
GPU memory).

Paper figures (Fig. 8): bicubic 0.0006 s and Bayesian 77.4 s per frame on a Xeon Gold 6334
(CPU); EDVR 0.0408 s and EDVR-STF 0.0665 s on an A100 (GPU, paper-size networks). The shipped
networks here are the ``small`` configs; ``--net paper`` runs the paper-size configs (random
weights: speed does not depend on the values) - on a CPU that is minutes per frame.

    python benchmarks/speed_table.py                         # every available method, CPU
    python benchmarks/speed_table.py --frames 4 --repeats 2 --methods bicubic,bayesian
    python benchmarks/speed_table.py --device cuda --net paper   # GPU; skips without CUDA

The machine's load average is printed before and after: figures measured while other jobs
run are slower than the machine can do (say so when quoting them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAPER = {
    "bicubic": (0.0006, "Xeon Gold 6334 (CPU)"),
    "bayesian": (77.4, "Xeon Gold 6334 (CPU)"),
    "edvr": (0.0408, "A100 (GPU), paper size"),
    "edvr-stf": (0.0665, "A100 (GPU), paper size"),
}
"""The paper's Fig. 8: seconds per 400x1024 output frame and the hardware."""

KEY_STEP = 10


def _rss_mib() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _paper_weights(arch: str, tmp: str) -> str:
    """A checkpoint of the paper-size ``arch`` with random weights (speed only)."""
    import torch

    from napari_xfusion.nn.checkpoint import save_checkpoint
    from napari_xfusion.nn.edvr import build_model, named_config

    torch.manual_seed(0)
    config = named_config("paper", arch)
    model = build_model(config)
    with torch.no_grad():  # small offsets: not the degenerate zero-offset DCN case
        for name, p in model.named_parameters():
            if "conv_offset" in name and name.endswith("weight"):
                p.normal_(0, 1e-2)
    path = str(Path(tmp) / f"{arch}-paper-random.pt")
    save_checkpoint(path, model, config, provenance={"purpose": "speed table, random weights"})
    return path


def _child(args: argparse.Namespace) -> dict[str, Any]:
    """Time one method; returns the JSON record printed by ``--child``."""
    from napari_xfusion import engine
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.sample import simulate_sequence
    from napari_xfusion.methods.registry import get_spec

    spec = get_spec(args.child)
    record: dict[str, Any] = {"method": args.child, "device": args.device, "net": None}
    if spec.needs_torch:
        import torch

        torch.set_num_threads(args.threads)
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            return {**record, "skipped": "CUDA is not available"}
    h, w = args.shape
    n = args.frames + 2  # one LR neighbour each side of the targets
    truth = simulate_sequence(n, (h, w), seed=20260)
    lr = bin_frames(truth)
    keys = engine.KeyFrames.from_full_rate(truth, KEY_STEP if n > KEY_STEP else None,
                                           first_last=n <= KEY_STEP)  # fmt: skip
    targets = list(range(1, n - 1))
    options: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if spec.needs_weights:
            record["net"] = args.net
            if args.net == "paper":
                options["weights"] = _paper_weights(args.child, tmp)
        base_rss = _rss_mib()
        (method,) = engine.build_methods([args.child], {args.child: options} if options else None,
                                         args.device)  # fmt: skip
        cuda = spec.needs_torch and args.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        per_frame = []
        for _ in range(args.repeats + 1):
            tic = time.perf_counter()
            for _result in engine.run([method], lr, keys, frames=targets, device=args.device):
                pass
            if cuda:
                torch.cuda.synchronize()
            per_frame.append((time.perf_counter() - tic) / len(targets))
    timed = per_frame[1:]  # the first pass warms up
    seconds = statistics.median(timed)
    record.update(
        seconds=seconds,
        seconds_all=timed,
        warmup_seconds=per_frame[0],
        fps=1.0 / seconds if seconds > 0 else float("inf"),
        peak_rss_mib=_peak_rss_mib(),
        rss_delta_mib=_peak_rss_mib() - base_rss,
        frames=len(targets),
        repeats=args.repeats,
        threads=args.threads if spec.needs_torch else None,
        frame_shape=[h, w],
    )
    if cuda:
        record["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def _methods(arg: str | None) -> list[str]:
    if arg:
        return [m.strip() for m in arg.split(",") if m.strip()]
    from napari_xfusion.app.study import default_methods

    return list(default_methods())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if v < 1 else f"{v:.2f}"


def markdown(records: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The table (and the machine lines above it) as Markdown."""
    bicubic = next((r for r in records if r["method"] == "bicubic" and "seconds" in r), None)
    paper_bicubic = PAPER["bicubic"][0]
    lines = [
        f"Machine: {header['cpu']}, {header['cores']} cores; load average "
        f"{header['load_before']} before, {header['load_after']} after "
        f"(1/5/15 min); torch threads {header['threads']}; {header['date']}",
        f"Command: `{header['command']}`",
        "",
        "| method | net | device | s/frame (median) | frames/s | x bicubic | peak RSS (MiB) | "
        "RSS delta (MiB) | paper s/frame | paper x bicubic | paper hardware |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        paper = PAPER.get(r["method"])
        p_s = None if paper is None else paper[0]
        p_ratio = "-" if p_s is None else f"{p_s / paper_bicubic:,.0f}"
        if "seconds" not in r:
            lines.append(f"| {r['method']} | {r.get('net') or '-'} | {r['device']} | skipped: "
                         f"{r.get('skipped', r.get('error', '?'))} | | | | | {_fmt_s(p_s)} | "
                         f"{p_ratio} | {paper[1] if paper else '-'} |")  # fmt: skip
            continue
        ratio = "-" if bicubic is None else f"{r['seconds'] / bicubic['seconds']:,.1f}"
        rss = f"{r['peak_rss_mib']:.0f}"
        if "gpu_peak_mib" in r:
            rss += f" (GPU {r['gpu_peak_mib']:.0f})"
        lines.append(
            f"| {r['method']} | {r.get('net') or '-'} | {r['device']} | {_fmt_s(r['seconds'])} | "
            f"{r['fps']:.3g} | {ratio} | {rss} | {r['rss_delta_mib']:.0f} | {_fmt_s(p_s)} | "
            f"{p_ratio} | {paper[1] if paper else '-'} |"
        )
    lines += [
        "",
        "Paper x bicubic divides the paper's network times (A100) by its bicubic time "
        "(CPU): a cross-machine ratio. Ours are all measured in this run, on this machine.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", help="comma-separated (default: every available method)")
    p.add_argument("--frames", type=int, default=8, help="targets per pass [8]")
    p.add_argument("--repeats", type=int, default=3, help="timed passes after a warm-up [3]")
    p.add_argument("--shape", type=int, nargs=2, default=(400, 1024), metavar=("H", "W"),
                   help="HR output frame [400 1024] (multiples of 4)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] for network methods [cpu]")
    p.add_argument("--net", choices=("small", "paper"), default="small",
                   help="shipped small weights, or paper size (random weights)")  # fmt: skip
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)),
                   help="torch threads [OMP_NUM_THREADS or 1]")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the records here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.frames < 1 or args.repeats < 1:
        p.error("--frames and --repeats must be >= 1")
    if args.shape[0] % 4 or args.shape[1] % 4:
        p.error("--shape: both sides must be multiples of 4")
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    if args.device.startswith("cuda"):
        try:
            import torch

            has_cuda = torch.cuda.is_available()
        except ImportError:
            has_cuda = False
        if not has_cuda:
            print(f"--device {args.device}: CUDA is not available here; skipped (no GPU figures)")
            return 0
    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    records = []
    for method in _methods(args.methods):
        cmd = [sys.executable, __file__, "--child", method, "--frames", str(args.frames),
               "--repeats", str(args.repeats), "--shape", *map(str, args.shape),
               "--device", args.device, "--net", args.net,
               "--threads", str(args.threads)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        try:
            record = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            record = {"method": method, "device": args.device, "error": tail[0][:120]}
        print(f"{method}: {record.get('seconds', record.get('skipped', record.get('error')))}",
              file=sys.stderr)  # fmt: skip
        records.append(record)
    header = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/speed_table.py " + " ".join(argv or sys.argv[1:]),
    }
    text = markdown(records, header)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"header": header, "records": records}, indent=2) + "\n")
    return 0 if all("seconds" in r or "skipped" in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
