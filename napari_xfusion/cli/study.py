"""``xfusion study``: the paper's study (noise, key step, separation x every method) as one
command, on the built-in sample or any full-rate HR stack (:mod:`napari_xfusion.app.study`).

Exit status: 0 done; 2 bad input; 130 Ctrl-C, 143 SIGTERM (the rows done are kept in
``frames.csv``; the same command resumes).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_xfusion.cli._common import epilog, formatter, make_folder, say
from napari_xfusion.cli.signals import exit_status

__all__ = ["add_parser", "config_from_args", "run"]

EXAMPLES = """
    xfusion study --quick -o /tmp/study-quick
    xfusion study -o docs/study/sample
    xfusion study --truth my_hr_full_rate.tif --methods bicubic,bayesian -o study-mine
    xfusion study --noise 20,40,clean --key-steps 2,20,first-last --separations 1 \\
        --targets-per-setting 10 -o study-small
    xfusion study --report -o docs/study/sample      # remake figures and summary.md only
"""


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``study`` to the ``xfusion`` sub-parsers; returns its parser."""
    p = sub.add_parser(
        "study",
        formatter_class=formatter,
        help="the paper's study: noise / key step / separation sweeps over every method",
        description="Sweep the LR noise (target LR PSNR, at k=20, s=1: the paper's Fig. 5) "
        "and the HR key step for each LR separation (Figs 6, S3, S4) over every available "
        "method, on the same target frames, through the same pipeline as `xfusion fuse`. "
        "Writes frames.csv (one row per method, setting and frame), box plots and attention "
        "figures (PNG + SVG), summary.md and the run configurations into --out. Ctrl-C keeps "
        "the rows done; the same command resumes.",
        epilog=epilog(
            EXAMPLES,
            "exit status: 0 done; 2 a bad input or option; 130 Ctrl-C; 143 SIGTERM\n"
            "  (both keep the rows done: the same command resumes)",
        ),
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="STACK",
        help="full-rate HR ground truth (default: the built-in sample)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small preset: 41-frame 200x512 sample, noise 20/40/clean, key steps "
        "2/20/first-last, s 1 and 2, 4 targets (about a minute on 2 cores)",
    )
    p.add_argument(
        "--methods",
        metavar="M[,M...]",
        help="registered methods (default: every one whose torch/weights exist)",
    )
    p.add_argument(
        "--noise",
        metavar="DB[,...]",
        help="LR PSNR levels of the noise sweep, dB or 'clean' (default 20,30,40,50,60,clean)",
    )
    p.add_argument(
        "--key-steps",
        metavar="K[,...]",
        help="key steps of the key sweep, integers >= 2 or first-last (default 2,10,20,first-last)",
    )
    p.add_argument(
        "--separations", metavar="S[,...]", help="LR separations of the key sweep (default 1,2,3)"
    )
    p.add_argument(
        "--sample-frames",
        type=int,
        metavar="T",
        help="frames of the built-in sample (default 101; --quick 41)",
    )
    p.add_argument(
        "--sample-size",
        metavar="HxW",
        help="HR size of the built-in sample (default 400x1024; --quick 200x512)",
    )
    p.add_argument(
        "--sample-noise",
        action="store_true",
        help="keep the sample's HR detector noise in the truth (default off)",
    )
    p.add_argument("--key-noise", metavar="DB", help="LR noise of the key sweep (default clean)")
    p.add_argument(
        "--targets-per-setting",
        metavar="N",
        help="target frames, the same in every setting (default 20; 'all')",
    )
    p.add_argument("--noise-seed", type=int, help="seed of the LR shot noise (default 0)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--report",
        action="store_true",
        help="only remake the figures and summary.md from --out's frames.csv",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("xfusion-study"),
        metavar="DIR",
        help="output folder (default ./xfusion-study)",
    )
    p.set_defaults(run=run)
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~napari_xfusion.app.study.StudyConfig` the arguments describe."""
    from napari_xfusion.app.study import StudyConfig, StudyError

    changes: dict[str, Any] = {}
    if args.truth is not None:
        changes["truth"] = str(args.truth)
    if args.methods:
        changes["methods"] = tuple(_items(args.methods))
    if args.noise:
        changes["noise_levels"] = tuple(_items(args.noise))
    if args.key_steps:
        changes["key_steps"] = tuple(_items(args.key_steps))
    if args.separations:
        try:
            changes["separations"] = tuple(int(s) for s in _items(args.separations))
        except ValueError:
            raise StudyError(
                f"--separations: expected integers, got {args.separations!r}"
            ) from None
    if args.key_noise:
        changes["key_lr_psnr"] = args.key_noise
    if args.targets_per_setting:
        text = args.targets_per_setting.strip().lower()
        try:
            changes["targets_per_setting"] = None if text == "all" else int(text)
        except ValueError:
            raise StudyError(
                f"--targets-per-setting: expected an integer or 'all', got {text!r}"
            ) from None
    if args.sample_frames is not None:
        changes["sample_frames"] = args.sample_frames
    if args.sample_size:
        try:
            h, w = (int(v) for v in args.sample_size.lower().split("x"))
        except ValueError:
            raise StudyError(f"--sample-size: expected HxW, got {args.sample_size!r}") from None
        changes["sample_shape"] = (h, w)
    if args.sample_noise:
        changes["sample_noise"] = True
    if args.noise_seed is not None:
        changes["noise_seed"] = args.noise_seed
    if args.device:
        changes["device"] = args.device
    return StudyConfig.quick(**changes) if args.quick else StudyConfig(**changes)


def run(args: argparse.Namespace) -> int:
    """Run ``xfusion study``; 0 done, 130 interrupted (bad input raises: exit 2 in ``main``)."""
    from napari_xfusion.app.study import StudyConfig, report_study, run_study

    if args.report:
        files = report_study(args.out, StudyConfig.load(args.out / "study.json"))
        print(f"{len(files)} files written in {args.out}")
        return 0
    config = config_from_args(args)
    make_folder(args.out, "--out")
    try:
        result = run_study(config, args.out, progress=not args.no_progress)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (terminate_as_interrupt)
        say(
            f"xfusion study: interrupted; the rows done are kept in {args.out / 'frames.csv'}: "
            "run the same command again to resume"
        )
        return exit_status(exc)
    print(
        f"{len(result.rows)} rows ({result.computed} computed now, {result.reused} reused) in "
        f"{result.frames_csv}; summary: {result.summary_md} ({result.seconds:.0f} s)"
    )
    return 0 if result.complete else 130
