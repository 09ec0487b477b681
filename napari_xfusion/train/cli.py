"""Command line of the trainer: ``python -m napari_xfusion.train`` / ``xfusion train``.

A YAML config (``--config``) is the full description; the flags override the most common
fields, and ``--set section.key=value`` any other one. ``--print-config`` shows the result.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from napari_xfusion.train.config import (
    ModelSpec,
    SourceSpec,
    TrainConfig,
    apply_overrides,
    load_config,
)

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (shared with ``xfusion train``)."""
    p = argparse.ArgumentParser(
        prog="xfusion train",
        description="Train EDVR / EDVR-STF / EDVR-STF-flow on simulated x-ray sequences, "
        "natural textures in motion, real motion, or folders of stacks. Run under torchrun for "
        "several processes/GPUs.",
    )
    p.add_argument("--config", help="YAML training config (flags below override it)")
    p.add_argument(
        "--arch",
        action="append",
        choices=("edvr-stf", "edvr", "edvr-stf-flow"),
        help="architecture to train; repeat to train several on the same batches",
    )
    p.add_argument("--net", help="network size: paper, small or tiny (default small)")
    p.add_argument(
        "--init",
        action="append",
        help="checkpoint to fine-tune from (one per --arch, in the same order)",
    )
    p.add_argument(
        "--data",
        action="append",
        metavar="KIND[:WEIGHT]",
        help="training source: simulated, textures, real-motion (repeatable; default "
        "simulated and textures)",
    )
    p.add_argument(
        "--stacks",
        action="append",
        metavar="PATH[:WEIGHT]",
        help="folder of TIFF stacks / frame folders (natural video or x-ray); repeatable",
    )
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch-size", type=int, help="items per step per process")
    p.add_argument("--crop", type=int, help="HR crop size (multiple of 4)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--run-dir", help="output folder")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--resume", action="store_true", help="continue from run-dir's last state")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set optim.warmup=100",
    )
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    return p


def _weighted(item: str) -> tuple[str, float]:
    # Split at the last colon only when what follows is a number (paths may hold colons).
    head, sep, tail = item.rpartition(":")
    if sep:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return item, 1.0


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge ``--config``, the flags and ``--set`` into a validated :class:`TrainConfig`."""
    config = load_config(args.config) if args.config else TrainConfig()
    d = config.to_dict()
    if args.arch:
        inits = args.init or []
        if len(inits) not in (0, len(args.arch)):
            raise SystemExit("give one --init per --arch (or none)")
        d["models"] = [
            ModelSpec(arch=a, net=args.net or "small", init=inits[i] if inits else None).__dict__
            for i, a in enumerate(args.arch)
        ]
    else:
        if args.net:
            for m in d["models"]:
                m["net"], m["name"] = args.net, None
        if args.init:
            if len(args.init) != len(d["models"]):
                raise SystemExit("give one --init per model of the config")
            for m, path in zip(d["models"], args.init, strict=True):
                m["init"] = path
    if args.data or args.stacks:
        sources = []
        for item in args.data or []:
            kind, weight = _weighted(item)
            sources.append(SourceSpec(kind=kind, weight=weight).__dict__)
        for item in args.stacks or []:
            path, weight = _weighted(item)
            sources.append(SourceSpec(kind="stacks", weight=weight, path=path).__dict__)
        d["data"]["sources"] = sources
    flat = {
        ("optim", "iterations"): args.iterations,
        ("data", "batch_size"): args.batch_size,
        ("data", "crop"): args.crop,
        ("optim", "lr"): args.lr,
        (None, "run_dir"): args.run_dir,
        (None, "seed"): args.seed,
        (None, "device"): args.device,
        (None, "threads"): args.threads,
    }
    for (section, key), value in flat.items():
        if value is not None:
            (d[section] if section else d)[key] = value
    return apply_overrides(TrainConfig.from_dict(d), args.set)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` (default ``sys.argv[1:]``), train, return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"xfusion train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from napari_xfusion.train.loop import train  # torch only when actually training

    final = train(config, resume=args.resume)
    for name, path in final.items():
        print(f"{name}: {path}")
    return 0
