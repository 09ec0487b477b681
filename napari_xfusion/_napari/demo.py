"""Open napari on the built-in sample with the docks ready and a first run going.

``xfusion demo`` calls :func:`open_demo` when a display is available.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari

__all__ = ["launch", "open_demo", "default_methods", "available_methods"]


def available_methods() -> list[str]:
    """Every registered method that can be built here, as the headless demo runs them: the
    ones without weights always, a network only when its shipped weights load."""
    from napari_xfusion.methods import get_reconstructor
    from napari_xfusion.methods.registry import available_methods as specs

    out = []
    for spec in specs().values():
        if not spec.needs_weights:
            out.append(spec.name)
            continue
        try:
            get_reconstructor(spec.name, device="cpu")
        except (FileNotFoundError, ImportError, ValueError, RuntimeError):
            continue
        out.append(spec.name)
    return out


def default_methods() -> list[str]:
    """``["edvr-stf"]`` when its shipped weights load here, else ``["bayesian"]``."""
    from napari_xfusion.methods import get_reconstructor

    try:
        get_reconstructor("edvr-stf", device="cpu")
    except (FileNotFoundError, ImportError, ValueError, RuntimeError):
        return ["bayesian"]
    return ["edvr-stf"]


def launch(
    size: str | Mapping[str, Any] = "small",
    methods: list[str] | None = None,
    *,
    run: bool = True,
    block: bool = True,
    viewer: napari.Viewer | None = None,
    export_to: str | Path | None = None,
) -> napari.Viewer:
    """Open napari with the simulated sample, the fusion, attention and metrics docks, and
    (``run=True``) a first fusion running.

    Parameters
    ----------
    size : {"small", "full"} or mapping
        The sample: 50 frames of 128x256, or 100 frames of 400x1024, or the headless demo's
        ``{n_frames, shape, key_step, lr_psnr, separation}`` (``cli.demo.DEMO_SIZE``).
    methods : list of str, optional
        Methods of the first run; default :func:`available_methods` (what the headless demo
        runs).
    run : bool
        Press Run once everything is docked.
    block : bool
        Enter napari's event loop (returns when the window closes).
    viewer : napari.Viewer, optional
        Use this viewer instead of opening one (tests).
    export_to : path, optional
        When the first run ends normally, export its fused stacks and CSVs to this folder
        (created), as the headless demo writes its files.
    """
    import napari

    from napari_xfusion._napari._attention import AttentionWidget
    from napari_xfusion._napari._metrics import MetricsWidget
    from napari_xfusion._napari._sample import make_sample, sample_full, sample_small
    from napari_xfusion._napari._widget import FusionWidget

    if isinstance(size, Mapping):  # the headless demo's sample (cli.demo.DEMO_SIZE)
        layers = make_sample(
            int(size["n_frames"]),
            tuple(size["shape"]),
            key_step=int(size["key_step"]),
            noise_psnr=size.get("lr_psnr"),
        )
    elif size in ("small", "full"):
        layers = (sample_small if size == "small" else sample_full)()
    else:
        raise ValueError(f"unknown sample size {size!r}; choose 'small' or 'full'")
    viewer = viewer or napari.Viewer(title="napari-xfusion demo")
    for data, kwargs, _ in layers:
        viewer.add_image(data, **kwargs)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fusion (napari-xfusion)", area="right")
    viewer.window.add_dock_widget(
        AttentionWidget(viewer), name="Attention (napari-xfusion)", area="bottom"
    )
    viewer.window.add_dock_widget(
        MetricsWidget(viewer), name="Metrics (napari-xfusion)", area="bottom"
    )
    widget.use_layers.setChecked(True)
    widget.refresh_layers()
    chosen = methods or available_methods()
    for name, box in widget.method_boxes.items():
        box.setChecked(name in chosen)
    widget.window_all()
    if isinstance(size, Mapping) and size.get("separation"):
        widget.separation.setValue(int(size["separation"]))
    if run and widget.run() and export_to is not None:
        widget.worker.finished.connect(lambda: _export_after_run(widget, Path(export_to)))
    if block:
        napari.run()
        # The window is closed: its dock cancelled the run; let the frame in progress end
        # before the interpreter exits under the worker thread.
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(60000)
    return viewer


def _export_after_run(widget: object, folder: Path) -> None:
    from napari.utils.notifications import show_error, show_info

    summary = widget.last_summary
    if summary is None or summary.error or summary.cancelled:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files = widget.export(folder)
    except (OSError, ValueError) as exc:
        show_error(f"Demo export to {folder} failed: {exc}")
        return
    show_info(f"Demo: {len(files)} files written to {folder}")


def open_demo(
    size: str | Mapping[str, Any] = "small",
    methods: list[str] | None = None,
    out_dir: str | Path | None = None,
) -> bool:
    """:func:`launch` (``out_dir``: where the first run's results are exported, as the
    headless demo's ``-o``) and block until the window closes; False (nothing opened) when napari or
    its Qt binding cannot be imported, so a caller can fall back to the headless demo."""
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401
    except ImportError:
        return False
    launch(size, methods, export_to=out_dir)
    return True
