"""Reading stacks (a multipage TIFF, an ImageJ hyperstack, a folder of frames) and metadata."""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_xfusion.core.io.checks import (
    _DTYPE_KINDS,
    TIFF_SUFFIXES,
    _check_finite,
    _check_imagej,
    _check_memory,
    _check_pages,
    _gib,
    _open_tiff,
    _stat,
)
from napari_xfusion.core.io.description import _parse_description
from napari_xfusion.core.io.errors import (
    StackError,
    StackWarning,
    _log_problem,
    _tifffile_log,
    _wrap,
)


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded integers numerically (``f2`` before ``f10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


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


def _read_file(path: Path, memmap: bool) -> np.ndarray:
    size = _stat(path).st_size
    if size == 0:
        raise StackError(f"{path}: empty file (0 bytes)", path=path)
    with _tifffile_log() as records:
        try:
            return _read_tiff(path, memmap, size, records)
        except StackError:
            raise
        except Exception as exc:  # tifffile/zlib/struct/...: any failure names the file
            raise _wrap(exc, path) from exc
        except MemoryError as exc:  # an allocation in tifffile or numpy
            raise _wrap(exc, path) from exc


def _read_tiff(path: Path, memmap: bool, size: int, records: list[logging.LogRecord]) -> np.ndarray:
    with _open_tiff(path) as tif:
        _check_pages(tif, path, size)
        if (problem := _log_problem(records, path)) is not None:
            raise problem
        if not tif.series:
            raise StackError(f"{path}: holds no image data", path=path)
        if len(tif.series) > 1:
            # One series per page (a TiffWriter.write() loop, each call with its own shaped
            # description): _check_pages made every page alike, so they are one stack.
            return _read_pages(tif, path, records)
        series = tif.series[0]
        axes = series.axes
        _check_imagej(tif, series, path)
        if series.dtype is None or series.dtype.kind not in _DTYPE_KINDS:
            raise StackError(
                f"{path}: pixel type {series.dtype} is not supported; expected integer or "
                "floating-point detector values",
                path=path,
            )
        nbytes = int(math.prod(series.shape)) * series.dtype.itemsize
        contiguous = series.dataoffset is not None
        if contiguous and series.dataoffset + nbytes > size:
            raise StackError(
                f"{path}: truncated TIFF: its header declares {math.prod(series.shape[:-2])} "
                f"frame(s) of {series.shape[-2]}x{series.shape[-1]} {series.dtype} stored "
                f"from byte {series.dataoffset}, {_gib(nbytes)} in all, but the file is "
                f"{size} bytes",
                path=path,
            )
        data: np.ndarray | None = None
        if memmap and contiguous:
            try:
                data = tifffile.memmap(path, series=0, mode="r")
            except ValueError:  # e.g. foreign byte order on some platforms: read instead
                data = None
        if data is None:
            _check_memory(nbytes, path, f"reading {series.shape} {series.dtype}")
            data = series.asarray()
        if (problem := _log_problem(records, path)) is not None:
            raise problem
    if data.ndim != len(axes):  # tifffile squeezes length-1 axes in some layouts
        data = data.reshape(series.shape)
    return _squeeze_series(data, axes, path)


def _read_pages(tif: tifffile.TiffFile, path: Path, records: list[logging.LogRecord]) -> np.ndarray:
    first = tif.pages.first
    n = len(tif.pages)
    _check_memory(n * first.nbytes, path, f"reading {n} pages of {first.shape} {first.dtype}")
    data = tif.asarray(key=range(n)).reshape(n, *first.shape)
    if (problem := _log_problem(records, path)) is not None:
        raise problem
    return _squeeze_series(data, "I" + first.axes, path)


def _folder_files(path: Path) -> list[Path]:
    """The frames of a folder, in natural order; refuses entries that cannot be frames."""
    frames, bad, ignored = [], [], []
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        raise StackError(f"{path}: cannot list the folder: {exc.strerror or exc}",
                         path=path) from None  # fmt: skip
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden: .DS_Store, editors' files, our own temp files
        try:
            st = os.stat(entry.path)  # follows symlinks
        except OSError as exc:  # a broken link or a symlink loop
            bad.append(f"{entry.name} ({exc.strerror or exc})")
            continue
        is_tiff = Path(entry.name).suffix.lower() in TIFF_SUFFIXES
        if not stat.S_ISREG(st.st_mode):
            if is_tiff:
                kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                bad.append(f"{entry.name} ({kind})")
            elif not stat.S_ISDIR(st.st_mode):
                ignored.append(entry.name)
            continue
        (frames if is_tiff else ignored).append(Path(entry.path))
    if bad:
        raise StackError(
            f"{path}: folder entries that cannot be read as frames: {', '.join(sorted(bad)[:5])}"
            f"{' ...' if len(bad) > 5 else ''}; remove or rename them",
            path=path,
        )
    if ignored:
        names = sorted(str(n.name if isinstance(n, Path) else n) for n in ignored)
        warnings.warn(
            f"{path}: ignored {len(names)} file(s) without a .tif/.tiff suffix: "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}",
            StackWarning,
            stacklevel=4,
        )
    return sorted(frames, key=lambda p: _natural_key(p.name))


def _read_folder(path: Path) -> np.ndarray:
    files = _folder_files(path)
    if not files:
        raise StackError(f"{path}: folder holds no .tif/.tiff files", path=path)
    first = _read_file(files[0], memmap=False)
    if first.shape[0] != 1:
        raise StackError(
            f"{files[0]}: holds {first.shape[0]} frames; a folder must hold single-frame TIFFs",
            path=files[0],
        )
    _check_memory(len(files) * first.nbytes, path, f"reading {len(files)} frames")
    stack = np.empty((len(files), *first.shape[1:]), dtype=first.dtype)
    stack[0] = first[0]
    for i, file in enumerate(files[1:], start=1):
        frame = _read_file(file, memmap=False)
        if frame.shape[0] != 1:
            raise StackError(
                f"{file}: holds {frame.shape[0]} frames; a folder must hold single-frame TIFFs",
                path=file,
            )
        if frame.shape[1:] != first.shape[1:]:
            raise StackError(
                f"{path}: mixed frame shapes: {file.name} is {frame.shape[1]}x{frame.shape[2]} "
                f"but {files[0].name} (the first file) is {first.shape[1]}x{first.shape[2]}",
                path=path,
            )
        if frame.dtype != first.dtype:
            raise StackError(
                f"{path}: mixed data types: {file.name} is {frame.dtype} but {files[0].name} "
                f"(the first file) is {first.dtype}",
                path=path,
            )
        stack[i] = frame[0]
    return stack


def read_stack(
    path: str | os.PathLike[str],
    *,
    memmap: bool = True,
    check_finite: bool = True,
    role: str | None = None,
) -> np.ndarray:
    """Read an image sequence as a ``(T, H, W)`` array.

    The file is checked before any pixel is allocated: a regular file or a folder (never a
    pipe or device), every page's data inside the file, one frame size and dtype, no loop in
    the chain of pages, the frame count our exports record (``n_frames``) present, and the
    memory a non-memory-mapped read needs below :func:`memory_limit_bytes`. Checking every page
    costs about 0.1 ms per page (0.6-0.8 s for an 8,000-frame export on this project's machine,
    where tifffile alone opens it in 0.05 s): the price of never reading a truncated file.

    Parameters
    ----------
    path : path-like
        A multipage TIFF, an ImageJ hyperstack with one non-singleton axis besides Y, X, or a
        folder of single-frame TIFFs (read in natural sort order; hidden files are skipped,
        other non-TIFF files are ignored with a :class:`StackWarning`; sub-folders, broken
        links or special files named ``*.tif`` are refused). A single-page TIFF gives ``T = 1``.
    memmap : bool
        Memory-map the file (read-only) when its pixels are stored contiguously and
        uncompressed; otherwise, and for folders, the stack is read into memory.
    check_finite : bool
        For floating-point data, scan the stack (block by block) and refuse NaN or infinity.
    role : str, optional
        The option or input the file came from (``"--lr"``); prefixes every error message.

    Returns
    -------
    numpy.ndarray, shape (T, H, W)
        The stored dtype (unsigned/signed integers or floats); a read-only
        :class:`numpy.memmap` where possible.

    Raises
    ------
    StackNotFoundError
        ``path`` does not exist (a :class:`FileNotFoundError` and a :class:`StackError`).
    StackError
        Anything else that keeps ``path`` from being read as a stack: not a TIFF, damaged or
        truncated, an unsupported pixel type or compression codec, too large for memory, not
        a stack of 2-D greyscale frames, an empty folder, mixed frame shapes, non-finite
        values. The message names the file and the problem. No other exception escapes.
    """
    path = Path(path)
    try:
        st = _stat(path)
        if stat.S_ISDIR(st.st_mode):
            stack = _read_folder(path)
        else:
            stack = _read_file(path, memmap=memmap)
        if check_finite:
            _check_finite(stack, path)
    except StackError as exc:
        raise exc.with_role(role) from exc.__cause__
    return stack


def read_metadata(path: str | os.PathLike[str], *, role: str | None = None) -> dict[str, Any]:
    """Our JSON metadata of a TIFF written by :func:`write_stack` or :class:`StackWriter`.

    Also understood: a JSON object in an ImageJ file's ``Info`` property or as the plain
    ImageDescription. Returns ``{}`` when there is none (and for folders). The ``shape`` entry
    tifffile keeps in the same description and our ``n_frames`` (the frame count
    :func:`read_stack` checks) are dropped. Only the header is read (the pixels are checked by
    :func:`read_stack`).

    Raises
    ------
    StackNotFoundError, StackError
        As :func:`read_stack` for a missing, special or unreadable file; ``role`` prefixes the
        message.
    """
    path = Path(path)
    try:
        st = _stat(path)
        if stat.S_ISDIR(st.st_mode):
            return {}
        if st.st_size == 0:
            raise StackError(f"{path}: empty file (0 bytes)", path=path)
        with _tifffile_log():
            try:
                found = _read_json(path)
            except StackError:
                raise
            except (Exception, MemoryError) as exc:
                raise _wrap(exc, path) from exc
    except StackError as exc:
        raise exc.with_role(role) from exc.__cause__
    found = found or {}
    found.pop("shape", None)
    found.pop("n_frames", None)
    return found


def _read_json(path: Path) -> dict[str, Any] | None:
    with _open_tiff(path) as tif:
        if not tif.pages:
            raise StackError(f"{path}: holds no image pages (damaged or not a TIFF)", path=path)
        first = tif.pages.first
        if tif.is_shaped:
            return _parse_description(first.description)
        if tif.is_imagej:
            info = (tif.imagej_metadata or {}).get("Info")
            return _parse_description(info) if isinstance(info, str) else None
        return _parse_description(first.description or "")
