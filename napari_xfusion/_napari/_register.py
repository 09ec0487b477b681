"""The "Register cameras" dock: a real camera pair -> aligned LR and HR key layers for Fusion.

Choose the LR and HR stacks (layers, or files) and their frame times (metadata files, else
rates); Estimate runs :func:`~napari_xfusion.app.dualcam.prepare_pair` and
:func:`~napari_xfusion.app.dualcam.align_prepared` in a napari worker thread; the estimate
(flip, scale, rotation, shift, time offset, residual) fills the adjust controls and an overlay
check layer (checkerboard or blend of the resampled HR key over the up-sampled LR frame) that
follows every edit; Accept aligns with the (adjusted) transform in the worker and adds the
aligned layers with the ``lr`` / ``hr_keys`` role metadata the Fusion dock's pickers take.
The science is all in :mod:`napari_xfusion.app.dualcam`; this module only maps widgets to it.
"""

from __future__ import annotations

import warnings
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._layers import META, key_hold_translate, lr_overlay_transform
from napari_xfusion._napari._util import VerticalScroll, connect_while_alive

if TYPE_CHECKING:
    import napari

__all__ = ["FILE", "OVERLAY_LAYER", "RegisterWidget", "ALIGNED_LR", "ALIGNED_HR"]

FILE = "(file)"
OVERLAY_LAYER = "register: overlay"
ALIGNED_LR = "LR (aligned)"
ALIGNED_HR = "HR keys (aligned)"


def _call(function: Any, *args: Any, **kwargs: Any) -> tuple[str, Any, list[str]]:
    """Run ``function`` in the worker: errors and warnings come back as values, reported on
    the GUI thread (a warning raised in a worker can freeze napari)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: Any = function(*args, **kwargs)
            kind = "ok"
        except Exception as exc:  # shown in the dock, never raised in the thread
            result, kind = exc, "error"
    return kind, result, [str(w.message) for w in caught]


def _estimate(config: Any, lr: Any, hr: Any, names: tuple[str, str]) -> tuple[Any, Any]:
    from napari_xfusion.app.dualcam import align_prepared, prepare_pair

    prepared = prepare_pair(config, lr=lr, hr=hr, names=names)
    return prepared, align_prepared(prepared)


def _accept(prepared: Any, transform: Any) -> Any:
    from napari_xfusion.app.dualcam import align_prepared

    return align_prepared(prepared, transform=transform)


class _Camera(QGroupBox):
    """One camera's stack (a layer or a file) and its frame times (metadata file or rate)."""

    def __init__(self, title: str, key: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.key = key
        form = QFormLayout(self)
        self.layer = QComboBox()
        self.layer.setToolTip(
            f"The {key.upper()} camera's stack: an image layer (T, H, W), or '{FILE}' to read "
            "the file below"
        )
        self.path = QLineEdit()
        self.path.setToolTip(
            f"{key.upper()} stack file (TIFF stack or folder, or a Phantom .cine), used when "
            f"the layer is '{FILE}'"
        )
        self.times = QLineEdit()
        self.times.setToolTip(
            "Camera metadata with the frame times (Phantom .xml/.cine, Shimadzu .ini); empty: "
            "the file beside the stack with the same name, else the rate"
        )
        self.rate = QDoubleSpinBox()
        self.rate.setRange(0.0, 1e9)
        self.rate.setDecimals(1)
        self.rate.setSuffix(" Hz")
        self.rate.setSpecialValueText("from metadata")
        self.rate.setToolTip(
            "Frame rate, used instead of metadata when set (0: take the times from metadata)"
        )
        form.addRow("Stack", self.layer)
        form.addRow("File", self._with_browse(self.path, "stack"))
        form.addRow("Times", self._with_browse(self.times, "metadata"))
        form.addRow("Rate", self.rate)

    def _with_browse(self, edit: QLineEdit, what: str) -> QHBoxLayout:
        row = QHBoxLayout()
        button = QPushButton("...")
        button.setToolTip(f"Choose the {self.key.upper()} {what} file")
        button.clicked.connect(lambda: self._browse(edit, what))
        row.addWidget(edit)
        row.addWidget(button)
        return row

    def _browse(self, edit: QLineEdit, what: str) -> None:
        name, _ = QFileDialog.getOpenFileName(self, f"{self.key.upper()} {what}", edit.text())
        if name:
            edit.setText(name)

    def set_layers(self, names: list[str]) -> None:
        current = self.layer.currentText()
        self.layer.blockSignals(True)
        self.layer.clear()
        self.layer.addItems([*names, FILE])
        self.layer.setCurrentIndex(names.index(current) if current in names else len(names))
        self.layer.blockSignals(False)

    def source(self, viewer: napari.Viewer) -> tuple[Any, Path | None, str]:
        """(array or None, stack path or None, name for messages)."""
        name = self.layer.currentText()
        if name and name != FILE:
            layer = viewer.layers[name]
            path = getattr(getattr(layer, "source", None), "path", None)
            return np.asarray(layer.data), Path(path) if path else None, f"layer {name!r}"
        text = self.path.text().strip()
        if not text:
            raise ValueError(f"{self.key.upper()}: choose a layer or a stack file")
        return None, Path(text).expanduser(), text


class RegisterWidget(QWidget):
    """Dock widget "Register cameras" (see the module docstring)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.running = False
        self.prepared: Any = None
        self.pair: Any = None  # the last estimate or accepted alignment
        self.accepted: Any = None
        self.last_error: str = ""
        self.edited = False  # an adjust control was changed since the estimate
        self.lr_box, self.hr_box = _Camera("LR camera", "lr"), _Camera("HR camera", "hr")
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.lr_box)
        layout.addWidget(self.hr_box)
        layout.addWidget(self._settings_box())
        self.estimate_button = QPushButton("Estimate")
        self.estimate_button.setToolTip(
            "Match the frame times, estimate the transform and refine the time offset (in the "
            "background)"
        )
        self.estimate_button.clicked.connect(self.estimate)
        layout.addWidget(self.estimate_button)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result.setToolTip("The estimate: time match and offset, transform, residual")
        layout.addWidget(self.result)
        layout.addWidget(self._adjust_box())
        layout.addLayout(self._accept_row())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the dock is doing, or why it stopped")
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll = VerticalScroll()  # the dock stays usable on a small screen
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)  # an edit burst (spin box held down) redraws once
        self._timer.timeout.connect(self.update_overlay)
        self.refresh_layers()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            connect_while_alive(self, event, self.refresh_layers)
        self._set_adjust_enabled(False)

    # ------------------------------------------------------------------ building the dock
    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        self.delay = QDoubleSpinBox()
        self.delay.setRange(-1e6, 1e6)
        self.delay.setDecimals(3)
        self.delay.setSuffix(" us")
        self.delay.setToolTip("Trigger delay added to every HR time (HR clock after the LR's)")
        self.model = QComboBox()
        self.model.addItems(["similarity", "affine"])
        self.model.setToolTip(
            "similarity: flip, scale, rotation, shift; affine: also shear and two scales"
        )
        self.max_residual = QDoubleSpinBox()
        self.max_residual.setRange(0.01, 10.0)
        self.max_residual.setValue(0.5)
        self.max_residual.setSuffix(" LR px")
        self.max_residual.setToolTip("Refuse an alignment whose residual is above this")
        self.transform_file = QLineEdit()
        self.transform_file.setToolTip(
            "A saved transform.json to use instead of estimating (empty: estimate from the keys)"
        )
        self.lr_pixel = QDoubleSpinBox()
        self.hr_pixel = QDoubleSpinBox()
        for spin, cam in ((self.lr_pixel, "LR"), (self.hr_pixel, "HR")):
            spin.setRange(0.0, 1e4)
            spin.setDecimals(3)
            spin.setSuffix(" um")
            spin.setSpecialValueText("unknown")
            spin.setToolTip(
                f"{cam} camera pixel size (0: unknown); both given, the estimate searches only "
                "near their ratio (much faster)"
            )
        self.drop_outside = QCheckBox("drop HR frames outside the LR recording")
        self.drop_outside.setToolTip(
            "HR frames recorded before or after the LR camera's recording are dropped (with a "
            "note) instead of refusing the pair"
        )
        form.addRow("Trigger delay", self.delay)
        form.addRow("LR pixel", self.lr_pixel)
        form.addRow("HR pixel", self.hr_pixel)
        form.addRow("Model", self.model)
        form.addRow("Max residual", self.max_residual)
        form.addRow("Transform file", self.transform_file)
        form.addRow("", self.drop_outside)
        return box

    def _spin(self, lo: float, hi: float, decimals: int, step: float, tip: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(lo, hi)
        spin.setDecimals(decimals)
        spin.setSingleStep(step)
        spin.setToolTip(tip)
        spin.valueChanged.connect(self._edit)
        return spin

    def _adjust_box(self) -> QGroupBox:
        box = QGroupBox("Adjust and check")
        form = QFormLayout(box)
        self.rotation = self._spin(-180, 180, 4, 0.05, "Rotation of the HR camera, degrees")
        self.scale = self._spin(0.01, 10.0, 6, 0.001, "LR pixels per HR pixel (4x grid: 0.25)")
        self.shift_x = self._spin(-1e4, 1e4, 4, 0.05, "Shift x of the transform, LR pixels")
        self.shift_y = self._spin(-1e4, 1e4, 4, 0.05, "Shift y of the transform, LR pixels")
        self.flip_x = QCheckBox("flip x")
        self.flip_x.setToolTip("Mirror the HR camera's x axis")
        self.flip_y = QCheckBox("flip y")
        self.flip_y.setToolTip("Mirror the HR camera's y axis")
        for box_ in (self.flip_x, self.flip_y):
            box_.toggled.connect(self._edit)
        flips = QHBoxLayout()
        flips.addWidget(self.flip_x)
        flips.addWidget(self.flip_y)
        self.key = QSpinBox()
        self.key.setToolTip("Which HR key the overlay shows")
        self.key.valueChanged.connect(self._schedule)
        self.mode = QComboBox()
        self.mode.addItems(["checkerboard", "blend"])
        self.mode.setToolTip(
            "Overlay: checkerboard tiles of HR key and up-sampled LR frame, or their blend"
        )
        self.mode.currentIndexChanged.connect(self._schedule)
        self.key_residual = QLabel("")
        self.key_residual.setToolTip("Residual misregistration of the key shown, LR pixels")
        for label, widget in (
            ("Rotation", self.rotation),
            ("Scale", self.scale),
            ("Shift x", self.shift_x),
            ("Shift y", self.shift_y),
        ):
            form.addRow(label, widget)
        form.addRow("", flips)
        form.addRow("Key", self.key)
        form.addRow("Overlay", self.mode)
        form.addRow("Key residual", self.key_residual)
        return box

    def _accept_row(self) -> QVBoxLayout:
        column = QVBoxLayout()
        row = QHBoxLayout()
        self.save_transform = QLineEdit()
        self.save_transform.setToolTip(
            "Save the accepted transform here (transform.json; empty: do not save) to reuse it "
            "with --transform or the Transform file box"
        )
        row.addWidget(QLabel("Save transform"))
        row.addWidget(self.save_transform)
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip(
            "Align with the transform above and add the aligned LR and HR key layers (ready "
            "for the Fusion dock)"
        )
        self.accept_button.clicked.connect(self.accept)
        column.addLayout(row)
        column.addWidget(self.accept_button)
        return column

    # ------------------------------------------------------------------ state
    def refresh_layers(self, *_: Any) -> None:
        """List the 3-D greyscale image layers (not our overlay) in both pickers."""
        from napari.layers import Image

        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image)
            and layer.ndim == 3
            and not layer.rgb
            and layer.name not in (OVERLAY_LAYER, ALIGNED_LR, ALIGNED_HR)
        ]
        self.lr_box.set_layers(names)
        self.hr_box.set_layers(names)

    def _set_adjust_enabled(self, on: bool) -> None:
        for w in (
            self.rotation,
            self.scale,
            self.shift_x,
            self.shift_y,
            self.flip_x,
            self.flip_y,
            self.key,
            self.mode,
            self.accept_button,
        ):
            w.setEnabled(on and not self.running)

    def config(self) -> tuple[Any, Any, Any]:
        """(DualCameraConfig, LR array or None, HR array or None) from the controls."""
        from napari_xfusion.app.dualcam import DualCameraConfig

        lr, lr_path, lr_name = self.lr_box.source(self.viewer)
        hr, hr_path, hr_name = self.hr_box.source(self.viewer)
        text = self.transform_file.text().strip()
        config = DualCameraConfig(
            lr=lr_path,
            hr=hr_path,
            lr_times=self.lr_box.times.text().strip() or None,
            hr_times=self.hr_box.times.text().strip() or None,
            lr_rate_hz=self.lr_box.rate.value() or None,
            hr_rate_hz=self.hr_box.rate.value() or None,
            trigger_delay_s=self.delay.value() * 1e-6,
            transform=text or None,
            model=self.model.currentText(),
            max_residual_lr_px=self.max_residual.value(),
            lr_pixel_um=self.lr_pixel.value() or None,
            hr_pixel_um=self.hr_pixel.value() or None,
            drop_outside=self.drop_outside.isChecked(),
        )
        self._names = (lr_name, hr_name)
        return config, lr, hr

    def params(self) -> dict[str, Any]:
        """The adjust controls as transform parameters."""
        return {
            "scale": self.scale.value(),
            "rotation_deg": self.rotation.value(),
            "shift_xy": (self.shift_x.value(), self.shift_y.value()),
            "flip_x": self.flip_x.isChecked(),
            "flip_y": self.flip_y.isChecked(),
        }

    def transform(self) -> Any:
        """The transform of the adjust controls: the estimate itself until one is edited (the
        spin boxes round it)."""
        from napari_xfusion.app.dualcam import adjusted_transform

        if not self.edited and self.pair is not None:
            return self.pair.transform
        shape = tuple(int(v) for v in self.prepared.hr.shape[1:])
        estimate = self.pair.report.transform if self.pair is not None else {}
        extras = {k: float(estimate[k]) for k in ("shear", "aspect") if k in estimate}
        return adjusted_transform(**self.params(), hr_shape=shape, **extras)

    def _show_params(self, params: dict[str, Any]) -> None:
        spins = (self.rotation, self.scale, self.shift_x, self.shift_y, self.flip_x, self.flip_y)
        for w in spins:
            w.blockSignals(True)
        self.rotation.setValue(float(params["rotation_deg"]))
        self.scale.setValue(float(params["scale"]))
        self.shift_x.setValue(float(params["shift_xy"][0]))
        self.shift_y.setValue(float(params["shift_xy"][1]))
        self.flip_x.setChecked(bool(params.get("flip_x")))
        self.flip_y.setChecked(bool(params.get("flip_y")))
        for w in spins:
            w.blockSignals(False)

    # ------------------------------------------------------------------ work
    def _start(self, function: Any, *args: Any, done: Any, what: str) -> bool:
        from napari.qt.threading import create_worker

        if self.running:
            return False
        worker = create_worker(_call, function, *args, _start_thread=False)
        worker.returned.connect(done)
        worker.finished.connect(self._on_finished)
        self.destroyed.connect(lambda *_, w=worker: _quit(w))
        self.worker, self.running = worker, True
        self.estimate_button.setEnabled(False)
        self._set_adjust_enabled(False)
        self.status.setText(what)
        worker.start()
        return True

    def estimate(self) -> bool:
        """Start the estimate in a worker thread; False when it did not start."""
        try:
            config, lr, hr = self.config()
        except (ValueError, KeyError) as exc:
            self.status.setText(f"Not started: {exc}")
            return False
        self.last_error = ""
        names = self._names
        return self._start(
            _estimate, config, lr, hr, names, done=self._on_estimate, what="Estimating…"
        )

    def accept(self) -> bool:
        """Align with the adjusted transform in a worker and add the aligned layers."""
        if self.prepared is None:
            self.status.setText("Estimate first")
            return False
        try:
            transform = self.transform()
        except ValueError as exc:
            self.status.setText(f"Not accepted: {exc}")
            return False
        self.last_error = ""
        return self._start(
            _accept, self.prepared, transform, done=self._on_accept, what="Aligning…"
        )

    def _report_problem(self, kind: str, result: Any, caught: list[str], what: str) -> bool:
        from napari.utils.notifications import show_warning

        for message in caught:
            show_warning(message)
        if kind == "ok":
            return False
        self.last_error = f"{what} failed: {result}"
        self.status.setText(self.last_error)
        return True

    def _on_estimate(self, value: tuple[str, Any, list[str]]) -> None:
        kind, result, caught = value
        if self._report_problem(kind, result, caught, "Estimate"):
            return
        self.prepared, self.pair = result
        self.edited = False
        report = self.pair.report
        notes = "".join(f"\nnote: {n}" for n in report.notes)
        self.result.setText(report.time_text() + "\n" + report.space_text() + notes)
        self._show_params(report.transform)
        self.key.blockSignals(True)
        self.key.setRange(0, int(self.prepared.hr.shape[0]) - 1)
        self.key.blockSignals(False)
        self.status.setText("Estimated: check the overlay, adjust if needed, then Accept")
        self.update_overlay()

    def _on_accept(self, value: tuple[str, Any, list[str]]) -> None:
        kind, result, caught = value
        if self._report_problem(kind, result, caught, "Accept"):
            return
        self.accepted = self.pair = result
        self.add_aligned_layers(result)
        path = self.save_transform.text().strip()
        if path:
            try:
                result.transform.save(Path(path).expanduser())
            except (OSError, ValueError) as exc:
                self.status.setText(f"Aligned, but the transform was not saved: {exc}")
                return
        saved = f"; transform saved to {path}" if path else ""
        self.status.setText(
            f"Aligned ({result.report.residual_lr_px:.3f} LR px residual): layers "
            f"{ALIGNED_LR!r} and {ALIGNED_HR!r} added{saved}"
        )

    def _on_finished(self) -> None:
        self.running = False
        self.worker = None
        self.estimate_button.setEnabled(True)
        self._set_adjust_enabled(self.prepared is not None)

    # ------------------------------------------------------------------ layers
    def _edit(self, *_: Any) -> None:
        self.edited = True
        self._schedule()

    def _schedule(self, *_: Any) -> None:
        if self.prepared is not None:
            self._timer.start()

    def update_overlay(self) -> Any:
        """Redraw the overlay check layer from the adjust controls (GUI thread; one key)."""
        from napari_xfusion.app.dualcam import overlay_preview

        if self.prepared is None:
            return None
        try:
            key = self.key.value()
            times = self.pair.report.key_times_frames if self.pair is not None else []
            when = float(times[key]) if key < len(times) else None
            preview = overlay_preview(
                self.prepared, self.transform(), key, time_frames=when, mode=self.mode.currentText()
            )
        except ValueError as exc:
            self.key_residual.setText(f"? ({exc})")
            return None
        where = f"LR time {when:.2f}" if when is not None else f"LR frame {preview.lr_index}"
        self.key_residual.setText(f"{preview.residual_lr_px:.3f} LR px ({where})")
        y0, _, x0, _ = preview.lr_crop
        # On the 4x grid of the LR crop; placed over a full-field LR layer shown x4.
        translate = (4.0 * y0, 4.0 * x0)
        if OVERLAY_LAYER in self.viewer.layers:
            layer = self.viewer.layers[OVERLAY_LAYER]
            layer.data = preview.image
            layer.translate = translate
        else:
            layer = self.viewer.add_image(
                preview.image,
                name=OVERLAY_LAYER,
                translate=translate,
                contrast_limits=(0.0, 1.0),
                metadata={META: {"role": "extra", "what": "registration overlay check"}},
            )
        return layer

    def add_aligned_layers(self, pair: Any) -> None:
        """Add (or replace) the aligned LR and HR key layers, roles set for the Fusion dock."""
        keys = [int(k) for k in pair.key_indices]
        for name in (ALIGNED_LR, ALIGNED_HR):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        scale, translate = lr_overlay_transform((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        report = pair.report.to_dict()
        self.viewer.add_image(
            pair.lr,
            name=ALIGNED_LR,
            scale=scale,
            translate=translate,
            contrast_limits=(0.0, 1.0),
            metadata={META: {"role": "lr", "binning": 4, "aligned": report}},
        )
        kwargs: dict[str, Any] = {}
        steps = np.diff(keys)
        if steps.size and np.all(steps == steps[0]):
            step = float(steps[0])
            kwargs = {
                "scale": (step, 1.0, 1.0),
                "translate": (keys[0] + key_hold_translate(step), 0.0, 0.0),
            }
        self.viewer.add_image(
            pair.hr_keys,
            name=ALIGNED_HR,
            contrast_limits=(0.0, 1.0),
            metadata={META: {"role": "hr_keys", "key_indices": keys}},
            **kwargs,
        )


def _quit(worker: Any) -> None:
    with suppress(RuntimeError):
        worker.quit()
