"""``xfusion demo``: simulate the sample, fuse it with every method that can run here.

With a display the napari GUI opens on the sample and runs the fusion itself; headless (or
without napari) the same pipeline writes the fused TIFFs, prints the metrics and a montage.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_xfusion.cli._common import epilog, formatter, say
from napari_xfusion.cli.montage import write_montage

if TYPE_CHECKING:
    from napari_xfusion.cli.running import FuseReport
    from napari_xfusion.methods.registry import MethodSpec

__all__ = ["DEMO_SIZE", "add_parser", "demo_methods", "run_demo"]

DEMO_SIZE = dict(n_frames=40, shape=(200, 512), key_step=10, lr_psnr=35.0, separation=1)
"""The demo's sample: sized to fuse with bicubic and bayesian in about a minute on 2 CPU cores."""


def _why_not(spec: MethodSpec) -> str | None:
    """Why ``spec`` cannot run here (None: it can). Cheap checks first, then a real build."""
    if spec.needs_torch and find_spec("torch") is None:
        return "needs torch, which is not installed"
    if spec.needs_weights:
        if spec.default_weights is None:
            return "needs weights and declares no default weights"
        if not Path(spec.default_weights).is_file():
            return f"no weights at {spec.default_weights}"
    try:
        # Imports its module (a plugin's dependencies) and, for a network, loads the weights.
        if spec.needs_weights:
            spec.load_class()(device="cpu")
        else:
            spec.load_class()
    except Exception as exc:  # a probe: any failure means "not available here", say why
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def demo_methods() -> tuple[list[str], dict[str, str]]:
    """``(methods the demo runs, {skipped method: why})``, in registry order: every registered
    method (plugins too) whose dependencies import and whose weights exist."""
    from napari_xfusion.methods.registry import available_methods

    run: list[str] = []
    skipped: dict[str, str] = {}
    for name, spec in available_methods().items():
        why = _why_not(spec)
        if why is None:
            run.append(name)
        else:
            skipped[name] = why
    return run, skipped


def run_demo(out_dir: str | os.PathLike[str] = "xfusion-demo", progress: bool = True) -> FuseReport:
    """The headless demo: simulate the sample, fuse it with every available method, print the
    metrics table and where the files are."""
    from napari_xfusion.cli.fusion import fuse
    from napari_xfusion.cli.sample import make_sample

    out_dir = Path(out_dir)
    say(
        f"xfusion demo: simulating a {DEMO_SIZE['n_frames']}-frame "
        f"{DEMO_SIZE['shape'][0]}x{DEMO_SIZE['shape'][1]} x-ray sequence in {out_dir}/"
    )
    paths = make_sample(out_dir, **DEMO_SIZE)  # type: ignore[arg-type]
    methods, skipped = demo_methods()
    for name, why in skipped.items():
        say(f"xfusion demo: skipping {name}: {why}")
    report = fuse(
        paths["lr"],
        paths["keys"],
        out_dir / "fused.tif",
        methods=methods,
        truth_path=paths["truth"],
        progress=progress,
    )
    assert report.table is not None
    print(report.table.summary_text())
    print(f"\nfiles in {out_dir}/:")
    print(
        f"  inputs: {paths['lr'].name} (LR), {paths['keys'].name} (HR keys), "
        f"{paths['truth'].name} (ground truth)"
    )
    for m in methods:
        print(f"  {m}: {report.outputs[m].name}, {report.csv_paths[m].name}")
    if report.comparison is not None:
        print(f"  comparison: {report.comparison.name}")
    montage = write_montage(out_dir / "montage.png", paths, report.outputs, DEMO_SIZE["key_step"])
    print(f"  montage: {montage.name} (LR | each method | truth, and their ratio I[t]/I[t-1])")
    return report


def _display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_gui(out_dir: str | os.PathLike[str] = "xfusion-demo") -> bool:
    """Open napari on the headless demo's sample (:data:`DEMO_SIZE`) with the docks and a
    first run of the same methods going; its results are exported to ``out_dir`` when it
    ends. Blocks until the window closes.

    False when napari or its Qt binding cannot be imported (the caller then runs headless).
    """
    from napari_xfusion._napari.demo import open_demo  # lazy: the headless path never imports Qt

    methods, skipped = demo_methods()
    for name, why in skipped.items():
        say(f"xfusion demo: skipping {name}: {why}")
    say(f"xfusion demo: opening napari; the first run's results go to {out_dir}/")
    return open_demo(DEMO_SIZE, methods=methods, out_dir=out_dir)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        formatter_class=formatter,
        help="the main job on the built-in sample",
        description="Simulate the sample, fuse it with every registered method that can run "
        "here (its dependencies import and its weights exist), write the fused TIFFs and print "
        "the metrics table; opens napari when a display is available unless --headless.",
        epilog=epilog("""
            xfusion demo
            xfusion demo -o /tmp/demo --headless
        """),
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("xfusion-demo"),
        metavar="DIR",
        help="output folder (default ./xfusion-demo)",
    )
    p.add_argument("--headless", action="store_true", help="never open napari")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # With a display the GUI runs the fusion itself; headless (or without napari) the same
    # pipeline writes the fused TIFFs and prints the metrics.
    if not args.headless and _display_available() and _open_gui(args.out):
        return 0
    run_demo(args.out)
    return 0
