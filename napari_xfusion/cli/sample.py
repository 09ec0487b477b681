"""``xfusion sample`` and ``xfusion simulate``: write an LR stream, HR keys and the truth.

``sample`` simulates the x-ray sequence; ``simulate`` bins a user's full-rate HR stack. Both
write ``truth.tif``, ``lr.tif`` and ``hr_keys.tif`` through the same streaming writer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion.cli._common import (
    BLOCK_FRAMES,
    SOFTWARE,
    CommandError,
    add_key_rule,
    add_normalise_option,
    epilog,
    formatter,
    make_folder,
    parse_size,
)
from napari_xfusion.cli.signals import DeferredInterrupt

if TYPE_CHECKING:
    from napari_xfusion.core.normalise import Normalisation

__all__ = ["add_parsers", "make_sample", "run_sample", "run_simulate", "simulate_from_hr"]


def _add_lr_noise(
    clean_lr: np.ndarray, lr_psnr: float | None, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    from napari_xfusion.core.degrade import add_shot_noise, lr_psnr_for_b0, solve_b0

    if lr_psnr is None:
        return clean_lr, {"model": "none"}
    b0 = solve_b0(clean_lr, lr_psnr, seed=seed)
    noisy = add_shot_noise(clean_lr, b0, np.random.default_rng(seed)).astype(np.float32)
    return noisy, {
        "model": "poisson",
        "b0": b0,
        "target_lr_psnr_db": lr_psnr,
        "lr_psnr_db": lr_psnr_for_b0(clean_lr, b0, seed=seed),
        "seed": seed,
    }


def _check_pair_options(
    hr_shape: tuple[int, ...],
    separation: int,
    lr_psnr: float | None,
    crop: bool | None,
    what: str = "HR",
) -> None:
    """Refuse bad options before anything is computed or written (``crop=None``: the command
    has no ``--crop``; ``what`` names the HR stack in messages)."""
    from napari_xfusion.core.degrade import MAX_TARGET_PSNR_DB, MIN_TARGET_PSNR_DB

    if lr_psnr is not None and not MIN_TARGET_PSNR_DB <= lr_psnr <= MAX_TARGET_PSNR_DB:
        raise CommandError(
            f"--lr-psnr must be between {MIN_TARGET_PSNR_DB:g} and {MAX_TARGET_PSNR_DB:g} dB, "
            f"got {lr_psnr:g}"
        )
    if separation < 1:
        raise CommandError(f"--separation must be >= 1, got {separation}")
    h, w = hr_shape
    if not crop and (h % 4 or w % 4):
        hint = "" if crop is None else " (use --crop to drop the rows/columns left over)"
        raise CommandError(
            f"{what} frames are {h}x{w}: both sides must be multiples of 4 for 4x4 binning{hint}"
        )
    if min(h, w) < 4:
        raise CommandError(f"{what} frames are {h}x{w}: too small for 4x4 binning")


def _write_pair(
    out_dir: Path,
    truth: np.ndarray,
    hr_normalisation: Normalisation | None,
    key_step: int | None,
    first_last: bool,
    separation: int,
    lr_psnr: float | None,
    seed: int,
    crop: bool,
    provenance: dict[str, Any],
    source: Path | None = None,
) -> dict[str, Path]:
    """Write ``truth.tif`` (normalised HR), ``lr.tif`` and ``hr_keys.tif`` from a full-rate HR
    stack, normalising and binning block by block (O(block) memory besides the LR stream).
    ``source`` (the HR input's path) may not be among the files written, nor contain them."""
    from napari_xfusion.app.export import check_writes, writing
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.io import StackWriter
    from napari_xfusion.core.windows import key_indices

    n_frames = truth.shape[0]
    what = "HR" if source is None else f"HR input {source}"
    try:
        keys = key_indices(n_frames, key_step, first_last=first_last)
    except ValueError as exc:
        raise CommandError(f"{what}: {exc}" if source is not None else str(exc)) from None
    _check_pair_options(truth.shape[1:], separation, lr_psnr, crop, what)
    paths = {
        "truth": out_dir / "truth.tif",
        "lr": out_dir / "lr.tif",
        "keys": out_dir / "hr_keys.tif",
    }
    if source is not None:
        check_writes(paths.values(), {"HR input": source})
    make_folder(out_dir, "-o")
    key_rule = {"first_last": True} if first_last else {"key_step": key_step}
    common = {"software": SOFTWARE, **provenance, "key_rule": key_rule, "separation": separation}
    if hr_normalisation is not None:
        common["normalisation"] = {"hr": hr_normalisation.to_dict()}

    def hr_block(start: int) -> np.ndarray:
        block = np.asarray(truth[start : start + BLOCK_FRAMES])
        if hr_normalisation is not None:
            return hr_normalisation.apply(block)
        return block.astype(np.float32, copy=False)

    first = bin_frames(hr_block(0)[:1], crop=crop)
    lr = np.empty((n_frames, *first.shape[1:]), dtype=np.float32)
    hr_shape = (first.shape[1] * 4, first.shape[2] * 4)
    key_set = {int(k) for k in keys}
    # The three files are streamed to temp files and renamed together at the end: Ctrl-C,
    # SIGTERM, a full disk or any error leaves the folder as it was (no half set of files).
    writers: list[StackWriter] = []
    try:
        with writing(out_dir):
            truth_out = StackWriter(paths["truth"], (n_frames, *hr_shape), np.float32, common)
            writers.append(truth_out)
            keys_out = StackWriter(paths["keys"], (len(keys), *hr_shape), np.float32, common)
            writers.append(keys_out)
            for start in range(0, n_frames, BLOCK_FRAMES):
                block = hr_block(start)[:, : hr_shape[0], : hr_shape[1]]
                lr[start : start + block.shape[0]] = bin_frames(block)
                for i, frame in enumerate(block, start=start):
                    truth_out.write(frame, index=i)
                    if i in key_set:
                        keys_out.write(frame, index=i)
            keys_out.update_metadata({"key_indices": keys})
            noisy, noise = _add_lr_noise(lr, lr_psnr, seed)
            meta = {**common, "noise": noise, "key_indices": keys}
            lr_out = StackWriter(paths["lr"], noisy.shape, np.float32, meta)
            writers.append(lr_out)
            for i, frame in enumerate(noisy):
                lr_out.write(frame, index=i)
            with DeferredInterrupt():
                for writer in writers:
                    writer.close()
    except BaseException:
        for writer in writers:
            writer.discard()
        raise
    return paths


def make_sample(
    out_dir: str | os.PathLike[str],
    *,
    n_frames: int = 60,
    shape: tuple[int, int] = (400, 1024),
    seed: int = 0,
    speed: float = 1.0,
    key_step: int | None = 10,
    first_last: bool = False,
    separation: int = 1,
    lr_psnr: float | None = None,
) -> dict[str, Path]:
    """Simulate an x-ray sequence and write ``truth.tif``, ``lr.tif`` and ``hr_keys.tif``.

    All three are float32 in [0, 1]; ``hr_keys.tif`` holds only the key frames, their LR time
    indices in its metadata (``key_indices``). Returns the three paths by role.
    """
    from napari_xfusion.core.sample import simulate_sequence
    from napari_xfusion.core.windows import key_indices

    # Check the options before the (slow) simulation.
    key_indices(n_frames, None if first_last else key_step, first_last=first_last)
    _check_pair_options(tuple(shape), separation, lr_psnr, crop=None)
    truth = simulate_sequence(n_frames, tuple(shape), seed=seed, speed=speed)
    provenance = {
        "sample": {"n_frames": n_frames, "shape": list(shape), "seed": seed, "speed": speed}
    }
    return _write_pair(
        Path(out_dir),
        truth,
        None,
        None if first_last else key_step,
        first_last,
        separation,
        lr_psnr,
        seed,
        False,
        provenance,
    )


def simulate_from_hr(
    hr_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    key_step: int | None = None,
    first_last: bool = False,
    separation: int = 1,
    lr_psnr: float | None = None,
    seed: int = 0,
    crop: bool = False,
    normalise_mode: str = "auto",
) -> dict[str, Path]:
    """Make an LR stream and HR keys from a user's full-rate HR stack (see :func:`make_sample`).

    The HR stack is normalised (percentile clip, unless it is already float in [0, 1]); the
    clip values are kept in the metadata so results can go back to detector units.
    """
    from napari_xfusion.app.export import check_writes
    from napari_xfusion.app.inputs import fit_stream
    from napari_xfusion.core.io import read_stack

    out_dir, hr_path = Path(out_dir), Path(hr_path)
    written = [out_dir / name for name in ("truth.tif", "lr.tif", "hr_keys.tif")]
    check_writes(written, {"HR input": hr_path})  # before the (long) read
    hr = read_stack(hr_path, role="HR input")
    # The whole stack is binned into the LR stream: its clip values come from all of it
    # (sampled evenly), by the same rule as fuse's inputs.
    norm = fit_stream(hr, range(hr.shape[0]), normalise_mode, f"HR input {hr_path}")
    return _write_pair(
        Path(out_dir),
        hr,
        norm,
        key_step,
        first_last,
        separation,
        lr_psnr,
        seed,
        crop,
        {"source": os.path.abspath(hr_path)},
        source=hr_path,
    )


# ----------------------------------------------------------------------------- argparse


def add_parsers(sub: Any) -> None:
    """The ``sample`` and ``simulate`` sub-commands."""
    p = sub.add_parser(
        "sample",
        formatter_class=formatter,
        help="write the simulated x-ray sample",
        description="Simulate a laser powder-bed fusion radiography sequence and write the HR "
        "ground truth (truth.tif), the LR stream (lr.tif, 4x4 binned) and the sparse HR key "
        "frames (hr_keys.tif, key indices in its metadata), all float32 in [0, 1].",
        epilog=epilog("""
            xfusion sample -o data/
            xfusion sample -o data/ --frames 200 --size 400x1024 --key-step 20 --lr-psnr 30
            xfusion sample -o small/ --frames 24 --size 64x128 --first-last
            xfusion sample --dual-camera pair/   # a misaligned camera pair with metadata
        """),
    )
    p.add_argument("-o", "--out", type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--dual-camera",
        type=Path,
        metavar="DIR",
        help="instead: write a simulated misaligned camera pair with camera metadata (lr.tif + "
        "Shimadzu lr.ini, hr.tif + Phantom hr.xml, truth.tif, truth.json) for xfusion register",
    )
    p.add_argument(
        "--frames", type=int, help="number of frames T (default 60; 24 with --dual-camera)"
    )
    p.add_argument(
        "--size",
        metavar="HxW",
        help="HR frame size, multiples of 4 (default 400x1024; with --dual-camera the truth "
        "grid, 4x the LR frame, default 128x256)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--speed", type=float, default=1.0, help="motion speed factor (default 1)")
    add_key_rule(p, required=False)
    p.add_argument(
        "--separation",
        type=int,
        default=1,
        metavar="S",
        help="LR separation s recorded for fuse (default 1)",
    )
    p.add_argument(
        "--lr-psnr",
        type=float,
        metavar="DB",
        help="add Poisson noise to LR for this PSNR (20..60 dB; default: none)",
    )
    p.set_defaults(run=run_sample)

    p = sub.add_parser(
        "simulate",
        formatter_class=formatter,
        help="make LR + HR keys from your HR stack",
        description="Make an LR stream (4x4 binning, optional Poisson noise) and HR key frames "
        "from a full-rate HR stack; writes truth.tif (normalised HR), lr.tif and hr_keys.tif.",
        epilog=epilog("""
            xfusion simulate hr.tif --key-step 20 --lr-psnr 35 -o sim/
            xfusion simulate frames_folder/ --first-last --separation 2 -o sim/
        """),
    )
    p.add_argument("hr", type=Path, help="full-rate HR stack (TIFF, hyperstack or folder)")
    add_key_rule(p, required=True)
    p.add_argument("--separation", type=int, default=1, metavar="S", help="LR separation s")
    p.add_argument("--lr-psnr", type=float, metavar="DB", help="target LR PSNR (20..60 dB)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--crop",
        action="store_true",
        help="crop rows/columns that do not fill a 4x4 block (default: error)",
    )
    add_normalise_option(p)
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.set_defaults(run=run_simulate)


def run_sample(args: argparse.Namespace) -> int:
    if args.dual_camera is not None:
        return _run_dual_camera(args)
    if args.out is None:
        raise CommandError("give -o DIR (or --dual-camera DIR)")
    paths = make_sample(
        args.out,
        n_frames=60 if args.frames is None else args.frames,
        shape=parse_size(args.size or "400x1024"),
        seed=args.seed,
        speed=args.speed,
        key_step=args.key_step if args.key_step else 10,
        first_last=args.first_last,
        separation=args.separation,
        lr_psnr=args.lr_psnr,
    )
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


def _run_dual_camera(args: argparse.Namespace) -> int:
    """``--dual-camera DIR``: :func:`napari_xfusion.app.dualcam.simulate_dual_camera` (the
    sample's --frames/--seed/--speed/--lr-psnr/--key-step apply; --size is the LR truth grid)."""
    from napari_xfusion.app.dualcam import simulate_dual_camera

    if args.out is not None:
        raise CommandError("give either -o DIR or --dual-camera DIR, not both")
    options: dict[str, Any] = {"seed": args.seed, "speed": args.speed}
    if args.frames is not None:
        options["n_frames"] = args.frames
    if args.size is not None:
        h, w = parse_size(args.size)
        if h % 4 or w % 4:
            raise CommandError(f"--size {args.size}: the truth grid must be multiples of 4")
        options["lr_shape"] = (h // 4, w // 4)
    if args.key_step:
        options["key_step"] = args.key_step
    if args.lr_psnr is not None:
        options["lr_psnr"] = args.lr_psnr
    make_folder(args.dual_camera, "--dual-camera")
    try:
        paths = simulate_dual_camera(args.dual_camera, **options)
    except ValueError as exc:
        raise CommandError(f"--dual-camera: {exc}") from None
    for role, path in paths.items():
        print(f"{role}: {path}")
    print(f"next: xfusion register --lr {paths['lr']} --hr {paths['hr']} -o aligned/")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    paths = simulate_from_hr(
        args.hr,
        args.out,
        key_step=args.key_step,
        first_last=args.first_last,
        separation=args.separation,
        lr_psnr=args.lr_psnr,
        seed=args.seed,
        crop=args.crop,
        normalise_mode=args.normalise,
    )
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0
