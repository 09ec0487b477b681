"""Checks made before any pixel is read: special files, every page, memory, finite values."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_xfusion.core.io.description import _parse_description
from napari_xfusion.core.io.errors import StackError, StackNotFoundError

TIFF_SUFFIXES = (".tif", ".tiff")


# Read the stack in blocks of about this many bytes when scanning for non-finite values, so a
# memory-mapped stack is never pulled into memory as a whole.
_SCAN_BLOCK_BYTES = 64 * 2**20


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
