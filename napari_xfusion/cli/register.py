"""``xfusion register``: two cameras' stacks and metadata -> the aligned pair ``fuse`` takes.

Reads both stacks and their frame times (camera metadata beside the stacks or given, else
rates), matches the frames, registers the HR camera onto the exact 4x grid of the LR view (an
estimate from the keys, a saved transform or a calibration target pair), refines the time
offset from the images, and writes ``lr.tif``, ``hr.tif`` (with ``key_indices``),
``transform.json``, ``alignment.json`` and ``alignment.txt`` (:mod:`napari_xfusion.app.dualcam`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_xfusion.cli._common import CommandError, check_folder, epilog, formatter, say

__all__ = ["add_parser", "register", "run_register"]


def register(
    config: Any, out_dir: Path, *, truth: Path | None = None, quiet: bool = False
) -> tuple[Any, dict[str, Path]]:
    """Align and write (``truth``: a stack on the LR camera's 4x grid written cropped and
    normalised like the LR as ``out_dir/truth.tif``); returns the pair and the paths."""
    from napari_xfusion.app.dualcam import align_pair, write_aligned
    from napari_xfusion.app.export import check_writes
    from napari_xfusion.core.io import read_stack

    inputs = {
        "--lr": config.lr,
        "--hr": config.hr,
        "--lr-times": config.lr_times,
        "--hr-times": config.hr_times,
        "--transform": config.transform if isinstance(config.transform, Path) else None,
        "--target-lr": config.target_lr,
        "--target-hr": config.target_hr,
        "--truth": truth,
    }
    inputs = {k: v for k, v in inputs.items() if v is not None}
    names = ("lr.tif", "hr.tif", "transform.json", "alignment.json", "alignment.txt")
    written = [out_dir / n for n in names] + ([out_dir / "truth.tif"] if truth else [])
    check_writes(written, inputs)  # before any (slow) work
    check_folder(out_dir, "-o")
    truth_stack = read_stack(truth, role="--truth") if truth is not None else None
    pair = align_pair(config, progress=None if quiet else (lambda text: say(f"register: {text}")))
    paths = write_aligned(pair, out_dir, inputs=inputs, truth=truth_stack)
    return pair, paths


def add_parser(sub: Any) -> None:
    """The ``register`` sub-command."""
    p = sub.add_parser(
        "register",
        formatter_class=formatter,
        help="align a real camera pair (time + space) for fuse",
        description="Match the two cameras' frames in time (camera metadata: Phantom .cine / "
        ".xml, Shimadzu .ini, found beside the stacks or given; else frame rates), register the "
        "HR camera onto the exact 4x grid of the LR view (flip, scale, rotation, shift; or "
        "affine), refine the time offset from the images, and write lr.tif (cropped to the "
        "common view), hr.tif (the keys, key_indices in its metadata), transform.json, "
        "alignment.json and alignment.txt into DIR: then xfusion fuse --lr DIR/lr.tif --hr "
        "DIR/hr.tif.",
        epilog=epilog("""
            xfusion sample --dual-camera pair/
            xfusion register --lr pair/lr.tif --hr pair/hr.tif -o aligned/
            xfusion register --lr lr.tif --hr hr.tif --lr-rate 1e6 --hr-rate 71400 \\
                --trigger-delay 2.5e-6 -o aligned/
            xfusion register --lr lr.tif --hr hr.cine --transform aligned/transform.json -o a2/
            xfusion register --lr lr.tif --hr hr.tif --target-lr grid_lr.tif \\
                --target-hr grid_hr.tif -o aligned/
        """),
    )
    p.add_argument("--lr", required=True, type=Path, metavar="FILE", help="LR camera stack")
    p.add_argument(
        "--hr", required=True, type=Path, metavar="FILE", help="HR camera stack (TIFF or .cine)"
    )
    p.add_argument(
        "--lr-times",
        type=Path,
        metavar="FILE",
        help="LR metadata (.ini/.xml/.cine; default: beside --lr)",
    )
    p.add_argument(
        "--hr-times",
        type=Path,
        metavar="FILE",
        help="HR metadata (.xml/.cine/.ini; default: beside --hr)",
    )
    p.add_argument(
        "--lr-rate", type=float, metavar="HZ", help="LR frame rate (instead of metadata)"
    )
    p.add_argument(
        "--hr-rate", type=float, metavar="HZ", help="HR frame rate (instead of metadata)"
    )
    p.add_argument(
        "--trigger-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds added to every HR time (HR clock start after the LR's; default 0)",
    )
    p.add_argument(
        "--transform", type=Path, metavar="FILE", help="use a saved transform.json (no estimate)"
    )
    p.add_argument(
        "--target-lr", type=Path, metavar="FILE", help="calibration target seen by the LR camera"
    )
    p.add_argument(
        "--target-hr", type=Path, metavar="FILE", help="the same target seen by the HR camera"
    )
    p.add_argument(
        "--model",
        choices=("similarity", "affine"),
        default="similarity",
        help="transform model (default similarity)",
    )
    p.add_argument("--no-flip", action="store_true", help="do not look for a mirror flip")
    p.add_argument(
        "--max-residual",
        type=float,
        default=0.5,
        metavar="PX",
        help="refuse above this residual, LR px (default 0.5)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.5,
        metavar="FRAMES",
        help="time match tolerance, LR frames (default 0.5)",
    )
    p.add_argument(
        "--drop-outside",
        action="store_true",
        help="drop HR frames recorded before/after the LR recording (default: refuse them)",
    )
    p.add_argument(
        "--no-refine-time",
        action="store_true",
        help="keep the metadata's times (no image-based refinement)",
    )
    p.add_argument(
        "--lr-pixel", type=float, metavar="UM", help="LR pixel size in um (recorded in the outputs)"
    )
    p.add_argument(
        "--hr-pixel",
        type=float,
        metavar="UM",
        help="HR pixel size in um: with --lr-pixel it gives the estimate its scale (much faster)",
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="FILE",
        help="a stack on the LR camera's 4x grid (the simulated truth.tif): also written "
        "cropped and normalised like the LR as DIR/truth.tif, for xfusion evaluate",
    )
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.set_defaults(run=run_register)


def config_from_args(args: argparse.Namespace) -> Any:
    from napari_xfusion.app.dualcam import DualCameraConfig

    if (args.target_lr is None) != (args.target_hr is None):
        raise CommandError("a calibration target needs both --target-lr and --target-hr")
    return DualCameraConfig(
        lr=args.lr,
        hr=args.hr,
        lr_times=args.lr_times,
        hr_times=args.hr_times,
        lr_rate_hz=args.lr_rate,
        hr_rate_hz=args.hr_rate,
        trigger_delay_s=args.trigger_delay,
        transform=args.transform,
        target_lr=args.target_lr,
        target_hr=args.target_hr,
        model=args.model,
        allow_flip=not args.no_flip,
        max_residual_lr_px=args.max_residual,
        tolerance_frames=args.tolerance,
        drop_outside=args.drop_outside,
        refine_time=not args.no_refine_time,
        lr_pixel_um=args.lr_pixel,
        hr_pixel_um=args.hr_pixel,
    )


def run_register(args: argparse.Namespace) -> int:
    pair, paths = register(config_from_args(args), args.out, truth=args.truth)
    print(pair.report.summary())
    for role, path in paths.items():
        print(f"{role}: {path}")
    print(f"next: xfusion fuse --lr {paths['lr']} --hr {paths['hr']} -o fused.tif")
    return 0
