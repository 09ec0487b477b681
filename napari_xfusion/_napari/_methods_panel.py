"""The methods part of the fusion dock: separation, one row per method, its options, device.

Built from :func:`~napari_xfusion._napari._method_info.method_infos` (the registered methods
and their classes' keyword options), so a new method appears here without editing the dock:
a checkbox with the class's one-line description, its file options (weights) as path fields,
its other options behind an "options" toggle. Values that equal the class defaults are not
passed, so a run's recorded options are only what the user chose.
"""

from __future__ import annotations

import importlib
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

from napari_xfusion._napari._method_info import MethodInfo, OptionInfo, method_infos, parse_value
from napari_xfusion._napari._util import DeviceCombo
from napari_xfusion.methods import METHODS

__all__ = ["MethodsPanel"]

_AUTO = "auto"


def _option_widget(option: OptionInfo) -> QWidget:
    """An input for ``option``, showing its default; ``auto`` stands for None."""
    tip = option.help or option.name
    if option.kind == "bool" and not option.optional:
        widget: QWidget = QCheckBox()
        widget.setChecked(bool(option.default))
    elif option.kind in ("bool", "choice"):
        widget = QComboBox()
        items = ["on", "off"] if option.kind == "bool" else list(option.choices)
        widget.addItems(([_AUTO] if option.optional else []) + items)
        default = option.default
        text = _AUTO if default is None else ("on" if default else "off")
        widget.setCurrentText(str(default) if option.kind == "choice" and default else text)
    elif option.kind == "int":
        widget = QSpinBox()
        widget.setRange(0 if option.optional else -(10**6), 10**6)
        if option.optional:
            widget.setSpecialValueText(_AUTO)  # 0 = None
        widget.setValue(int(option.default or 0))
    elif option.kind == "float":
        widget = QDoubleSpinBox()
        widget.setRange(-1e6, 1e6)
        widget.setDecimals(3)
        widget.setValue(float(option.default or 0.0))
    else:
        widget = QLineEdit()
        widget.setPlaceholderText(_AUTO if option.default is None else repr(option.default))
    widget.setToolTip(tip)
    return widget


def _read(option: OptionInfo, widget: QWidget) -> Any:
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        text = widget.currentText()
        if text == _AUTO:
            return None
        return text == "on" if option.kind == "bool" else text
    if isinstance(widget, QSpinBox):
        value = widget.value()
        return None if option.optional and value == 0 else value
    if isinstance(widget, QDoubleSpinBox):
        return widget.value()
    return parse_value(option, widget.text()) if widget.text().strip() else option.default


def _write(option: OptionInfo, widget: QWidget, value: Any) -> None:
    if isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))
    elif isinstance(widget, QComboBox):
        text = _AUTO if value is None else value
        if option.kind == "bool" and value is not None:
            text = "on" if value else "off"
        if widget.findText(str(text)) >= 0:
            widget.setCurrentText(str(text))
    elif isinstance(widget, QSpinBox):
        widget.setValue(0 if value is None else int(value))
    elif isinstance(widget, QDoubleSpinBox):
        widget.setValue(float(value))
    elif isinstance(widget, QLineEdit):
        widget.setText("" if value is None or value == option.default else repr(value))


class MethodsPanel(QGroupBox):
    """Separation, the method rows (checkbox, file options, other options), device."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Fusion", parent)
        self.infos: dict[str, MethodInfo] = {info.name: info for info in method_infos()}
        form = QFormLayout(self)
        self.separation = QSpinBox()
        self.separation.setRange(1, 3)
        self.separation.setToolTip("LR frame separation s: the LR inputs are t-s, t, t+s")
        form.addRow("LR separation s", self.separation)

        self.method_boxes: dict[str, QCheckBox] = {}
        self.paths: dict[tuple[str, str], QLineEdit] = {}
        self.option_widgets: dict[tuple[str, str], QWidget] = {}
        rows = QVBoxLayout()
        for info in self.infos.values():
            rows.addWidget(self._method_row(info))
        form.addRow(rows)
        if "bicubic" in self.method_boxes:
            self.method_boxes["bicubic"].setChecked(True)
        else:
            next(iter(self.method_boxes.values())).setChecked(True)

        self.device = DeviceCombo()
        self.device.setToolTip(
            "Where network methods run: auto = CUDA, then Apple MPS, then CPU. Other methods "
            "run on the CPU."
        )
        form.addRow("Device", self.device)

    # --- building -----------------------------------------------------------------------

    def _method_row(self, info: MethodInfo) -> QWidget:
        row = QWidget()
        layout = QVBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        head = QHBoxLayout()
        check = QCheckBox(info.name)
        keys = {True: " Uses the HR keys.", False: " LR only.", None: ""}[info.uses_hr_keys]
        check.setToolTip(f"{info.summary}{keys}")
        self.method_boxes[info.name] = check
        head.addWidget(check)
        head.addStretch()
        others = [o for o in info.options if o.kind != "path"]
        details = QWidget()
        details_form = QFormLayout(details)
        details_form.setContentsMargins(18, 0, 0, 0)
        for option in others:
            widget = _option_widget(option)
            self.option_widgets[(info.name, option.name)] = widget
            details_form.addRow(option.name, widget)
        details.setVisible(False)
        if others:
            toggle = QToolButton()
            toggle.setText("options")
            toggle.setCheckable(True)
            toggle.setToolTip(f"Show the options of {info.name} ({len(others)})")
            toggle.toggled.connect(details.setVisible)
            head.addWidget(toggle)
        layout.addLayout(head)
        for option in info.options:
            if option.kind == "path":
                layout.addLayout(self._path_row(info.name, option))
        layout.addWidget(details)
        if any(o.kind == "path" for o in info.options):
            check.toggled.connect(lambda on, n=info.name: on and self.update_weights_hint(n))
        return row

    def _path_row(self, method: str, option: OptionInfo) -> QHBoxLayout:
        edit = QLineEdit()
        edit.setPlaceholderText("shipped weights" if option.name == "weights" else "none")
        edit.setToolTip(f"{method} {option.name}: {option.help or 'a file'} Empty = default.")
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip(f"Choose the {option.name} file of {method}")
        browse.clicked.connect(lambda _=False: self._choose_file(method, option.name))
        row = QHBoxLayout()
        row.setContentsMargins(18, 0, 0, 0)
        row.addWidget(QLabel(option.name))
        row.addWidget(edit)
        row.addWidget(browse)
        self.paths[(method, option.name)] = edit
        self.option_widgets[(method, option.name)] = edit
        return row

    @property
    def weights(self) -> dict[str, QLineEdit]:
        """The ``weights`` path field of each method that takes one."""
        return {m: edit for (m, name), edit in self.paths.items() if name == "weights"}

    def option_widget(self, method: str, option: str) -> QWidget:
        """The input of ``method``'s ``option``."""
        return self.option_widgets[(method, option)]

    # --- values -------------------------------------------------------------------------

    def selected_methods(self) -> list[str]:
        """Ticked methods, in registry order."""
        return [name for name, box in self.method_boxes.items() if box.isChecked()]

    def options_for(self, method: str) -> dict[str, Any]:
        """The options of ``method`` that differ from its class defaults.

        Raises ``ValueError`` naming the file when a path option names no file.
        """
        out: dict[str, Any] = {}
        for option in self.infos[method].options:
            widget = self.option_widgets[(method, option.name)]
            if option.kind == "path":
                path = widget.text().strip()
                if path and not Path(path).is_file():
                    raise ValueError(
                        f"{method} {option.name} file {path} does not exist: choose another"
                    )
                if path:
                    out[option.name] = path
                continue
            value = _read(option, widget)
            if value != option.default:
                out[option.name] = value
        return out

    def state(self) -> dict[str, Any]:
        """JSON-able values to remember (methods, separation, device, every option)."""
        options = {}
        for (method, name), widget in self.option_widgets.items():
            option = self.infos[method].option(name)
            if option is not None:
                value = widget.text() if option.kind == "path" else _read(option, widget)
                options[f"{method}.{name}"] = value
        return {
            "methods": self.selected_methods(),
            "separation": self.separation.value(),
            "device": self.device.currentText(),
            "options": options,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Set the widgets from :meth:`state`'s dict; unknown keys are ignored."""
        methods = [m for m in state.get("methods", []) if m in self.method_boxes]
        if methods:
            for name, box in self.method_boxes.items():
                box.setChecked(name in methods)
        self.separation.setValue(int(state.get("separation", 1)))
        device = str(state.get("device", _AUTO))
        if device not in (_AUTO, "cpu"):
            self.device.probe()
        if self.device.findText(device) >= 0:
            self.device.setCurrentText(device)
        for key, value in dict(state.get("options", {})).items():
            method, _, name = key.partition(".")
            widget = self.option_widgets.get((method, name))
            option = self.infos[method].option(name) if method in self.infos else None
            if widget is None or option is None:
                continue
            try:
                if option.kind == "path":
                    widget.setText(str(value or ""))
                else:
                    _write(option, widget, value)
            except (TypeError, ValueError):
                continue  # a value from an older version of the method: keep the default

    # --- file options -------------------------------------------------------------------

    def update_weights_hint(self, method: str) -> None:
        """Say in the weights field whether default weights of ``method`` exist here.

        Asked when the method is ticked: it imports the method's module (torch for the
        networks), which docking the widget does not pay for. The module may offer
        ``shipped_weights(name) -> Path``.
        """
        edit = self.weights.get(method)
        if edit is None:
            return
        module_name = METHODS[method].split(":")[0]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            edit.setPlaceholderText(f"unavailable: {exc}")
            return
        shipped = getattr(module, "shipped_weights", None)
        if shipped is None:
            return
        if shipped(method).is_file():
            edit.setPlaceholderText("shipped weights")
        else:
            edit.setPlaceholderText("none shipped here: choose a checkpoint file (…)")

    def _choose_file(self, method: str, option: str) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, f"{method} {option}", "", "PyTorch checkpoints (*.pt *.pth *.ckpt);;All (*)"
        )
        if name:
            self.paths[(method, option)].setText(name)
