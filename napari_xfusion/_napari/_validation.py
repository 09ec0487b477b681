"""The metrics dock's "accuracy without ground truth" panel (:mod:`napari_xfusion.app.validation`).

"Validate (leave-one-key-out)" takes the Fusion dock's inputs and ticked methods (its
:meth:`~napari_xfusion._napari._widget.FusionWidget.build_request`, the same RunConfig a Run
uses), and in a napari worker thread withholds each interior HR key in turn, reconstructs its
time from the keys around it and scores it against the real key. The per-method table fills in
as keys are done; the fused layers of the same inputs are checked for LR consistency, and the
frames whose binned reconstruction the LR does not support are listed. Cancel stops after the
frame in progress and keeps the rows done. The worker never touches Qt: it yields plain
messages; errors come back as text.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

    from napari_xfusion._napari._job import FusionRequest
    from napari_xfusion.app.validation import ConsistencyTable, LooRow, ValidationResult

__all__ = [
    "ValidationPanel",
    "ValidationRequest",
    "fusion_dock",
    "request_from_fusion_dock",
    "validation_job",
]

log = logging.getLogger(__name__)

_COLUMNS = (
    ("method", "method", "{}"),
    ("keys_scored", "keys", "{}"),
    ("psnr_median", "PSNR median (dB)", "{:.2f}"),
    ("psnr_mean", "PSNR mean (dB)", "{:.2f}"),
    ("aad_median", "AAD median", "{:.4f}"),
    ("ssim_median", "SSIM median", "{:.4f}"),
    ("lr_flagged_keys", "LR-flagged keys", "{}"),
)
_TIPS = {
    "keys": "Interior HR keys withheld and scored",
    "PSNR median (dB)": "PSNR of each key reconstructed without it, against the real key",
    "LR-flagged keys": "Withheld-key reconstructions whose 4x4 binning disagrees with the LR "
    "frame beyond the LR noise",
}


@dataclass(frozen=True)
class ValidationRequest:
    """What a validation reads, recorded when it starts (the user may change layers).

    ``fused``: per method, the fused layer's ``(data, frames_done)`` for the same inputs,
    checked for LR consistency after the leave-one-key-out rows.
    """

    fusion: FusionRequest
    fused: dict[str, tuple[Any, tuple[int, ...]]] = field(default_factory=dict)


@dataclass
class _Started:
    total: int
    keys: list[int]
    notes: list[str]


@dataclass
class _Row:
    row: LooRow
    done: int
    total: int
    result: ValidationResult


@dataclass
class _Checked:
    table: ConsistencyTable


@dataclass
class Outcome:
    """Returned when the worker ends."""

    result: ValidationResult | None = None
    consistency: ConsistencyTable | None = None
    cancelled: bool = False
    error: str | None = None


def validation_job(request: ValidationRequest, cancel: threading.Event) -> Iterator[Any]:
    """The worker: prepare the inputs (the app layer's policy), leave-one-key-out, then the LR
    consistency of the fused layers; yields progress messages, returns an :class:`Outcome`."""
    from napari_xfusion._napari._job import _user_message, prepare
    from napari_xfusion.app.validation import (
        ConsistencyTable,
        LrChecker,
        iter_leave_one_key_out,
        withheld_keys,
    )

    outcome = Outcome()
    events = None
    try:
        _, inputs = prepare(request.fusion)
        prepared = inputs.prepared
        withheld_keys(prepared.keys.indices)  # fewer than 3 keys: say so before any work
        checker = LrChecker.from_prepared(prepared)
        events = iter_leave_one_key_out(
            inputs.config, prepared, method_cache=request.fusion.method_cache, checker=checker
        )
        for event in events:
            if cancel.is_set():
                break
            outcome.result = event.result
            if event.row is None:
                keys = [int(k) for k in event.result.withheld]
                yield _Started(event.total, keys, list(event.result.notes))
            else:
                yield _Row(event.row, event.done, event.total, event.result)
        table = ConsistencyTable(checker=checker)
        for method, (data, frames) in request.fused.items():
            for t in frames:
                if cancel.is_set():
                    break
                table.add(method, int(t), np.asarray(data[int(t)], dtype=np.float32))
        if table.rows:
            outcome.consistency = table
            yield _Checked(table)
        outcome.cancelled = cancel.is_set()
    except Exception as exc:  # reported on the GUI thread, never raised there
        log.debug("validation failed", exc_info=True)
        outcome.error = _user_message(exc)
    finally:
        if events is not None:
            events.close()
    return outcome


def fusion_dock(viewer: napari.Viewer) -> Any:
    """The viewer's docked Fusion widget, or None."""
    from napari_xfusion._napari._widget import FusionWidget

    window = getattr(viewer, "window", None)
    for widget in getattr(window, "dock_widgets", {}).values():
        if isinstance(widget, FusionWidget):
            return widget
    return None


def request_from_fusion_dock(
    viewer: napari.Viewer, method_cache: dict[str, Any]
) -> ValidationRequest:
    """The Fusion dock's inputs and ticked methods as a validation; ``ValueError`` says what
    to fix. Networks come from ``method_cache`` (the panel's own: a fusion run may use the
    Fusion dock's instances at the same time)."""
    from napari_xfusion._napari._layers import fused_name, meta

    widget = fusion_dock(viewer)
    if widget is None:
        raise ValueError(
            "open the Fusion dock (Plugins > XFusion > Fusion): validation uses its inputs "
            "and ticked methods"
        )
    job = widget.build_request()
    fusion = replace(job.request, method_cache=method_cache, targets=None)
    fused = {}
    for method in fusion.methods:
        name = fused_name(method)
        if name in viewer.layers:
            entry = meta(viewer.layers[name])
            frames = tuple(int(t) for t in entry.get("frames_done", []))
            if frames and entry.get("inputs") == job.signature:
                fused[method] = (viewer.layers[name].data, frames)
    return ValidationRequest(fusion, fused)


def _item(value: Any, fmt: str) -> QTableWidgetItem:
    if isinstance(value, float) and not math.isfinite(value):
        return QTableWidgetItem("")
    return QTableWidgetItem(fmt.format(value))


class ValidationPanel(QGroupBox):
    """Leave-one-key-out and LR consistency of the Fusion dock's methods, no truth needed."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__("Accuracy without ground truth", parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.running = False
        self.result: ValidationResult | None = None
        self.consistency: ConsistencyTable | None = None
        self.last_outcome: Outcome | None = None
        self._cancel = threading.Event()
        self._methods: dict[str, Any] = {}  # networks load once per session
        # Seam for tests and scripts: () -> ValidationRequest.
        self.request_factory: Callable[[], ValidationRequest] = lambda: request_from_fusion_dock(
            self.viewer, self._methods
        )
        self.setToolTip(
            "Real accuracy on your own data: each interior HR key is withheld in turn, "
            "reconstructed from the keys around it (a gap of twice the key step) and scored "
            "against the real key"
        )
        self.validate_button = QPushButton("Validate (leave-one-key-out)")
        self.validate_button.setToolTip(
            "Withhold each interior HR key in turn and reconstruct it with the methods ticked "
            "in the Fusion dock (its inputs, separation and options); score it against the "
            "real key. Runs in the background; the fused layers are checked against the LR too"
        )
        self.validate_button.clicked.connect(self.validate)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the frame in progress; the keys done stay")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip(
            "Save loo.csv, loo_summary.csv, loo.png and lr_consistency.csv into a folder (the "
            "files xfusion validate writes)"
        )
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(self.validate_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch()
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setToolTip("Withheld keys x methods done")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels([h for _, h, _ in _COLUMNS])
        for j, (_, header, _) in enumerate(_COLUMNS):
            tip = _TIPS.get(header)
            if tip:
                self.table.horizontalHeaderItem(j).setToolTip(tip)
        self.table.setToolTip(
            "Leave-one-key-out per method, over the withheld keys ([0, 1] in the HR keys' "
            "units). It measures the middle of a 2k gap: harder than the run's own frames, "
            "read it as a pessimistic accuracy and a ranking of the methods"
        )
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.flagged = QLabel("")
        self.flagged.setWordWrap(True)
        self.flagged.setToolTip(
            "LR consistency: each fused frame binned 4x4 against the LR frame at its time; a "
            "frame is flagged when more than 1 % of its LR pixels differ by more than the LR "
            "noise explains (structure added or lost)"
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addWidget(self.flagged)

    # --- running --------------------------------------------------------------------------

    def validate(self) -> bool:
        """Start a validation of the Fusion dock's methods; False (and why) if it cannot."""
        from napari.qt.threading import create_worker

        if self.running:
            return False
        fusion = fusion_dock(self.viewer)
        if fusion is not None and fusion.running:
            self.status.setText("Not started: a fusion run is going; validate when it is done.")
            return False
        try:
            request = self.request_factory()
        except ValueError as exc:
            self.status.setText(f"Not started: {exc}")
            return False
        self._cancel = threading.Event()
        self.result = self.consistency = self.last_outcome = None
        self.save_button.setEnabled(False)
        self.table.setRowCount(0)
        self.flagged.setText("")
        worker = create_worker(validation_job, request, self._cancel, _start_thread=False)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        cancel = self._cancel
        self.destroyed.connect(lambda *_: cancel.set())  # closing the dock stops the worker
        self.worker, self.running = worker, True
        self.validate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.setFormat("preparing…")
        self.status.setText(f"Validating {', '.join(request.fusion.methods)}…")
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop after the frame in progress; the rows done stay."""
        if self.running:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling after the current frame…")

    def _on_yielded(self, message: Any) -> None:
        if isinstance(message, _Started):
            self.progress.setRange(0, max(message.total, 1))
            self.progress.setValue(0)
            self.progress.setFormat(f"0/{message.total}")
            self.status.setText(f"Withholding keys {', '.join(map(str, message.keys))}")
        elif isinstance(message, _Row):
            self.result = message.result
            self.progress.setValue(message.done)
            self.progress.setFormat(f"{message.done}/{message.total}")
            self._show_summary()
        elif isinstance(message, _Checked):
            self.consistency = message.table
            self._show_flagged()

    def _on_returned(self, outcome: Outcome) -> None:
        self.last_outcome = outcome
        if outcome.result is not None:
            self.result = outcome.result
            self._show_summary()
        if outcome.consistency is not None:
            self.consistency = outcome.consistency
            self._show_flagged()
        rows = len(self.result.rows) if self.result is not None else 0
        if outcome.error:
            self.status.setText(f"Validation failed: {outcome.error}")
        elif outcome.cancelled:
            self.status.setText(f"Cancelled: {rows} rows kept.")
        else:
            self.status.setText(
                f"Done: {rows} reconstructions of withheld keys scored against the real keys."
            )

    def _on_errored(self, exc: BaseException) -> None:
        # Only a bug here gets this far (validation_job returns errors in its Outcome).
        self.status.setText(f"Validation failed: {exc}")

    def _on_finished(self) -> None:
        self.running = False
        self.worker = None
        self.validate_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.save_button.setEnabled(bool(self.result is not None and self.result.rows))
        if self.progress.maximum() == 0:  # failed before the first row: no busy bar left
            self.progress.setRange(0, 1)
            self.progress.setFormat("idle")

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write the last validation's files into ``folder`` (as ``xfusion validate`` does)."""
        from napari_xfusion.core.io import write_text_atomic

        if self.result is None:
            raise ValueError("nothing to save: run a validation first")
        paths = self.result.save(folder)
        if self.consistency is not None:
            paths["consistency"] = write_text_atomic(
                Path(folder) / "lr_consistency.csv", self.consistency.to_csv_text()
            )
        return paths

    def _save_dialog(self) -> None:
        from napari.utils.notifications import show_error, show_info

        folder = QFileDialog.getExistingDirectory(self, "Save the validation into a folder")
        if not folder:
            return
        try:
            paths = self.save(folder)
        except (OSError, ValueError) as exc:
            show_error(f"Could not save the validation into {folder}: {exc}")
            return
        show_info(f"Validation saved: {', '.join(p.name for p in paths.values())} in {folder}")

    # --- rendering ------------------------------------------------------------------------

    def summary_rows(self) -> list[dict[str, Any]]:
        """The per-method summary shown (the app layer's :meth:`ValidationResult.summary`)."""
        return self.result.summary() if self.result is not None else []

    def _show_summary(self) -> None:
        rows = self.summary_rows()
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, (key, _, fmt) in enumerate(_COLUMNS):
                self.table.setItem(i, j, _item(row.get(key), fmt))
        # One row per method (a handful): show them all rather than a scrolled sliver.
        table = self.table
        height = table.horizontalHeader().height() + 2 * table.frameWidth()
        height += sum(table.rowHeight(i) for i in range(table.rowCount()))
        table.setFixedHeight(height)

    def _show_flagged(self) -> None:
        table = self.consistency
        if table is None:
            self.flagged.setText("")
            return
        parts = []
        for entry in table.summary():
            frames = [r.index for r in table.flagged(entry["method"])]
            listed = ", ".join(map(str, frames[:20])) + (" …" if len(frames) > 20 else "")
            parts.append(
                f"{entry['method']}: {entry['flagged_frames']} of {entry['frames']} frames "
                f"flagged" + (f" ({listed})" if frames else "")
            )
        self.flagged.setText("LR consistency of the fused layers: " + "; ".join(parts))
