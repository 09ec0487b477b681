"""The results part of the fusion dock: side by side, change views, extra outputs, export.

Side by side puts the LR stream, every fused layer (each followed by its change views) and
the ground truth in napari's grid, in that order, with linked contrast limits, and fits the
camera to the cells. Export writes the ticked fused stacks and the CSVs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._layers import (
    CHANGE_MODES,
    add_change_view,
    fused_layers,
    meta,
    role,
    side_by_side,
)
from napari_xfusion.methods import METHODS

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["ResultsPanel"]

_CHECKED = Qt.CheckState.Checked
_UNCHECKED = Qt.CheckState.Unchecked


class ResultsPanel(QGroupBox):
    """Comparison views and export of the fused layers of one viewer."""

    def __init__(
        self,
        viewer: napari.Viewer,
        comparison_layers: Callable[[], list[Layer]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Results", parent)
        self.viewer = viewer
        self._comparison_layers = comparison_layers
        self._visibility: dict[str, bool] | None = None  # restored when leaving side by side
        layout = QVBoxLayout(self)
        self.side_by_side_button = QPushButton("Side by side")
        self.side_by_side_button.setCheckable(True)
        self.side_by_side_button.setToolTip(
            "LR, every fused layer (with its change views) and the ground truth in a grid, "
            "contrast limits linked, one time slider"
        )
        self.side_by_side_button.toggled.connect(self.show_side_by_side)
        self.change_mode = QComboBox()
        self.change_mode.setToolTip("Which change from the previous frame to show")
        for mode, label in CHANGE_MODES.items():
            self.change_mode.addItem(label, mode)
        change = QPushButton("Add change view")
        change.setToolTip("Change from the previous frame of every fused and selected layer")
        change.clicked.connect(self.add_change_views)
        row = QHBoxLayout()
        row.addWidget(self.change_mode)
        row.addWidget(change)
        self.show_extras = QCheckBox("extra outputs as layers (uncertainty, confidence)")
        self.show_extras.setToolTip(
            "Methods with per-pixel extra outputs fill a layer for each: 'uncertainty "
            "[bayesian]' (posterior s.d., 0 at the HR keys), a confidence map, ..."
        )
        self.export_list = QListWidget()
        self.export_list.setMaximumHeight(80)
        self.export_list.setToolTip("Fused stacks to export (tick or untick)")
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
        layout.addWidget(self.show_extras)
        layout.addWidget(QLabel("Export"))
        layout.addWidget(self.export_list)
        export_row = QHBoxLayout()
        export_row.addWidget(self.detector_units)
        export_row.addWidget(export)
        layout.addLayout(export_row)
        self.study_button = QPushButton("Study...")
        self.study_button.setToolTip(
            "Open the Study dock: the paper's noise / key-step / separation sweeps over the "
            "methods, with frames.csv, figures and summary.md"
        )
        self.study_button.clicked.connect(self.open_study)
        layout.addWidget(self.study_button)

    # --- side by side -------------------------------------------------------------------

    def _set_button(self, checked: bool) -> None:
        if self.side_by_side_button.isChecked() != checked:
            self.side_by_side_button.blockSignals(True)
            self.side_by_side_button.setChecked(checked)
            self.side_by_side_button.blockSignals(False)

    def show_side_by_side(self, enable: bool = True) -> None:
        """Grid view of LR, each method (and its change views) and the truth."""
        from napari.utils.notifications import show_info

        if enable and not fused_layers(self.viewer):
            show_info("Nothing to compare yet: run a method first.")
            self._set_button(False)
            return
        layers = self._comparison_layers()
        if enable and self._visibility is None:
            self._visibility = {layer.name: layer.visible for layer in self.viewer.layers}
        side_by_side(self.viewer, layers, enable)
        if enable:
            self.viewer.reset_view()  # each cell shows its whole image, not a corner
        elif self._visibility is not None:
            for name, visible in self._visibility.items():
                if name in self.viewer.layers:
                    self.viewer.layers[name].visible = visible
            self._visibility = None
        self._set_button(enable)

    def add_change_views(self) -> list[Layer]:
        """Add a change view (the chosen mode) of every fused layer and of the selected ones."""
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
        if added and self.side_by_side_button.isChecked():
            self.show_side_by_side(True)  # the new views join the grid
        return added

    def open_study(self) -> Any:
        """Dock the study widget (or return the one already docked)."""
        from napari_xfusion._napari._study import open_study_dock

        return open_study_dock(self.viewer)

    # --- export -------------------------------------------------------------------------

    def refresh_export_list(self) -> None:
        """List the fused layers (registry order); new ones ticked, others as they were."""
        items = [self.export_list.item(i) for i in range(self.export_list.count())]
        ticked = {item.text() for item in items if item.checkState() == _CHECKED}
        known = {item.text() for item in items}
        order = {name: i for i, name in enumerate(METHODS)}
        layers = sorted(
            fused_layers(self.viewer),
            key=lambda layer: order.get(meta(layer).get("method"), len(order)),
        )
        self.export_list.clear()
        for layer in layers:
            method = meta(layer).get("method", layer.name)
            item = QListWidgetItem(method)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            new = method not in known
            item.setCheckState(_CHECKED if new or method in ticked else _UNCHECKED)
            self.export_list.addItem(item)

    def export_methods(self) -> list[str]:
        """Methods ticked in the export list."""
        return [
            self.export_list.item(i).text()
            for i in range(self.export_list.count())
            if self.export_list.item(i).checkState() == _CHECKED
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

    def units(self) -> str:
        """Export units of the run configuration: ``"detector"`` or ``"float"``."""
        return "detector" if self.detector_units.isChecked() else "float"

    def set_units(self, units: str) -> None:
        """Tick "detector units" for a configuration's ``units="detector"``."""
        self.detector_units.setChecked(units == "detector")

    def state(self) -> dict[str, Any]:
        """JSON-able view values to remember (not part of a run)."""
        return {"extras": self.show_extras.isChecked()}

    def restore(self, state: dict[str, Any]) -> None:
        """Set the widgets from :meth:`state`'s dict."""
        self.show_extras.setChecked(bool(state.get("extras", False)))


def comparison_layers(viewer: napari.Viewer, lr: Layer | None, truth: Layer | None) -> list[Layer]:
    """``lr``, each fused layer followed by its extra outputs and change views, ``truth``
    (the grid order of side by side; absent layers are skipped)."""
    names = [layer.name for layer in viewer.layers]
    layers = [lr] if lr is not None and lr.name in names else []
    for fused in fused_layers(viewer):
        layers.append(fused)
        method = meta(fused).get("method")
        for layer in viewer.layers:
            entry = layer.metadata.get("xfusion", {})
            if not isinstance(entry, dict):
                continue
            output = entry.get("role") in ("uncertainty", "extra") and entry.get("method") == method
            if output or (entry.get("role") == "change" and entry.get("source") == fused.name):
                layers.append(layer)
    if truth is not None and truth.name in names:
        layers.append(truth)
    return layers
