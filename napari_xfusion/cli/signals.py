"""Ctrl-C and SIGTERM: both stop a command the same way, keeping what it finished.

SIGTERM (a cluster's time limit, ``timeout``, ``docker stop``) is turned into
:class:`Terminated`, a :class:`KeyboardInterrupt`, so every ``except KeyboardInterrupt`` path
(keep the frames done, remove temp files) runs for it too; the exit status is then
``128 + 15``. :class:`DeferredInterrupt` holds both signals back while one frame and its row
are stored, so an interrupted export never holds half a page or a frame without its row.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["DeferredInterrupt", "Terminated", "exit_status", "terminate_as_interrupt"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM received: handled like Ctrl-C, exit status 143."""


def exit_status(exc: BaseException) -> int:
    """128 + the signal number: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def signal_name(exc: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def _raise(signum: int, frame: Any) -> None:
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (main thread only; restored after)."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class DeferredInterrupt:
    """Hold Ctrl-C and SIGTERM back until the block ends, then raise.

    The block computes one frame and stores it with its row, so a first signal finishes the
    frame in progress; a second one stops at once (the frames stored so far are kept).
    """

    def __enter__(self) -> DeferredInterrupt:
        self.hit: int | None = None
        self.previous: dict[int, Any] = {}
        if _main_thread():
            for sig in _SIGNALS:
                self.previous[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        if self.hit is not None:  # the second signal: do not make the user wait for the frame
            _raise(signum, frame)
        self.hit = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.hit is not None:
            _raise(self.hit, None)
