"""Metrics dock: PSNR / AAD / SSIM against the ground truth, per frame and per method, live.

It renders the session's :class:`~napari_xfusion.app.results.ResultTable` - the rows and the
summary the CLI prints and ``xfusion evaluate`` computes from an export: mean and median over
the frames between keys, key frames apart, an identical frame (PSNR undefined) blank, never
``inf``. Both tables copy to the clipboard as tab-separated text and save as CSV (the app
layer's CSV). Below them, :class:`~napari_xfusion._napari._validation.ValidationPanel`
measures accuracy without a ground truth (leave-one-key-out, LR consistency).
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
from napari_xfusion._napari._session import FrameRecord
from napari_xfusion._napari._util import hold_updates
from napari_xfusion._napari._validation import ValidationPanel
from napari_xfusion.app.results import METRICS, ResultTable

if TYPE_CHECKING:
    import napari

__all__ = ["MetricsWidget"]

_COLUMNS = {"psnr": "PSNR (dB)", "aad": "AAD", "ssim": "SSIM"}
_FORMATS = {"psnr": "{:.2f}", "aad": "{:.4f}", "ssim": "{:.4f}"}
_SUMMARY = {
    "method": "method",
    "frames_between_keys": "frames",
    **{f"{m}_{stat}": f"{_COLUMNS[m]} {stat}" for m in METRICS for stat in ("mean", "median")},
    "key_psnr_mean": "key PSNR",
}
_FRAME = {"index": "frame", "method": "method", "is_key": "key", **_COLUMNS}


class _Item(QTableWidgetItem):
    """A cell showing a rounded value that sorts by the exact one (frame 10 after frame 9)."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if isinstance(mine, (int, float)) and isinstance(theirs, (int, float)):
            return mine < theirs
        return str(mine) < str(theirs)


def _cell(value: Any, key: str) -> QTableWidgetItem:
    if isinstance(value, bool):
        text = "key" if value else ""
    elif isinstance(value, float):
        metric = key.removeprefix("key_").split("_")[0]  # psnr_mean, key_psnr_mean -> psnr
        fmt = _FORMATS.get(metric, "{:.4g}")
        text = "" if not math.isfinite(value) else fmt.format(value)
    else:
        text = str(value)
    item = _Item(text)
    item.setData(Qt.ItemDataRole.UserRole, value)  # the unrounded value, for sorting and navigation
    return item


class MetricsWidget(SessionDock):
    """Dock with the per-frame and summary metrics of every method run against ground truth."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)

        self.summary = QTableWidget(0, len(_SUMMARY))
        self.summary.setHorizontalHeaderLabels(list(_SUMMARY.values()))
        self.summary.setToolTip(
            "Mean and median over the frames between keys (key frames: 'key PSNR'), on the "
            "[0, 1] scale; the same numbers as the CLI's summary and xfusion evaluate"
        )
        self.frames = QTableWidget(0, len(_FRAME))
        self.frames.setHorizontalHeaderLabels(list(_FRAME.values()))
        self.frames.setToolTip("Metrics against the ground truth on the [0, 1] scale")
        for table in (self.summary, self.frames):
            table.verticalHeader().setVisible(False)
            table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
            table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        # Eleven summary columns do not fit a dock's width: size them to their contents and
        # scroll sideways, rather than squeezing every number to "0...".
        self.summary.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents
        )
        # Its height is set to its rows (_fit_summary); a size hint that followed the
        # contents made every new mean re-lay the dock and the main window out (three window
        # updates per batch of frames instead of one).
        self.summary.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustIgnored)
        self.summary.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.frames.itemDoubleClicked.connect(self._on_double_click)
        self.frames.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self._rows: dict[tuple[str, int], QTableWidgetItem] = {}  # (method, frame) -> cell 0

        self.note = QLabel(
            "Metrics need a ground truth: run on the sample or in simulate mode. Without one, "
            "'Validate (leave-one-key-out)' below scores each method on the HR keys."
        )
        self.note.setWordWrap(True)
        copy = QPushButton("Copy")
        copy.setToolTip("Copy the per-frame metrics as tab-separated text")
        copy.clicked.connect(self.copy_to_clipboard)
        save = QPushButton("Save CSV…")
        save.setToolTip("Save the per-frame metrics and the per-method summary as CSV files")
        save.clicked.connect(self._save_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(copy)
        buttons.addWidget(save)
        buttons.addStretch()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.note)
        layout.addWidget(QLabel("Per method, frames between keys"))
        layout.addWidget(self.summary)
        layout.addWidget(QLabel("Per frame (double-click a row to go to the frame)"))
        layout.addWidget(self.frames)
        layout.addLayout(buttons)
        self.validation = ValidationPanel(napari_viewer)
        layout.addWidget(self.validation)

        self.connect_session()
        self.refresh()

    @property
    def table(self) -> ResultTable:
        """The session's result table (what both tables show)."""
        return self.session.table

    def measured_rows(self) -> list[FrameRecord]:
        """Rows with metrics, by method then frame."""
        return [r for r in self.table.rows() if r.has_metrics]

    def summary_rows(self) -> list[dict[str, Any]]:
        """The table's summary of the methods with metrics (what the summary shows)."""
        measured = {r.method for r in self.measured_rows()}
        return [row for row in self.table.summary() if row["method"] in measured]

    def on_started(self, *_: Any) -> None:
        self.refresh()

    def on_frames(self, records: list[FrameRecord]) -> None:
        measured = [r for r in records if r.has_metrics]
        if not measured:
            return
        hold_updates(self.frames, self.summary)  # one repaint, with the rest of the batch
        self.frames.setSortingEnabled(False)  # Qt: fill the rows, then let it sort once
        for record in measured:
            self._set_row(record)
        self.frames.setSortingEnabled(True)
        self._refresh_summary()

    def _set_row(self, row: FrameRecord) -> None:
        """Add one frame's row (or update it when the frame was run again); the caller turns
        sorting off around a batch of them."""
        key = (row.method, row.index)
        anchor = self._rows.get(key)
        if anchor is None or anchor.tableWidget() is not self.frames:
            index = self.frames.rowCount()
            self.frames.insertRow(index)
        else:
            index = anchor.row()
        for j, name in enumerate(_FRAME):
            cell = _cell(getattr(row, name), name)
            self.frames.setItem(index, j, cell)
            if j == 0:
                self._rows[key] = cell
        self.note.setVisible(False)

    def refresh(self, *_: Any) -> None:
        """Rebuild both tables from the session (after a run with new inputs)."""
        self.frames.setSortingEnabled(False)
        self.frames.setRowCount(0)
        self._rows.clear()
        rows = self.measured_rows()
        for row in rows:
            self._set_row(row)
        self.frames.setSortingEnabled(True)
        self.note.setVisible(not rows)
        self._refresh_summary()

    def _refresh_summary(self) -> None:
        summary = self.summary_rows()
        self.summary.setRowCount(len(summary))
        for i, row in enumerate(summary):
            for j, key in enumerate(_SUMMARY):
                self.summary.setItem(i, j, _cell(row[key], key))
        self._fit_summary()

    def _fit_summary(self) -> None:
        """Show every summary row (a handful) without a scroll bar."""
        table = self.summary
        height = table.horizontalHeader().height() + 2 * table.frameWidth()
        height += sum(table.rowHeight(i) for i in range(table.rowCount()))
        # Room for the sideways scroll bar, so that it never covers the last row.
        height += table.horizontalScrollBar().sizeHint().height()
        table.setFixedHeight(height)

    def csv_text(self, delimiter: str = ",") -> str:
        """The per-frame rows as the app layer's CSV text (tab-separated with ``"\t"``)."""
        text = self.table.to_csv_text() if self.measured_rows() else ""
        return text.replace(",", delimiter) if delimiter != "," else text

    def copy_to_clipboard(self) -> None:
        """Copy the per-frame metrics, tab-separated, to the clipboard."""
        QApplication.clipboard().setText(self.csv_text("\t"))

    def save_csv(self, path: str | Path) -> Path:
        """Write the per-frame rows and the summary (``<name>_summary.csv``) to ``path``."""
        from napari_xfusion.app.results import rows_to_csv_text
        from napari_xfusion.core.io import write_text_atomic

        path = Path(path)
        write_text_atomic(path, self.csv_text())
        summary = path.with_name(f"{path.stem}_summary{path.suffix or '.csv'}")
        write_text_atomic(summary, rows_to_csv_text(self.summary_rows()))
        return path

    def _save_dialog(self) -> None:
        from napari.utils.notifications import show_error, show_info

        if not self.measured_rows():
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
