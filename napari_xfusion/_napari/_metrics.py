"""Metrics dock: PSNR / AAD / SSIM against the ground truth, per frame and per method, live.

A summary table (mean per method) above a per-frame table; both copy to the clipboard as
tab-separated text (pastes into a spreadsheet) and save as CSV.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractScrollArea,
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._dock import SessionDock
from napari_xfusion._napari._session import FrameRecord, rows_to_csv

if TYPE_CHECKING:
    import napari

__all__ = ["MetricsWidget"]

_COLUMNS = {"psnr": "PSNR (dB)", "aad": "AAD", "ssim": "SSIM"}
_FORMATS = {"psnr": "{:.2f}", "aad": "{:.4f}", "ssim": "{:.4f}"}


class _Item(QTableWidgetItem):
    """A cell showing a rounded value that sorts by the exact one (frame 10 after frame 9)."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)):
            return mine < theirs
        return str(mine) < str(theirs)


def _cell(value: Any, key: str) -> QTableWidgetItem:
    if isinstance(value, float):
        text = "" if math.isnan(value) else _FORMATS.get(key, "{:.4g}").format(value)
    else:
        text = str(value)
    item = _Item(text)
    item.setData(Qt.ItemDataRole.UserRole, value)  # the unrounded value, for sorting and navigation
    return item


class MetricsWidget(SessionDock):
    """Dock with the per-frame and summary metrics of every method run against ground truth."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)

        self.summary = QTableWidget(0, 2 + len(_COLUMNS))
        self.summary.setHorizontalHeaderLabels(["method", "frames", *_COLUMNS.values()])
        self.frames = QTableWidget(0, 2 + len(_COLUMNS))
        self.frames.setHorizontalHeaderLabels(["frame", "method", *_COLUMNS.values()])
        for table in (self.summary, self.frames):
            table.verticalHeader().setVisible(False)
            table.setToolTip("Metrics against the ground truth on the [0, 1] scale")
            table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
            table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.summary.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.summary.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.frames.itemDoubleClicked.connect(self._on_double_click)
        self.frames.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self._rows: dict[tuple[str, int], QTableWidgetItem] = {}  # (method, frame) -> cell 0

        self.note = QLabel("Metrics need a ground truth: run on the sample or in simulate mode.")
        self.note.setWordWrap(True)
        copy = QPushButton("Copy")
        copy.setToolTip("Copy the per-frame metrics as tab-separated text")
        copy.clicked.connect(self.copy_to_clipboard)
        save = QPushButton("Save CSV…")
        save.setToolTip("Save the per-frame metrics and the per-method means as CSV files")
        save.clicked.connect(self._save_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(copy)
        buttons.addWidget(save)
        buttons.addStretch()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.note)
        layout.addWidget(QLabel("Mean per method"))
        layout.addWidget(self.summary)
        layout.addWidget(QLabel("Per frame (double-click a row to go to the frame)"))
        layout.addWidget(self.frames)
        layout.addLayout(buttons)

        self.connect_session()
        self.refresh()

    def on_started(self, *_: Any) -> None:
        self.refresh()

    def on_frames(self, records: list[FrameRecord]) -> None:
        measured = [r for r in records if r.metrics is not None]
        if not measured:
            return
        self.frames.setUpdatesEnabled(False)  # one repaint for the batch
        for record in measured:
            self._set_row({"method": record.method, "frame": record.index, **record.metrics})
        self.frames.setUpdatesEnabled(True)
        self._refresh_summary()

    def _set_row(self, row: dict[str, Any]) -> None:
        """Add one frame's row (or update it when the frame was run again), kept sorted."""
        self.frames.setSortingEnabled(False)  # Qt: fill a row, then let it sort once
        key = (row["method"], row["frame"])
        anchor = self._rows.get(key)
        if anchor is None or anchor.tableWidget() is not self.frames:
            index = self.frames.rowCount()
            self.frames.insertRow(index)
        else:
            index = anchor.row()
        self._rows[key] = first = _cell(row["frame"], "frame")
        self.frames.setItem(index, 0, first)
        self.frames.setItem(index, 1, _cell(row["method"], "method"))
        for j, name in enumerate(_COLUMNS, start=2):
            self.frames.setItem(index, j, _cell(row[name], name))
        self.frames.setSortingEnabled(True)
        self.note.setVisible(False)

    def refresh(self, *_: Any) -> None:
        """Rebuild both tables from the session (after a run with new inputs)."""
        self.frames.setSortingEnabled(False)
        self.frames.setRowCount(0)
        self._rows.clear()
        rows = self.session.metrics_rows()
        for row in rows:
            self._set_row(row)
        self.note.setVisible(not rows)
        self._refresh_summary()

    def _refresh_summary(self) -> None:
        summary = self.session.metrics_summary()
        self.summary.setRowCount(len(summary))
        for i, row in enumerate(summary):
            self.summary.setItem(i, 0, _cell(row["method"], "method"))
            self.summary.setItem(i, 1, _cell(row["frames"], "frames"))
            for j, key in enumerate(_COLUMNS, start=2):
                self.summary.setItem(i, j, _cell(row[key], key))
        self._fit_summary()

    def _fit_summary(self) -> None:
        """Show every summary row (a handful) without a scroll bar."""
        table = self.summary
        height = table.horizontalHeader().height() + 2 * table.frameWidth()
        height += sum(table.rowHeight(i) for i in range(table.rowCount()))
        table.setFixedHeight(height)

    def csv_text(self, delimiter: str = ",") -> str:
        """The per-frame metrics as CSV text (``method,frame,psnr,aad,ssim``)."""
        return rows_to_csv(self.session.metrics_rows(), delimiter)

    def copy_to_clipboard(self) -> None:
        """Copy the per-frame metrics, tab-separated, to the clipboard."""
        QApplication.clipboard().setText(self.csv_text("\t"))

    def save_csv(self, path: str | Path) -> Path:
        """Write the per-frame metrics and the summary (``<name>_summary.csv``) to ``path``."""
        from napari_xfusion.core.io import write_text_atomic

        path = Path(path)
        write_text_atomic(path, self.csv_text())
        summary = path.with_name(f"{path.stem}_summary{path.suffix or '.csv'}")
        write_text_atomic(summary, rows_to_csv(self.session.metrics_summary()))
        return path

    def _save_dialog(self) -> None:
        from napari.utils.notifications import show_error, show_info

        if not self.session.metrics_rows():
            show_info("No metrics yet: run a method with a ground truth first.")
            return
        name, _ = QFileDialog.getSaveFileName(self, "Save metrics", "metrics.csv", "CSV (*.csv)")
        if not name:
            return
        try:
            path = self.save_csv(name)
        except OSError as exc:
            show_error(f"Could not save the metrics to {name}: {exc}. Choose another folder.")
            return
        show_info(f"Metrics saved to {path}")

    def _on_double_click(self, item: QTableWidgetItem) -> None:
        frame = self.frames.item(item.row(), 0)
        if frame is not None:
            self.viewer.dims.set_point(
                0, self.session.world_time(int(frame.data(Qt.ItemDataRole.UserRole)))
            )
