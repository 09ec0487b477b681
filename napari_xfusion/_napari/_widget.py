"""The fusion dock: pick inputs and parameters, run methods in the background, compare, export.

The widget owns no science. Run turns the widget values into a
:class:`~napari_xfusion._napari._job.FusionRequest` (arrays taken from the layers chosen at
that moment), starts :func:`~napari_xfusion._napari._job.fusion_job` in a napari
``thread_worker`` and, in the worker's ``yielded`` / ``returned`` handlers (GUI thread), writes
each frame into its ``fused [method]`` layer and into the viewer's
:class:`~napari_xfusion._napari._session.FusionSession`, which the attention and metrics docks
follow. Cancel ends the run after the frame in progress; frames done stay.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSettings, Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._job import (
    NETWORK_METHODS,
    SCALE,
    Finished,
    FrameDone,
    FusionRequest,
    Prepared,
    describe_keys,
    fusion_job,
)
from napari_xfusion._napari._layers import (
    CHANGE_MODES,
    META,
    add_change_view,
    ensure_fused_layer,
    ensure_uncertainty_layer,
    fused_layers,
    lr_overlay_transform,
    meta,
    refresh_change_views,
    role,
    side_by_side,
    write_frame,
)
from napari_xfusion._napari._session import session_for
from napari_xfusion._napari._util import DeviceCombo, VerticalScroll, connect_while_alive
from napari_xfusion.methods import METHODS

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Layer

__all__ = ["FusionWidget"]

METHOD_NAMES = tuple(METHODS)
_NONE = "(none)"


def _format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "…"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


@dataclass
class _Job:
    """What a running job reads and writes, recorded at Run (the user may change layers)."""

    request: FusionRequest
    cancel: threading.Event
    hr_layer: Layer
    lr_layer: Layer | None
    truth_layer: Layer | None
    signature: dict[str, Any]
    layers: dict[str, Image] = field(default_factory=dict)
    uncertainty: dict[str, Image] = field(default_factory=dict)
    total: int = 0
    done: int = 0
    prepared: Prepared | None = None
    attention_shown: bool = False

    def stop_on_close(self, *_: Any) -> None:
        """Connected to the widget's ``destroyed``: no method of the dying widget is called."""
        self.cancel.set()


class FusionWidget(QWidget):
    """Dock widget: inputs, parameters, Run/Cancel with progress, results and export."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker: Any = None
        self._job: _Job | None = None
        self.last_summary: Finished | None = None
        self._visibility: dict[Layer, bool] | None = None  # restored when leaving side by side
        self._methods: dict[str, Any] = {}  # built methods (loaded networks) reused across runs

        # The panel is taller than a laptop's dock area: it scrolls rather than squeezes.
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self._build_inputs())
        layout.addWidget(self._build_parameters())
        layout.addWidget(self._build_run())
        layout.addWidget(self._build_results())
        layout.addStretch()
        scroll = VerticalScroll()
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self._restore_settings()
        self._update_mode()
        self.refresh_layers()
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            connect_while_alive(self, event, self.refresh_layers)
        for layer in self.viewer.layers:
            connect_while_alive(self, layer.events.name, self.refresh_layers)
        connect_while_alive(self, events.inserted, self._watch_layer_name)
        connect_while_alive(self, events.removed, self._forget_removed)

    # --- building -------------------------------------------------------------------------

    def _build_inputs(self) -> QGroupBox:
        box = QGroupBox("Inputs")
        form = QFormLayout(box)
        self.use_layers = QRadioButton("LR + HR layers")
        self.simulate = QRadioButton("simulate from an HR stack")
        self.use_layers.setChecked(True)
        group = QButtonGroup(box)
        group.addButton(self.use_layers)
        group.addButton(self.simulate)
        modes = QVBoxLayout()
        modes.addWidget(self.use_layers)
        modes.addWidget(self.simulate)
        form.addRow(modes)
        self.simulate.toggled.connect(self._update_mode)

        self.lr_combo = QComboBox()
        self.lr_combo.setToolTip("The LR (fast) stream: (T, h, w)")
        self.hr_combo = QComboBox()
        self.hr_combo.setToolTip(
            "HR key frames (K, 4h, 4w), or a full-rate HR stack (T, 4h, 4w) whose key frames "
            "are picked by the key rule"
        )
        self.truth_combo = QComboBox()
        self.truth_combo.setToolTip("Optional ground truth (T, 4h, 4w) for the metrics")
        self.hr_label = QLabel("HR")
        self.lr_label = QLabel("LR")
        self.truth_label = QLabel("Ground truth")
        form.addRow(self.lr_label, self.lr_combo)
        form.addRow(self.hr_label, self.hr_combo)
        form.addRow(self.truth_label, self.truth_combo)
        self.hr_combo.currentTextChanged.connect(self._update_keys_note)
        self.lr_combo.currentTextChanged.connect(self._update_frame_range)
        self.hr_combo.currentTextChanged.connect(self._update_frame_range)

        self.key_step = QSpinBox()
        self.key_step.setRange(2, 10000)
        self.key_step.setValue(10)
        self.key_step.setToolTip("An HR key frame every k LR frames (0, k, 2k, ...)")
        self.first_last = QCheckBox("first and last only")
        self.first_last.toggled.connect(lambda on: self.key_step.setEnabled(not on))
        keys = QHBoxLayout()
        keys.addWidget(self.key_step)
        keys.addWidget(self.first_last)
        self.keys_note = QLabel()
        self.keys_note.setWordWrap(True)
        form.addRow("HR key step", keys)
        form.addRow(self.keys_note)

        self.noise = QCheckBox("shot noise, LR PSNR")
        self.noise.setChecked(True)
        self.noise_psnr = QDoubleSpinBox()
        self.noise_psnr.setRange(20.0, 60.0)
        self.noise_psnr.setSingleStep(1.0)
        self.noise_psnr.setValue(35.0)
        self.noise_psnr.setSuffix(" dB")
        self.noise.toggled.connect(self.noise_psnr.setEnabled)
        self.b0_label = QLabel("b0: solved at Run")
        self.b0_label.setToolTip("Blank-scan factor b0 (photons at full transmission) of the noise")
        noise = QHBoxLayout()
        noise.addWidget(self.noise)
        noise.addWidget(self.noise_psnr)
        self.noise_row = QWidget()
        noise_box = QVBoxLayout(self.noise_row)
        noise_box.setContentsMargins(0, 0, 0, 0)
        noise_box.addLayout(noise)
        noise_box.addWidget(self.b0_label)
        form.addRow(self.noise_row)
        return box

    def _build_parameters(self) -> QGroupBox:
        box = QGroupBox("Fusion")
        form = QFormLayout(box)
        self.separation = QSpinBox()
        self.separation.setRange(1, 3)
        self.separation.setToolTip("LR frame separation s: the LR inputs are t-s, t, t+s")
        form.addRow("LR separation s", self.separation)

        grid = QGridLayout()
        self.method_boxes: dict[str, QCheckBox] = {}
        for i, name in enumerate(METHOD_NAMES):
            check = QCheckBox(name)
            self.method_boxes[name] = check
            grid.addWidget(check, i // 2, i % 2)
        self.method_boxes["bicubic"].setChecked(True)
        form.addRow("Methods", grid)
        for name in NETWORK_METHODS:
            self.method_boxes[name].toggled.connect(
                lambda on, n=name: on and self.update_weights_hint(n)
            )

        self.weights: dict[str, QLineEdit] = {}
        for name in NETWORK_METHODS:
            edit = QLineEdit()
            edit.setPlaceholderText("shipped weights")
            edit.setToolTip(
                f"Checkpoint of {name}: empty = the weights shipped with napari-xfusion"
            )
            browse = QToolButton()
            browse.setText("…")
            browse.setToolTip(f"Choose a {name} checkpoint file")
            browse.clicked.connect(lambda _=False, n=name: self._choose_weights(n))
            row = QHBoxLayout()
            row.addWidget(edit)
            row.addWidget(browse)
            self.weights[name] = edit
            form.addRow(f"{name} weights", row)

        self.device = DeviceCombo()
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 256)
        self.batch_size.setToolTip("Frames per network batch (more uses more memory)")
        device = QHBoxLayout()
        device.addWidget(self.device)
        device.addWidget(QLabel("batch"))
        device.addWidget(self.batch_size)
        form.addRow("Device", device)

        self.start = QSpinBox()
        self.end = QSpinBox()
        for spin in (self.start, self.end):
            spin.setRange(0, 0)
        around = QPushButton("around current")
        around.setToolTip("Centre the window on the viewer's current frame")
        around.clicked.connect(self.window_around_current)
        whole = QPushButton("all")
        whole.clicked.connect(self.window_all)
        window = QHBoxLayout()
        window.addWidget(self.start)
        window.addWidget(QLabel("to"))
        window.addWidget(self.end)
        shortcuts = QHBoxLayout()
        shortcuts.addWidget(around)
        shortcuts.addWidget(whole)
        form.addRow("Frames", window)
        form.addRow("", shortcuts)
        return box

    def _build_run(self) -> QWidget:
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m frames")
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        return panel

    def _build_results(self) -> QGroupBox:
        box = QGroupBox("Results")
        layout = QVBoxLayout(box)
        self.side_by_side_button = QPushButton("Side by side")
        self.side_by_side_button.setCheckable(True)
        self.side_by_side_button.setToolTip(
            "LR, every fused layer and the ground truth in a grid, contrast limits linked"
        )
        self.side_by_side_button.toggled.connect(self.show_side_by_side)
        self.change_mode = QComboBox()
        for mode, label in CHANGE_MODES.items():
            self.change_mode.addItem(label, mode)
        change = QPushButton("Add change view")
        change.setToolTip("Change from the previous frame of every fused and selected layer")
        change.clicked.connect(self.add_change_views)
        row = QHBoxLayout()
        row.addWidget(self.change_mode)
        row.addWidget(change)
        self.show_uncertainty = QCheckBox("Bayesian uncertainty layer (posterior s.d.)")
        self.show_uncertainty.setToolTip(
            "With bayesian: also fill 'uncertainty [bayesian]', the per-pixel posterior "
            "standard deviation (0 at the HR keys)"
        )
        self.export_list = QListWidget()
        self.export_list.setMaximumHeight(80)
        self.export_list.setToolTip("Fused stacks to export")
        self.detector_units = QCheckBox("in detector units")
        self.detector_units.setToolTip(
            "Map the fused stacks back to the HR detector's values and dtype (e.g. uint16) "
            "with the normalisation of the run's inputs; otherwise float32 in [0, 1]"
        )
        export = QPushButton("Export…")
        export.setToolTip("Write the ticked fused stacks (TIFF) and the metrics/attention CSVs")
        export.clicked.connect(self._export_dialog)
        layout.addWidget(self.side_by_side_button)
        layout.addLayout(row)
        layout.addWidget(self.show_uncertainty)
        layout.addWidget(QLabel("Export"))
        layout.addWidget(self.export_list)
        export_row = QHBoxLayout()
        export_row.addWidget(self.detector_units)
        export_row.addWidget(export)
        layout.addLayout(export_row)
        return box

    # --- layer pickers ---------------------------------------------------------------------

    def _forget_removed(self, event: Any) -> None:
        # A deleted fused layer takes its metrics and attention with it (unless a run is
        # about to replace it with a fresh layer of the same method).
        layer = event.value
        if role(layer) == "fused" and not self.running:
            self.session.forget(meta(layer).get("method", ""))

    def _watch_layer_name(self, event: Any) -> None:
        connect_while_alive(self, event.value.events.name, self.refresh_layers)

    def _image_names(self) -> list[str]:
        from napari.layers import Image

        return [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and role(layer) not in ("fused", "uncertainty", "change")
        ]

    def _by_role(self, wanted: str) -> str | None:
        for layer in reversed(self.viewer.layers):
            if role(layer) == wanted:
                return layer.name
        return None

    def refresh_layers(self, *_: Any) -> None:
        """Refill the layer pickers, keeping choices that still exist; guess from layer roles."""
        names = self._image_names()
        for combo, wanted, optional in (
            (self.lr_combo, "lr", False),
            (self.hr_combo, "hr_keys", False),
            (self.truth_combo, "truth", True),
        ):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            if optional:
                combo.addItem(_NONE)
            combo.addItems(names)
            guess = current if current in names else self._by_role(wanted)
            if guess is not None and guess in names:
                combo.setCurrentText(guess)
            combo.blockSignals(False)
        if self.simulate.isChecked() and self.hr_combo.currentText() not in names:
            truth = self._by_role("truth")
            if truth:
                self.hr_combo.setCurrentText(truth)
        self._update_keys_note()
        self._update_frame_range()
        self._refresh_export_list()

    def _layer(self, combo: QComboBox) -> Layer | None:
        name = combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _update_mode(self, *_: Any) -> None:
        simulate = self.simulate.isChecked()
        for widget in (self.lr_label, self.lr_combo, self.truth_label, self.truth_combo):
            widget.setVisible(not simulate)
        self.noise_row.setVisible(simulate)
        self.hr_label.setText("HR stack" if simulate else "HR")
        if simulate:
            current = self._layer(self.hr_combo)
            if current is None or role(current) == "hr_keys":
                truth = self._by_role("truth")
                if truth:
                    self.hr_combo.setCurrentText(truth)
        self._update_keys_note()
        self._update_frame_range()

    def _layer_key_indices(self, layer: Layer | None) -> list[int] | None:
        if layer is None or self.simulate.isChecked():
            return None
        keys = meta(layer).get("key_indices") if META in layer.metadata else None
        if isinstance(keys, list) and len(keys) == layer.data.shape[0]:
            return [int(k) for k in keys]
        return None

    def _update_keys_note(self, *_: Any) -> None:
        keys = self._layer_key_indices(self._layer(self.hr_combo))
        rule = keys is None
        self.key_step.setEnabled(rule and not self.first_last.isChecked())
        self.first_last.setEnabled(rule)
        self.keys_note.setText("" if rule else f"Keys from the HR layer: {describe_keys(keys)}")
        self.keys_note.setVisible(not rule)

    def _n_frames(self) -> int:
        source = self._layer(self.hr_combo if self.simulate.isChecked() else self.lr_combo)
        if source is None or source.ndim < 3:
            return 0
        return int(source.data.shape[0])

    def _update_frame_range(self, *_: Any) -> None:
        n = self._n_frames()
        last = max(n - 1, 0)
        was_full = self.end.value() == self.end.maximum()
        self.start.setRange(0, last)
        self.end.setRange(0, last)
        if was_full:
            self.end.setValue(last)

    # --- window helpers -------------------------------------------------------------------

    def window_all(self) -> None:
        """Reconstruct every frame."""
        self.start.setValue(0)
        self.end.setValue(self.end.maximum())

    def window_around_current(self) -> None:
        """Centre the time window on the viewer's current frame, keeping its width (a full
        window shrinks to two key gaps)."""
        last = self.end.maximum()
        width = self.end.value() - self.start.value()
        if width >= last:
            width = min(2 * self.key_step.value(), last)
        clock = self._layer(self.hr_combo if self.simulate.isChecked() else self.lr_combo)
        t = 0
        if clock is not None and self.viewer.dims.ndim:
            # The slider is in world time; the window is in frames of the LR stream.
            t = int(round((self.viewer.dims.point[0] - clock.translate[0]) / clock.scale[0]))
        start = min(max(t - width // 2, 0), max(last - width, 0))
        self.start.setValue(start)
        self.end.setValue(min(start + width, last))

    def update_weights_hint(self, method: str) -> None:
        """Say in the weights field whether shipped weights of ``method`` exist here.

        Checked when the method is ticked (it imports torch, which the widget does not pay
        for until a network is wanted).
        """
        edit = self.weights[method]
        try:
            from napari_xfusion.methods.network import shipped_weights
        except ImportError as exc:
            edit.setPlaceholderText(f"unavailable: {exc}")
            return
        if shipped_weights(method).is_file():
            edit.setPlaceholderText("shipped weights")
        else:
            edit.setPlaceholderText("none shipped here: choose a checkpoint file (…)")

    def _choose_weights(self, method: str) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, f"{method} checkpoint", "", "PyTorch checkpoints (*.pt *.pth *.ckpt);;All (*)"
        )
        if name:
            self.weights[method].setText(name)

    # --- running --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self.worker is not None

    def selected_methods(self) -> list[str]:
        """Ticked methods, in the widget's order."""
        return [name for name, box in self.method_boxes.items() if box.isChecked()]

    def _check_layer(self, layer: Layer | None, what: str) -> Layer:
        from napari.layers import Image

        if layer is None:
            raise ValueError(f"choose the {what} layer (Inputs)")
        if not isinstance(layer, Image) or layer.rgb or layer.multiscale:
            raise ValueError(
                f"the {what} layer {layer.name!r} must be a greyscale image stack, not "
                f"{'RGB' if getattr(layer, 'rgb', False) else type(layer).__name__}"
            )
        if layer.ndim != 3:
            raise ValueError(
                f"the {what} layer {layer.name!r} is {layer.ndim}-D {tuple(layer.data.shape)}; "
                "fusion needs a time series (T, H, W): open the whole stack, not one frame"
            )
        return layer

    def build_request(self) -> _Job:
        """The job of the current widget values; ``ValueError`` says what to fix."""
        methods = self.selected_methods()
        if not methods:
            raise ValueError("tick at least one method")
        simulate = self.simulate.isChecked()
        hr = self._check_layer(self._layer(self.hr_combo), "HR stack" if simulate else "HR")
        lr = truth = None
        if not simulate:
            lr = self._check_layer(self._layer(self.lr_combo), "LR")
            if lr is hr:
                raise ValueError("LR and HR are the same layer: choose the HR key layer for HR")
            truth_layer = self._layer(self.truth_combo)
            if truth_layer is not None:
                truth = self._check_layer(truth_layer, "ground truth")
            lr_shape, hr_shape = lr.data.shape[1:], hr.data.shape[1:]
            if tuple(hr_shape) != (SCALE * lr_shape[0], SCALE * lr_shape[1]):
                raise ValueError(
                    f"HR frames must be {SCALE}x the LR frames: LR {lr.name!r} is "
                    f"{lr_shape[0]}x{lr_shape[1]}, so HR needs {SCALE * lr_shape[0]}x"
                    f"{SCALE * lr_shape[1]}, but {hr.name!r} is {hr_shape[0]}x{hr_shape[1]}"
                )
        if self.start.value() > self.end.value():
            raise ValueError(
                f"the time window starts at frame {self.start.value()}, after its end "
                f"{self.end.value()}: set Frames 'from' <= 'to'"
            )
        options: dict[str, dict[str, Any]] = {}
        for name in methods:
            if name in NETWORK_METHODS:
                path = self.weights[name].text().strip()
                if path and not Path(path).is_file():
                    raise ValueError(f"{name} weights file {path} does not exist: choose another")
                options[name] = {"weights": path or None, "batch_size": self.batch_size.value()}
        key_frames = self._layer_key_indices(hr)
        request = FusionRequest(
            methods=tuple(methods),
            hr=hr.data,
            lr=None if lr is None else lr.data,
            key_frames=None if key_frames is None else tuple(key_frames),
            key_step=None if self.first_last.isChecked() else self.key_step.value(),
            first_last=self.first_last.isChecked(),
            truth=None if truth is None else truth.data,
            simulate=simulate,
            noise_psnr=self.noise_psnr.value() if simulate and self.noise.isChecked() else None,
            separation=self.separation.value(),
            frames=(self.start.value(), self.end.value()),
            method_options=options,
            device=self.device.currentText(),
            method_cache=self._methods,
        )
        signature = {
            "lr": f"simulated from {hr.name}" if simulate else lr.name,
            "hr": hr.name,
            "separation": request.separation,
            "key_frames": list(key_frames) if key_frames else None,
            "key_step": request.key_step,
            "first_last": request.first_last,
            "noise_psnr": request.noise_psnr,
        }
        return _Job(request, threading.Event(), hr, lr, truth, signature)

    def run(self) -> bool:
        """Start a run with the current values; returns False (and says why) if it cannot."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error, show_warning

        if self.running:
            show_warning(
                "A fusion run is already going: wait for it to finish or press Cancel first."
            )
            return False
        try:
            job = self.build_request()
        except ValueError as exc:
            message = str(exc)
            show_error(message[0].upper() + message[1:])
            self.status.setText(f"Not started: {message}")
            return False
        self._save_settings()
        self.side_by_side_button.setChecked(False)
        self._job = job
        self.last_summary = None
        self.worker = create_worker(fusion_job, job.request, job.cancel, _start_thread=False)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        # Closing the dock (or napari) mid-run stops the worker after its current frame.
        self.destroyed.connect(job.stop_on_close)
        self.progress.setRange(0, 0)  # busy until the inputs are prepared
        self.status.setText("Preparing inputs…")
        self.worker.start()
        return True

    def cancel(self) -> None:
        """Stop after the frame in progress; the frames done stay in their layers."""
        if self._job is not None and self.worker is not None:
            self._job.cancel.set()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling after the current frame…")

    def _on_yielded(self, message: Prepared | FrameDone) -> None:
        job = self._job
        if job is None:
            return
        if isinstance(message, Prepared):
            self._on_prepared(job, message)
        elif isinstance(message, FrameDone):
            self._on_frame(job, message)

    def _on_prepared(self, job: _Job, prep: Prepared) -> None:
        from napari.utils.notifications import show_info

        job.prepared = prep
        hr = job.hr_layer
        spatial_scale = tuple(hr.scale[1:])
        spatial_shift = tuple(hr.translate[1:])
        # Results share the LR stream's clock (the HR stack's when simulating from it).
        clock = hr if job.lr_layer is None else job.lr_layer
        t_scale, t_shift = float(clock.scale[0]), float(clock.translate[0])
        if job.request.simulate:
            if prep.b0 is not None:
                self.b0_label.setText(f"b0 = {prep.b0:.3g} (LR PSNR {prep.lr_psnr:.1f} dB)")
            else:
                self.b0_label.setText("b0: no noise")
            self._add_simulated_layers(job, prep)
        elif job.lr_layer is not None and job.lr_layer.scale[1] == hr.scale[1]:
            # Same pixel size as HR: show LR up-scaled x4 so the layers overlay.
            scale, translate = lr_overlay_transform(
                (job.lr_layer.scale[0], *spatial_scale), (job.lr_layer.translate[0], *spatial_shift)
            )
            job.lr_layer.scale, job.lr_layer.translate = scale, translate
        shape = (prep.n_frames, *prep.hr_shape)
        fresh = []
        for method in job.request.methods:
            layer = ensure_fused_layer(
                self.viewer,
                method,
                shape,
                job.signature,
                scale=(t_scale, *spatial_scale),
                translate=(t_shift, *spatial_shift),
            )
            entry = meta(layer)
            if not entry.get("frames_done"):
                fresh.append(method)
            entry["parameters"] = {
                **job.signature,
                "method": method,
                "key_indices": prep.key_indices.tolist(),
                "device": job.request.device,
                "options": job.request.method_options.get(method, {}),
                "describe": prep.descriptions.get(method, {}),
                "b0": prep.b0,
                "normalisation": prep.normalisation,
            }
            job.layers[method] = layer
            if method == "bayesian" and self.show_uncertainty.isChecked():
                job.uncertainty[method] = ensure_uncertainty_layer(
                    self.viewer,
                    method,
                    shape,
                    job.signature,
                    scale=(t_scale, *spatial_scale),
                    translate=(t_shift, *spatial_shift),
                )
        self.session.begin(
            prep.n_frames,
            prep.key_indices,
            job.request.methods,
            has_truth=prep.has_truth,
            fresh=fresh,
            time=(t_scale, t_shift),
        )
        first, last = prep.frames
        job.total = (last - first + 1) * len(job.request.methods)
        self.progress.setRange(0, job.total)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m frames")
        self.status.setText(
            f"Running {', '.join(job.request.methods)} on frames {first}..{last}; "
            f"keys {describe_keys(prep.key_indices)}"
        )
        for note in prep.notes:
            show_info(note)
        self._refresh_export_list()
        if prep.has_truth:
            self._open_dock("Metrics")

    def _add_simulated_layers(self, job: _Job, prep: Prepared) -> None:
        hr = job.hr_layer
        scale, translate = lr_overlay_transform(tuple(hr.scale), tuple(hr.translate))
        entry = {
            "role": "lr",
            "binning": SCALE,
            "b0": prep.b0,
            "lr_psnr": prep.lr_psnr,
            "source": hr.name,
        }
        name = "LR (simulated)"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_image(
            prep.lr,
            name=name,
            scale=scale,
            translate=translate,
            contrast_limits=(0.0, 1.0),
            metadata={META: entry},
        )
        keys = prep.key_indices
        step = float(keys[1] - keys[0]) if keys.size > 1 else 1.0
        if np.all(np.diff(keys) == keys[1] - keys[0]):
            name = "HR keys (simulated)"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_image(
                prep.key_frames,
                name=name,
                scale=(step * hr.scale[0], *hr.scale[1:]),
                translate=tuple(hr.translate),
                contrast_limits=(0.0, 1.0),
                metadata={
                    META: {"role": "hr_keys", "key_indices": keys.tolist(), "source": hr.name}
                },
            )
        if META not in hr.metadata:
            hr.metadata[META] = {"role": "truth"}

    def _on_frame(self, job: _Job, item: FrameDone) -> None:
        result = item.result
        layer = job.layers.get(result.method)
        if layer is not None and layer in self.viewer.layers:
            write_frame(layer, int(result.index), result.frame)
            refresh_change_views(self.viewer, layer)
        spread = job.uncertainty.get(result.method)
        if spread is not None and result.variance is not None and spread in self.viewer.layers:
            sd = np.sqrt(np.clip(np.asarray(result.variance, dtype=np.float32), 0, None))
            write_frame(spread, int(result.index), sd)
        record = self.session.add(result, item.metrics)
        if record.backward is not None and not job.attention_shown:
            job.attention_shown = True
            self._open_dock("Attention")
        job.done += 1
        self.progress.setValue(min(job.done, job.total))
        eta = getattr(result, "eta_seconds", None)
        self.progress.setFormat(f"%v / %m frames, ETA {_format_seconds(eta)}")
        self.status.setText(
            f"{result.method}: frame {result.index} ({job.done}/{job.total}), "
            f"ETA {_format_seconds(eta)}"
        )

    def _on_returned(self, summary: Finished) -> None:
        from napari.utils.notifications import show_error, show_info

        self.last_summary = summary
        methods = ", ".join(self._job.request.methods) if self._job else ""
        if summary.error:
            message = summary.error
            if "weight" in message.lower() or "checkpoint" in message.lower():
                message += (
                    " Choose a checkpoint with the '…' button next to the method's weights, "
                    "or untick the method."
                )
            show_error(f"Fusion failed: {message}")
            self.status.setText(f"Failed after {summary.frames_done} frames: {message}")
        elif summary.cancelled:
            show_info(f"Fusion cancelled; the {summary.frames_done} frames done are kept.")
            self.status.setText(f"Cancelled: {summary.frames_done} frames done are kept.")
        else:
            self.status.setText(
                f"Done: {methods}, {summary.frames_done} frames in "
                f"{_format_seconds(summary.seconds)}."
            )

    def _on_errored(self, exc: Exception) -> None:
        # Only a bug in this plugin gets here (fusion_job returns errors as a summary).
        self.status.setText(f"Failed: {exc}")

    def _on_aborted(self) -> None:
        # napari's activity dock can quit the worker directly.
        self.last_summary = Finished(cancelled=True, frames_done=self._job.done if self._job else 0)
        self.status.setText("Cancelled.")

    def _on_finished(self) -> None:
        if self._job is not None:
            self.destroyed.disconnect(self._job.stop_on_close)
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    # --- docks ------------------------------------------------------------------------------

    def _open_dock(self, title: str) -> None:
        """Dock our ``Attention`` or ``Metrics`` widget at the bottom unless one is open."""
        from napari_xfusion._napari._attention import AttentionWidget
        from napari_xfusion._napari._metrics import MetricsWidget

        cls = {"Attention": AttentionWidget, "Metrics": MetricsWidget}[title]
        window = getattr(self.viewer, "window", None)
        if window is None or not hasattr(window, "add_dock_widget"):
            return
        docked = window.dock_widgets
        name = f"{title} (napari-xfusion)"  # napari's name for our plugin widget
        if name in docked or any(isinstance(w, cls) for w in docked.values()):
            return
        window.add_dock_widget(cls(self.viewer), name=name, area="bottom")

    # --- results --------------------------------------------------------------------------

    def comparison_layers(self) -> list[Layer]:
        """LR, each fused layer and the ground truth, in that order (for side by side)."""
        job = self._job
        layers: list[Layer] = []
        lr = None
        if job is not None:
            lr = job.lr_layer
            if job.request.simulate and "LR (simulated)" in self.viewer.layers:
                lr = self.viewer.layers["LR (simulated)"]
        if lr is None:
            name = self._by_role("lr")
            lr = self.viewer.layers[name] if name else None
        if lr is not None and lr in self.viewer.layers:
            layers.append(lr)
        layers += fused_layers(self.viewer)
        truth = None
        if job is not None:
            truth = job.truth_layer or (job.hr_layer if job.request.simulate else None)
        if truth is None:
            name = self._by_role("truth")
            truth = self.viewer.layers[name] if name else None
        if truth is not None and truth in self.viewer.layers:
            layers.append(truth)
        return layers

    def show_side_by_side(self, enable: bool = True) -> None:
        """Grid view of LR, each method and the truth, with linked contrast limits."""
        from napari.utils.notifications import show_info

        layers = self.comparison_layers()
        if enable and not fused_layers(self.viewer):
            show_info("Nothing to compare yet: run a method first.")
            self.side_by_side_button.blockSignals(True)
            self.side_by_side_button.setChecked(False)
            self.side_by_side_button.blockSignals(False)
            return
        if enable and self._visibility is None:
            self._visibility = {layer: layer.visible for layer in self.viewer.layers}
        side_by_side(self.viewer, layers, enable)
        if not enable and self._visibility is not None:
            for layer, visible in self._visibility.items():
                if layer in self.viewer.layers:
                    layer.visible = visible
            self._visibility = None
        if self.side_by_side_button.isChecked() != enable:
            self.side_by_side_button.blockSignals(True)
            self.side_by_side_button.setChecked(enable)
            self.side_by_side_button.blockSignals(False)

    def add_change_views(self) -> list[Layer]:
        """Add a change view (the chosen mode) of every fused layer and of the selected layers."""
        from napari.layers import Image
        from napari.utils.notifications import show_error, show_info

        mode = self.change_mode.currentData()
        sources = fused_layers(self.viewer)
        sources += [
            layer
            for layer in self.viewer.layers.selection
            if isinstance(layer, Image) and role(layer) not in ("fused", "uncertainty", "change")
        ]
        if not sources:
            show_info("Select an image layer (or run a method) to add a change view.")
            return []
        added = []
        for layer in sources:
            try:
                added.append(add_change_view(self.viewer, layer, mode))
            except ValueError as exc:
                show_error(str(exc)[0].upper() + str(exc)[1:])
        return added

    def _refresh_export_list(self) -> None:
        ticked = {
            self.export_list.item(i).text()
            for i in range(self.export_list.count())
            if self.export_list.item(i).checkState() == Qt.Checked
        }
        known = {self.export_list.item(i).text() for i in range(self.export_list.count())}
        self.export_list.clear()
        order = {name: i for i, name in enumerate(METHOD_NAMES)}
        layers = sorted(
            fused_layers(self.viewer),
            key=lambda layer: order.get(meta(layer).get("method"), len(order)),
        )
        for layer in layers:
            method = meta(layer).get("method", layer.name)
            item = QListWidgetItem(method)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            new = method not in known
            item.setCheckState(Qt.Checked if new or method in ticked else Qt.Unchecked)
            self.export_list.addItem(item)

    def export_methods(self) -> list[str]:
        """Methods ticked in the export list."""
        return [
            self.export_list.item(i).text()
            for i in range(self.export_list.count())
            if self.export_list.item(i).checkState() == Qt.Checked
        ]

    def export(self, folder: str | Path) -> list[Path]:
        """Export the ticked fused stacks and the CSVs to ``folder``; returns the files."""
        from napari_xfusion._napari._export import export_results

        methods = self.export_methods()
        if not methods:
            raise ValueError("tick at least one fused stack to export (run a method first)")
        return export_results(
            self.viewer, folder, methods, detector_units=self.detector_units.isChecked()
        )

    def _export_dialog(self) -> None:
        from napari.utils.notifications import show_error, show_info

        if not self.export_methods():
            show_info("Nothing to export yet: run a method, then tick what to export.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export fused stacks to")
        if not folder:
            return
        try:
            files = self.export(folder)
        except (OSError, ValueError) as exc:
            show_error(f"Export failed: {exc}")
            return
        show_info(f"Exported {len(files)} files to {folder}")

    # --- settings -------------------------------------------------------------------------

    @staticmethod
    def settings() -> QSettings:
        """Where the widget remembers its values (an INI file in the user's config folder)."""
        return QSettings(QSettings.IniFormat, QSettings.UserScope, "napari-xfusion", "fusion")

    def _save_settings(self) -> None:
        s = self.settings()
        s.setValue("simulate", self.simulate.isChecked())
        s.setValue("key_step", self.key_step.value())
        s.setValue("first_last", self.first_last.isChecked())
        s.setValue("noise", self.noise.isChecked())
        s.setValue("noise_psnr", self.noise_psnr.value())
        s.setValue("separation", self.separation.value())
        s.setValue("methods", ",".join(self.selected_methods()))
        s.setValue("device", self.device.currentText())
        s.setValue("batch_size", self.batch_size.value())
        s.setValue("uncertainty", self.show_uncertainty.isChecked())
        for name, edit in self.weights.items():
            s.setValue(f"weights/{name}", edit.text())
        s.sync()

    def _restore_settings(self) -> None:
        s = self.settings()

        def get(key: str, default: Any, kind: type) -> Any:
            value = s.value(key, default)
            if kind is bool and isinstance(value, str):  # INI files store booleans as text
                return value.lower() == "true"
            try:
                return kind(value)
            except (TypeError, ValueError):
                return default

        self.simulate.setChecked(get("simulate", False, bool))
        self.key_step.setValue(get("key_step", 10, int))
        self.first_last.setChecked(get("first_last", False, bool))
        self.noise.setChecked(get("noise", True, bool))
        self.noise_psnr.setValue(get("noise_psnr", 35.0, float))
        self.separation.setValue(get("separation", 1, int))
        methods = [m for m in get("methods", "bicubic", str).split(",") if m in METHOD_NAMES]
        for name, box in self.method_boxes.items():
            box.setChecked(name in (methods or ["bicubic"]))
        device = get("device", "auto", str)
        if device not in ("auto", "cpu"):
            self.device.probe()
        if self.device.findText(device) >= 0:
            self.device.setCurrentText(device)
        self.batch_size.setValue(get("batch_size", 1, int))
        self.show_uncertainty.setChecked(get("uncertainty", False, bool))
        for name, edit in self.weights.items():
            edit.setText(get(f"weights/{name}", "", str))
