"""``xfusion finetune``: adapt a shipped network to the user's experiment from its own keys.

The inputs and run options are ``xfusion fuse``'s (``--lr``, ``--hr``, ``--config``, key rule,
separation, device, ``--option``); :func:`napari_xfusion.app.finetune.finetune` does the
work. A first Ctrl-C (or SIGTERM) stops training after the current step, scores what was
trained and keeps the better of it and the original (exit status 130 / 143); a second one
stops at once and writes nothing.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from napari_xfusion.cli._common import (
    CommandError,
    add_run_inputs,
    epilog,
    formatter,
    make_folder,
    say,
)

__all__ = ["add_parser", "run_finetune"]


def _config(args: argparse.Namespace) -> Any:
    """The run configuration of the arguments (``fuse``'s rules), with ``--method`` the one
    method and ``--init`` its weights."""
    from napari_xfusion.app.finetune import network_methods
    from napari_xfusion.cli.config import config_from_args

    if args.init is not None and not args.init.is_file():
        raise CommandError(f"--init {args.init}: no such file")
    if args.init is not None and args.method not in network_methods():
        raise CommandError(
            f"--method {args.method} is no network: nothing to fine-tune; "
            f"choose one of {', '.join(network_methods())}"
        )
    fuse_args = argparse.Namespace(
        **vars(args),
        truth=None,
        frames=None,
        units=None,
        weights=[f"{args.method}={args.init}"] if args.init is not None else None,
    )
    return config_from_args(fuse_args)


class _Bar:
    """A tqdm bar over the training budget (seconds) that shows the phase, step and loss."""

    def __init__(self, minutes: float, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=max(round(60 * minutes), 1),
            unit="s",
            disable=not enabled,
            desc="finetune",
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s {postfix}",
        )

    def __call__(self, event: Any) -> None:
        if event.phase == "train":
            self.bar.n = min(event.seconds, self.bar.total)
            loss = f"{event.loss:.4f}" if math.isfinite(event.loss) else "skipped"
            self.bar.set_postfix_str(f"step {event.step}, loss {loss}", refresh=False)
        else:
            self.bar.set_postfix_str(event.message or event.phase, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run_finetune(args: argparse.Namespace) -> int:
    """``xfusion finetune``: prepare the inputs, fine-tune, report before/after and the file."""
    from napari_xfusion.app.finetune import FinetuneSettings, finetune
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.cli._common import parse_int_list
    from napari_xfusion.cli.running import ROLES
    from napari_xfusion.cli.signals import DeferredInterrupt, exit_status, signal_name

    if args.minutes < 0:
        raise CommandError(f"--minutes must be >= 0, got {args.minutes}")
    if args.init is None:
        # A method that is no network, or has no shipped weights: say so before reading inputs.
        from napari_xfusion.app.config import RunConfig
        from napari_xfusion.app.finetune import source_weights

        source_weights(RunConfig(), args.method)
    config = _config(args)
    out = Path(args.out)
    if out.is_dir():
        raise CommandError(f"-o {out} is a folder; give the checkpoint's file name (model.pt)")
    settings = FinetuneSettings(
        lr=args.learning_rate,
        eta_min=min(1e-6, args.learning_rate),
        batch_size=args.batch_size,
        crop=args.crop,
        max_steps=args.max_steps,
        threads=args.threads,
    )
    validation = (
        parse_int_list(args.validation_keys, "--validation-keys") if args.validation_keys else None
    )
    prepared = prepare_inputs(config, roles=ROLES)
    for note in prepared.notes:
        say(f"xfusion finetune: {note}")
    make_folder(out.parent, "-o")
    bar = _Bar(args.minutes, enabled=not args.no_progress)
    stopped: BaseException | None = None
    result = None
    try:
        # The first signal is held: training stops after the current step and the better
        # model so far is scored and saved; a second one interrupts at once.
        with DeferredInterrupt() as held:
            result = finetune(
                config,
                prepared,
                method=args.method,
                minutes=args.minutes,
                out=out,
                cancel=lambda: held.hit is not None,
                on_progress=bar,
                seed=args.seed,
                settings=settings,
                validation=validation,
            )
    except KeyboardInterrupt as exc:
        stopped = exc
    finally:
        bar.close()
    if result is None:  # the second signal: nothing was saved
        assert stopped is not None
        say(f"xfusion finetune: {signal_name(stopped)}; stopped, nothing written")
        return exit_status(stopped)
    print(result.summary_text())
    if stopped is not None:
        say(f"xfusion finetune: {signal_name(stopped)}; kept the better model so far")
        return exit_status(stopped)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        formatter_class=formatter,
        help="fine-tune a network on your own HR keys and LR frames",
        description="Fine-tune a network method (default edvr-stf, from its shipped weights) "
        "on the experiment's own pairs: each interior HR key is a target, reconstructed from "
        "the LR frames around it and its neighbour keys. Some keys are held out (never "
        "trained on) and scored by leave-one-key-out before and after; the better weights "
        "are saved with their provenance, ready for 'xfusion fuse --weights METHOD=model.pt'. "
        "Ctrl-C stops training and keeps the better model so far.",
        epilog=epilog(
            """
            xfusion finetune --lr aligned/lr.tif --hr aligned/hr.tif --minutes 5 -o model.pt
            xfusion fuse --lr aligned/lr.tif --hr aligned/hr.tif --method edvr-stf \\
                --weights edvr-stf=model.pt -o fused.tif
            xfusion finetune --config run.json --method edvr-stf-flow --init my.pt -o tuned.pt
            """
        ),
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="run configuration (JSON, e.g. an export's <stem>.config.json)",
    )
    add_run_inputs(
        p,
        hr_help="HR key frames (key indices from metadata or --key-indices), or a full-rate "
        "HR stack with --key-step",
        first_last=False,
    )
    p.add_argument(
        "--method",
        default="edvr-stf",
        help="network to fine-tune: edvr-stf (default), edvr-stf-flow, edvr",
    )
    p.add_argument(
        "--init",
        type=Path,
        metavar="WEIGHTS",
        help="weights to start from (default: the config's, else the shipped ones)",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="METHOD.key=value",
        help="a method option used when scoring (e.g. edvr-stf.tile=64)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="training wall time (default 5); the two validations come on top",
    )
    p.add_argument(
        "--validation-keys",
        metavar="I,J,...",
        help="LR indices of the keys to hold out (default: a third of the interior "
        "keys, evenly spaced)",
    )
    p.add_argument("--learning-rate", type=float, default=1e-4, help="peak Adam rate (1e-4)")
    p.add_argument("--batch-size", type=int, default=4, help="crops per step (4)")
    p.add_argument("--crop", type=int, default=64, help="HR crop size, a multiple of 4 (64)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and torch (0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--out", required=True, metavar="MODEL.pt", help="checkpoint to write")
    p.set_defaults(run=run_finetune)
