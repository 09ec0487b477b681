"""Evaluate trained EDVR / EDVR-STF checkpoints against bicubic and Bayesian fusion.

The numbers in the model cards under ``resources/weights/`` come from this script::

    python benchmarks/evaluate_models.py \
        --weights edvr-stf=resources/weights/edvr-stf-small.pt \
        --weights edvr=resources/weights/edvr-small.pt

Test data: a simulated x-ray sequence (:func:`core.sample.simulate_sequence`) with a seed below
``TRAINING_SEED_MIN`` that neither training nor validation uses, 400x1024 HR, LR = 4x4 binning.
Scenarios (``--scenario``, repeatable):

- ``clean``: noise-free LR, s = 1, HR key every 20 frames (the paper's headline setting);
- ``lr20``: the same with shot noise on the LR at 20 dB LR PSNR;
- ``first-last``: noise-free, only the first and the last frame are HR keys.

Every method reconstructs every frame through :func:`napari_xfusion.engine.run` (the same code
as the GUI and the CLI). Metrics are the medians over the **non-key** frames (at a key the HR
frame is known). For ``edvr-stf`` and ``edvr-stf-flow`` the script also reports the Spearman
rank correlation of the normalised attention scores with the offset from the preceding key: the
paper's pattern is a backward score falling (rho < 0) and a forward score rising (rho > 0)
across each gap.
With several ``--seed`` values every sequence is reported, then the median rho over them (one
sequence's 38 non-key frames give a noisy rank correlation).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.io import sha256_file
from napari_xfusion.core.metrics import frame_metrics
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.engine import KeyFrames, attention_table, configure_torch_threads, run
from napari_xfusion.methods.registry import BUILTIN_SPECS
from napari_xfusion.train.datasets import TRAINING_SEED_MIN

SCENARIOS = ("clean", "lr20", "first-last")
NETWORKS = tuple(spec.name for spec in BUILTIN_SPECS if spec.needs_weights)
"""The built-in methods that load weights (edvr, edvr-stf, edvr-stf-flow)."""
TEST_SEED = 20260
"""Held-out simulation seed: < TRAINING_SEED_MIN, and not the validation seed (20251)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="METHOD=PATH",
        help=f"checkpoint of a network method ({', '.join(NETWORKS)}); repeatable",
    )
    p.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    p.add_argument("--frames", type=int, default=41, help="sequence length (keys at 0, 20, ...)")
    p.add_argument("--shape", type=int, nargs=2, default=(400, 1024), metavar=("H", "W"))
    p.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[TEST_SEED],
        help=f"held-out simulation seed(s), each one sequence (default {TEST_SEED})",
    )
    p.add_argument("--no-bayesian", action="store_true", help="skip the Bayesian baseline")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write all per-frame numbers here")
    p.add_argument(
        "--cards",
        action="store_true",
        help="write a model card <weights>.md (and <weights>.sha256) next to each checkpoint",
    )
    args = p.parse_args(argv)
    if max(args.seed) >= TRAINING_SEED_MIN:
        p.error(f"--seed must be < {TRAINING_SEED_MIN}: larger seeds are used for training")
    return args


def _inputs(hr: np.ndarray, scenario: str, seed: int) -> tuple[np.ndarray, KeyFrames, dict]:
    lr = bin_frames(hr)
    info: dict = {"scenario": scenario}
    if scenario == "lr20":
        b0 = solve_b0(lr, 20.0, seed=seed)
        lr = add_shot_noise(lr, b0, np.random.default_rng(seed))
        info["b0"] = b0
    if scenario == "first-last":
        keys = KeyFrames.from_full_rate(hr, first_last=True)
    else:
        keys = KeyFrames.from_full_rate(hr, key_step=20)
    return lr, keys, info


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def evaluate(
    hr: np.ndarray,
    scenario: str,
    methods: list[str],
    options: dict[str, dict],
    seed: int,
) -> dict:
    """Run ``methods`` on one scenario; per-method per-frame metrics and attention."""
    lr, keys, info = _inputs(hr, scenario, seed)
    key_set = {int(k) for k in keys.indices}
    per_method: dict[str, dict] = {
        m: {"index": [], "psnr": [], "aad": [], "ssim": []} for m in methods
    }
    results: dict[str, list] = {m: [] for m in methods}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    for res in run(methods, lr, keys, separation=1, method_options=options, device="cpu"):
        seconds[res.method] += res.seconds
        results[res.method].append(res)
        if res.index in key_set:
            continue
        scores = frame_metrics(np.clip(res.frame, 0, 1), hr[res.index])
        rows = per_method[res.method]
        rows["index"].append(res.index)
        for k in ("psnr", "aad", "ssim"):
            rows[k].append(float(scores[k]))
    out = {**info, "keys": sorted(key_set), "methods": {}}
    for m in methods:
        rows = per_method[m]
        entry = {
            "median": {k: float(np.median(rows[k])) for k in ("psnr", "aad", "ssim")},
            "frames": rows,
            "seconds_per_frame": seconds[m] / max(len(results[m]), 1),
        }
        if results[m] and results[m][0].backward is not None:
            table = attention_table(results[m], keys.indices)
            offsets = np.array(
                [r.window.offset_from_key for r in sorted(results[m], key=lambda r: r.index)]
            )
            inside = np.array([i not in key_set for i in table["index"]])
            entry["attention"] = {
                "index": table["index"].tolist(),
                "backward_norm": table["backward_norm"].tolist(),
                "forward_norm": table["forward_norm"].tolist(),
                "offset": offsets.tolist(),
                "spearman_backward": _spearman(offsets[inside], table["backward_norm"][inside]),
                "spearman_forward": _spearman(offsets[inside], table["forward_norm"][inside]),
            }
        out["methods"][m] = entry
    return out


def markdown(result: dict) -> str:
    """The result of one scenario as markdown: metrics table, bars, attention."""
    ms = result["methods"]
    n = len(next(iter(ms.values()))["frames"]["index"])
    lines = [
        f"**{result['scenario']}** ({n} non-key frames, keys at {result['keys']}"
        + (f", LR b0 = {result['b0']:.1f}" if "b0" in result else "")
        + ")",
        "",
        "| method | PSNR (dB) | AAD | SSIM | vs bicubic (dB) | s/frame |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = ms["bicubic"]["median"]["psnr"] if "bicubic" in ms else float("nan")
    for m, e in ms.items():
        med = e["median"]
        lines.append(
            f"| {m} | {med['psnr']:.2f} | {med['aad']:.4f} | {med['ssim']:.4f} | "
            f"{med['psnr'] - base:+.2f} | {e['seconds_per_frame']:.2f} |"
        )
    if {"edvr", "edvr-stf", "bicubic"} <= ms.keys():
        stf, edvr = ms["edvr-stf"]["median"]["psnr"], ms["edvr"]["median"]["psnr"]
        lines += [
            "",
            f"- edvr-stf - edvr = {stf - edvr:+.2f} dB (bar: >= +1)",
            f"- edvr - bicubic = {edvr - base:+.2f} dB (bar: >= +2)",
        ]
    for m, e in ms.items():
        if "attention" in e:
            a = e["attention"]
            lines.append(
                f"- {m} attention vs offset from the preceding key (Spearman rho, non-key "
                f"frames): backward {a['spearman_backward']:+.2f} (expected < 0), forward "
                f"{a['spearman_forward']:+.2f} (expected > 0)"
            )
    return "\n".join(lines)


def attention_summary(results: list[dict]) -> str:
    """Median Spearman rho over the sequences, per scenario and network (markdown)."""
    lines = []
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        rows = [r for r in results if r["scenario"] == scenario]
        for m in rows[0]["methods"]:
            per = [r["methods"][m]["attention"] for r in rows if "attention" in r["methods"][m]]
            if not per:
                continue
            back = [a["spearman_backward"] for a in per]
            fwd = [a["spearman_forward"] for a in per]
            seeds = ", ".join(str(r["seed"]) for r in rows)
            lines.append(
                f"- **{scenario}**, {m}, median over {len(per)} sequences (seeds {seeds}): "
                f"backward {np.median(back):+.2f} (each {', '.join(f'{v:+.2f}' for v in back)}), "
                f"forward {np.median(fwd):+.2f} (each {', '.join(f'{v:+.2f}' for v in fwd)})"
            )
    return "\n".join(lines)


def model_card(method: str, path: Path, tables: str, command: str) -> str:
    """Markdown model card of the checkpoint at ``path`` (facts from its provenance)."""
    from napari_xfusion.nn.checkpoint import load_model

    model = load_model(path, expect=method)
    info = model.checkpoint_info
    prov = info.get("provenance", {})
    train = prov.get("training", {})
    data, optim = train.get("data", {}), train.get("optim", {})
    n_params = sum(p.numel() for p in model.parameters())
    sources = ", ".join(
        f"{s['kind']} ({s['weight']:g}{', ' + json.dumps(s['options']) if s['options'] else ''})"
        for s in data.get("sources", [])
    )
    hours = prov.get("wall_seconds", 0) / 3600
    names = [m.get("name") or m.get("arch") for m in train.get("models", [])]
    together = (
        f"{', '.join(map(str, names))} side by side on the same batches"
        if len(names) > 1
        else "one network"
    )
    inits = [str(m["init"]) for m in train.get("models", []) if m.get("init")]
    if inits:
        together += f", fine-tuned from {', '.join(inits)}"
    lines = [
        f"# {path.stem}",
        "",
        f"`{path.name}`: {path.stat().st_size / 1e6:.1f} MB, sha256 `{sha256_file(path)}`",
        "",
        "## Architecture",
        "",
        f"{method.upper()} ({n_params:,} parameters), `nn.edvr.NetConfig`:",
        "",
        "```json",
        json.dumps(model.config.to_dict(), indent=1),
        "```",
        "",
        "## Training",
        "",
        f"- training run: `{train.get('run_dir')}` ({together}), code at commit "
        f"`{prov.get('git_commit')}`",
        f"- data: {sources}; simulated seeds >= {TRAINING_SEED_MIN:,} (held-out seeds below)",
        f"- items: HR crop {data.get('crop')} / LR {data.get('crop', 0) // 4}, batch "
        f"{data.get('batch_size')}, s in {data.get('separations')}, key offsets a, b in "
        f"{data.get('key_offsets')}, LR shot noise log10(b0) in {data.get('log10_b0')}, flips "
        f"and 90-degree rotations: {data.get('augment')}, focus crops: {data.get('focus')}",
        f"- optimisation: Charbonnier (eps {optim.get('charbonnier_eps')}), Adam lr "
        f"{optim.get('lr')} betas {optim.get('betas')}, warm-up {optim.get('warmup')} steps, "
        f"cosine to {optim.get('eta_min')} over a {optim.get('time_budget_minutes')}-minute "
        f"budget (or {optim.get('iterations')} steps), gradient clip {optim.get('grad_clip')}",
        f"- iterations: {prov.get('iteration')} ({prov.get('skipped_steps', 0)} skipped), wall "
        f"time {hours:.2f} h on {prov.get('machine')}, seed {train.get('seed')}",
        "",
        "## Evaluation",
        "",
        f"`{command}`",
        "",
        tables,
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_torch_threads(args.threads)
    methods = ["bicubic"] if args.no_bayesian else ["bicubic", "bayesian"]
    options: dict[str, dict] = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        if not sep or name not in NETWORKS:
            print(
                f"--weights takes METHOD=PATH with METHOD one of {', '.join(NETWORKS)}, "
                f"got {item!r}",
                file=sys.stderr,
            )
            return 2
        methods.append(name)
        options[name] = {"weights": path}
    t0 = time.monotonic()
    results, tables = [], []
    for seed in args.seed:
        hr = simulate_sequence(args.frames, tuple(args.shape), seed=seed, noise=False)
        print(
            f"held-out sequence: simulate_sequence({args.frames}, {tuple(args.shape)}, "
            f"seed={seed}, noise=False); s = 1; weights: "
            + (", ".join(f"{m}={o['weights']}" for m, o in options.items()) or "none")
            + "\n"
        )
        for scenario in args.scenario or SCENARIOS:
            result = {"seed": seed, **evaluate(hr, scenario, methods, options, seed)}
            results.append(result)
            tables.append(markdown(result))
            print(tables[-1] + "\n", flush=True)
    if len(args.seed) > 1:
        summary = attention_summary(results)
        if summary:
            tables.append(summary)
            print(summary + "\n")
    print(f"total {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.cards:
        command = "python benchmarks/evaluate_models.py " + shlex.join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--cards"
        )
        for method, opt in options.items():
            path = Path(opt["weights"])
            card = model_card(method, path, "\n\n".join(tables), command)
            path.with_suffix(".md").write_text(card, encoding="utf-8")
            (path.parent / (path.name + ".sha256")).write_text(
                f"{sha256_file(path)}  {path.name}\n"
            )
            print(f"wrote {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
