"""Base of the result docks (attention, metrics): viewer, session, signals, placement.

Like napari-matplotlib's ``BaseNapariMPLWidget``, the base owns what every dock repeats: the
viewer's :class:`~napari_xfusion._napari._session.FusionSession`, connections that end with
the dock (a new run, a batch of frames, the theme), and where the dock sits. napari 0.9
ignores the manifest's ``default_dock_area`` for plugin widgets and stacks them on the right,
squashing the fusion dock; so a result dock moves itself to the bottom area when first shown,
beside the other result docks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

from napari_xfusion._napari._session import FrameRecord, session_for
from napari_xfusion._napari._util import connect_while_alive

if TYPE_CHECKING:
    import napari

__all__ = ["SessionDock", "dock_of", "open_result_dock"]

_BOTTOM = Qt.DockWidgetArea.BottomDockWidgetArea


def dock_of(widget: QWidget) -> QDockWidget | None:
    """The ``QDockWidget`` that holds ``widget`` (None while it is not docked)."""
    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


class SessionDock(QWidget):
    """A dock that shows the session's results; subclasses override the ``on_*`` hooks."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self._placed = False

    def connect_session(self) -> None:
        """Follow the session and the theme until this dock is destroyed (call at the end of
        the subclass's ``__init__``)."""
        connect_while_alive(self, self.session.started, self.on_started)
        connect_while_alive(self, self.session.frames_added, self.on_frames)
        connect_while_alive(self, self.viewer.events.theme, self.on_theme)

    # --- hooks --------------------------------------------------------------------------

    def on_started(self, *_: Any) -> None:
        """A run with new inputs began, or results were forgotten: redraw everything."""

    def on_frames(self, records: list[FrameRecord]) -> None:
        """A batch of frames arrived (one GUI update)."""

    def on_theme(self, *_: Any) -> None:
        """napari's theme changed."""

    # --- placement ----------------------------------------------------------------------

    def showEvent(self, event: Any) -> None:  # Qt's name
        super().showEvent(event)
        if not self._placed:
            self._placed = True
            QTimer.singleShot(0, self.place_at_bottom)  # once napari has finished docking

    def place_at_bottom(self) -> bool:
        """Move this dock to the main window's bottom area, beside the other result docks.

        Returns whether it was moved (False when it is not docked or already there).
        """
        try:
            dock = dock_of(self)
        except RuntimeError:  # deleted meanwhile
            return False
        main = dock.parent() if dock is not None else None
        if not isinstance(main, QMainWindow) or main.dockWidgetArea(dock) == _BOTTOM:
            return False
        neighbours = [
            other
            for other in main.findChildren(QDockWidget)
            if other is not dock
            and main.dockWidgetArea(other) == _BOTTOM
            and (isinstance(other.widget(), SessionDock) or other.findChild(SessionDock))
            and other.isVisible()
        ]
        main.addDockWidget(_BOTTOM, dock)
        if neighbours:
            main.splitDockWidget(neighbours[-1], dock, Qt.Orientation.Horizontal)
        return True


def open_result_dock(viewer: napari.Viewer, title: str) -> None:
    """Dock our ``Attention`` or ``Metrics`` widget at the bottom unless one is open."""
    from napari_xfusion._napari._attention import AttentionWidget
    from napari_xfusion._napari._metrics import MetricsWidget

    cls = {"Attention": AttentionWidget, "Metrics": MetricsWidget}[title]
    window = getattr(viewer, "window", None)
    if window is None or not hasattr(window, "add_dock_widget"):
        return
    docked = window.dock_widgets
    name = f"{title} (napari-xfusion)"  # napari's name for our plugin widget
    if name in docked or any(isinstance(w, cls) for w in docked.values()):
        return
    window.add_dock_widget(cls(viewer), name=name, area="bottom")
