"""The controls of the "Register cameras" dock (:mod:`._register`): one camera's stack and
times (:class:`_Camera`), and the settings, adjust and accept boxes the dock is built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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

if TYPE_CHECKING:
    import napari

FILE = "(file)"


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


class _RegisterControls(QWidget):
    """The boxes of :class:`~._register.RegisterWidget` (its ``_edit``, ``_schedule`` and
    ``accept`` are what the controls call)."""

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
