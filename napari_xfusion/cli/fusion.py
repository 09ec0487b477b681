"""``xfusion fuse``: arguments and configuration files -> one :class:`RunConfig` -> a run.

A run is described by a :class:`~napari_xfusion.app.config.RunConfig`: from ``--config FILE``
(e.g. the ``<stem>.config.json`` every export writes), from the options, or both - then the
options given on the command line override the file's values. :func:`fuse_run`
(:mod:`napari_xfusion.cli.running`) runs it.
"""

from __future__ import annotations

import argparse
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_xfusion.cli._common import (
    CommandError,
    add_run_inputs,
    epilog,
    formatter,
    make_folder,
    say,
)
from napari_xfusion.cli.config import OVERRIDES, config_example, config_from_args, fuse_config

if TYPE_CHECKING:
    from napari_xfusion.cli.running import FuseReport

__all__ = ["add_parser", "fuse", "run_fuse"]

# ----------------------------------------------------------------------------- fuse


def fuse(
    lr_path: str | os.PathLike[str],
    hr_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("bicubic",),
    key_step: int | None = None,
    first_last: bool = False,
    key_list: list[int] | None = None,
    frames: slice | None = None,
    separation: int | None = None,
    device: str = "auto",
    weights: Sequence[str] = (),
    units: str = "float",
    truth_path: str | os.PathLike[str] | None = None,
    normalise_mode: str = "auto",
    options: Sequence[str] = (),
    progress: bool = True,
) -> FuseReport:
    """Fuse an LR stream with HR keys, writing one export per method (see :func:`fuse_run`)."""
    from napari_xfusion.cli.running import fuse_run

    config = fuse_config(
        lr_path,
        hr_path,
        methods=methods,
        key_step=key_step,
        first_last=first_last,
        key_list=key_list,
        frames=frames,
        separation=separation,
        device=device,
        weights=weights,
        units=units,
        truth_path=truth_path,
        normalise_mode=normalise_mode,
        options=options,
    )
    return fuse_run(config, out, progress=progress)


def run_fuse(args: argparse.Namespace) -> int:
    """``xfusion fuse``: build the configuration, then save it, check it or run it."""
    from napari_xfusion.cli.running import fuse_run

    if args.out is None and args.save_config is None and not args.dry_run:
        raise CommandError("-o/--out is required (or --save-config PATH / --dry-run)")
    config = config_from_args(args)
    if args.save_config is not None:
        from napari_xfusion.app.export import check_writes, writing
        from napari_xfusion.cli.running import input_labels

        check_writes([args.save_config], input_labels(config))
        make_folder(args.save_config.parent, "--save-config")
        with writing(args.save_config):
            config.save(args.save_config)
        print(f"configuration: {args.save_config}")
    if args.dry_run:
        from napari_xfusion.app.inputs import prepare_inputs
        from napari_xfusion.cli.running import ROLES, check_outputs

        if args.out is not None:
            check_outputs(config, args.out, extras=not args.no_extras)
        prepared = prepare_inputs(config, roles=ROLES)
        for note in prepared.notes:
            say(f"xfusion fuse: {note}")
        print(config.to_json(), end="")
        say(
            f"xfusion fuse: inputs checked; would fuse {len(prepared.targets)} frames with "
            f"{', '.join(config.method_names)} (dry run, nothing written)"
        )
        return 0
    if args.out is None:
        return 0
    report = fuse_run(config, args.out, progress=not args.no_progress, extras=not args.no_extras)
    if int(os.environ.get("RANK", "0")) != 0:
        return report.status
    if report.table is not None and report.table.has_truth and not report.interrupted:
        print(report.table.summary_text())
    for m, path in report.outputs.items():
        if report.frames_done.get(m):
            print(f"{m}: {path} ({report.frames_done[m]} frames), {report.csv_paths[m]}")
        for name, extra in report.extras.get(m, {}).items():
            print(f"{m} {name}: {extra}")
    if report.comparison is not None:
        print(f"comparison: {report.comparison}")
    return report.status


# ----------------------------------------------------------------------------- argparse


def _methods_help() -> str:
    from napari_xfusion.cli.methods import describe_methods

    head = (
        "methods (from the registry, plugins included; --option METHOD.key=value sets an "
        "option; xfusion methods says more):"
    )
    return textwrap.fill(head, 95, break_on_hyphens=False) + "\n" + describe_methods(verbose=False)


def _config_help() -> str:
    example = config_example()
    head = (
        "configuration file (--config FILE): every export writes one as <stem>.config.json, "
        "so --config of it repeats that run; relative paths are taken from the file's "
        f"folder; {OVERRIDES} given on the command line override the file's values. "
        "--save-config PATH writes one. Example:"
    )
    body = textwrap.indent(example, "  ").rstrip("\n")
    return textwrap.fill(head, 95, break_on_hyphens=False) + "\n" + body


def add_parser(sub: Any) -> None:
    from napari_xfusion.methods.registry import available_methods

    p = sub.add_parser(
        "fuse",
        formatter_class=formatter,
        help="reconstruct HR frames at the LR frame rate",
        description="Fuse the LR stream with HR key frames. Frames are written as they are "
        "done; Ctrl-C or SIGTERM keeps the frames done in a valid TIFF. Also writes a "
        "per-frame CSV (attention scores, metrics with --truth or a full-rate --hr) and the run "
        "configuration (<stem>.config.json, reusable with --config). Under torchrun the frames "
        "are split over the ranks and rank 0 writes one file.",
        epilog=epilog(
            """
            xfusion fuse --lr data/lr.tif --hr data/hr_keys.tif --method bicubic -o fused.tif
            xfusion fuse --lr lr.tif --hr hr_full.tif --key-step 20 --method bicubic,bayesian \\
                --frames 100:300 --truth hr_full.tif -o out/fused.tif
            xfusion fuse --lr lr.tif --hr keys.tif --key-indices 0,40,80 --method edvr-stf \\
                --weights my.pt --option edvr-stf.tile=64 --device cuda --units detector \\
                -o fused.tif
            xfusion fuse --config fused.config.json --frames 0:50 -o again.tif
            xfusion fuse --lr lr.tif --hr keys.tif --method bayesian --save-config run.json
            torchrun --nproc_per_node 4 -m napari_xfusion.cli fuse --lr lr.tif --hr keys.tif \\
                --method edvr-stf -o fused.tif
            """,
            _methods_help(),
            _config_help(),
        ),
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="run configuration (JSON, e.g. an export's <stem>.config.json); options given "
        "on the command line override its values",
    )
    p.add_argument(
        "--save-config",
        type=Path,
        metavar="PATH",
        help="write the run configuration to PATH; runs only when -o is given too",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the configuration and the inputs, print the configuration, write nothing",
    )
    add_run_inputs(
        p,
        hr_help="HR key frames (sparse, key indices from metadata or --key-indices) or "
        "a full-rate HR stack with --key-step/--first-last",
    )
    p.add_argument(
        "--method",
        metavar="M[,M...]",
        help=f"{', '.join(available_methods())} (default bicubic); several comma-separated "
        "write one file each (<stem>_<method>.tif) and a comparison table",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="METHOD.key=value",
        help="a method option (listed below; METHOD may be left out with one method); repeatable",
    )
    p.add_argument("--frames", metavar="A:B", help="LR frames A..B-1 only (default all)")
    p.add_argument(
        "--weights",
        action="append",
        metavar="[METHOD=]PATH",
        help="network weights (default: the shipped ones); repeatable",
    )
    p.add_argument(
        "--units",
        choices=("float", "detector"),
        help="float32 in [0, 1] (default) or detector units and dtype of the HR input",
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="T.tif",
        help="full-rate HR ground truth: per-frame PSNR/AAD/SSIM in the CSV",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the methods' extra maps (flow's confidence, bayesian's variance), written "
        "by default as OUT_<method>_<map>.tif beside each export",
    )
    p.add_argument(
        "-o",
        "--out",
        metavar="OUT",
        help="output TIFF (an existing folder or a path ending in /: OUT/fused.tif)",
    )
    p.set_defaults(run=run_fuse)
