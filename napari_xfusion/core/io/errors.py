"""The errors of :mod:`napari_xfusion.core.io`, and tifffile's complaints turned into them.

:class:`StackError` (and :class:`StackNotFoundError`) name the file and what is wrong with it;
tifffile's log records and exceptions during one of our reads become a :class:`StackError`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StackError(ValueError):
    """A file or folder does not hold a valid ``(T, H, W)`` image stack (or cannot be read).

    The message names the file. ``role`` is the option or input the file came from (``"--lr"``,
    ``"HR keys"``); when set it prefixes the message: ``--hr hr.tif: truncated TIFF: ...``.
    Callers that learn the role later use :meth:`with_role`.

    Attributes
    ----------
    path : pathlib.Path or None
        The file or folder concerned.
    role : str or None
        The option or input it came from.
    reason : str
        The message without the role prefix.
    """

    def __init__(self, message: str, *, path: os.PathLike | str | None = None,
                 role: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.reason = message
        self.path = None if path is None else Path(path)
        self.role = None
        if role:
            self.with_role(role)

    def with_role(self, role: str | None) -> StackError:
        """Set :attr:`role` (once; an inner role wins) and return ``self`` for ``raise``."""
        if role and self.role is None:
            self.role = role
            self.args = (f"{role} {self.reason}",)
        return self


class StackNotFoundError(StackError, FileNotFoundError):
    """The file or folder does not exist (also a :class:`FileNotFoundError`)."""


class StackWarning(UserWarning):
    """Something in an input folder was ignored (e.g. files that are not TIFFs)."""


# -- tifffile's log: its complaints about a damaged file become our errors ------------------

# tifffile reports some damage (an IFD loop, a page offset past the end) only by logging and
# carries on with fewer pages. A filter on its logger collects the records of threads that are
# inside one of our reads (and keeps them off the console); other threads are untouched.
_captured: dict[int, list[logging.LogRecord]] = {}
_captured_lock = threading.Lock()


def _capture_filter(record: logging.LogRecord) -> bool:
    records = _captured.get(threading.get_ident())
    if records is None:
        return True
    records.append(record)
    return False


logging.getLogger("tifffile").addFilter(_capture_filter)


@contextmanager
def _tifffile_log() -> Iterator[list[logging.LogRecord]]:
    ident = threading.get_ident()
    with _captured_lock:
        outer = _captured.get(ident)
        records: list[logging.LogRecord] = [] if outer is None else outer
        _captured[ident] = records
    try:
        yield records
    finally:
        if outer is None:
            with _captured_lock:
                _captured.pop(ident, None)


def _log_problem(records: list[logging.LogRecord], path: Path) -> StackError | None:
    """The first damage tifffile logged, as a StackError (None when it logged none)."""
    for record in records:
        if record.levelno < logging.WARNING:
            continue
        text = re.sub(r"^<tifffile\.\w+ @\d+>\s*", "", record.getMessage())
        if "circular" in text:
            return StackError(
                f"{path}: damaged TIFF: the chain of pages loops back ({text}); refused "
                "rather than read part of it",
                path=path,
            )
        if "invalid page offset" in text:
            return StackError(
                f"{path}: truncated or damaged TIFF: {text} (the file is "
                f"{path.stat().st_size} bytes)",
                path=path,
            )
        # Errors are always damage; of the warnings only these (others, such as "coercing
        # invalid ASCII", are common in sound camera files).
        if record.levelno >= logging.ERROR or any(w in text for w in _DAMAGE_WORDS):
            return StackError(f"{path}: damaged TIFF: {text}", path=path)
    return None


_DAMAGE_WORDS = ("corrupted", "incompletely written", "failed to reshape", "missing")


def _wrap(exc: BaseException, path: Path) -> StackError:
    """Any exception from reading ``path`` as a StackError that says what went wrong."""
    if isinstance(exc, StackError):
        return exc
    text = str(exc) or type(exc).__name__
    if "imagecodecs" in text or getattr(exc, "name", None) == "imagecodecs":
        codec = re.search(r"COMPRESSION\.(\w+)", text)
        return StackError(
            f"{path}: compressed with {codec.group(1) if codec else 'a codec'}, which needs the "
            "Python package 'imagecodecs' (not installed); install it (pip install "
            "imagecodecs) or save the stack uncompressed",
            path=path,
        )
    if isinstance(exc, ImportError):
        return StackError(
            f"{path}: reading it needs the Python module {exc.name or text!r}, which is not "
            f"installed ({text})",
            path=path,
        )
    if isinstance(exc, MemoryError):
        return StackError(f"{path}: not enough memory to read it ({text})", path=path)
    if isinstance(exc, OSError) and not text.startswith("failed to read"):
        return StackError(f"{path}: cannot be read: {exc.strerror or text}", path=path)
    if "decompress" in text or type(exc).__module__ in ("zlib", "imagecodecs"):
        return StackError(f"{path}: corrupt compressed pixel data ({text})", path=path)
    if text.startswith("failed to read") or isinstance(exc, EOFError):
        return StackError(
            f"{path}: truncated TIFF: {text} (the file is {path.stat().st_size} bytes)",
            path=path,
        )
    kind = type(exc).__name__
    if kind == "error":  # struct.error, zlib.error: say whose
        kind = f"{type(exc).__module__}.error"
    return StackError(f"{path}: damaged or unsupported TIFF ({kind}: {text})", path=path)
