"""Evaluate every registered method on real-motion sequences and on the simulator.

Sets (HR truth -> LR by 4x4 binning, :mod:`napari_xfusion.core.evaluation`):

- **real-motion**: :func:`napari_xfusion.core.motion.validation_suite`, 9 sequences rendered from
  stills no shipped network was trained on (sub-pixel drift, pan, speed ramp 0 -> 40 px/frame,
  zoom, rotation, shake, occluding layers, non-rigid, brightness changes);
- **simulator**: :func:`napari_xfusion.core.sample.simulate_sequence` at held-out seeds
  (training uses seeds >= ``TRAINING_SEED_MIN``, validation during training 20251).

Settings: HR key step k in {10, 20}, s = 1, LR noise-free and shot noise at LR PSNR 40 and
20 dB (seeded). Per sequence and k one key interval, centred in the sequence, and
``--targets-per-gap`` evenly spaced frames strictly between its two keys are reconstructed
through :func:`napari_xfusion.engine.run` and scored (PSNR, AAD, SSIM of :mod:`core.metrics`).
Reported: median and IQR over those frames, per set, setting and method; the median paired gain
over bicubic; and a **key ablation**: every method that uses HR keys is rerun with the keys
replaced by the bicubic-up-sampled LR frames of the key times, and the PSNR it loses (median of
per-frame differences) is how much it uses the keys' HR detail.

Budget (defaults): 9 + 3 sequences x 2 k x 3 noise levels x 3 targets = 216 scored frames per
method at 400x1024 (plus, per run, the frame at the first key, which the engine reconstructs to
normalise attention scores); about 32 minutes with 1 torch thread on a shared 2-core CPU for
bicubic, bayesian, edvr and edvr-stf (networks dominate: ~1.3 and ~2.1 s per frame, and the
ablation runs edvr-stf twice). ``--quick`` is a
smoke run of about 3 minutes (200x512, 1 target per gap, 1 simulator seed).

    python benchmarks/evaluate_methods.py --out docs/benchmarks/real-motion
    python benchmarks/evaluate_methods.py --quick --methods bicubic,bayesian --out /tmp/eval

Runs split over several sessions (e.g. the networks after a retraining) are merged with
``--combine OUT DIR DIR ...``: the runs must share the budget (size, frames, sequences, seeds,
settings, targets, ablation), a method present in several runs must have scored the same frames
with the same values (bicubic, which every run includes for its gains, is checked to be
identical), and the merged summary names every run's command and wall time. A network retrained
between the runs (other weights) is taken from the first run listed that has it, and the summary
names the runs it supersedes.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import platform
import shlex
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.core.evaluation import EvalInputs, ablated_keys, make_eval_inputs
from napari_xfusion.core.metrics import frame_metrics
from napari_xfusion.core.motion import SUITE, validation_suite
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.engine import KeyFrames, build_methods, configure_torch_threads, run
from napari_xfusion.methods import METHODS, Reconstructor

SIM_SEEDS = (20260, 20261, 20262)
"""Held-out simulator seeds: below TRAINING_SEED_MIN (1,000,000) and not the training
validation seed 20251 (shipped-small.yaml); 20260 is evaluate_models.py's test seed."""

KEY_STEPS = (10, 20)
NOISE = ("clean", "40", "20")
"""LR noise settings: noise-free, and shot noise at these LR PSNRs in dB."""

METRICS = ("psnr", "aad", "ssim")
FRAME_FIELDS = (
    "set", "sequence", "key_step", "noise", "keys", "method", "index", "offset",
    "psnr", "aad", "ssim", "seconds",
)  # fmt: skip


def _method_class(name: str) -> type:
    """The class behind a registry entry: a ``"module:Class"`` string, or a declaration object
    that carries one (as ``target``) or is the class itself."""
    entry = METHODS[name]
    target = entry if isinstance(entry, str) else getattr(entry, "target", entry)
    if isinstance(target, type):
        return target
    module_name, class_name = str(target).split(":")
    return getattr(import_module(module_name), class_name)


def available_methods() -> list[str]:
    """Every registered method whose implementation imports here (e.g. torch present)."""
    out = []
    for name in METHODS:
        try:
            _method_class(name)
        except ImportError:
            continue
        out.append(name)
    return out


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--methods",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        default=None,
        help="comma-separated method names (default: every registered method that imports: "
        + ", ".join(METHODS)
        + ")",
    )
    p.add_argument("--out", type=Path, help="folder for summary.md, summary.json, frames.csv")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="default 400 1024")
    p.add_argument(
        "--targets-per-gap",
        type=int,
        default=None,
        metavar="N",
        help="frames scored per key interval, evenly spaced between the keys (default 3)",
    )
    p.add_argument("--key-steps", type=int, nargs="+", default=list(KEY_STEPS))
    p.add_argument(
        "--noise",
        nargs="+",
        default=list(NOISE),
        help="LR noise settings: 'clean' and/or LR PSNRs in dB (20..60)",
    )
    p.add_argument("--sequences", nargs="+", choices=list(SUITE), help="default: all")
    p.add_argument("--sim-seeds", type=int, nargs="*", default=None, help=f"default: {SIM_SEEDS}")
    p.add_argument("--suite-seed", type=int, default=0, help="seed of the real-motion suite")
    p.add_argument("--frames", type=int, default=None, help="frames per sequence (max k + 1)")
    p.add_argument("--no-ablation", action="store_true", help="skip the key ablation")
    p.add_argument(
        "--weights", action="append", default=[], metavar="METHOD=PATH",
        help="checkpoint of a network method (default: the shipped weights); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--option", action="append", default=[], metavar="METHOD:KEY=VALUE",
        help="method option (VALUE parsed as JSON, else a string); repeatable",
    )  # fmt: skip
    p.add_argument(
        "--resummarise", type=Path, metavar="DIR",
        help="rebuild DIR/summary.md and summary.json from DIR/frames.csv (no reconstruction)",
    )  # fmt: skip
    p.add_argument(
        "--combine", nargs="+", type=Path, metavar="DIR",
        help="OUT DIR [DIR ...]: merge earlier runs' frames.csv into OUT (no reconstruction)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 200x512, 1 target per gap, first simulator seed (a few minutes)",
    )
    args = p.parse_args(argv)
    if args.size is None:
        args.size = (200, 512) if args.quick else (400, 1024)
    if args.targets_per_gap is None:
        args.targets_per_gap = 1 if args.quick else 3
    if args.sim_seeds is None:
        args.sim_seeds = list(SIM_SEEDS[:1] if args.quick else SIM_SEEDS)
    if args.frames is None:
        args.frames = max(args.key_steps) + 1
    if any(s >= 1_000_000 for s in args.sim_seeds):
        p.error("--sim-seeds must be < 1000000: larger seeds are used for training")
    if args.size[0] % 4 or args.size[1] % 4:
        p.error(f"--size must be multiples of 4 (LR = 4x4 binning), got {args.size}")
    for n in args.noise:
        if n != "clean":
            try:
                value = float(n)
            except ValueError:
                p.error(f"--noise takes 'clean' or an LR PSNR in dB, got {n!r}")
            if not 20 <= value <= 60:
                p.error(f"--noise LR PSNR must be 20..60 dB, got {n}")
    if args.methods is None:
        args.methods = available_methods()
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; registered: {', '.join(METHODS)}")
    args.options = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        if not sep:
            p.error(f"--weights takes METHOD=PATH, got {item!r}")
        args.options.setdefault(name, {})["weights"] = path
    for item in args.option:
        name, sep, rest = item.partition(":")
        key, sep2, value = rest.partition("=")
        if not (sep and sep2 and key):
            p.error(f"--option takes METHOD:KEY=VALUE, got {item!r}")
        args.options.setdefault(name, {})[key] = _option_value(value)
    return args


# ---------------------------------------------------------------------------------------------
# Cases and one evaluation run
# ---------------------------------------------------------------------------------------------


def cases(args: argparse.Namespace) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(set, sequence name, HR truth)`` of every test sequence, generated one at a time."""
    shape = tuple(args.size)
    for name in args.sequences or list(SUITE):
        ((_, hr),) = validation_suite(shape, args.frames, args.suite_seed, names=[name])
        yield "real-motion", name, hr
    for seed in args.sim_seeds:
        yield "simulator", f"seed {seed}", simulate_sequence(args.frames, shape, seed, noise=False)


def noise_seed(set_name: str, sequence: str, noise: str) -> int:
    """A stable seed per (set, sequence, noise level): the same LR stream for every k."""
    return zlib.crc32(f"{set_name}/{sequence}/{noise}".encode())


def score_run(
    methods: Sequence[Reconstructor],
    inputs: EvalInputs,
    hr: np.ndarray,
    key_frames: np.ndarray,
    common: dict[str, Any],
) -> list[dict[str, Any]]:
    """Reconstruct ``inputs.targets`` with every method; one row of metrics per frame."""
    keys = KeyFrames(key_frames, inputs.key_indices)
    rows = []
    for res in run(list(methods), inputs.lr, keys, separation=1, frames=inputs.targets):
        scores = frame_metrics(np.clip(res.frame, 0.0, 1.0), hr[res.index])
        rows.append(
            {
                **common,
                "method": res.method,
                "index": int(res.index),
                "offset": int(res.index - inputs.key_indices[0]),
                **{m: float(scores[m]) for m in METRICS},
                "seconds": float(res.seconds),
            }
        )
    return rows


def evaluate(
    args: argparse.Namespace, methods: Sequence[Reconstructor], log=print
) -> list[dict[str, Any]]:
    """Every case x key step x noise level (and the key ablation): per-frame rows."""
    key_users = [m for m in methods if m.uses_hr_keys]
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for set_name, sequence, hr in cases(args):
        for noise in args.noise:
            seed = noise_seed(set_name, sequence, noise)
            for k in args.key_steps:
                inputs = make_eval_inputs(
                    hr,
                    k,
                    lr_psnr_db=None if noise == "clean" else float(noise),
                    noise_seed=seed,
                    targets_per_gap=args.targets_per_gap,
                )
                common = {"set": set_name, "sequence": sequence, "key_step": k, "noise": noise}
                rows += score_run(methods, inputs, hr, inputs.hr_keys, {**common, "keys": "hr"})
                if key_users and not args.no_ablation:
                    rows += score_run(
                        key_users, inputs, hr, ablated_keys(inputs), {**common, "keys": "lr-up"}
                    )
                log(
                    f"[{time.monotonic() - t0:7.0f} s] {set_name} {sequence} k={k} "
                    f"noise={noise}: {len(inputs.targets)} targets",
                )
    return rows


# ---------------------------------------------------------------------------------------------
# Summaries and tables
# ---------------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return {"median": float(q50), "iqr": float(q75 - q25), "q25": float(q25), "q75": float(q75)}


def _pair_key(r: dict) -> tuple:
    return (r["set"], r["sequence"], r["key_step"], r["noise"], r["index"])


def _paired(rows_a: list[dict], rows_b: list[dict], metric: str = "psnr") -> list[float]:
    """Per-frame differences a - b over the frames both scored (same case and index)."""
    b = {_pair_key(r): r[metric] for r in rows_b}
    return [r[metric] - b[_pair_key(r)] for r in rows_a if _pair_key(r) in b]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median/IQR per (set, key step, noise, method, keys), with the paired gain over bicubic
    and, for ``keys == "hr"`` rows of key-using methods, the PSNR lost in the key ablation."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["key_step"], r["noise"], r["method"], r["keys"]), []).append(
            r
        )
    out = []
    for (set_name, k, noise, method, keys), rs in groups.items():
        entry: dict[str, Any] = {
            "set": set_name, "key_step": k, "noise": noise, "method": method, "keys": keys,
            "frames": len(rs), "sequences": len({r["sequence"] for r in rs}),
            "seconds_per_frame": float(np.mean([r["seconds"] for r in rs])),
        }  # fmt: skip
        for m in METRICS:
            entry[m] = _stats([r[m] for r in rs])
        bicubic = groups.get((set_name, k, noise, "bicubic", "hr"))
        if bicubic is not None:
            entry["gain_over_bicubic_db"] = _stats(_paired(rs, bicubic))
        ablated = groups.get((set_name, k, noise, method, "lr-up"))
        if keys == "hr" and ablated is not None:
            entry["ablation_loss_db"] = _stats(_paired(rs, ablated))
        out.append(entry)
    return out


def _setting(k: int, noise: str) -> str:
    return f"k={k} {'clean' if noise == 'clean' else noise + ' dB'}"


def _fmt(stats: dict[str, float] | None, digits: int, signed: bool = False) -> str:
    if stats is None or not math.isfinite(stats["median"]):
        return "-"
    sign = "+" if signed else ""
    return f"{stats['median']:{sign}.{digits}f} [{stats['iqr']:.{digits}f}]"


def markdown(summary: list[dict[str, Any]], budget: dict[str, Any]) -> str:
    """The benchmark's tables: per set, PSNR / gain / SSIM / AAD and the key ablation."""
    sets = list(dict.fromkeys(e["set"] for e in summary))
    settings = list(dict.fromkeys((e["key_step"], e["noise"]) for e in summary))
    settings.sort(key=lambda kn: (kn[0], NOISE.index(kn[1]) if kn[1] in NOISE else 99))
    methods = list(dict.fromkeys(e["method"] for e in summary if e["keys"] == "hr"))
    by = {(e["set"], e["key_step"], e["noise"], e["method"], e["keys"]): e for e in summary}
    head = "| method | " + " | ".join(_setting(*kn) for kn in settings) + " |"
    rule = "|---|" + "---:|" * len(settings)
    lines = [
        "Median [IQR] over the frames between the keys; gains and losses are medians of "
        "per-frame differences.",
        "",
        f"Budget: {budget['summary']}",
    ]
    tables = (
        ("PSNR (dB)", "psnr", 2, False, "hr"),
        ("Gain over bicubic (dB)", "gain_over_bicubic_db", 2, True, "hr"),
        ("SSIM", "ssim", 4, False, "hr"),
        ("AAD", "aad", 4, False, "hr"),
    )
    for set_name in sets:
        n_seq = max(e["sequences"] for e in summary if e["set"] == set_name)
        lines += ["", f"### {set_name} ({n_seq} sequences)"]
        for title, field, digits, signed, keys in tables:
            lines += ["", f"**{title}**", "", head, rule]
            for m in methods:
                if field == "gain_over_bicubic_db" and m == "bicubic":
                    continue
                cells = [
                    _fmt(by.get((set_name, k, n, m, keys), {}).get(field), digits, signed)
                    for k, n in settings
                ]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        ablated = [
            m for m in methods if any((set_name, k, n, m, "lr-up") in by for k, n in settings)
        ]
        if ablated:
            lines += [
                "",
                "**Key ablation: PSNR lost with the HR keys replaced by up-sampled LR (dB)**",
                "",
                head,
                rule,
            ]
            for m in ablated:
                cells = [
                    _fmt(by.get((set_name, k, n, m, "hr"), {}).get("ablation_loss_db"), 2, True)
                    for k, n in settings
                ]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    timing = {}
    for e in summary:
        if e["keys"] == "hr":
            timing.setdefault(e["method"], []).append((e["seconds_per_frame"], e["frames"]))
    lines += ["", "**Seconds per frame** (mean, this run)", ""]
    lines += [
        f"- {m}: {sum(s * n for s, n in v) / sum(n for _, n in v):.3f}" for m, v in timing.items()
    ]
    return "\n".join(lines)


def per_sequence(rows: list[dict[str, Any]]) -> str:
    """Diagnostic table: per sequence and method, the median PSNR gain over bicubic (dB) over
    all settings pooled, and the median PSNR lost in the key ablation. Not for quoting alone:
    one sequence is a single scene."""
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "bicubic"))
    sequences = list(dict.fromkeys((r["set"], r["sequence"]) for r in rows))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["sequence"], r["method"], r["keys"]), []).append(r)
    ablated = [m for m in methods if any(k[2] == m and k[3] == "lr-up" for k in groups)]
    cols = [f"{m} vs bicubic" for m in methods] + [f"{m} ablation loss" for m in ablated]
    lines = [
        "**Per sequence** (diagnostic: median PSNR difference in dB over all settings pooled)",
        "",
        "| set | sequence | " + " | ".join(cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    for set_name, seq in sequences:
        base = groups.get((set_name, seq, "bicubic", "hr"), [])
        cells = []
        for m in methods:
            d = _paired(groups.get((set_name, seq, m, "hr"), []), base)
            cells.append(f"{np.median(d):+.2f}" if d else "-")
        for m in ablated:
            d = _paired(
                groups.get((set_name, seq, m, "hr"), []),
                groups.get((set_name, seq, m, "lr-up"), []),
            )
            cells.append(f"{np.median(d):+.2f}" if d else "-")
        lines.append(f"| {set_name} | {seq} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_frames(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``frames.csv`` written by this script, with their types restored."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("key_step", "index", "offset"):
            r[k] = int(r[k])
        for k in (*METRICS, "seconds"):
            r[k] = float(r[k])
    return rows


def _budget(args: argparse.Namespace, rows: list[dict], wall: float) -> dict[str, Any]:
    n_real = len(args.sequences or SUITE)
    n_sim = len(args.sim_seeds)
    settings = len(args.key_steps) * len(args.noise)
    summary = (
        f"{n_real} real-motion + {n_sim} simulator sequences of {args.frames} frames at "
        f"{args.size[0]}x{args.size[1]}; k in {args.key_steps}, LR noise {args.noise}, s = 1; "
        f"one centred key interval per sequence and k, {args.targets_per_gap} target(s) per "
        f"interval: {(n_real + n_sim) * settings * args.targets_per_gap} scored frames per "
        f"method; {len(rows)} frame results; wall time {wall / 60:.1f} min "
        f"({args.threads} torch thread(s), {platform.machine()})"
    )
    return {
        "summary": summary,
        "size": list(args.size),
        "frames_per_sequence": args.frames,
        "targets_per_gap": args.targets_per_gap,
        "key_steps": list(args.key_steps),
        "noise": list(args.noise),
        "sequences": list(args.sequences or SUITE),
        "sim_seeds": list(args.sim_seeds),
        "suite_seed": args.suite_seed,
        "methods": list(args.methods),
        "ablation": not args.no_ablation,
        "threads": args.threads,
        "wall_seconds": wall,
        "frame_results": len(rows),
    }


def write_outputs(
    out: Path, rows: list[dict], summary: list[dict], budget: dict, table: str, extra: dict
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "frames.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FRAME_FIELDS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r[k] for k in FRAME_FIELDS})
    (out / "summary.json").write_text(
        json.dumps({**extra, "budget": budget, "summary": summary}, indent=1), encoding="utf-8"
    )
    (out / "summary.md").write_text(
        f"# Benchmark: real motion and simulator\n\n`{extra['command']}`\n\n{table}\n\n"
        f"{per_sequence(rows)}\n",
        encoding="utf-8",
    )


def resummarise(folder: Path) -> str:
    """Rewrite the tables of an earlier run from its ``frames.csv`` (same budget, command)."""
    rows = read_frames(folder / "frames.csv")
    old = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    summary = summarise(rows)
    table = markdown(summary, old["budget"])
    extra = {k: v for k, v in old.items() if k not in ("budget", "summary")}
    write_outputs(folder, rows, summary, old["budget"], table, extra)
    return table


BUDGET_KEYS = (
    "size", "frames_per_sequence", "targets_per_gap", "key_steps", "noise", "sequences",
    "sim_seeds", "suite_seed", "ablation",
)  # fmt: skip
"""What two runs must share to be merged into one table."""

COMBINE_TOLERANCE_DB = 1e-6
"""Largest PSNR difference (dB) between two runs' rows of one method and frame."""


def combine(out: Path, folders: Sequence[Path]) -> str:
    """Merge the ``frames.csv`` of runs with one budget into ``out`` (tables rebuilt).

    Raises ``SystemExit`` naming the folder and the field when the budgets differ, or the
    method and frame when two runs disagree on a frame both scored. A network whose weights
    (the sha256 of its ``describe()``) differ between runs is a retrained one: its rows come
    from the first listed run that has it, and the summary says which runs it supersedes."""
    if len(folders) < 2:
        raise SystemExit("--combine OUT DIR DIR ...: give the output folder and >= 2 runs")
    runs = []
    for folder in folders:
        try:
            info = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            rows = read_frames(folder / "frames.csv")
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"{folder}: not a run of this script ({exc})") from None
        runs.append((folder, info, rows))
    first_folder, first, _ = runs[0]
    for folder, info, _ in runs[1:]:
        for key in BUDGET_KEYS:
            if info["budget"].get(key) != first["budget"].get(key):
                raise SystemExit(
                    f"{folder}: budget {key} = {info['budget'].get(key)!r}, but "
                    f"{first_folder} has {first['budget'].get(key)!r}: not one benchmark"
                )
    # A network retrained between the runs (another weights sha256 in its describe()) is taken
    # from the first listed run that has it; its rows in the others are the old network's.
    weights: dict[str, tuple[Path, str]] = {}
    superseded: list[str] = []
    dropped: set[tuple[Path, str]] = set()
    for folder, info, _ in runs:
        for d in info.get("methods", []):
            if not (isinstance(d, dict) and d.get("sha256")):
                continue
            name, sha = d["method"], d["sha256"]
            if name not in weights:
                weights[name] = (folder, sha)
            elif weights[name][1] != sha:
                dropped.add((folder, name))
                superseded.append(
                    f"{name} from {weights[name][0]} (weights sha256 {weights[name][1][:12]}), "
                    f"superseding {folder}'s ({sha[:12]})"
                )
    merged: dict[tuple, dict] = {}
    for folder, _, rows in runs:
        for r in rows:
            if (folder, r["method"]) in dropped:
                continue
            key = (r["method"], r["keys"], *_pair_key(r))
            seen = merged.get(key)
            if seen is None:
                merged[key] = r
            elif abs(seen["psnr"] - r["psnr"]) > COMBINE_TOLERANCE_DB:
                raise SystemExit(
                    f"{folder}: {r['method']} ({r['keys']} keys) scored {r['psnr']:.6f} dB at "
                    f"{r['set']}/{r['sequence']} k={r['key_step']} {r['noise']} frame "
                    f"{r['index']}, another run {seen['psnr']:.6f} dB: the method changed "
                    "between the runs; rerun it"
                )
    rows = list(merged.values())
    summary = summarise(rows)
    wall = sum(info["budget"]["wall_seconds"] for _, info, _ in runs)
    budget = dict(first["budget"])
    threads = {info["budget"].get("threads") for _, info, _ in runs}

    def part(info: dict) -> str:
        b = info["budget"]
        each = f", {b.get('threads')} torch thread(s)" if len(threads) > 1 else ""
        return f"{', '.join(b['methods'])}: {b['wall_seconds'] / 60:.1f} min{each}"

    parts = "; ".join(part(info) for _, info, _ in runs)
    if len(threads) == 1:
        parts += f"; {budget['threads']} torch thread(s)"
    budget["summary"] = (
        budget["summary"].split(" frame results; wall time")[0].rsplit("; ", 1)[0]
        + f"; {len(rows)} frame results; wall time {wall / 60:.1f} min in {len(runs)} runs "
        f"({parts})"
    )
    budget.update(
        methods=list(dict.fromkeys(m for _, i, _ in runs for m in i["budget"]["methods"])),
        wall_seconds=wall,
        frame_results=len(rows),
    )
    if superseded:
        budget["summary"] += "; retrained: " + "; ".join(superseded)
    describe: dict[str, Any] = {}
    for folder, info, _ in runs:
        for d in info.get("methods", []):  # describe() dicts; a hand-merged run has names
            name = d.get("method", "") if isinstance(d, dict) else str(d)
            if (folder, name) not in dropped:
                describe.setdefault(name, d)
    commands = [f"{info['command']} (out: {folder})" for folder, info, _ in runs]
    extra = {
        "command": "python benchmarks/evaluate_methods.py --combine "
        + shlex.join([str(out), *map(str, folders)])
        + " of: "
        + " + ".join(commands),
        "commands": commands,
        "methods": list(describe.values()),
    }
    table = markdown(summary, budget)
    write_outputs(out, rows, summary, budget, table, extra)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.resummarise is not None:
        print(resummarise(args.resummarise))
        return 0
    if args.combine is not None:
        print(combine(args.combine[0], args.combine[1:]))
        return 0
    command = "python benchmarks/evaluate_methods.py " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:]
    )
    if any("device" in inspect.signature(_method_class(m)).parameters for m in args.methods):
        configure_torch_threads(args.threads)  # before build_methods picks its default
    methods = build_methods(args.methods, args.options, device=args.device)
    t0 = time.monotonic()
    rows = evaluate(args, methods, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    wall = time.monotonic() - t0
    summary = summarise(rows)
    budget = _budget(args, rows, wall)
    table = markdown(summary, budget)
    print(table)
    if args.out is not None:
        extra = {"command": command, "methods": [m.describe() for m in methods]}
        write_outputs(args.out, rows, summary, budget, table, extra)
        print(f"\nwrote {args.out}/summary.md, summary.json, frames.csv", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
