"""Malformed input files made on the fly, for the fuzz tests (no test functions here).

:func:`make_cases` writes a few valid stacks (our exports, plain tifffile multi-page files,
zlib / LZW compressed, tiled, ImageJ) and derives from them, with a seeded generator:
truncations at random offsets, bit flips in the header / IFDs / pixel data, random bytes,
odd dtypes and dimensions, an empty file, huge declared shapes in tiny files, IFD loops,
compressed pages with corrupt streams, mixed page shapes, ImageJ headers declaring more
images than stored, and special paths (a FIFO, a folder named ``x.tif``, symlink loops,
folders holding junk). Every case says what a reader may do with it (:class:`FuzzCase`).

:func:`guarded` runs one entry point on one case under a timeout and classifies the outcome,
so the same cases can be fed to any entry point: ``read_stack``, the napari reader here, the
commands' main functions (``fuse`` as LR / HR / truth, ``evaluate``, ``simulate``) later, e.g.::

    good = {"lr": lr_path, "hr": hr_path}              # a valid pair made by the test
    for case in make_cases(tmp_path / "fuzz"):
        def fuse_as_lr(path):
            return cli.main(["fuse", "--lr", str(path), "--hr", str(good["hr"]), "-o", out])
        outcome = guarded(fuse_as_lr, case, (SystemExit, CommandError), data=lambda v: None)

(a command that prints the error and returns a non-zero code instead of raising needs a
wrapper that raises, so the message can be checked for the file's name).
"""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_xfusion.core.io import StackWriter, write_stack

# What a reader may do with a case.
REFUSE = "refuse"  # must raise a StackError
EXACT = "exact"  # may be refused; if read, the data must equal `reference` exactly
EITHER = "either"  # damaged in ways a reader cannot always see: read or refused, no crash

DECLINED = "declined"
"""What an entry point's call returns to say it does not take such a path at all (napari's
``get_reader`` returning None): neither read nor refused, and not a failure."""


@dataclass
class FuzzCase:
    """One input path and what a reader may do with it.

    Attributes
    ----------
    path : Path
        The file, folder or special path.
    family : str
        What was done to it (``"truncated"``, ``"bitflip-ifd"``, ``"fifo"`` ...).
    expect : str
        :data:`REFUSE`, :data:`EXACT` or :data:`EITHER`.
    reference : numpy.ndarray, optional
        The complete data of the original (for :data:`EXACT`).
    names : tuple of str
        Names one of which every error message must contain (the file's, or for a folder its
        own or the bad entry's).
    """

    path: Path
    family: str
    expect: str
    reference: np.ndarray | None = None
    names: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = (self.path.name,)


# ---------------------------------------------------------------------------------------------
# Valid originals
# ---------------------------------------------------------------------------------------------


def _originals(root: Path, rng: np.random.Generator) -> list[tuple[Path, np.ndarray]]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    u16 = rng.integers(0, 4000, (6, 16, 24), dtype=np.uint16)
    f32 = rng.random((5, 12, 20), dtype=np.float32)
    p = root / "orig_export.tif"
    write_stack(p, u16, {"method": "bicubic", "key_indices": [0, 5]})
    out.append((p, u16))
    p = root / "orig_float.tif"
    write_stack(p, f32, {"separation": 1})
    out.append((p, f32))
    p = root / "orig_writer.tif"
    with StackWriter(p, (4, 16, 24), np.uint16, {"method": "flow"}) as w:
        for t in range(4):
            w.write(u16[t], index=t)
    out.append((p, u16[:4]))
    p = root / "orig_plain.tif"
    with tifffile.TiffWriter(p) as w:
        for frame in u16:
            w.write(frame, metadata=None, photometric="minisblack")
    out.append((p, u16))
    p = root / "orig_series.tif"  # one shaped series per page: tifffile's default in a loop
    with tifffile.TiffWriter(p) as w:
        for frame in u16[:5]:
            w.write(frame)
    out.append((p, u16[:5]))
    p = root / "orig_zlib.tif"
    smooth = (np.arange(6 * 16 * 24).reshape(6, 16, 24) % 97).astype(np.uint16)
    tifffile.imwrite(p, smooth, compression="zlib", metadata=None, photometric="minisblack")
    out.append((p, smooth))
    p = root / "orig_tiled.tif"
    tiled = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    tifffile.imwrite(p, tiled, tile=(16, 16), metadata=None, photometric="minisblack")
    out.append((p, tiled))
    p = root / "orig_imagej.tif"
    ij = rng.integers(0, 60000, (4, 16, 16), dtype=np.uint16)
    tifffile.imwrite(p, ij, imagej=True)
    out.append((p, ij))
    try:
        p = root / "orig_lzw.tif"
        tifffile.imwrite(p, smooth, compression="lzw", metadata=None, photometric="minisblack")
        out.append((p, smooth))
    except Exception:  # imagecodecs missing: LZW cannot be written here
        pass
    return out


def _ifd_offsets(path: Path) -> list[int]:
    with tifffile.TiffFile(path) as tif:
        return [int(page.offset) for page in tif.pages]


def _data_ranges(path: Path) -> list[tuple[int, int]]:
    with tifffile.TiffFile(path) as tif:
        return [
            (int(o), int(c))
            for page in tif.pages
            for o, c in zip(page.dataoffsets, page.databytecounts, strict=False)
        ]


def _write(path: Path, data: bytes | bytearray) -> Path:
    path.write_bytes(bytes(data))
    return path


def _flip(data: bytes, rng: np.random.Generator, lo: int, hi: int, n: int) -> bytearray:
    out = bytearray(data)
    hi = max(lo + 1, min(hi, len(out)))
    for _ in range(n):
        pos = int(rng.integers(lo, hi))
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return out


def _patch_tag(data: bytes, ifd: int, tag: int, value: int) -> bytearray:
    """Set a SHORT/LONG tag of the little-endian classic-TIFF IFD at ``ifd`` to ``value``."""
    out = bytearray(data)
    (count,) = struct.unpack_from("<H", out, ifd)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        code, kind = struct.unpack_from("<HH", out, entry)
        if code == tag:
            if kind == 3:  # SHORT
                struct.pack_into("<HH", out, entry + 8, min(value, 65535), 0)
            else:
                struct.pack_into("<I", out, entry + 8, value)
    return out


def _next_ifd_pos(data: bytes, ifd: int) -> int:
    (count,) = struct.unpack_from("<H", data, ifd)
    return ifd + 2 + 12 * count


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------


def make_cases(root: str | os.PathLike, seed: int = 0) -> list[FuzzCase]:
    """Write the fuzz cases under ``root`` (a fresh folder); about 330 of them."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    cases: list[FuzzCase] = []
    originals = _originals(root / "orig", rng)
    for src, ref in originals:
        cases.append(FuzzCase(src, "valid", EXACT, ref))
    d = root / "cases"
    d.mkdir()

    for src, ref in originals:
        data = src.read_bytes()
        stem = src.stem.removeprefix("orig_")
        # Truncated at random offsets (and at the very end minus one byte).
        cuts = sorted({int(c) for c in rng.integers(1, len(data), 15)} | {len(data) - 1})
        for cut in cuts:
            p = _write(d / f"trunc_{stem}_{cut}.tif", data[:cut])
            cases.append(FuzzCase(p, "truncated", EXACT, ref))
        # Bit flips: header, IFDs, pixel data.
        ifds = _ifd_offsets(src)
        ranges = _data_ranges(src)
        for k in range(4):
            p = _write(d / f"flip_hdr_{stem}_{k}.tif", _flip(data, rng, 0, 8, 1 + k % 2))
            cases.append(FuzzCase(p, "bitflip-header", EITHER))
        for k in range(5):
            ifd = ifds[int(rng.integers(0, len(ifds)))]
            end = _next_ifd_pos(data, ifd) + 4
            p = _write(d / f"flip_ifd_{stem}_{k}.tif", _flip(data, rng, ifd, end, 1 + k % 3))
            cases.append(FuzzCase(p, "bitflip-ifd", EITHER))
        for k in range(4):
            off, count = ranges[int(rng.integers(0, len(ranges)))]
            p = _write(d / f"flip_data_{stem}_{k}.tif", _flip(data, rng, off, off + count, 3))
            cases.append(FuzzCase(p, "bitflip-data", EITHER))

    # Random bytes, some behind a valid TIFF signature.
    for k in range(24):
        n = int(rng.integers(1, 3000))
        body = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        head = [b"", b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00"][k % 4]
        p = _write(d / f"random_{k}.tif", head + body)
        cases.append(FuzzCase(p, "random", EITHER))

    # Odd dtypes and dimensions.
    odd: dict[str, tuple[np.ndarray, str]] = {
        "complex": (np.ones((2, 8, 8), np.complex64), REFUSE),
        "bool": (np.ones((2, 8, 8), bool), REFUSE),
        "float16": (np.ones((2, 8, 8), np.float16), EXACT),
        "int64": (np.arange(128, dtype=np.int64).reshape(2, 8, 8), EXACT),
        "int8": (np.arange(128, dtype=np.int8).reshape(2, 8, 8), EXACT),
        "float64": (np.linspace(0, 1, 128).reshape(2, 8, 8), EXACT),
        "4d": (np.zeros((2, 3, 8, 8), np.uint16), REFUSE),
        "5d": (np.zeros((2, 2, 2, 8, 8), np.uint8), REFUSE),
        "1d": (np.arange(16, dtype=np.uint16), EITHER),
        "rgb": (np.zeros((2, 8, 8, 3), np.uint8), REFUSE),
    }
    for name, (arr, expect) in odd.items():
        p = d / f"dtype_{name}.tif"
        kwargs: dict[str, Any] = {"photometric": "rgb"} if name == "rgb" else {}
        tifffile.imwrite(p, arr, **kwargs)
        ref = arr if arr.ndim == 3 else None
        cases.append(FuzzCase(p, "odd-dtype", expect if ref is not None or expect != EXACT
                              else EITHER, ref))  # fmt: skip
    p = _write(d / "nan.tif", b"")
    write_stack(p, np.full((2, 4, 4), np.nan, np.float32))
    cases.append(FuzzCase(p, "non-finite", REFUSE))

    cases.append(FuzzCase(_write(d / "empty.tif", b""), "zero-size", REFUSE))
    cases.append(FuzzCase(_write(d / "one_byte.tif", b"I"), "zero-size", REFUSE))

    # Huge declared shapes in tiny files: width/length patched, uncompressed and compressed.
    for src, _ in originals:
        if src.stem not in ("orig_plain", "orig_zlib", "orig_export"):
            continue
        data = src.read_bytes()
        ifd0 = _ifd_offsets(src)[0]
        for k, (w, h) in enumerate([(100000, 100000), (65535, 65535), (3000000, 7)]):
            patched = _patch_tag(_patch_tag(data, ifd0, 256, w), ifd0, 257, h)
            p = _write(d / f"huge_{src.stem}_{k}.tif", patched)
            cases.append(FuzzCase(p, "huge-shape", REFUSE))
        # Every page patched, with RowsPerStrip, so the pages still agree with each other.
        patched = bytearray(data)
        for ifd in _ifd_offsets(src):
            patched = _patch_tag(_patch_tag(patched, ifd, 256, 50000), ifd, 257, 50000)
            patched = _patch_tag(patched, ifd, 278, 50000)
        p = _write(d / f"huge_all_{src.stem}.tif", patched)
        cases.append(FuzzCase(p, "huge-shape", REFUSE))

    # IFD loops.
    for src, _ in originals:
        if src.stem not in ("orig_plain", "orig_export", "orig_writer"):
            continue
        data = src.read_bytes()
        ifds = _ifd_offsets(src)
        for k, (at, to) in enumerate([(-1, 0), (-1, -1), (1, 0), (2, 1)]):
            looped = bytearray(data)
            struct.pack_into("<I", looped, _next_ifd_pos(data, ifds[at]), ifds[to])
            p = _write(d / f"loop_{src.stem}_{k}.tif", looped)
            cases.append(FuzzCase(p, "ifd-loop", REFUSE))

    # Compressed pages with corrupt streams (bytes scrambled, not just flipped).
    for src, _ in originals:
        if src.stem not in ("orig_zlib", "orig_lzw"):
            continue
        data = src.read_bytes()
        for k, (off, count) in enumerate(_data_ranges(src)[:6]):
            broken = bytearray(data)
            junk = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
            broken[off : off + count] = junk
            p = _write(d / f"stream_{src.stem}_{k}.tif", broken)
            cases.append(FuzzCase(p, "corrupt-stream", EITHER))
            # Stream cut short: byte count kept, data zeroed from the middle.
            cut = bytearray(data)
            cut[off + count // 3 : off + count] = bytes(count - count // 3)
            p = _write(d / f"streamcut_{src.stem}_{k}.tif", cut)
            cases.append(FuzzCase(p, "corrupt-stream", EITHER))

    # Compression tags patched: codecs this machine may lack (LZW, JPEG, LERC), unknown ones.
    src = root / "orig" / "orig_plain.tif"
    data = src.read_bytes()
    for code in (5, 7, 8, 32773, 34887, 50000, 65535):
        patched = bytearray(data)
        for ifd in _ifd_offsets(src):
            patched = _patch_tag(patched, ifd, 259, code)
        p = _write(d / f"codec_{code}.tif", patched)
        cases.append(FuzzCase(p, "codec", EITHER))

    # Mixed page shapes / dtypes.
    for k, shapes in enumerate([[(16, 24)] * 3 + [(8, 8)] * 3, [(16, 24), (16, 25)],
                                [(8, 8), (8, 8), (16, 16), (8, 8)]]):  # fmt: skip
        p = d / f"mixed_shape_{k}.tif"
        with tifffile.TiffWriter(p) as w:
            for shape in shapes:
                w.write(np.zeros(shape, np.uint16), metadata=None, photometric="minisblack")
        cases.append(FuzzCase(p, "mixed-pages", REFUSE))
    p = d / "mixed_dtype.tif"
    with tifffile.TiffWriter(p) as w:
        w.write(np.zeros((8, 8), np.uint16), metadata=None, photometric="minisblack")
        w.write(np.zeros((8, 8), np.float32), metadata=None, photometric="minisblack")
    cases.append(FuzzCase(p, "mixed-pages", REFUSE))

    # ImageJ headers declaring more images than the file holds (one IFD, contiguous data).
    src = root / "orig" / "orig_imagej.tif"
    data = src.read_bytes()
    for k, n in enumerate([5, 9]):
        patched = data.replace(b"images=4", f"images={n}".encode())
        p = _write(d / f"imagej_images_{k}.tif", patched)
        cases.append(FuzzCase(p, "imagej-count", REFUSE))
    many = root / "orig" / "imagej_many.tif"
    tifffile.imwrite(many, np.zeros((400, 8, 8), np.uint16), imagej=True)
    p = _write(d / "imagej_cut.tif", many.read_bytes()[:3000])
    cases.append(FuzzCase(p, "imagej-count", REFUSE))
    single = root / "orig" / "imagej_single.tif"
    tifffile.imwrite(single, np.zeros((1, 64, 64), np.uint16), imagej=True)
    body = single.read_bytes().replace(b"ImageJ=", b"images=400\nImageJ=", 1)
    p = _write(d / "imagej_bomb.tif", body)
    cases.append(FuzzCase(p, "imagej-count", EITHER))

    # Our exports whose frame count disagrees with the pages.
    src = root / "orig" / "orig_export.tif"
    data = src.read_bytes()
    for k, (a, b) in enumerate([(b'"n_frames": 6', b'"n_frames": 9'),
                                (b'"n_frames": 6', b'"n_frames": 2')]):  # fmt: skip
        p = _write(d / f"count_{k}.tif", data.replace(a, b))
        cases.append(FuzzCase(p, "frame-count", REFUSE))

    cases.extend(_special_paths(root / "special", rng))
    return cases


def _special_paths(root: Path, rng: np.random.Generator) -> list[FuzzCase]:
    root.mkdir()
    cases = []
    fifo = root / "pipe.tif"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        cases.append(FuzzCase(fifo, "fifo", REFUSE))
    folder_tif = root / "x.tif"
    folder_tif.mkdir()
    cases.append(FuzzCase(folder_tif, "dir-named-tif", REFUSE))  # an empty folder
    loop = root / "loop.tif"
    os.symlink(loop.name, loop)  # points at itself
    cases.append(FuzzCase(loop, "symlink-loop", REFUSE))
    broken = root / "broken.tif"
    os.symlink("nowhere.tif", broken)
    cases.append(FuzzCase(broken, "broken-link", REFUSE))
    cases.append(FuzzCase(root / "missing.tif", "missing", REFUSE))
    frames = rng.integers(0, 1000, (3, 8, 8), dtype=np.uint16)
    for k, junk in enumerate(["dir", "loop", "fifo", "badtiff", "mixed"]):
        folder = root / f"frames_{junk}"
        folder.mkdir()
        for t, frame in enumerate(frames):
            tifffile.imwrite(folder / f"f{t}.tif", frame)
        bad = folder / "f9.tif"
        if junk == "dir":
            bad.mkdir()
        elif junk == "loop":
            os.symlink(bad.name, bad)
        elif junk == "fifo" and hasattr(os, "mkfifo"):
            os.mkfifo(bad)
        elif junk == "badtiff":
            bad.write_bytes(b"not a tiff at all")
        else:
            tifffile.imwrite(bad, np.zeros((9, 9), np.uint16))
        cases.append(FuzzCase(folder, "folder-junk", REFUSE, names=(folder.name, bad.name)))
        del k
    good = root / "frames_ok"
    good.mkdir()
    for t, frame in enumerate(frames):
        tifffile.imwrite(good / f"f{t}.tif", frame)
    cases.append(FuzzCase(good, "folder-valid", EXACT, frames))
    return cases


# ---------------------------------------------------------------------------------------------
# Running an entry point on a case
# ---------------------------------------------------------------------------------------------


class FuzzTimeout(BaseException):
    """Raised by the watchdog when a call runs past its time."""


@dataclass
class Outcome:
    """The outcome of one call.

    ``kind``: ``"read"``, ``"refused"``, ``"declined"``, or a failure: ``"crash"`` (another
    exception), ``"timeout"``, ``"unnamed"`` (the message misses the file), ``"wrong-data"``
    (a damaged file read as something other than its original), ``"accepted-bad"`` (a file
    that must be refused was read)."""

    kind: str
    detail: str = ""
    value: Any = None

    @property
    def failed(self) -> bool:
        return self.kind not in ("read", "refused", DECLINED)


def guarded(
    call: Callable[[Path], Any],
    case: FuzzCase,
    allowed: tuple[type[BaseException], ...],
    timeout: float = 5.0,
    data: Callable[[Any], np.ndarray | None] = lambda v: v,
) -> Outcome:
    """Run ``call(case.path)`` under a ``timeout`` (SIGALRM; main thread) and classify it.

    ``allowed`` are the exception types an entry point documents (e.g. ``StackError``);
    ``data`` extracts the array read from ``call``'s return value (None: nothing to compare).
    """

    def _alarm(signum: int, frame: Any) -> None:
        raise FuzzTimeout

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        value = call(case.path)
    except FuzzTimeout:
        return Outcome("timeout", f"{case.path.name}: no answer within {timeout} s")
    except allowed as exc:
        message = str(exc)
        if not any(name in message for name in case.names):
            return Outcome("unnamed", f"{type(exc).__name__}: {message}")
        return Outcome("refused", message)
    except Exception as exc:  # anything else is a crash (a traceback for the user)
        return Outcome("crash", f"{type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if isinstance(value, str) and value == DECLINED:
        return Outcome(DECLINED)
    if case.expect == REFUSE:
        return Outcome("accepted-bad", f"{case.family} read without an error", value)
    if case.expect == EXACT and case.reference is not None:
        arr = data(value)
        if arr is not None:
            arr = np.asarray(arr)
            ref = case.reference
            if arr.shape != ref.shape or arr.dtype != ref.dtype or not np.array_equal(arr, ref):
                return Outcome(
                    "wrong-data",
                    f"{case.family}: read {arr.shape} {arr.dtype}, the original is "
                    f"{ref.shape} {ref.dtype}" + (" (values differ)" if arr.shape == ref.shape
                                                  else ""),
                    value,
                )  # fmt: skip
    return Outcome("read", "", value)
