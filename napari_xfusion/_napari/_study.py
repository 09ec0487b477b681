"""The study dock: the paper's study (:mod:`napari_xfusion.app.study`) from a button.

Truth (the built-in sample or an image layer, saved as ``truth.tif`` in the output folder,
the path :class:`~napari_xfusion.app.study.StudyConfig` takes), the quick preset, methods and
output folder; Run drives :func:`~napari_xfusion.app.study.iter_study` in a napari generator
worker and Cancel quits it: the rows done stay in ``frames.csv`` and the next Run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._util import connect_while_alive
from napari_xfusion.app.study import StudyConfig, StudyError, StudyProgress, iter_study

if TYPE_CHECKING:
    import napari

__all__ = ["StudyWidget", "open_study_dock", "study_events"]

SAMPLE = "built-in sample"
TRUTH_FILE = "truth.tif"


def study_events(
    config: StudyConfig, out_dir: Path, truth: np.ndarray | None = None
) -> Iterator[StudyProgress]:
    """:func:`iter_study` after writing ``truth`` (a layer's (T, H, W) data) to
    ``out_dir/truth.tif``; a different stack there with rows done is refused (no mixing)."""
    if truth is not None:
        from napari_xfusion.core.io import read_stack, write_stack

        path = out_dir / TRUTH_FILE
        out_dir.mkdir(parents=True, exist_ok=True)
        old = read_stack(path, role="study truth") if path.exists() else None
        same = old is not None and old.shape == truth.shape and old.dtype == truth.dtype
        # Same shape and dtype: compare the first, middle and last frames (not the whole).
        same = same and all(np.array_equal(old[i], truth[i]) for i in {0, len(truth) // 2, -1})
        if not same:
            if old is not None and (out_dir / "frames.csv").exists():
                raise StudyError(
                    f"{path} holds another truth stack than this layer and {out_dir} has rows "
                    "of it; choose another output folder"
                )
            write_stack(path, truth)
    return (yield from iter_study(config, out_dir))


def _pump(events: Iterator[StudyProgress]) -> Iterator[StudyProgress]:
    return (yield from events)


def _quit(worker: Any) -> None:
    with suppress(RuntimeError):  # already finished and deleted
        worker.quit()


def default_config(quick: bool) -> StudyConfig:
    """The study's base configuration: the quick preset or the paper's."""
    return StudyConfig.quick() if quick else StudyConfig()


class StudyWidget(QWidget):
    """Dock widget: truth, preset, methods, output folder, Run/Cancel, progress, result."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        from napari_xfusion.app.study import default_methods
        from napari_xfusion.methods.registry import available_methods

        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.running = False
        self.finished = False  # the last run wrote the figures and summary.md
        self.last_event: StudyProgress | None = None
        self.out_path: Path | None = None
        # Seam for tests and scripts: quick -> base StudyConfig (methods/truth set on top).
        self.config_factory: Callable[[bool], StudyConfig] = default_config
        form = QFormLayout()
        self.truth = QComboBox()
        self.truth.setToolTip(
            "Ground truth of the study: the built-in simulated sample, or a full-rate (T, H, W) "
            "image layer (H, W multiples of 4), saved as truth.tif in the output folder"
        )
        self.quick = QCheckBox("quick preset")
        self.quick.setChecked(True)
        self.quick.setToolTip(
            "Small preset (41-frame 200x512 sample, noise 20/40/clean, key steps 2/20/"
            "first-last, s 1 and 2, 4 targets); unticked: the paper's full sweeps"
        )
        form.addRow("Truth", self.truth)
        form.addRow("", self.quick)
        defaults = set(default_methods())
        self.method_boxes: dict[str, QCheckBox] = {}
        grid = QGridLayout()
        for i, (name, spec) in enumerate(available_methods().items()):
            box = QCheckBox(name)
            box.setChecked(name in defaults)
            box.setToolTip(f"Run {spec.summary or name} in every setting of the study")
            self.method_boxes[name] = box
            grid.addWidget(box, i // 2, i % 2)
        self.out_dir = QLineEdit(str(Path.cwd() / "study"))
        self.out_dir.setToolTip(
            "Output folder: frames.csv, figures, summary.md; a folder of the same study resumes"
        )
        browse = QPushButton("...")
        browse.setToolTip("Choose the output folder")
        browse.clicked.connect(self._browse)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out_dir)
        out_row.addWidget(browse)
        form.addRow("Output", out_row)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Run the study, or resume it: rows already done are skipped")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current frame; the rows done are kept")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        for button in (self.run_button, self.cancel_button):
            buttons.addWidget(button)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.show_figure = QPushButton("Show Fig. 5 in the viewer")
        self.show_figure.setToolTip("Open fig5_noise.png (box plots against LR noise) as a layer")
        self.show_figure.setEnabled(False)
        self.show_figure.clicked.connect(self.show_fig5)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Methods"))
        layout.addLayout(grid)
        layout.addLayout(buttons)
        for part in (self.progress, self.status, self.show_figure):
            layout.addWidget(part)
        layout.addStretch(1)
        self.refresh_truth()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            connect_while_alive(self, event, self.refresh_truth)

    def refresh_truth(self, *_: Any) -> None:
        """List the built-in sample and every 3-D image layer; keep the current choice."""
        from napari.layers import Image

        current = self.truth.currentText()
        names = [SAMPLE] + [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb
        ]
        self.truth.blockSignals(True)
        self.truth.clear()
        self.truth.addItems(names)
        self.truth.setCurrentIndex(max(names.index(current) if current in names else 0, 0))
        self.truth.blockSignals(False)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Study output folder", self.out_dir.text())
        if folder:
            self.out_dir.setText(folder)

    def methods(self) -> tuple[str, ...]:
        return tuple(name for name, box in self.method_boxes.items() if box.isChecked())

    def build(self) -> tuple[StudyConfig, Path, np.ndarray | None]:
        """The configuration, output folder and layer truth (None: sample) of the controls."""
        text = self.out_dir.text().strip()
        if not text:
            raise StudyError("choose an output folder")
        out = Path(text).expanduser()
        methods = self.methods()
        if not methods:
            raise StudyError("tick at least one method")
        config = self.config_factory(self.quick.isChecked()).replace(methods=methods)
        truth = None
        if self.truth.currentText() != SAMPLE:
            layer = self.viewer.layers[self.truth.currentText()]
            truth = np.asarray(layer.data)
            if truth.ndim != 3:
                raise StudyError(f"layer {layer.name!r}: expected (T, H, W), got {truth.shape}")
            config = config.replace(truth=str(out / TRUTH_FILE))
        return config, out, truth

    def run(self) -> bool:
        """Start (or resume) the study in a worker thread; False when it did not start."""
        from napari.qt.threading import create_worker

        if self.running:
            return False
        try:
            config, out, truth = self.build()
        except (StudyError, KeyError) as exc:
            self.status.setText(f"Not started: {exc}")
            return False
        self.finished = False
        self.show_figure.setEnabled(False)
        self.out_path = out
        events = study_events(config, out, truth)
        worker = create_worker(_pump, events, _start_thread=False, _ignore_errors=True)
        # quit() leaves the generator suspended; close it in the worker thread so
        # iter_study saves frames.csv there (not later, at garbage collection).
        worker.aborted.connect(events.close, Qt.ConnectionType.DirectConnection)
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.destroyed.connect(lambda *_, w=worker: _quit(w))  # closing the dock stops it
        self.worker, self.running = worker, True
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("preparing the truth…")
        self.status.setText(f"Running into {out}")
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop after the current frame; the rows done stay and the next Run resumes."""
        if self.worker is not None and self.running:
            self.worker.quit()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling after the current frame…")

    def _on_event(self, event: StudyProgress) -> None:
        self.last_event = event
        if event.kind == "start":
            self.status.setText(event.message)
        self.progress.setRange(0, max(event.total, 1))
        self.progress.setValue(min(event.done, max(event.total, 1)))
        i = min(event.setting_index + 1, event.n_settings)
        self.progress.setFormat(
            f"setting {i}/{event.n_settings}, {event.done}/{event.total} rows done"
        )
        if event.kind == "done":
            self.finished = True
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.status.setText(f"Done: {self.out_path / 'summary.md'}")
            self.show_figure.setEnabled((self.out_path / "fig5_noise.png").is_file())

    def _on_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"Study failed: {exc}")
        show_error(f"Study failed: {exc}")

    def _on_finished(self) -> None:
        self.running = False
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if not self.finished:
            self.progress.setRange(0, max(self.progress.maximum(), 1))  # no busy bar left
            if not self.status.text().startswith("Study failed"):
                self.status.setText(f"Stopped; the rows done are in {self.out_path}: Run resumes")

    def show_fig5(self) -> Any:
        """Add ``fig5_noise.png`` of the last study as an RGB(A) image layer."""
        from matplotlib.image import imread

        path = self.out_path / "fig5_noise.png"
        return self.viewer.add_image(imread(path), rgb=True, name="study: fig5_noise")


def open_study_dock(viewer: napari.Viewer) -> StudyWidget | None:
    """Dock the study widget (or show the one already docked); returns it."""
    window = getattr(viewer, "window", None)
    if window is None or not hasattr(window, "add_dock_widget"):
        return None
    for widget in window.dock_widgets.values():
        if isinstance(widget, StudyWidget):
            return widget
    widget = StudyWidget(viewer)
    window.add_dock_widget(widget, name="Study (napari-xfusion)", area="right")
    return widget
