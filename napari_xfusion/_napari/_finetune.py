"""The fine-tune dock: adapt a network to the experiment in the viewer, in the background.

The inputs are the fusion dock's (its LR and HR layers, key rule, separation, device: the same
:class:`~napari_xfusion.app.config.RunConfig` a Run would use), read when "Fine-tune" is
pressed. :func:`finetune_job` runs :func:`napari_xfusion.app.finetune.iter_finetune` in a
napari generator worker: the progress bar follows the training budget, Cancel stops training
after the current step and the better of the original and the weights so far is still scored
and saved. The result shows the leave-one-key-out PSNR before and after; "Use this model"
puts the checkpoint into the fusion dock's weights field of that method and ticks it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

    from napari_xfusion._napari._job import FusionRequest
    from napari_xfusion._napari._widget import FusionWidget
    from napari_xfusion.app.finetune import FinetuneProgress, FinetuneResult, FinetuneSettings

__all__ = ["FinetuneFailed", "FinetuneWidget", "finetune_job", "fusion_dock"]

_STEPS = 1000  # progress bar resolution over the training budget


@dataclass(frozen=True)
class FinetuneFailed:
    """Returned instead of a result when the job failed; ``message`` is for the user."""

    message: str


def finetune_job(
    request: FusionRequest,
    *,
    method: str,
    minutes: float,
    out: Path,
    init: str | None,
    cancel: threading.Event,
    settings: FinetuneSettings | None = None,
) -> Iterator[FinetuneProgress]:
    """The worker's generator: prepare the inputs as a fusion run would, then fine-tune.

    Errors are returned as :class:`FinetuneFailed` (never raised across the thread)."""
    from napari_xfusion._napari._job import prepare_request_inputs
    from napari_xfusion.app.finetune import iter_finetune

    config = request.config
    try:
        prepared = prepare_request_inputs(request)
        return (
            yield from iter_finetune(
                config,
                prepared,
                method=method,
                minutes=minutes,
                out=out,
                cancel=cancel,
                init=init,
                settings=settings,
            )
        )
    except Exception as exc:  # reported on the GUI thread
        return FinetuneFailed(str(exc) or type(exc).__name__)


def fusion_dock(viewer: napari.Viewer) -> FusionWidget | None:
    """The viewer's docked fusion widget, or None."""
    from napari_xfusion._napari._widget import FusionWidget

    window = getattr(viewer, "window", None)
    for widget in getattr(window, "dock_widgets", {}).values():
        if isinstance(widget, FusionWidget):
            return widget
    return None


class FinetuneWidget(QWidget):
    """Dock widget: method, minutes, output file; Fine-tune / Cancel; result; Use this model."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        from napari_xfusion.app.finetune import network_methods

        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.cancel_event: threading.Event | None = None
        self.result: FinetuneResult | None = None
        self.settings: FinetuneSettings | None = None  # None: the defaults (tests set small ones)
        form = QFormLayout()
        self.method = QComboBox()
        self.method.addItems(list(network_methods()))
        if self.method.findText("edvr-stf") >= 0:
            self.method.setCurrentText("edvr-stf")
        self.method.setToolTip(
            "Network to adapt; it starts from the weights in the fusion dock's field for it "
            "(empty: the shipped weights)"
        )
        form.addRow("Method", self.method)
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 24 * 60.0)
        self.minutes.setDecimals(1)
        self.minutes.setValue(5.0)
        self.minutes.setSuffix(" min")
        self.minutes.setToolTip("Training wall time; scoring before and after comes on top")
        form.addRow("Train for", self.minutes)
        self.out = QLineEdit(str(Path.cwd() / "finetuned.pt"))
        self.out.setToolTip(
            "Checkpoint written (the fine-tuned or, if that did not help, "
            "the original weights, with their provenance)"
        )
        browse = QPushButton("...")
        browse.setToolTip("Choose the checkpoint file")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out)
        row.addWidget(browse)
        form.addRow("Output", row)
        self.run_button = QPushButton("Fine-tune")
        self.run_button.setToolTip(
            "Train on the HR keys of the fusion dock's inputs; some keys are held out and "
            "scored by leave-one-key-out before and after; the better weights are kept"
        )
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop training now; the better model so far is kept")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, _STEPS)
        self.progress.setFormat("idle")
        self.status = QLabel("Inputs: the fusion dock's LR and HR layers.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Set the checkpoint as the method's weights in the fusion dock")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_model)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        for part in (self.progress, self.status, self.use_button):
            layout.addWidget(part)
        layout.addStretch(1)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def _browse(self) -> None:
        name, _ = QFileDialog.getSaveFileName(
            self, "Fine-tuned checkpoint", self.out.text(), "PyTorch checkpoints (*.pt)"
        )
        if name:
            self.out.setText(name)

    def _request(self) -> tuple[FusionRequest, str | None]:
        """The fusion dock's inputs and the weights it holds for the method (ValueError)."""
        fusion = fusion_dock(self.viewer)
        if fusion is None:
            raise ValueError("open the Fusion dock and choose the LR and HR layers there")
        try:
            job = fusion.build_request()
        except ValueError as exc:  # the fusion dock's own wording, said to be about that dock
            raise ValueError(f"Fusion dock: {exc}") from None
        field = fusion.methods_panel.weights.get(self.method.currentText())
        init = field.text().strip() if field is not None else ""
        return job.request, init or None

    def run(self) -> bool:
        """Start fine-tuning in a worker thread; False (and why, in the status) if not."""
        from napari.qt.threading import create_worker

        if self.running:
            return False
        text = self.out.text().strip()
        try:
            if not text:
                raise ValueError("choose the output checkpoint file")
            if not self.method.currentText():
                raise ValueError("no network method is installed")
            request, init = self._request()
        except ValueError as exc:
            self.status.setText(f"Not started: {exc}")
            return False
        self.result = None
        self.use_button.setEnabled(False)
        cancel = self.cancel_event = threading.Event()
        worker = create_worker(
            finetune_job,
            request,
            method=self.method.currentText(),
            minutes=self.minutes.value(),
            out=Path(text).expanduser(),
            init=init,
            cancel=cancel,
            settings=self.settings,
            _start_thread=False,
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.destroyed.connect(lambda *_: cancel.set())  # closing the dock stops training
        self.worker = worker
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.progress.setFormat("preparing the inputs…")
        self.status.setText(f"Fine-tuning {self.method.currentText()}…")
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop training after the current step; the better model so far is scored and kept."""
        if self.cancel_event is not None and self.running:
            self.cancel_event.set()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling: scoring the weights trained so far…")

    def _on_progress(self, event: FinetuneProgress) -> None:
        self.progress.setValue(round(event.fraction * _STEPS))
        if event.phase == "train":
            loss = f"{event.loss:.4f}" if math.isfinite(event.loss) else "skipped"
            self.progress.setFormat(
                f"step {event.step}, loss {loss}, {event.seconds:.0f}/{event.budget_seconds:.0f} s"
            )
        else:
            self.progress.setFormat(event.message or event.phase)

    def _on_returned(self, value: FinetuneResult | FinetuneFailed) -> None:
        if isinstance(value, FinetuneFailed):
            from napari.utils.notifications import show_error

            self.status.setText(f"Fine-tuning failed: {value.message}")
            show_error(f"Fine-tuning failed: {value.message}")
            return
        self.result = value
        self.progress.setValue(_STEPS)
        self.progress.setFormat(f"done: kept the {value.kept} weights")
        self.status.setText(value.summary_text())
        self.use_button.setEnabled(True)

    def _on_error(self, exc: BaseException) -> None:  # a bug of ours: finetune_job catches
        self.status.setText(f"Fine-tuning failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def use_model(self) -> bool:
        """Put the result's checkpoint into the fusion dock's weights field and tick the
        method; False when there is no result or no fusion dock."""
        fusion = fusion_dock(self.viewer)
        if self.result is None or fusion is None:
            self.status.setText("Open the Fusion dock first." if self.result else "No model yet.")
            return False
        method = str(self.result.provenance.get("method", self.method.currentText()))
        fusion.methods_panel.weights[method].setText(str(self.result.checkpoint_path))
        fusion.methods_panel.method_boxes[method].setChecked(True)
        self.status.setText(f"{method} now uses {self.result.checkpoint_path} in the Fusion dock.")
        return True
