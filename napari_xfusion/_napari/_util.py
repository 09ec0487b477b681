"""Small Qt helpers of the docks: signal lifetimes, batched repaints, the device picker, a
vertical scroll panel."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject, QSize, QTimer
from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea, QWidget

from napari_xfusion._napari._job import available_devices

__all__ = ["DeviceCombo", "VerticalScroll", "connect_while_alive", "hold_updates"]


def _disconnect(emitter: Any, callback: Callable[..., Any], *_: Any) -> None:
    try:
        emitter.disconnect(callback)
    except (RuntimeError, TypeError, ValueError):  # already gone with its owner
        pass


def connect_while_alive(widget: QWidget, emitter: Any, callback: Callable[..., Any]) -> None:
    """Connect ``callback`` to a napari event or psygnal signal until ``widget`` is destroyed.

    A dock closed by the user is deleted while the viewer and the session live on; their
    events must then stop calling into it. The disconnection is a plain function bound to
    the emitter and callback (not a method of ``widget``, which Qt no longer calls once its
    C++ side is going).
    """
    emitter.connect(callback)
    widget.destroyed.connect(lambda *_: _disconnect(emitter, callback))


class _Held(QObject):
    """Widgets whose repaints wait for the end of the current batch of GUI changes."""

    def __init__(self) -> None:
        super().__init__()
        self.widgets: list[weakref.ref[QWidget]] = []
        # A real 0 ms timer (not a queued call): it fires after the 0 ms timers that Qt's
        # item views start for their deferred layouts while the batch changes them.
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(0)
        self.timer.timeout.connect(self.release)

    def release(self) -> None:
        widgets, self.widgets = self.widgets, []
        for ref in widgets:
            widget = ref()
            try:
                if widget is not None:
                    widget.setUpdatesEnabled(True)  # one repaint of each, all together
            except RuntimeError:  # deleted meanwhile
                pass


_HELD: _Held | None = None


def hold_updates(*widgets: QWidget) -> None:
    """Hold the repaints of ``widgets`` until the event loop's next turn, once Qt's deferred
    item-view layouts have run: changes to a progress bar, a table (whose rows Qt lays out
    later) and a plot then reach the screen in one window update. Call before changing them.

    Each window update composes the whole window (with an OpenGL canvas: ~15-25 ms of the
    GUI thread under Xvfb, plus the rasteriser's CPU), whatever it changed; one batch of
    frames used to cost three (issue 15).
    """
    global _HELD
    if _HELD is None:
        _HELD = _Held()
    for widget in widgets:
        if widget.updatesEnabled():
            widget.setUpdatesEnabled(False)
            _HELD.widgets.append(weakref.ref(widget))
    if _HELD.widgets:
        _HELD.timer.start()


class DeviceCombo(QComboBox):
    """Device choice; asks torch what is available only when first opened (importing torch
    takes seconds, which the widget should not cost when it is docked)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.addItems(["auto", "cpu"])
        self._probed = False

    def probe(self) -> None:
        """Add the devices torch finds (once)."""
        if self._probed:
            return
        self._probed = True
        current = self.currentText()
        for device in available_devices():
            if self.findText(device) < 0:
                self.addItem(device)
        self.setCurrentText(current)

    def showPopup(self) -> None:  # Qt's name
        self.probe()
        super().showPopup()


class VerticalScroll(QScrollArea):
    """Scrolls its panel vertically; asks the dock for the panel's full width (a horizontal
    scroll bar appears only when the dock is squeezed narrower than that)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)

    def setWidget(self, widget: QWidget) -> None:  # Qt's name
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt's name
        # The panel's size hints change once it is styled (fonts, theme): re-ask the dock.
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def showEvent(self, event: QEvent) -> None:  # Qt's name
        super().showEvent(event)
        self.updateGeometry()

    def _with_panel_width(self, hint: QSize, panel: QSize) -> QSize:
        bar = self.verticalScrollBar().sizeHint().width()
        hint.setWidth(panel.width() + bar + 2 * self.frameWidth())
        return hint

    def minimumSizeHint(self) -> QSize:  # Qt's name
        hint = super().minimumSizeHint()
        panel = self.widget()
        return hint if panel is None else self._with_panel_width(hint, panel.minimumSizeHint())

    def sizeHint(self) -> QSize:  # Qt's name
        hint = super().sizeHint()
        panel = self.widget()
        return hint if panel is None else self._with_panel_width(hint, panel.sizeHint())
