"""Phantom ``.cine`` files (Vision Research): frame times, and uncompressed 8/16-bit images.

The layout, little-endian, as documented by Vision Research ("The CINE File Format") and as
read by the open readers (pims' ``Cine``):

- ``CINEFILEHEADER`` (44 bytes at 0): ``Type`` "CI", ``Headersize``, ``Compression``,
  ``Version`` (uint16 each); ``FirstMovieImage`` int32, ``TotalImageCount`` uint32,
  ``FirstImageNo`` int32 (number of the first saved image; the trigger frame is number 0),
  ``ImageCount`` uint32; ``OffImageHeader``, ``OffSetup``, ``OffImageOffsets`` uint32;
  ``TriggerTime`` TIME64.
- ``BITMAPINFOHEADER`` (40 bytes at ``OffImageHeader``): width, height (> 0: rows bottom-up),
  bit count 8/16, compression 0, image size.
- ``SETUP`` at ``OffSetup``: its size changed between versions, so only fixed early offsets are
  read: ``FrameRate16`` (uint16 at 0), the mark "ST" at 140 and ``Length`` (uint16 at 142, the
  size of this version's SETUP), then, when ``Length`` covers them, ``FrameRate`` (uint32 at
  768) and ``ShutterNs`` (uint32 at 1568).
- Tagged information blocks from ``OffSetup + Length`` to ``OffImageOffsets``: ``BlockSize``
  uint32 (header included), ``Type`` uint16, reserved uint16, data. Type 1002: TIME64 per image;
  1003: uint32 exposure per image in units of 2^-32 s; 1001 (older files): TIME64 per image, or
  (TIME64, uint32 exposure) per image. Other types are skipped.
- ``pImage``: int64 file offset per image at ``OffImageOffsets``; at each, the annotation
  (``AnnotationSize`` uint32, >= 8, counting itself and the uint32 ``ImageSize`` that ends it),
  then the pixels.

TIME64 is a uint64 whose low 32 bits are the fraction of a second (units of 2^-32 s) and high
32 bits the seconds since 1970. Times are returned relative to ``TriggerTime`` (t = 0 at the
trigger), exact to 1 ns.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from napari_xfusion.core.cameras.errors import CameraMetadataError
from napari_xfusion.core.cameras.times import FrameTimes
from napari_xfusion.core.io import checks as io_checks

HEADER = struct.Struct("<2sHHHiIiIIIIQ")  # 44 bytes
BITMAPINFO = struct.Struct("<IiiHHIIiiII")  # 40 bytes
SETUP_MARK_OFFSET = 140
SETUP_LENGTH_OFFSET = 142
SETUP_FRAME_RATE_OFFSET = 768
SETUP_SHUTTER_NS_OFFSET = 1568
SETUP_REAL_BPP_OFFSET = 896
# The SETUP size of recent files (mark "ST" at 0xE0, tagged blocks from 0x16C0).
SETUP_LENGTH = 5740
TAG_TIME_EXPOSURE = 1001
TAG_TIME_ONLY = 1002
TAG_EXPOSURE_ONLY = 1003
CAMERA = "Phantom"
# Without an origin in the FrameTimes the writer puts t = 0 here (2026-01-01T00:00:00Z).
DEFAULT_ORIGIN_UNIX_NS = 1_767_225_600 * 10**9
_FRACTION = 1 << 32


def time64_to_ns(value: int) -> int:
    """A TIME64 (fraction in the low, seconds in the high 32 bits) as ns since 1970."""
    seconds, fraction = value >> 32, value & 0xFFFFFFFF
    return seconds * 10**9 + (fraction * 10**9 + _FRACTION // 2) // _FRACTION


def ns_to_time64(ns: int) -> int:
    """ns since 1970 as a TIME64 (rounded to the nearest 2^-32 s)."""
    if ns < 0 or ns >= (1 << 32) * 10**9:
        raise ValueError(f"time {ns} ns since 1970 does not fit a TIME64 (1970 .. 2106)")
    seconds, rest = divmod(int(ns), 10**9)
    fraction = (rest * _FRACTION + 10**9 // 2) // 10**9
    if fraction == _FRACTION:
        seconds, fraction = seconds + 1, 0
    return (seconds << 32) | fraction


class _Reader:
    """Bounded reads from one open cine file; every failure names the file and field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise CameraMetadataError(path, "no such file") from None
        except OSError as exc:
            raise CameraMetadataError(path, f"cannot be read: {exc.strerror or exc}") from None
        self.size = os.fstat(self.file.fileno()).st_size

    def close(self) -> None:
        self.file.close()

    def read(self, offset: int, n: int, field: str) -> bytes:
        if offset < 0 or offset + n > self.size:
            raise CameraMetadataError(
                self.path,
                f"truncated: field {field} needs bytes {offset} .. {offset + n} but the file "
                f"has {self.size} bytes",
                field=field,
            )
        self.file.seek(offset)
        data = self.file.read(n)
        if len(data) != n:
            raise CameraMetadataError(self.path, f"truncated while reading {field}", field=field)
        return data


def _parse_header(reader: _Reader) -> dict:
    raw = reader.read(0, HEADER.size, "CINEFILEHEADER")
    (kind, header_size, compression, version, first_movie, total, first_no, count,
     off_bitmap, off_setup, off_offsets, trigger) = HEADER.unpack(raw)  # fmt: skip
    path = reader.path
    if kind != b"CI":
        raise CameraMetadataError(
            path, f"field Type is {kind!r}: expected b'CI' (not a Phantom cine file)",
            field="Type",
        )  # fmt: skip
    if header_size < HEADER.size:
        raise CameraMetadataError(
            path, f"field Headersize is {header_size}: expected >= {HEADER.size}",
            field="Headersize",
        )  # fmt: skip
    if count < 1:
        raise CameraMetadataError(path, "field ImageCount is 0: expected >= 1 image",
                                  field="ImageCount")  # fmt: skip
    for name, value in (("OffImageHeader", off_bitmap), ("OffSetup", off_setup),
                        ("OffImageOffsets", off_offsets)):  # fmt: skip
        if value < HEADER.size or value >= reader.size:
            raise CameraMetadataError(
                path,
                f"field {name} = {value} points outside the file ({reader.size} bytes): "
                "truncated or not a cine file",
                field=name,
            )
    return dict(
        compression=compression, version=version, first_movie=first_movie, total=total,
        first_no=first_no, count=count, off_bitmap=off_bitmap, off_setup=off_setup,
        off_offsets=off_offsets, trigger=trigger,
    )  # fmt: skip


def _parse_setup(reader: _Reader, header: dict) -> dict:
    off = header["off_setup"]
    early = reader.read(off, SETUP_LENGTH_OFFSET + 2, "SETUP")
    rate16 = struct.unpack_from("<H", early, 0)[0]
    mark = early[SETUP_MARK_OFFSET : SETUP_MARK_OFFSET + 2]
    length = struct.unpack_from("<H", early, SETUP_LENGTH_OFFSET)[0]
    # Older versions have no mark / Length: then there are no tagged blocks to find.
    if mark != b"ST" or length < SETUP_LENGTH_OFFSET + 2:
        length = None
    elif off + length > header["off_offsets"]:
        raise CameraMetadataError(
            reader.path,
            f"SETUP field Length = {length} runs past OffImageOffsets "
            f"({header['off_offsets']}): expected the setup to end before the image offsets",
            field="Length",
        )
    rate = float(rate16)
    shutter_ns = None
    if length is not None and length >= SETUP_FRAME_RATE_OFFSET + 4:
        rate32 = struct.unpack("<I", reader.read(off + SETUP_FRAME_RATE_OFFSET, 4, "FrameRate"))
        rate = float(rate32[0]) or rate
    if length is not None and length >= SETUP_SHUTTER_NS_OFFSET + 4:
        raw = reader.read(off + SETUP_SHUTTER_NS_OFFSET, 4, "ShutterNs")
        shutter_ns = struct.unpack("<I", raw)[0] or None
    return dict(length=length, rate=rate, shutter_ns=shutter_ns)


def _parse_tagged_blocks(reader: _Reader, header: dict, setup: dict) -> dict:
    """Per-image times (ns since 1970) and exposures (s) from the tagged blocks, if any."""
    out: dict = {}
    if setup["length"] is None:
        return out
    count = header["count"]
    pos = header["off_setup"] + setup["length"]
    end = header["off_offsets"]
    while pos + 8 <= end:
        size, kind = struct.unpack("<IH", reader.read(pos, 6, "tagged block header"))
        if size < 8 or pos + size > end:
            raise CameraMetadataError(
                reader.path,
                f"tagged block at byte {pos} has BlockSize {size}: expected 8 .. {end - pos} "
                "(the space before OffImageOffsets)",
                field="BlockSize",
            )
        n_data = size - 8
        if kind in (TAG_TIME_ONLY, TAG_EXPOSURE_ONLY, TAG_TIME_EXPOSURE):
            data = reader.read(pos + 8, n_data, f"tagged block {kind}")
            if kind == TAG_TIME_ONLY or (kind == TAG_TIME_EXPOSURE and n_data < 12 * count):
                if n_data < 8 * count:
                    raise CameraMetadataError(
                        reader.path,
                        f"time block (type {kind}) holds {n_data // 8} TIME64 values: "
                        f"expected {count} (ImageCount)",
                        field=f"tagged block {kind}",
                    )
                values = np.frombuffer(data, "<u8", count)
                if kind == TAG_TIME_ONLY or "times" not in out:
                    out["times"] = [time64_to_ns(int(v)) for v in values]
            elif kind == TAG_TIME_EXPOSURE:
                records = np.frombuffer(data, np.dtype([("t", "<u8"), ("e", "<u4")]), count)
                out.setdefault("times", [time64_to_ns(int(v)) for v in records["t"]])
                out.setdefault("exposure", records["e"].astype(np.float64) / _FRACTION)
            else:
                if n_data < 4 * count:
                    raise CameraMetadataError(
                        reader.path,
                        f"exposure block (type 1003) holds {n_data // 4} values: expected "
                        f"{count} (ImageCount)",
                        field="tagged block 1003",
                    )
                out["exposure"] = np.frombuffer(data, "<u4", count).astype(np.float64) / _FRACTION
        pos += size
    return out


def _frame_times(reader: _Reader, header: dict, setup: dict, tags: dict) -> FrameTimes:
    count = header["count"]
    numbers = header["first_no"] + np.arange(count, dtype=np.int64)
    trigger_ns = time64_to_ns(header["trigger"])
    if "times" in tags:
        rel = np.array([t - trigger_ns for t in tags["times"]], dtype=np.float64) * 1e-9
    else:
        rate = setup["rate"]
        if not rate > 0:
            raise CameraMetadataError(
                reader.path,
                "has no time block (tagged block 1002) and SETUP field FrameRate is 0: "
                "expected per-frame times or a frame rate",
                field="FrameRate",
            )
        rel = numbers / rate
    exposure = None
    if "exposure" in tags:
        exposure = float(np.median(tags["exposure"]))
    elif setup["shutter_ns"]:
        exposure = setup["shutter_ns"] * 1e-9
    trigger_index = int(-numbers[0]) if numbers[0] <= 0 <= numbers[-1] else None
    return FrameTimes(
        times_s=rel,
        frame_numbers=numbers,
        source=str(reader.path),
        trigger_frame=trigger_index,
        exposure_s=exposure,
        camera=CAMERA,
        origin_unix_ns=trigger_ns,
    )


def _open(path: os.PathLike | str) -> tuple[_Reader, dict, FrameTimes]:
    reader = _Reader(Path(path))
    try:
        header = _parse_header(reader)
        setup = _parse_setup(reader, header)
        tags = _parse_tagged_blocks(reader, header, setup)
        times = _frame_times(reader, header, setup, tags)
    except BaseException:
        reader.close()
        raise
    return reader, header, times


def read_cine_times(path: os.PathLike | str, *, n_frames: int | None = None) -> FrameTimes:
    """The frame times of a Phantom ``.cine`` file (header and time block only, no pixels).

    Parameters
    ----------
    path : path-like
        The ``.cine`` file.
    n_frames : int, optional
        Frame count of the image stack these times belong to; a different count raises.

    Returns
    -------
    FrameTimes
        Seconds relative to the header's ``TriggerTime``; ``origin_unix_ns`` is that time.

    Raises
    ------
    CameraMetadataError
        Truncated file, wrong magic, offsets outside the file, short time block, ...
    """
    reader, _, times = _open(path)
    reader.close()
    return times.check_count(n_frames)


def read_cine(path: os.PathLike | str) -> tuple[np.ndarray, FrameTimes]:
    """Images and frame times of an uncompressed monochrome 8/16-bit Phantom ``.cine`` file.

    Returns
    -------
    frames : ndarray, uint8 or uint16, shape (N, H, W)
        Top row first (cine stores bottom-up rows when ``biHeight`` > 0).
    times : FrameTimes
        As :func:`read_cine_times`.

    Raises
    ------
    CameraMetadataError
        As :func:`read_cine_times`, and for compressed, packed (10/12-bit) or colour images.
    """
    reader, header, times = _open(path)
    try:
        frames = _read_images(reader, header)
    finally:
        reader.close()
    return frames, times


def _read_images(reader: _Reader, header: dict) -> np.ndarray:
    path = reader.path
    (bi_size, width, height, _planes, bits, bi_compression, _image_size, *_rest) = (
        BITMAPINFO.unpack(reader.read(header["off_bitmap"], BITMAPINFO.size, "BITMAPINFOHEADER"))
    )
    if header["compression"] != 0 or bi_compression != 0:
        raise CameraMetadataError(
            path,
            f"field Compression is {header['compression']} (biCompression "
            f"{bi_compression}): only uncompressed (0) images can be read; export the cine "
            "uncompressed or as TIFF + XML",
            field="Compression",
        )
    if bits not in (8, 16):
        raise CameraMetadataError(
            path,
            f"field biBitCount is {bits}: expected 8 or 16 (monochrome; packed 10/12-bit and "
            "colour cines are not supported)",
            field="biBitCount",
        )
    if width <= 0 or height == 0:
        raise CameraMetadataError(
            path, f"image size {width} x {height} (biWidth x biHeight): expected > 0",
            field="biWidth",
        )  # fmt: skip
    bottom_up = height > 0
    height = abs(height)
    dtype = np.dtype("<u1" if bits == 8 else "<u2")
    row_bytes = width * dtype.itemsize
    count = header["count"]
    pointers = np.frombuffer(
        reader.read(header["off_offsets"], 8 * count, "pImage (image offsets)"), "<i8"
    )
    nbytes = count * height * row_bytes
    # Looked up at call time so tests can patch core.io.checks.memory_limit_bytes.
    limit = io_checks.memory_limit_bytes()
    if nbytes > limit:
        raise CameraMetadataError(
            path,
            f"{count} images of {width} x {height} x {bits} bit would need "
            f"{nbytes / 2**30:.3g} GiB of memory, more than the {limit / 2**30:.3g} GiB allowed: "
            "refused before allocating (check ImageCount / biWidth / biHeight, or read fewer "
            "frames)",
            field="ImageCount",
        )
    frames = np.empty((count, height, width), dtype=dtype.newbyteorder("="))
    for i, pointer in enumerate(pointers.tolist()):
        field = f"image {i} (frame {header['first_no'] + i})"
        annotation = struct.unpack("<I", reader.read(pointer, 4, f"{field} AnnotationSize"))[0]
        if annotation < 8:
            raise CameraMetadataError(
                path, f"{field}: AnnotationSize is {annotation}: expected >= 8",
                field="AnnotationSize",
            )  # fmt: skip
        raw_size = reader.read(pointer + annotation - 4, 4, f"{field} ImageSize")
        size = struct.unpack("<I", raw_size)[0]
        if size < row_bytes * height or size % height:
            raise CameraMetadataError(
                path,
                f"{field}: ImageSize is {size} bytes: expected {row_bytes * height} "
                f"({width} x {height} x {bits} bit)",
                field="ImageSize",
            )
        raw = reader.read(pointer + annotation, size, f"{field} pixels")
        stride = size // height
        rows = np.frombuffer(raw, np.uint8).reshape(height, stride)[:, :row_bytes]
        image = rows.copy().view(dtype).reshape(height, width)
        frames[i] = image[::-1] if bottom_up else image
    return frames


def write_cine(
    path: os.PathLike | str,
    frames: np.ndarray,
    times: FrameTimes,
    *,
    rate_hz: float | None = None,
    exposure_s: float | None = None,
    real_bpp: int | None = None,
) -> Path:
    """Write an uncompressed monochrome Phantom ``.cine`` file that :func:`read_cine` and the
    documented layout agree on (header, bitmap header, a SETUP of the recent size with the
    fields used here, time and exposure blocks 1002/1003, image offsets, images).

    Parameters
    ----------
    path : path-like
        Output file (written in place; it is test and sample data).
    frames : ndarray, uint8 or uint16, shape (N, H, W)
        Images, top row first.
    times : FrameTimes
        N times with consecutive frame numbers (the cine numbers its images
        ``FirstImageNo + i``). t = 0 is the ``TriggerTime``, at ``times.origin_unix_ns``
        (default 2026-01-01T00:00:00Z).
    rate_hz : float, optional
        SETUP ``FrameRate``; default the rate of ``times``, rounded.
    exposure_s : float, optional
        Exposure per frame (block 1003 and ``ShutterNs``); default ``times.exposure_s`` or
        0.9 of the interval.
    real_bpp : int, optional
        SETUP ``RealBPP``; default the container's 8 or 16.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"write_cine: frames must be (N, H, W) uint8 or uint16, got {frames.dtype} "
            f"{frames.shape}"
        )
    count, height, width = frames.shape
    if count != len(times):
        raise ValueError(f"write_cine: {count} frames but {len(times)} frame times")
    numbers = times.frame_numbers
    if count > 1 and np.any(np.diff(numbers) != 1):
        raise ValueError("write_cine: a cine numbers its images consecutively; the frame "
                         f"numbers of {times.source} are not consecutive")  # fmt: skip
    origin = DEFAULT_ORIGIN_UNIX_NS if times.origin_unix_ns is None else times.origin_unix_ns
    frame_ns = [origin + round(float(t) * 1e9) for t in times.times_s]
    rate = times.rate_hz if rate_hz is None else float(rate_hz)
    rate_int = round(rate) if math.isfinite(rate) else 0
    if exposure_s is None:
        exposure_s = times.exposure_s
    if exposure_s is None:
        interval = times.interval_s
        exposure_s = 0.9 * interval if math.isfinite(interval) else 1e-6
    bits = 8 * frames.dtype.itemsize
    image_bytes = width * height * frames.dtype.itemsize

    off_bitmap = HEADER.size
    off_setup = off_bitmap + BITMAPINFO.size
    tag_time = 8 + 8 * count
    tag_exposure = 8 + 4 * count
    off_offsets = off_setup + SETUP_LENGTH + tag_time + tag_exposure
    annotation = 8
    first_image = off_offsets + 8 * count
    pointers = [first_image + i * (annotation + image_bytes) for i in range(count)]

    header = HEADER.pack(
        b"CI", HEADER.size, 0, 1, int(numbers[0]), count, int(numbers[0]), count,
        off_bitmap, off_setup, off_offsets, ns_to_time64(origin),
    )  # fmt: skip
    bitmap = BITMAPINFO.pack(BITMAPINFO.size, width, height, 1, bits, 0, image_bytes,
                             0, 0, 0, 0)  # fmt: skip
    setup = bytearray(SETUP_LENGTH)
    struct.pack_into("<H", setup, 0, min(rate_int, 0xFFFF))
    setup[SETUP_MARK_OFFSET : SETUP_MARK_OFFSET + 2] = b"ST"
    struct.pack_into("<H", setup, SETUP_LENGTH_OFFSET, SETUP_LENGTH)
    struct.pack_into("<I", setup, SETUP_FRAME_RATE_OFFSET, min(rate_int, 0xFFFFFFFF))
    struct.pack_into("<I", setup, SETUP_REAL_BPP_OFFSET, int(real_bpp or bits))
    struct.pack_into("<I", setup, SETUP_SHUTTER_NS_OFFSET, round(exposure_s * 1e9))
    exposure_units = min(round(exposure_s * _FRACTION), 0xFFFFFFFF)
    with open(path, "wb") as out:
        out.write(header)
        out.write(bitmap)
        out.write(setup)
        out.write(struct.pack("<IHH", tag_time, TAG_TIME_ONLY, 0))
        out.write(np.array([ns_to_time64(t) for t in frame_ns], dtype="<u8").tobytes())
        out.write(struct.pack("<IHH", tag_exposure, TAG_EXPOSURE_ONLY, 0))
        out.write(np.full(count, exposure_units, dtype="<u4").tobytes())
        out.write(np.array(pointers, dtype="<i8").tobytes())
        le = frames.dtype.newbyteorder("<")
        for frame in frames:
            out.write(struct.pack("<II", annotation, image_bytes))
            out.write(np.ascontiguousarray(frame[::-1], dtype=le).tobytes())
    return path
