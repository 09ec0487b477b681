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
import logging
import math
import os
import re
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import DTypeLike

__all__ = [
    "StackError",
    "StackNotFoundError",
    "StackWarning",
    "memory_limit_bytes",
    "StackWriter",
    "read_metadata",
    "read_stack",
    "sha256_file",
    "write_stack",
    "stage_text",
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


# -- limits ------------------------------------------------------------------------------

MAX_READ_FRACTION = 0.5
"""Largest share of the machine's physical memory one stack may need when read into memory
(compressed files, folders, ``memmap=False``). Memory-mapped reads are not limited."""


def memory_limit_bytes() -> int:
    """Bytes a stack read into memory may take: :data:`MAX_READ_FRACTION` of physical memory.

    From ``os.sysconf`` (Linux, macOS); psutil when that is unavailable; 8 GiB otherwise.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        try:
            import psutil  # optional (installed with napari)

            total = int(psutil.virtual_memory().total)
        except Exception:
            total = 16 * 2**30
    return int(total * MAX_READ_FRACTION)


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**28 else f"{n / 2**20:.3g} MiB"


def _check_memory(nbytes: int, path: Path, what: str) -> None:
    limit = memory_limit_bytes()
    if nbytes > limit:
        raise StackError(
            f"{path}: {what} would need {_gib(nbytes)} of memory, more than the "
            f"{_gib(limit)} allowed ({MAX_READ_FRACTION:.0%} of this machine's memory); "
            "refused before allocating. Check the file's header, or store it uncompressed so "
            "it can be memory-mapped",
            path=path,
        )


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded integers numerically (``f2`` before ``f10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _stat(path: Path) -> os.stat_result:
    """``os.stat(path)``; refuses (without opening it) anything but a regular file or folder."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise StackError(
                f"{path}: broken symbolic link (to {os.readlink(path)})", path=path
            ) from None
        raise StackNotFoundError(f"{path}: no such file or folder", path=path) from None
    except OSError as exc:
        raise StackError(f"{path}: cannot be read: {exc.strerror or exc}", path=path) from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise StackError(
            f"{path}: is {kind}, not a file; expected a TIFF file or a folder of TIFFs",
            path=path,
        )
    return st


def _open_tiff(path: Path) -> tifffile.TiffFile:
    try:
        # OME / Micro-Manager parsing would open other files named inside this one.
        return tifffile.TiffFile(path, is_ome=False, is_mmstack=False, is_ndtiff=False)
    except tifffile.TiffFileError as exc:
        raise StackError(f"{path}: not a TIFF file ({exc})", path=path) from None
    except OSError as exc:
        raise StackError(f"{path}: cannot be read: {exc.strerror or exc}", path=path) from None


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


_DTYPE_KINDS = "uif"  # unsigned, signed integers and floats: detector values
_KNOWN_COMPRESSION = frozenset(int(c) for c in tifffile.COMPRESSION)


def _declared_frames(page: Any) -> int | None:
    """Frame count our writers record in the first page's JSON (``n_frames``, ``shape``)."""
    meta = _parse_description(page.description or "")
    if not meta:
        return None
    for key in ("n_frames", "frames_written"):
        value = meta.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    shape = meta.get("shape")
    if (  # tifffile's "shaped" description of a (T, H, W) stack of (H, W) pages
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
        and tuple(shape[1:]) == tuple(page.shape)
    ):
        return shape[0]
    return None


def _page_shape(page: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in page.shape)


def _check_pages(tif: tifffile.TiffFile, path: Path, size: int) -> None:
    """Every page inside the file, one frame shape and dtype, the declared frame count present.

    Raises StackError naming the first page at fault.
    """
    pages = tif.pages
    n_pages = len(pages)
    if n_pages == 0:
        raise StackError(f"{path}: holds no image pages (damaged or not a TIFF)", path=path)
    first = pages.first
    first_shape = _page_shape(first)
    if first.dtype is not None and first.dtype.kind not in _DTYPE_KINDS:
        raise StackError(
            f"{path}: pixel type {first.dtype} is not supported; expected integer or "
            "floating-point detector values",
            path=path,
        )
    for i in range(n_pages):
        page = pages[i] if i else first
        shape = _page_shape(page)
        if page.dtype is None:
            raise StackError(
                f"{path}: page {i} has a pixel format tifffile cannot decode "
                f"({page.bitspersample} bits, sample format {page.sampleformat})",
                path=path,
            )
        if shape != first_shape or page.dtype != first.dtype:
            raise StackError(
                f"{path}: mixed page sizes: page {i} is {'x'.join(map(str, shape))} "
                f"{page.dtype} but page 0 is {'x'.join(map(str, first_shape))} {first.dtype}; "
                "expected every frame the same size",
                path=path,
            )
        if page.compression not in _KNOWN_COMPRESSION:
            raise StackError(
                f"{path}: page {i} uses compression scheme {int(page.compression)}, which is "
                "not a known TIFF compression (a damaged header?)",
                path=path,
            )
        offsets, counts = page.dataoffsets, page.databytecounts
        for off, count in zip(offsets, counts, strict=False):
            if off + count > size:
                raise StackError(
                    f"{path}: truncated TIFF: page {i}'s pixel data runs to byte {off + count}, "
                    f"past the end of the {size}-byte file",
                    path=path,
                )
        packed = page.bitspersample != 8 * page.dtype.itemsize  # e.g. 12-bit in 2-byte pixels
        if page.compression == 1 and not packed and sum(counts) < page.nbytes:
            raise StackError(
                f"{path}: truncated or damaged TIFF: page {i} stores {sum(counts)} bytes of "
                f"pixel data, but a {'x'.join(map(str, shape))} {page.dtype} frame needs "
                f"{page.nbytes}",
                path=path,
            )
    declared = _declared_frames(first)
    if declared is not None and declared != n_pages:
        if declared > n_pages:
            raise StackError(
                f"{path}: truncated: its metadata declares {declared} frames but the file "
                f"holds only {n_pages} page(s)",
                path=path,
            )
        raise StackError(
            f"{path}: inconsistent: holds {n_pages} pages but its metadata declares "
            f"{declared} frames",
            path=path,
        )


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


def _check_imagej(tif: tifffile.TiffFile, series: Any, path: Path) -> None:
    """An ImageJ header's image count must match the images tifffile found."""
    if not tif.is_imagej:
        return
    declared = (tif.imagej_metadata or {}).get("images")
    found = int(math.prod(series.shape[:-2])) if len(series.shape) > 2 else 1
    if isinstance(declared, int) and declared != found:
        raise StackError(
            f"{path}: inconsistent ImageJ header: it declares {declared} images but the file "
            f"holds {found}" + (" (truncated?)" if declared > found else ""),
            path=path,
        )


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


def _parse_description(description: str) -> dict[str, Any] | None:
    try:
        value = json.loads(description)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


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
