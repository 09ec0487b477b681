"""Command-line interface ``xfusion``: sample, simulate, fuse, evaluate, validate, methods, demo,
study, finetune, train.

Every command runs the same code as the napari plugin: inputs, configuration, runs and exports
through :mod:`napari_xfusion.app`. One module per command (``sample``, ``fusion`` +
``running``, ``evaluation``, ``methods``, ``demo``); heavy imports (torch, the methods) happen
inside the commands so ``xfusion --help`` starts quickly.

``python -m napari_xfusion.cli fuse ...`` works too, which is what
``torchrun --nproc_per_node N -m napari_xfusion.cli fuse ...`` needs: the frames are then split
over the ranks and rank 0 writes one output file in order.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from napari_xfusion.cli import demo, evaluation, fusion, methods, register, sample, study, validate
from napari_xfusion.cli import finetune as finetuning
from napari_xfusion.cli._common import SOFTWARE, CommandError, epilog, formatter, say
from napari_xfusion.cli.config import config_example, fuse_config
from napari_xfusion.cli.demo import DEMO_SIZE, run_demo
from napari_xfusion.cli.evaluation import evaluate
from napari_xfusion.cli.fusion import fuse
from napari_xfusion.cli.montage import write_montage
from napari_xfusion.cli.running import FuseReport, fuse_run
from napari_xfusion.cli.sample import make_sample, simulate_from_hr
from napari_xfusion.cli.signals import exit_status, signal_name, terminate_as_interrupt

__all__ = [
    "DEMO_SIZE",
    "CommandError",
    "FuseReport",
    "build_parser",
    "config_example",
    "evaluate",
    "fuse",
    "fuse_config",
    "fuse_run",
    "main",
    "make_sample",
    "run_demo",
    "simulate_from_hr",
    "write_montage",
]

EXIT_STATUS = (
    "exit status: 0 done; 1 an operating-system error (disk full, permission denied, ...); "
    "2 a bad input, option or configuration; 130 Ctrl-C; 143 SIGTERM (both keep the frames "
    "done in <stem>.partial.tif)"
)


def build_parser() -> argparse.ArgumentParser:
    """The ``xfusion`` argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="xfusion",
        formatter_class=formatter,
        description="Spatio-temporal fusion of dual-camera high-speed x-ray image sequences.",
        epilog=epilog(
            """
            xfusion demo                       # simulate, fuse with every method, print metrics
            xfusion sample -o data/
            xfusion fuse --lr data/lr.tif --hr data/hr_keys.tif --method bicubic -o fused.tif
            xfusion fuse --config fused.config.json -o again.tif   # the same run again
            xfusion evaluate fused.tif --truth data/truth.tif
            xfusion validate --lr data/lr.tif --hr data/hr_keys.tif --method flow -o val/
            xfusion methods                    # the methods and their options
            xfusion register --lr lr.tif --hr hr.tif -o aligned/   # a real camera pair
            """,
            EXIT_STATUS,
        ),
    )
    parser.add_argument("--version", action="version", version=SOFTWARE)
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of input errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sample.add_parsers(sub)
    fusion.add_parser(sub)
    evaluation.add_parser(sub)
    validate.add_parser(sub)
    methods.add_parser(sub)
    demo.add_parser(sub)
    study.add_parser(sub)
    finetuning.add_parser(sub)
    register.add_parser(sub)
    sub.add_parser(
        "train",
        formatter_class=formatter,
        add_help=False,
        help="train edvr / edvr-stf",
        description="Forwarded to napari_xfusion.train (see xfusion train --help).",
    )
    return parser


def _one_line(exc: BaseException) -> str:
    """An error message on one line (checkpoint and torch messages can span several)."""
    if isinstance(exc, CommandError):
        return str(exc)  # ours: already worded, may list choices on further lines
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"  # not "[Errno 20] Not a directory: '...'"
    return text or type(exc).__name__


def _run(argv: list[str]) -> int:
    if argv[:1] == ["train"]:
        from napari_xfusion.train import main as train_main  # lazy: pulls in torch

        return int(train_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (CommandError, ValueError) as exc:
        # Bad input (a file, a frame, an option; every error type of ours is a ValueError):
        # the message says what to fix; a traceback would only bury it. --debug shows it.
        if args.debug:
            raise
        say(f"xfusion {args.command}: error: {_one_line(exc)}")
        return 2
    except OSError as exc:
        if args.debug:
            raise
        code = 2 if isinstance(exc, FileNotFoundError) else 1
        say(f"xfusion {args.command}: error: {_one_line(exc)}")
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xfusion`` console script; returns the exit status.

    Ctrl-C and SIGTERM anywhere (start-up included: importing torch, loading weights, reading
    inputs) end with one line and status 130 / 143, never a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        with terminate_as_interrupt():
            return _run(argv)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM outside fuse's frame loop
        say(f"xfusion{' ' + command if command else ''}: {signal_name(exc)}; stopped")
        return exit_status(exc)
