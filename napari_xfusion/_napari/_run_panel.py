"""The run part of the fusion dock: Run / Cancel, resume, progress in frames, ETA, status.

Progress counts frames (a frame is done when every method of the run has it), never frames x
methods. The ETA says "estimating…" until a few frames and a second have passed (the first
frames carry the start-up: loading, caches), and disappears when the run ends or is
cancelled. Nothing here forces a repaint: the widget calls :meth:`RunPanel.show_progress` at
most 4 times a second.
"""

from __future__ import annotations

import math
from pathlib import Path

from qtpy.QtCore import Qt, QUrl
from qtpy.QtGui import QPainter
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStyle,
    QStyleOptionProgressBar,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._util import hold_updates

__all__ = ["RunPanel", "FrameProgress", "format_seconds", "eta_text", "HELP_URL"]

_README = Path(__file__).resolve().parents[2] / "README.md"
HELP_URL = (
    QUrl.fromLocalFile(str(_README)).toString()
    if _README.is_file()
    else "https://pypi.org/project/napari-xfusion/"
)
"""Where the dock's help link points: the README (its napari section) of this checkout."""

MIN_FRAMES_FOR_ETA = 3
MIN_SECONDS_FOR_ETA = 1.0


def format_seconds(seconds: float | None) -> str:
    """``"42 s"``, ``"3:05"``; ``"…"`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "…"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def eta_text(done: int, total: int, elapsed: float) -> str:
    """Time left from the mean time per frame so far; ``"estimating…"`` while too early."""
    if done >= total:
        return ""
    if done < MIN_FRAMES_FOR_ETA or elapsed < MIN_SECONDS_FOR_ETA:
        return "estimating…"
    return f"ETA {format_seconds(elapsed / done * (total - done))}"


class FrameProgress(QProgressBar):
    """A progress bar whose updates are deferred to the next paint.

    ``QProgressBar.setValue`` repaints synchronously whenever the shown value changes; in a
    napari window (an OpenGL canvas composed with the docks) each such repaint cost the GUI
    thread ~95 ms under Xvfb. This bar keeps its own value, range and format and only asks
    for an ordinary (coalesced) update; it is drawn with the style's progress bar.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._range = (0, 1)
        self._value = 0
        self._format = "%v / %m"

    def setRange(self, minimum: int, maximum: int) -> None:  # Qt's name
        self._range = (int(minimum), int(maximum))
        super().setRange(minimum, maximum)  # busy animation when both are 0
        self.update()

    def setValue(self, value: int) -> None:  # Qt's name
        self._value = int(value)
        self.update()

    def value(self) -> int:  # Qt's name
        return self._value

    def minimum(self) -> int:  # Qt's name
        return self._range[0]

    def maximum(self) -> int:  # Qt's name
        return self._range[1]

    def setFormat(self, text: str) -> None:  # Qt's name
        self._format = text
        self.update()

    def format(self) -> str:  # Qt's name
        return self._format

    def text(self) -> str:  # Qt's name
        low, high = self._range
        percent = 0 if high <= low else int(100 * (self._value - low) / (high - low))
        return (
            self._format.replace("%v", str(self._value))
            .replace("%m", str(high))
            .replace("%p", str(percent))
        )

    def paintEvent(self, event: object) -> None:  # Qt's name
        if self._range == (0, 0):
            super().paintEvent(event)  # the style's busy indicator
            return
        option = QStyleOptionProgressBar()
        self.initStyleOption(option)
        option.minimum, option.maximum = self._range
        option.progress = self._value
        option.text = self.text()
        option.textVisible = True
        painter = QPainter(self)
        self.style().drawControl(QStyle.ControlElement.CE_ProgressBar, option, painter, self)
        painter.end()


class RunPanel(QWidget):
    """Run, Cancel, "only missing frames", a progress bar in frames and a status line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Reconstruct the frame window with the ticked methods")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the frame in progress; frames done are kept")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.resume = QCheckBox("only missing frames")
        self.resume.setToolTip(
            "Run only the frames of the window that a cancelled or earlier run left undone "
            "(same inputs); untick to recompute every frame"
        )
        self.resume.setEnabled(False)
        buttons.addWidget(self.resume)
        self.progress = FrameProgress()
        self.progress.setToolTip("Frames of the window done (every method of the run)")
        self.idle()
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # A light blue that reads on napari's dark and light themes (Qt's default link blue
        # is near-invisible on the dark one).
        link = f'<a href="{HELP_URL}" style="color: #5fa8ff">Help: README, napari section</a>'
        self.help = QLabel(link)
        self.help.setOpenExternalLinks(True)
        self.help.setToolTip(f"Open {HELP_URL}")
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.help)

    def idle(self) -> None:
        """No run yet: an empty bar, no count."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("no run yet")

    def busy(self, text: str) -> None:
        """Preparing: an indeterminate bar."""
        self.progress.setRange(0, 0)
        self.status.setText(text)

    def started(self, total: int) -> None:
        """A run of ``total`` frames begins."""
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(0)
        self.progress.setFormat(f"%v / %m frames, {eta_text(0, total, 0.0)}")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def show_progress(self, done: int, total: int, elapsed: float) -> None:
        """``done`` of ``total`` frames after ``elapsed`` seconds of computing."""
        hold_updates(self.progress)  # shown with the rest of the batch (one window update)
        self.progress.setValue(min(done, total))
        eta = eta_text(done, total, elapsed)
        self.progress.setFormat("%v / %m frames" + (f", {eta}" if eta else ""))

    def ended(self, text: str, resumable: bool) -> None:
        """The run ended (``text`` for the status line); no ETA is left on the bar."""
        if self.progress.maximum() == 0:
            self.idle()
        else:
            self.progress.setFormat("%v / %m frames")
        self.status.setText(text)
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.resume.setEnabled(resumable)
        self.resume.setChecked(resumable)
