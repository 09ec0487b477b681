"""Regenerate ``docs/images/screenshot.png``: the plugin after a run on the built-in sample.

Run from the repository root (needs a display; on a headless machine use Xvfb)::

    xvfb-run -a python examples/screenshot.py

It opens napari with the small simulated sample (what ``xfusion demo`` shows), runs bicubic,
Bayesian and, when its shipped weights exist (or ``--weights edvr-stf=PATH`` names a
checkpoint), EDVR-STF on every frame, then shows the results side by side at a frame between
two HR keys, with the attention and metrics docks, and saves the whole window.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "screenshot.png")
    parser.add_argument("--frame", type=int, default=26, help="frame shown (between two keys)")
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="METHOD=PATH",
        help="run a network method with this checkpoint (e.g. edvr-stf=model.pt) instead of "
        "its shipped weights; repeatable",
    )
    args = parser.parse_args(argv)
    weights = dict(item.split("=", 1) for item in args.weights)

    import matplotlib.image
    import napari
    import napari._qt.qt_main_window
    from qtpy.QtCore import QEventLoop, QSettings, QThreadPool
    from qtpy.QtWidgets import QApplication

    from napari_xfusion._napari.demo import default_methods, launch

    # Fresh widget settings: the picture shows the defaults, not this machine's remembered paths.
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp())
    # napari's one-off PyQt5 deprecation toast would sit on the canvas: not for the README.
    napari._qt.qt_main_window.SHOW_QT_WARNING = False
    networks = list(weights) or [m for m in default_methods() if m != "bayesian"]
    methods = ["bicubic", "bayesian", *networks]
    viewer = launch("small", methods, run=False, block=False)
    viewer.window.resize(1700, 1050)
    widget = viewer.window.dock_widgets["Fusion (napari-xfusion)"]
    for method, path in weights.items():
        widget.weights[method].setText(path)
    if not widget.run():
        raise SystemExit(f"the run did not start: {widget.status.text()}")
    loop = QEventLoop()
    widget.worker.finished.connect(loop.quit)
    loop.exec()
    QThreadPool.globalInstance().waitForDone()
    summary = widget.last_summary
    if summary is None or summary.error or summary.cancelled:
        raise SystemExit(f"the run failed: {widget.status.text()}")

    widget.show_side_by_side(True)
    viewer.dims.set_point(0, args.frame)
    viewer.reset_view()
    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(args.out, image)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})")
    viewer.close()
    napari.Viewer.close_all()
    return args.out


if __name__ == "__main__":
    main()
