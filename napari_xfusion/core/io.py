"""TIFF stacks in and out: ``(T, H, W)`` arrays, JSON metadata, atomic and streaming writes.

Reading accepts a multipage TIFF, an ImageJ hyperstack (singleton channel / slice axes are
squeezed; real extra axes are refused) or a folder of single-frame TIFFs (natural sort order:
``frame2.tif`` before ``frame10.tif``). Contiguous uncompressed files are memory-mapped, so a
stack larger than RAM can be read frame by frame.

Writing stores our metadata as JSON in the ImageDescription of the first page (tifffile's
"shaped" format, which any TIFF reader ignores and tifffile reads back), never writes a file
half way under its final name (a temp file in the same folder, then :func:`os.replace`), and
:class:`StackWriter` streams frames so an export never holds the whole stack in memory. An
interrupted :class:`StackWriter` still leaves a valid TIFF of the frames done.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import DTypeLike

__all__ = [
    "StackError",
    "StackWriter",
    "read_metadata",
    "read_stack",
    "sha256_file",
    "write_stack",
    "write_text_atomic",
]

TIFF_SUFFIXES = (".tif", ".tiff")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (weights, exported stacks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Read the stack in blocks of about this many bytes when scanning for non-finite values, so a
# memory-mapped stack is never pulled into memory as a whole.
_SCAN_BLOCK_BYTES = 64 * 2**20

# Classic TIFF addresses 4 GiB; switch to BigTIFF a little before that (tags, descriptions).
_BIGTIFF_BYTES = 2**32 - 2**26


class StackError(ValueError):
    """A file or folder does not hold a valid ``(T, H, W)`` image stack."""


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded integers numerically (``f2`` before ``f10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")


def _open_tiff(path: Path) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(path)
    except tifffile.TiffFileError as exc:
        raise StackError(f"{path}: not a TIFF file ({exc})") from None


def _squeeze_series(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Reduce a tifffile series with ``axes`` (e.g. ``'TZCYX'``) to ``(T, H, W)``."""
    if "S" in axes and data.shape[axes.index("S")] > 1:
        raise StackError(
            f"{path}: has {data.shape[axes.index('S')]} colour samples per pixel (RGB); "
            "expected greyscale radiographs"
        )
    if not axes.endswith("YX"):
        raise StackError(f"{path}: unexpected axis order {axes!r}; expected the image in Y, X last")
    extra = [(ax, n) for ax, n in zip(axes[:-2], data.shape[:-2], strict=True) if n > 1]
    if len(extra) > 1:
        sizes = ", ".join(f"{ax}={n}" for ax, n in extra)
        raise StackError(
            f"{path}: not 3-D: axes {axes!r} with shape {data.shape} have more than one "
            f"non-singleton axis besides Y, X ({sizes}); expected one time axis. Split the "
            "channels or slices into separate files first"
        )
    squeezed_axes = tuple(i for i, n in enumerate(data.shape[:-2]) if n == 1)
    # np.squeeze of a memmap returns a memmap view, so memory-mapping survives.
    data = np.squeeze(data, axis=squeezed_axes) if squeezed_axes else data
    return data[np.newaxis] if data.ndim == 2 else data


def _check_finite(stack: np.ndarray, path: Path) -> None:
    """Raise naming the first frame of ``stack`` with a NaN or infinity (float stacks only)."""
    if not np.issubdtype(stack.dtype, np.floating) or stack.size == 0:
        return
    frame_bytes = max(stack[0].nbytes, 1)
    block = max(1, _SCAN_BLOCK_BYTES // frame_bytes)
    for start in range(0, stack.shape[0], block):
        ok = np.isfinite(stack[start : start + block]).all(axis=(1, 2))
        if not ok.all():
            frame = start + int(np.argmin(ok))
            bad = int(np.count_nonzero(~np.isfinite(stack[frame])))
            raise StackError(
                f"{path}: frame {frame} has {bad} non-finite value(s) (NaN or infinity); "
                "expected finite intensities"
            )


def _read_file(path: Path, memmap: bool) -> np.ndarray:
    with _open_tiff(path) as tif:
        if not tif.series:
            raise StackError(f"{path}: holds no image data")
        series = tif.series[0]
        axes = series.axes
        data: np.ndarray | None = None
        if memmap and series.dataoffset is not None:
            try:
                data = tifffile.memmap(path, series=0, mode="r")
            except ValueError:  # e.g. foreign byte order on some platforms: read instead
                data = None
        if data is None:
            data = series.asarray()
    if data.ndim != len(axes):  # tifffile squeezes length-1 axes in some layouts
        data = data.reshape(series.shape)
    return _squeeze_series(data, axes, path)


def _read_folder(path: Path) -> np.ndarray:
    files = sorted(
        (
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
        ),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise StackError(f"{path}: folder holds no .tif/.tiff files")
    first = _read_file(files[0], memmap=False)
    if first.shape[0] != 1:
        raise StackError(
            f"{files[0]}: holds {first.shape[0]} frames; a folder must hold single-frame TIFFs"
        )
    stack = np.empty((len(files), *first.shape[1:]), dtype=first.dtype)
    stack[0] = first[0]
    for i, file in enumerate(files[1:], start=1):
        frame = _read_file(file, memmap=False)
        if frame.shape[0] != 1:
            raise StackError(
                f"{file}: holds {frame.shape[0]} frames; a folder must hold single-frame TIFFs"
            )
        if frame.shape[1:] != first.shape[1:]:
            raise StackError(
                f"{path}: mixed frame shapes: {file.name} is {frame.shape[1]}x{frame.shape[2]} "
                f"but {files[0].name} (the first file) is {first.shape[1]}x{first.shape[2]}"
            )
        if frame.dtype != first.dtype:
            raise StackError(
                f"{path}: mixed data types: {file.name} is {frame.dtype} but {files[0].name} "
                f"(the first file) is {first.dtype}"
            )
        stack[i] = frame[0]
    return stack


def read_stack(
    path: str | os.PathLike[str], *, memmap: bool = True, check_finite: bool = True
) -> np.ndarray:
    """Read an image sequence as a ``(T, H, W)`` array.

    Parameters
    ----------
    path : path-like
        A multipage TIFF, an ImageJ hyperstack with one non-singleton axis besides Y, X, or a
        folder of single-frame TIFFs (read in natural sort order; hidden files are skipped).
        A single-page TIFF gives ``T = 1``.
    memmap : bool
        Memory-map the file (read-only) when its pixels are stored contiguously and
        uncompressed; otherwise, and for folders, the stack is read into memory.
    check_finite : bool
        For floating-point data, scan the stack (block by block) and refuse NaN or infinity.

    Returns
    -------
    numpy.ndarray, shape (T, H, W)
        The stored dtype (e.g. uint16 detector counts or float32); a read-only
        :class:`numpy.memmap` where possible.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    StackError
        Not a TIFF, not a stack of 2-D greyscale frames, an empty folder, mixed frame shapes
        in a folder, or non-finite values. The message names the file and the problem.
    """
    path = Path(path)
    _check_exists(path)
    stack = _read_folder(path) if path.is_dir() else _read_file(path, memmap=memmap)
    if check_finite:
        _check_finite(stack, path)
    return stack


def _parse_description(description: str) -> dict[str, Any] | None:
    try:
        value = json.loads(description)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our JSON metadata of a TIFF written by :func:`write_stack` or :class:`StackWriter`.

    Also understood: a JSON object in an ImageJ file's ``Info`` property or as the plain
    ImageDescription. Returns ``{}`` when there is none (and for folders). The ``shape`` entry
    tifffile keeps in the same description is dropped.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return {}
    with _open_tiff(path) as tif:
        found: dict[str, Any] | None = None
        if tif.shaped_metadata:
            found = dict(tif.shaped_metadata[0])
        elif tif.imagej_metadata and isinstance(tif.imagej_metadata.get("Info"), str):
            found = _parse_description(tif.imagej_metadata["Info"])
        elif tif.pages and tif.pages.first.description:
            found = _parse_description(tif.pages.first.description)
    found = found or {}
    found.pop("shape", None)
    return found


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths and tuples turned into JSON types.

    Non-finite floats become ``None`` (strict JSON has no NaN).
    """
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON-able")


def _description(shape: tuple[int, ...], metadata: Mapping[str, Any] | None) -> str:
    meta = _jsonable(dict(metadata or {}))
    if "shape" in meta:
        raise ValueError("metadata key 'shape' is reserved (tifffile stores the array shape there)")
    # ensure_ascii: the TIFF ImageDescription is 7-bit ASCII.
    return json.dumps({"shape": list(shape), **meta}, ensure_ascii=True, allow_nan=False)


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
    description = _description(stack.shape, metadata)
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

    def __enter__(self) -> StackWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temp file and a rename (never half a file).

    Used for every CSV and JSON sidecar of an export, so readers see the old file or the new
    one, never a torn one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
