"""Writing stacks atomically (:func:`write_stack`) or streamed (:class:`StackWriter`), and text.

Nothing is ever written half way under its final name: a temp file in the same folder, then
:func:`os.replace`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import DTypeLike

from napari_xfusion.core.io.description import _description
from napari_xfusion.core.io.errors import StackError

# Classic TIFF addresses 4 GiB; switch to BigTIFF a little before that (tags, descriptions).
_BIGTIFF_BYTES = 2**32 - 2**26


def _temp_path(path: Path) -> Path:
    """A new empty file next to ``path`` (same file system, so :func:`os.replace` is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600; give the file the permissions a plain open() would (umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def _check_stack_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 3:
        raise StackError(f"{what}: not 3-D: expected a (T, H, W) stack, got shape {shape}")


def write_stack(
    path: str | os.PathLike[str],
    stack: np.ndarray,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``(T, H, W)`` stack to a TIFF atomically, with JSON metadata.

    Parameters
    ----------
    path : path-like
        Destination; written to a temp file in the same folder, then renamed over ``path``,
        so readers never see a half-written file.
    stack : numpy.ndarray, shape (T, H, W)
        Any dtype TIFF stores (float32 [0, 1], uint16 detector counts...); uncompressed so the
        result can be memory-mapped.
    metadata : mapping, optional
        JSON-able values (numpy scalars/arrays are converted); read back by
        :func:`read_metadata`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    stack = np.asarray(stack)
    _check_stack_shape(stack.shape, str(path))
    # n_frames lets a reader tell a truncated copy from a shorter stack.
    description = _description(stack.shape, {**dict(metadata or {}), "n_frames": stack.shape[0]})
    tmp = _temp_path(path)
    try:
        tifffile.imwrite(
            tmp,
            stack,
            bigtiff=stack.nbytes > _BIGTIFF_BYTES,
            description=description,
            metadata=None,
            photometric="minisblack",
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class StackWriter:
    """Stream ``(H, W)`` frames into a TIFF stack, renamed into place when done.

    Frames go to a temp file next to ``path``; :meth:`close` finalises the metadata and
    renames it to ``path``. :meth:`abort` (also called when the ``with`` block raises, e.g.
    on Ctrl-C) does the same with the frames written so far, marking the metadata
    ``"complete": false``, so an interrupted export is still a valid, readable TIFF.

    Parameters
    ----------
    path : path-like
        Destination file.
    shape : tuple of int
        ``(H, W)`` of a frame, or ``(T, H, W)`` with the expected number of frames (at most
        ``T`` frames may be written; knowing ``T`` lets small exports stay classic TIFF
        instead of BigTIFF).
    dtype : numpy dtype
        Stored dtype; frames are cast to it (only same-kind casts such as float64 ->
        float32, never float -> integer, which would silently truncate).
    metadata : mapping, optional
        JSON-able metadata; extend it with :meth:`update_metadata` before closing.

    Examples
    --------
    >>> with StackWriter("fused.tif", (400, 1024), np.float32, {"method": "bicubic"}) as out:
    ...     for t, frame in results:
    ...         out.write(frame, index=t)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, ...],
        dtype: DTypeLike,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        shape = tuple(int(n) for n in shape)
        if len(shape) == 3:
            self.max_frames: int | None = shape[0]
            self.frame_shape = shape[1:]
        elif len(shape) == 2:
            self.max_frames = None
            self.frame_shape = shape
        else:
            raise ValueError(f"{self.path}: shape must be (H, W) or (T, H, W), got {shape}")
        self.dtype = np.dtype(dtype)
        self.metadata: dict[str, Any] = dict(metadata or {})
        _description((0, *self.frame_shape), self.metadata)  # fail now on bad metadata
        self.indices: list[int] = []
        self.count = 0
        self.closed = False
        frame_bytes = self.dtype.itemsize * math.prod(self.frame_shape)
        bigtiff = self.max_frames is None or self.max_frames * frame_bytes > _BIGTIFF_BYTES
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: folder {self.path.parent} does not exist")
        self._tmp = _temp_path(self.path)
        try:
            self._writer = tifffile.TiffWriter(self._tmp, bigtiff=bigtiff)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def write(self, frame: np.ndarray, index: int | None = None) -> None:
        """Append one ``(H, W)`` frame; ``index`` (its frame number) goes to the metadata."""
        if self.closed:
            raise ValueError(f"{self.path}: writer is closed")
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(
                f"{self.path}: frame {self.count} has shape {frame.shape}, "
                f"expected {self.frame_shape}"
            )
        if not np.can_cast(frame.dtype, self.dtype, casting="same_kind"):
            raise TypeError(
                f"{self.path}: frame {self.count} is {frame.dtype}, which does not cast safely "
                f"to the stack's {self.dtype}; convert it first"
            )
        if self.max_frames is not None and self.count >= self.max_frames:
            raise ValueError(f"{self.path}: already wrote the {self.max_frames} frames announced")
        self._writer.write(
            np.ascontiguousarray(frame, dtype=self.dtype),
            contiguous=True,
            photometric="minisblack",
            metadata=None,
            # Placeholder description, replaced in _finish once the frame count is known.
            description=_description((1, *self.frame_shape), {}),
        )
        if index is not None:
            self.indices.append(int(index))
        self.count += 1

    def update_metadata(self, extra: Mapping[str, Any]) -> None:
        """Merge ``extra`` into the metadata written at close (e.g. per-frame scores)."""
        _description((0,), extra)  # validate now rather than at close
        self.metadata.update(extra)

    def _finish(self, complete: bool) -> int:
        if self.closed:
            return self.count
        self.closed = True
        try:
            self._writer.close()
            if self.count == 0:  # a TIFF needs at least one page: leave nothing behind
                self._tmp.unlink(missing_ok=True)
                return 0
            meta = dict(self.metadata)
            if self.indices:
                meta["frame_indices"] = list(self.indices)
            meta["complete"] = complete
            meta["frames_written"] = self.count
            meta["n_frames"] = self.count  # what read_stack checks the page count against
            description = _description((self.count, *self.frame_shape), meta)
            # Overwrites the first page's description in place, or appends it if longer.
            tifffile.tiffcomment(self._tmp, comment=description.encode("ascii"))
            os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self.count

    def close(self) -> int:
        """Finalise and rename into place; returns the number of frames written."""
        return self._finish(complete=True)

    def abort(self) -> int:
        """Keep the frames written so far as a valid TIFF at ``path`` (none: no file).

        Returns the number of frames kept.
        """
        return self._finish(complete=False)

    def discard(self) -> None:
        """Drop everything written: no file at ``path`` is created or changed, the temp file
        is removed (for outputs that are worthless incomplete, or a failed finish)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.close()
        except Exception:  # the file is deleted next; an error closing it is moot
            pass
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def stage_text(path: str | os.PathLike[str], text: str) -> Path:
    """``text`` (UTF-8) in a new hidden temp file next to ``path``, for the caller to rename
    onto ``path`` (:func:`os.replace`) when the files that belong together are all staged."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0o600 would make the sidecars private
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temp file and a rename (never half a file).

    Used for every CSV and JSON sidecar of an export, so readers see the old file or the new
    one, never a torn one.
    """
    path = Path(path)
    tmp = stage_text(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
