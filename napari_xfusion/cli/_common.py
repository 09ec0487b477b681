"""What every command shares: the user-error type, messages, argument parsing helpers."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from napari_xfusion import __version__

SOFTWARE = f"napari-xfusion {__version__}"

# Frames read per block when a whole stack is streamed (normalising, binning, scanning ranges).
BLOCK_FRAMES = 32


class CommandError(Exception):
    """A user error: printed as ``xfusion <command>: error: ...`` without a traceback."""


def say(message: str) -> None:
    """One line on stderr (progress, notes, what was kept)."""
    print(message, file=sys.stderr, flush=True)


def check_folder(folder: Path, option: str) -> None:
    """Refuse an output folder that cannot be made because a file is in the way."""
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise CommandError(f"{option}: {parent} is a file, not a folder")
            return


def make_folder(folder: Path, option: str) -> None:
    """Create an output folder (and its parents); a file in the way or an OS error is one
    message naming the folder and ``option``."""
    check_folder(folder, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = f"{option}: cannot create the output folder: {exc.strerror or exc}"
        raise type(exc)(exc.errno, why, str(folder)) from None


def parse_frames(text: str | None) -> slice | None:
    """``"A:B"`` (B exclusive, either side optional) or ``"A"`` (one frame) -> slice."""
    if text is None:
        return None
    try:
        if ":" in text:
            start, stop = text.split(":", 1)
            return slice(int(start) if start else None, int(stop) if stop else None)
        return slice(int(text), int(text) + 1)
    except ValueError:
        raise CommandError(
            f"--frames must look like A:B (B exclusive) or A, got {text!r}"
        ) from None


def parse_int_list(text: str, what: str) -> list[int]:
    """``"0, 40,80"`` -> ``[0, 40, 80]``; ``what`` names the option in the error."""
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise CommandError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_size(text: str) -> tuple[int, int]:
    """``"400x1024"`` -> ``(400, 1024)``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CommandError(f"--size must look like HxW (e.g. 400x1024), got {text!r}") from None
    return h, w


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def epilog(text: str, *sections: str) -> str:
    """``examples:`` block from an indented literal, then any further ready-made sections."""
    body = "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")
    return "\n\n".join([body, *sections])


def add_normalise_option(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument(
        "--normalise",
        choices=("auto", "percentile", "none"),
        default=default,
        help="input normalisation; auto (default): percentile clip unless already float in [0, 1]",
    )


def add_run_inputs(p: argparse.ArgumentParser, *, hr_help: str, first_last: bool = True) -> None:
    """The inputs of a run, read by :func:`napari_xfusion.cli.config.config_from_args`:
    ``--lr``, ``--hr``, the key rule (``--key-step`` / ``--first-last`` / ``--key-indices``),
    ``--separation``, ``--device``, ``--normalise`` (fuse, validate, finetune).
    ``first_last=False`` hides ``--first-last`` (two keys: nothing to withhold or train on)."""
    p.add_argument("--lr", type=Path, help="LR stream (T, h, w)")
    p.add_argument("--hr", type=Path, help=hr_help)
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--key-step", type=int, metavar="K", help="keys every K-th frame")
    rule.add_argument(
        "--first-last",
        action="store_true",
        default=None,
        help="keys at first and last frame" if first_last else argparse.SUPPRESS,
    )
    rule.add_argument(
        "--key-indices",
        metavar="I,J,...",
        help="LR time index of each HR frame (real dual-camera data)",
    )
    p.add_argument(
        "--separation",
        type=int,
        metavar="S",
        help="LR separation s (default: from the LR metadata, else 1)",
    )
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    add_normalise_option(p, default=None)


def add_key_rule(p: argparse.ArgumentParser, required: bool) -> None:
    """``--key-step K`` / ``--first-last`` (sample, simulate)."""
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--key-step",
        type=int,
        metavar="K",
        help="HR key every K-th frame (K >= 2) of a full-rate HR stack",
    )
    group.add_argument(
        "--first-last", action="store_true", help="only the first and the last frame are HR keys"
    )
