"""``xfusion validate``: accuracy on the user's own data, without ground truth
(:mod:`napari_xfusion.app.validation`).

Leave-one-key-out over every interior HR key and every method (``loo.csv``,
``loo_summary.csv``, ``loo.png``), and the LR consistency of every frame of a normal run (or of
given exports, ``--fused``) in ``lr_consistency.csv``. Inputs and run options are those of
``xfusion fuse`` (the same :class:`~napari_xfusion.app.config.RunConfig`, ``--config`` too).

Exit status: 0 done; 1 an OS error; 2 bad input (fewer than 3 keys, a ``--withhold`` frame
that is not a key, ...); 130 Ctrl-C (the rows done are written, marked incomplete).
"""

from __future__ import annotations

import argparse
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

if TYPE_CHECKING:
    from napari_xfusion.app.config import RunConfig
    from napari_xfusion.app.inputs import PreparedInputs
    from napari_xfusion.app.validation import ConsistencyTable, LrChecker, ValidationResult

__all__ = ["OUTPUTS", "add_parser", "run", "validate"]

OUTPUTS = ("loo.csv", "loo_summary.csv", "loo.png", "lr_consistency.csv")
"""What ``validate`` writes into ``-o DIR`` (``lr_consistency.csv`` unless
``--no-consistency``)."""

EXAMPLES = """
    xfusion sample -o data/ --frames 41 --size 64x128 --key-step 10
    xfusion validate --lr data/lr.tif --hr data/hr_keys.tif --method bicubic,flow -o val/
    xfusion validate --lr lr.tif --hr keys.tif --method flow edvr-stf --withhold 40 80 -o val/
    xfusion validate --config fused.config.json -o val/        # the methods of that run
    xfusion validate --lr lr.tif --hr keys.tif --fused out_flow.tif -o val/   # check an export
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``validate`` to the ``xfusion`` sub-parsers; returns its parser."""
    p = sub.add_parser(
        "validate",
        formatter_class=formatter,
        help="accuracy without ground truth: leave-one-key-out and LR consistency",
        description="Leave-one-key-out: withhold each interior HR key in turn, reconstruct its "
        "time from the keys around it (a gap of twice the key step) with every method, and "
        "score it against the real key (PSNR/AAD/SSIM): the methods' accuracy on your own "
        "experiment, no ground truth needed. LR consistency: bin each reconstruction 4x4 and "
        "compare it with the LR frame at its time; frames where the difference exceeds what "
        "the LR noise explains are flagged. Writes loo.csv, loo_summary.csv, loo.png and "
        "lr_consistency.csv into --out and prints the summaries.",
        epilog=epilog(
            EXAMPLES,
            "exit status: 0 done; 1 an operating-system error; 2 a bad input or option\n"
            "  (e.g. fewer than 3 HR keys); 130 Ctrl-C (rows done are written)",
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="run configuration (JSON)")
    add_run_inputs(
        p,
        hr_help="HR key frames (key_indices in metadata, or --key-indices/--key-step)",
        first_last=False,
    )
    p.add_argument(
        "--method",
        nargs="+",
        metavar="NAME",
        help="methods to validate (space- or comma-separated; default: --config's, else bicubic)",
    )
    p.add_argument("--option", action="append", metavar="METHOD.key=value", help="a method option")
    p.add_argument("--weights", action="append", metavar="[METHOD=]PATH", help="network weights")
    p.add_argument(
        "--withhold",
        nargs="+",
        type=int,
        metavar="T",
        help="withhold only these keys (their LR frame indices; default every interior key)",
    )
    p.add_argument(
        "--edges",
        action="store_true",
        help="also withhold the first and last key (scored from two keys on one side)",
    )
    p.add_argument(
        "--frames",
        metavar="A:B",
        help="LR frames of the normal run checked for LR consistency (default all)",
    )
    p.add_argument(
        "--fused",
        nargs="+",
        type=Path,
        metavar="EXPORT",
        help="check these fused exports for LR consistency instead of running the methods",
    )
    p.add_argument(
        "--no-consistency",
        action="store_true",
        help="skip the LR consistency of a normal run (no lr_consistency.csv)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.set_defaults(run=run)
    return p


def _config(args: argparse.Namespace) -> RunConfig:
    from napari_xfusion.cli.config import config_from_args

    ns = argparse.Namespace(**vars(args))
    ns.truth, ns.units = None, None
    if args.method is not None:
        ns.method = ",".join(args.method)
    return config_from_args(ns)


def _check_keys(args: argparse.Namespace, config: RunConfig, prepared: PreparedInputs) -> None:
    """Refuse, naming the file, what leave-one-key-out cannot do (before any method loads)."""
    from napari_xfusion.app.inputs import InputError
    from napari_xfusion.app.validation import withheld_keys

    try:
        withheld_keys(prepared.keys.indices, args.withhold, edges=args.edges)
    except InputError as exc:
        where = "--withhold" if args.withhold else f"--hr {config.hr}"
        raise CommandError(f"{where}: {exc}") from None


def _check_export(path: Path, prepared: PreparedInputs) -> None:
    """Refuse a ``--fused`` file that is not an export of these inputs (before any work)."""
    from napari_xfusion.app.export import read_export

    stack, info = read_export(path, role="--fused")
    if tuple(stack.shape[1:]) != tuple(prepared.frame_shape):
        raise CommandError(
            f"--fused {path}: frames are {stack.shape[1]}x{stack.shape[2]} but the HR keys "
            f"are {prepared.frame_shape[0]}x{prepared.frame_shape[1]}"
        )
    pages = info.pages[info.computed_pages]
    if pages.size and int(pages.max()) >= prepared.n_frames:
        raise CommandError(
            f"--fused {path}: holds frame {int(pages.max())} but the LR stream has "
            f"{prepared.n_frames} frames"
        )


def _consistency(
    args: argparse.Namespace,
    config: RunConfig,
    prepared: PreparedInputs,
    checker: LrChecker,
    method_cache: dict[str, Any],
) -> ConsistencyTable | None:
    """The LR consistency table of ``--fused`` exports or of a normal run (None: skipped)."""
    from napari_xfusion.app.job import run_job
    from napari_xfusion.app.validation import ConsistencyTable, export_consistency

    table = ConsistencyTable(checker=checker)
    if args.fused:
        for path in args.fused:
            export_consistency(path, checker, table=table, role="--fused")
        return table
    if args.no_consistency:
        return None
    job = run_job(config, prepared, method_cache=method_cache)
    try:
        started = next(job)
        if not args.no_progress:
            say(f"xfusion validate: LR consistency of {started.total} fused frames")
        for event in job:
            table.add(event.result.method, event.result.index, event.result.frame)
    finally:
        job.close()
    return table


def validate(args: argparse.Namespace) -> tuple[ValidationResult, ConsistencyTable | None]:
    """Run ``xfusion validate``'s work and write its files; returns the results."""
    from napari_xfusion.app.export import check_writes, writing
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.validation import LrChecker, iter_leave_one_key_out
    from napari_xfusion.cli.running import ROLES, input_labels
    from napari_xfusion.core.io import write_text_atomic

    config = _config(args)
    out = Path(args.out)
    paths = [out / name for name in OUTPUTS]
    inputs = input_labels(config)
    inputs.update({f"--fused input {p}": str(p) for p in args.fused or ()})
    check_writes(paths, inputs)
    prepared = prepare_inputs(config, roles=ROLES)
    _check_keys(args, config, prepared)
    for path in args.fused or ():
        _check_export(path, prepared)
    for note in prepared.notes:
        if "detector units" in note:
            say(f"xfusion validate: {note}")
    make_folder(out, "-o")
    checker = LrChecker.from_prepared(prepared)
    cache: dict[str, Any] = {}
    events = iter_leave_one_key_out(
        config, prepared, method_cache=cache, withheld=args.withhold, edges=args.edges,
        device=args.device, checker=checker,
    )  # fmt: skip
    result = None
    try:
        for event in events:
            result = event.result
            if event.row is None:
                for note in result.notes:
                    say(f"xfusion validate: {note}")
            elif not args.no_progress:
                r = event.row
                say(f"xfusion validate: key {r.key_index} withheld, {r.method}: "
                    f"{r.psnr:.2f} dB ({event.done}/{event.total})")  # fmt: skip
    except KeyboardInterrupt:
        if result is not None and result.rows:
            with writing(out):
                result.save(out)
            say(f"xfusion validate: stopped; {len(result.rows)} rows written to {out}")
        raise
    finally:
        events.close()
    assert result is not None
    with writing(out):
        result.save(out)
    table = _consistency(args, config, prepared, checker, cache)
    if table is not None:
        with writing(out / "lr_consistency.csv"):
            write_text_atomic(out / "lr_consistency.csv", table.to_csv_text())
    return result, table


def run(args: argparse.Namespace) -> int:
    """``xfusion validate``: 0 done (bad input raises: exit 2 in ``main``)."""
    result, table = validate(args)
    print("leave-one-key-out (each key reconstructed without it, scored against it):")
    print(result.summary_text())
    if table is not None:
        print("\nLR consistency (binned reconstruction vs LR; flagged: beyond the LR noise):")
        print(table.summary_text())
        flagged = table.flagged()
        if flagged:
            listed = ", ".join(f"{r.method}:{r.index}" for r in flagged[:12])
            more = f" (+{len(flagged) - 12} more)" if len(flagged) > 12 else ""
            print(f"flagged frames: {listed}{more}")
    written = [n for n in OUTPUTS if table is not None or n != "lr_consistency.csv"]
    print(f"\nwritten in {args.out}: {', '.join(written)}")
    return 0
