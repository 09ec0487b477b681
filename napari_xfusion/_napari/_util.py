"""Small Qt helpers shared by the docks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QWidget

__all__ = ["connect_while_alive"]


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
