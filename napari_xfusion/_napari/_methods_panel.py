"""The methods part of the fusion dock: separation, one row per method, its options, device.

Built from the method registry (:func:`napari_xfusion.methods.registry.available_methods`:
builtins, entry-point plugins, ``register``-ed methods), so a new method appears here
without editing the dock: a checkbox with the spec's summary, a weights field when the spec
``needs_weights`` (``MethodChoice.weights``), its path options as file fields and its other
options behind an "options" toggle. Values that equal the declared defaults are not passed,
so a run's recorded options are only what the user chose. The panel reads and writes
:class:`~napari_xfusion.app.config.MethodChoice` objects.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

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
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._util import DeviceCombo
from napari_xfusion.app.config import MethodChoice, RunConfig
from napari_xfusion.methods.registry import MethodSpec, OptionSpec, available_methods

__all__ = ["MethodsPanel", "panel_options"]

_AUTO = "auto"


def panel_options(spec: MethodSpec) -> tuple[OptionSpec, ...]:
    """The options of ``spec`` shown per method: not those set once per run (an option named
    like a :class:`RunConfig` field, e.g. ``device``) nor those the :class:`MethodChoice`
    carries itself (``weights``, shown as its own field when ``spec.needs_weights``)."""
    own = {f.name for f in dataclasses.fields(RunConfig)} | {
        f.name for f in dataclasses.fields(MethodChoice)
    }
    return tuple(o for o in spec.options if o.name not in own)


def _option_widget(option: OptionSpec) -> QWidget:
    """An input for ``option``, showing its default; ``auto`` stands for None."""
    optional = option.default is None
    if option.type == "bool" and not optional:
        widget: QWidget = QCheckBox()
        widget.setChecked(bool(option.default))
    elif option.type == "bool" or option.choices:
        widget = QComboBox()
        items = ["on", "off"] if option.type == "bool" else [str(c) for c in option.choices]
        widget.addItems(([_AUTO] if optional else []) + items)
        if not optional:
            widget.setCurrentText(str(option.default))
    elif option.type == "int":
        widget = QSpinBox()
        widget.setRange(-1 if optional else -(10**6), 10**6)
        if optional:
            widget.setSpecialValueText(_AUTO)  # the minimum (-1) = None
        widget.setValue(-1 if optional else int(option.default))
    elif option.type == "float" and not optional:
        widget = QDoubleSpinBox()
        widget.setRange(-1e6, 1e6)
        widget.setDecimals(4)
        widget.setValue(float(option.default))
    else:
        widget = QLineEdit()
        widget.setPlaceholderText(_AUTO if optional else str(option.default))
    widget.setToolTip(option.help or option.name)
    return widget


def _read(option: OptionSpec, widget: QWidget) -> Any:
    """The widget's value, typed by the option (text goes through the registry's coercion)."""
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        text = widget.currentText()
        if text == _AUTO:
            return None
        if option.type == "bool":
            return text == "on"
        return next((c for c in option.choices or () if str(c) == text), text)
    if isinstance(widget, QSpinBox):
        value = widget.value()
        return None if option.default is None and value == widget.minimum() else value
    if isinstance(widget, QDoubleSpinBox):
        return widget.value()
    text = widget.text().strip()
    return text if text else option.default


def _write(option: OptionSpec, widget: QWidget, value: Any) -> None:
    if isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, QComboBox):
        text = _AUTO if value is None else value
        if option.type == "bool" and value is not None:
            text = "on" if value else "off"
        if widget.findText(str(text)) >= 0:
            widget.setCurrentText(str(text))
    elif isinstance(widget, QSpinBox):
        widget.setValue(widget.minimum() if value is None else int(value))
    elif isinstance(widget, QDoubleSpinBox):
        widget.setValue(float(value))
    elif isinstance(widget, QLineEdit):
        widget.setText("" if value is None or value == option.default else str(value))


class MethodsPanel(QGroupBox):
    """Separation, the method rows (checkbox, weights, file options, other options), device."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Fusion", parent)
        self.specs: dict[str, MethodSpec] = available_methods()
        form = QFormLayout(self)
        self.separation = QSpinBox()
        self.separation.setRange(0, 3)
        # 0 = the CLI's default: the LR file's separation metadata, else 1 (RunConfig None)
        self.separation.setSpecialValueText("auto")
        self.separation.setToolTip(
            "LR frame separation s: the LR inputs are t-s, t, t+s; auto: the LR layer's "
            "separation metadata (as the CLI reads it from the file), else 1"
        )
        form.addRow("LR separation s", self.separation)

        self.method_boxes: dict[str, QCheckBox] = {}
        self.weights: dict[str, QLineEdit] = {}
        self.option_widgets: dict[tuple[str, str], QWidget] = {}
        rows = QVBoxLayout()
        for spec in self.specs.values():
            rows.addWidget(self._method_row(spec))
        form.addRow(rows)
        next(iter(self.method_boxes.values())).setChecked(True)  # the first: bicubic

        self.device = DeviceCombo()
        self.device.setToolTip(
            "Where network methods run: auto = CUDA, then Apple MPS, then CPU. Other methods "
            "run on the CPU."
        )
        form.addRow("Device", self.device)

    # --- building -----------------------------------------------------------------------

    def _method_row(self, spec: MethodSpec) -> QWidget:
        row = QWidget()
        layout = QVBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        head = QHBoxLayout()
        check = QCheckBox(spec.name)
        keys = " Uses the HR keys." if spec.uses_hr_keys else " LR only."
        outputs = f" Also gives: {', '.join(spec.outputs)}." if spec.outputs else ""
        check.setToolTip(f"{spec.summary or spec.name}.{keys}{outputs}".replace("..", "."))
        self.method_boxes[spec.name] = check
        head.addWidget(check)
        head.addStretch()
        options = panel_options(spec)
        others = [o for o in options if o.type != "path"]
        details = QWidget()
        details_form = QFormLayout(details)
        details_form.setContentsMargins(18, 0, 0, 0)
        for option in others:
            widget = _option_widget(option)
            self.option_widgets[(spec.name, option.name)] = widget
            details_form.addRow(option.name, widget)
        details.setVisible(False)
        if others:
            toggle = QToolButton()
            toggle.setText("options")
            toggle.setCheckable(True)
            toggle.setToolTip(f"Show the options of {spec.name} ({len(others)})")
            toggle.toggled.connect(details.setVisible)
            head.addWidget(toggle)
        layout.addLayout(head)
        if spec.needs_weights:
            edit = self._path_row(layout, spec.name, "weights", "shipped weights")
            edit.setToolTip(f"{spec.name} checkpoint file. Empty = the shipped weights.")
            self.weights[spec.name] = edit
            check.toggled.connect(lambda on, n=spec.name: on and self.update_weights_hint(n))
        for option in options:
            if option.type == "path":
                edit = self._path_row(layout, spec.name, option.name, _AUTO)
                edit.setToolTip(f"{spec.name} {option.name}: {option.help or 'a file'}")
                self.option_widgets[(spec.name, option.name)] = edit
        layout.addWidget(details)
        return row

    def _path_row(self, layout: QVBoxLayout, method: str, label: str, empty: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setPlaceholderText(empty)
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip(f"Choose the {label} file of {method}")
        browse.clicked.connect(lambda _=False: self._choose_file(edit, f"{method} {label}"))
        row = QHBoxLayout()
        row.setContentsMargins(18, 0, 0, 0)
        row.addWidget(QLabel(label))
        row.addWidget(edit)
        row.addWidget(browse)
        layout.addLayout(row)
        return edit

    def option_widget(self, method: str, option: str) -> QWidget:
        """The input of ``method``'s ``option``."""
        return self.option_widgets[(method, option)]

    # --- values -------------------------------------------------------------------------

    def selected_methods(self) -> list[str]:
        """Ticked methods, in registry order."""
        return [name for name, box in self.method_boxes.items() if box.isChecked()]

    def options_for(self, method: str) -> dict[str, Any]:
        """The options of ``method`` that differ from their declared defaults.

        Raises ``ValueError`` naming the file when a path option names no file.
        """
        out: dict[str, Any] = {}
        for option in panel_options(self.specs[method]):
            value = _read(option, self.option_widgets[(method, option.name)])
            if option.type == "path" and value and not Path(value).is_file():
                raise ValueError(f"{method} {option.name} file {value} does not exist")
            if value != option.default:
                out[option.name] = value
        return out

    def choice(self, method: str) -> MethodChoice:
        """The :class:`MethodChoice` of ``method`` (options checked by the registry)."""
        weights = self.weights[method].text().strip() if method in self.weights else ""
        if weights and not Path(weights).is_file():
            raise ValueError(f"{method} weights file {weights} does not exist: choose another")
        return MethodChoice(method, self.options_for(method), weights=weights or None)

    def choices(self) -> tuple[MethodChoice, ...]:
        """One :class:`MethodChoice` per ticked method, in registry order."""
        return tuple(self.choice(name) for name in self.selected_methods())

    def apply(self, config: RunConfig) -> list[str]:
        """Set the widgets from ``config`` (separation, device, methods and their options);
        returns what could not be shown (a method not installed here)."""
        skipped = [m.name for m in config.methods if m.name not in self.method_boxes]
        wanted = {m.name: m for m in config.methods if m.name in self.method_boxes}
        if wanted:
            for name, box in self.method_boxes.items():
                box.setChecked(name in wanted)
        self.separation.setValue(config.separation or 0)
        if config.device not in (_AUTO, "cpu"):
            self.device.probe()
        if self.device.findText(config.device) < 0:
            self.device.addItem(config.device)  # checked again when the run starts
        self.device.setCurrentText(config.device)
        for name in self.method_boxes:
            choice = wanted.get(name)
            given = dict(choice.options) if choice is not None else {}
            for option in panel_options(self.specs[name]):
                widget = self.option_widgets[(name, option.name)]
                _write(option, widget, given.get(option.name, option.default))
            if name in self.weights:
                weights = choice.weights if choice is not None else None
                self.weights[name].setText(weights or "")
        return skipped

    # --- file options -------------------------------------------------------------------

    def update_weights_hint(self, method: str) -> None:
        """Say in the weights field whether ``method``'s default weights exist here
        (``MethodSpec.default_weights``)."""
        edit = self.weights.get(method)
        default = self.specs[method].default_weights
        if edit is None or default is None:
            return
        if Path(default).is_file():
            edit.setPlaceholderText("shipped weights")
        else:
            edit.setPlaceholderText("none shipped here: choose a checkpoint file (…)")

    def _choose_file(self, edit: QLineEdit, title: str) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, title, "", "PyTorch checkpoints (*.pt *.pth *.ckpt);;All (*)"
        )
        if name:
            edit.setText(name)
