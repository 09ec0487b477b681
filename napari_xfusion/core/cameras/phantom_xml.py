"""Phantom XML metadata, as PCC exports it beside a TIFF sequence (``<cine>.xml``).

No authoritative description of this export was found; the structure here is the one the
paper's reference code (xray-imaging/XFusion, ``xfusion/utils.py``) reads from real files, plus
the cine header field names it mirrors:

.. code-block:: xml

    <chd>
      <CineFileHeader> <FirstImageNo>-20</FirstImageNo> <ImageCount>41</ImageCount> ...
      <CameraSetup> <FrameRateDouble>71428.571</FrameRateDouble> <ShutterNs>..</ShutterNs>
      <TIMEBLOCK>
        <Date Frame="-20">Tue Jun 13 2023</Date>
        <Time Frame="-20">15:41:08.123 456.78 E</Time>
        ...

A ``Time`` text is the clock time ``HH:MM:SS.mmm`` then the microseconds ``uuu.uu`` (10 ns
resolution), then flags: ``E`` = the event input was active during that frame (the paper wires
the Shimadzu's record signal there and pairs the cameras on it), ``S`` = IRIG-synchronised.
Reading is tolerant: element and attribute names are matched without namespace and case;
``Date`` elements are optional (a clock time that goes backwards by more than 12 h is taken as
the next day); a ``Time`` may instead be relative seconds with an optional unit (``-1.4e-05``,
``12.5 us``). Times are returned relative to the trigger (frame number 0, else the first
frame). XML is parsed with :mod:`xml.etree` after refusing any DOCTYPE / ENTITY declaration
(no entity expansion, no external resources).
"""

from __future__ import annotations

import calendar
import math
import os
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from napari_xfusion.core.cameras.errors import CameraMetadataError
from napari_xfusion.core.cameras.times import FrameTimes

CAMERA = "Phantom"
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAY_NS = 86_400 * 10**9
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d+))?$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}


def _local(tag: str) -> str:
    """Element or attribute name without namespace, lower case."""
    return tag.rsplit("}", 1)[-1].lower()


def _find(elem: ET.Element, name: str) -> ET.Element | None:
    for child in elem.iter():
        if _local(child.tag) == name:
            return child
    return None


def _text(elem: ET.Element, name: str) -> str | None:
    found = _find(elem, name)
    if found is None or found.text is None or not found.text.strip():
        return None
    return found.text.strip()


def _attr(elem: ET.Element, name: str) -> str | None:
    for key, value in elem.attrib.items():
        if _local(key) == name:
            return value
    return None


def parse_xml_safely(path: Path) -> ET.Element:
    """Parse ``path`` with :mod:`xml.etree`, refusing DTDs and entity declarations.

    Raises
    ------
    CameraMetadataError
        Missing or unreadable file, a DOCTYPE/ENTITY declaration, or malformed XML.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CameraMetadataError(path, "no such file") from None
    except OSError as exc:
        raise CameraMetadataError(path, f"cannot be read: {exc.strerror or exc}") from None
    # NULs dropped so that a UTF-16/32 file cannot hide its declarations from the check.
    probe = data.replace(b"\x00", b"").lower()
    if b"<!doctype" in probe or b"<!entity" in probe:
        raise CameraMetadataError(
            path,
            "declares a DOCTYPE or ENTITY: refused (entity expansion is a security risk and "
            "Phantom's XML export has none)",
            field="DOCTYPE",
        )
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = getattr(exc, "position", (0, 0))
        raise CameraMetadataError(
            path, f"is not well-formed XML (line {line}, column {col}): {exc}", field="XML"
        ) from None


def _parse_date(path: Path, text: str, frame: int) -> int:
    """``Tue Jun 13 2023`` (weekday optional) or ``2023-06-13`` -> ns of that midnight (UTC)."""
    tokens = text.replace(",", " ").split()
    try:
        if len(tokens) == 1 and re.match(r"^\d{4}-\d{2}-\d{2}$", tokens[0]):
            day = datetime.strptime(tokens[0], "%Y-%m-%d")
        else:
            if tokens and tokens[0][:3].lower() not in _MONTHS:
                tokens = tokens[1:]  # the weekday
            month, dom, year = _MONTHS[tokens[0][:3].lower()], int(tokens[1]), int(tokens[2])
            day = datetime(year, month, dom)
    except (KeyError, IndexError, ValueError):
        raise CameraMetadataError(
            path,
            f"TIMEBLOCK Date of frame {frame} is {text!r}: expected e.g. 'Tue Jun 13 2023'",
            field="TIMEBLOCK/Date",
        ) from None
    return calendar.timegm(day.replace(tzinfo=timezone.utc).timetuple()) * 10**9


def _parse_time(path: Path, text: str, frame: int) -> tuple[str, int | float, set[str]]:
    """A Time text -> (``"clock"``, ns since midnight, flags) or (``"relative"``, s, flags)."""
    tokens = text.split()
    expected = "expected e.g. '15:41:08.123 456.78 E' or relative seconds '-1.4e-05'"
    if not tokens:
        raise CameraMetadataError(path, f"TIMEBLOCK Time of frame {frame} is empty: {expected}",
                                  field="TIMEBLOCK/Time")  # fmt: skip
    clock = _CLOCK.match(tokens[0])
    if clock:
        hours, minutes, seconds = (int(g) for g in clock.group(1, 2, 3))
        fraction = clock.group(4) or ""
        rest = tokens[1:]
        # The microseconds after the milliseconds, as PCC writes them: "456.78".
        if rest and _NUMBER.match(rest[0]) and "e" not in rest[0].lower():
            whole, _, decimals = rest[0].partition(".")
            fraction += whole.zfill(3) + decimals
            rest = rest[1:]
        if hours > 23 or minutes > 59 or seconds > 60:
            raise CameraMetadataError(
                path, f"TIMEBLOCK Time of frame {frame} is {text!r}: {expected}",
                field="TIMEBLOCK/Time",
            )  # fmt: skip
        frac_ns = round(int(fraction) * 10 ** (9 - len(fraction))) if fraction else 0
        ns = ((hours * 60 + minutes) * 60 + seconds) * 10**9 + frac_ns
        return "clock", ns, {t.upper() for t in rest if t.isalpha()}
    value = tokens[0]
    rest = tokens[1:]
    unit = 1.0
    number = re.match(r"^([+-]?[\d.]+(?:[eE][+-]?\d+)?)([a-zA-Zµμ]*)$", value)
    if number and number.group(2):
        value, suffix = number.group(1), number.group(2)
        if suffix.lower() not in _UNITS:
            raise CameraMetadataError(
                path, f"TIMEBLOCK Time of frame {frame} has unit {suffix!r}: {expected}",
                field="TIMEBLOCK/Time",
            )  # fmt: skip
        unit = _UNITS[suffix.lower()]
    elif rest and rest[0].lower() in _UNITS:
        unit = _UNITS[rest[0].lower()]
        rest = rest[1:]
    try:
        seconds_f = float(value) * unit
    except ValueError:
        raise CameraMetadataError(
            path, f"TIMEBLOCK Time of frame {frame} is {text!r}: {expected}",
            field="TIMEBLOCK/Time",
        ) from None  # fmt: skip
    if not math.isfinite(seconds_f):
        raise CameraMetadataError(path, f"TIMEBLOCK Time of frame {frame} is {text!r}: "
                                  f"{expected}", field="TIMEBLOCK/Time")  # fmt: skip
    return "relative", seconds_f, {t.upper() for t in rest if t.isalpha()}


def _trigger_time(path: Path, root: ET.Element) -> int | None:
    """``CineFileHeader/TriggerTime`` (``<Date>`` + ``<Time>`` children) as ns, if given."""
    elem = _find(root, "triggertime")
    if elem is None:
        return None
    time_text = _text(elem, "time")
    if time_text is None:
        return None
    kind, ns, _ = _parse_time(path, time_text, 0)
    if kind != "clock":
        return None
    date_text = _text(elem, "date")
    return int(ns) + (_parse_date(path, date_text, 0) if date_text else 0)


def _int_field(path: Path, root: ET.Element, name: str) -> int | None:
    text = _text(root, name.lower())
    if text is None:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise CameraMetadataError(path, f"field {name} is {text!r}: expected an integer",
                                  field=name) from None  # fmt: skip


def _float_field(path: Path, root: ET.Element, name: str) -> float | None:
    text = _text(root, name.lower())
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise CameraMetadataError(path, f"field {name} is {text!r}: expected a number",
                                  field=name) from None  # fmt: skip
    return value if math.isfinite(value) else None


def read_phantom_xml(path: os.PathLike | str, *, n_frames: int | None = None) -> FrameTimes:
    """Frame times from a Phantom XML export (``TIMEBLOCK``), with the event flags.

    Parameters
    ----------
    path : path-like
        The ``.xml`` file.
    n_frames : int, optional
        Frame count of the TIFF sequence it describes; a different count raises.

    Returns
    -------
    FrameTimes
        Seconds relative to frame number 0 (the trigger) when listed, else the first frame;
        ``event`` holds the ``E`` flags; ``origin_unix_ns`` the clock time of t = 0 when the
        file gives clock times and dates.

    Raises
    ------
    CameraMetadataError
        No TIMEBLOCK, a Time without a frame number or with an unreadable text, duplicate frame
        numbers, ``ImageCount`` different from the number of times, non-increasing times.
    """
    path = Path(path)
    root = parse_xml_safely(path)
    block = _find(root, "timeblock")
    if block is None:
        raise CameraMetadataError(
            path,
            "has no TIMEBLOCK element: expected the per-frame times of a Phantom XML export "
            "(<TIMEBLOCK><Time Frame=...>)",
            field="TIMEBLOCK",
        )
    dates: dict[int, int] = {}
    entries: list[tuple[int, str, int | float, set[str]]] = []
    for elem in block:
        kind = _local(elem.tag)
        if kind not in ("time", "date"):
            continue
        raw_frame = _attr(elem, "frame")
        try:
            frame = int(raw_frame) if raw_frame is not None else None
        except ValueError:
            frame = None
        if frame is None:
            raise CameraMetadataError(
                path,
                f"TIMEBLOCK {elem.tag} with Frame={raw_frame!r}: expected an integer frame "
                "number attribute",
                field=f"TIMEBLOCK/{elem.tag}@Frame",
            )
        text = (elem.text or "").strip()
        if kind == "date":
            dates[frame] = _parse_date(path, text, frame)
        else:
            entries.append((frame, *_parse_time(path, text, frame)))
    if not entries:
        raise CameraMetadataError(path, "TIMEBLOCK holds no Time elements: expected one per "
                                  "frame", field="TIMEBLOCK/Time")  # fmt: skip
    numbers = np.array([e[0] for e in entries], dtype=np.int64)
    if np.unique(numbers).size != numbers.size:
        dup = int(numbers[np.flatnonzero(np.diff(np.sort(numbers)) == 0)[0]])
        raise CameraMetadataError(path, f"TIMEBLOCK lists frame {dup} twice: expected one Time "
                                  "per frame", field="TIMEBLOCK/Time")  # fmt: skip
    order = np.argsort(numbers, kind="stable")
    entries = [entries[i] for i in order]
    numbers = numbers[order]
    kinds = {e[1] for e in entries}
    if len(kinds) > 1:
        raise CameraMetadataError(
            path, "TIMEBLOCK mixes clock times and relative seconds: expected one kind",
            field="TIMEBLOCK/Time",
        )  # fmt: skip
    if kinds == {"clock"}:
        absolute: list[int] = []
        day_ns = None
        previous = None
        for frame, _, ns, _ in entries:
            if frame in dates:
                day_ns = dates[frame]
            base = day_ns if day_ns is not None else 0
            value = base + int(ns)
            if previous is not None and frame not in dates:
                while value < previous - _DAY_NS // 2:  # past midnight without a Date
                    value += _DAY_NS
            absolute.append(value)
            previous = value
        zero_index = int(np.flatnonzero(numbers == 0)[0]) if np.any(numbers == 0) else 0
        zero = absolute[zero_index]
        trigger_ns = _trigger_time(path, root)
        if trigger_ns is not None:
            zero = trigger_ns if dates else trigger_ns % _DAY_NS
        times = np.array([a - zero for a in absolute], dtype=np.float64) * 1e-9
        origin = zero if dates else None
    else:
        times = np.array([float(e[2]) for e in entries], dtype=np.float64)
        origin = None
    count = _int_field(path, root, "ImageCount")
    if count is not None and count != len(entries):
        raise CameraMetadataError(
            path,
            f"field ImageCount is {count} but TIMEBLOCK holds {len(entries)} times: expected "
            "one Time per image",
            field="ImageCount",
        )
    exposure_ns = _float_field(path, root, "ShutterNs")
    exposure = exposure_ns * 1e-9 if exposure_ns and exposure_ns > 0 else None
    events = np.array(["E" in e[3] for e in entries], dtype=bool)
    has_flags = any(e[3] for e in entries)
    trigger = int(np.flatnonzero(numbers == 0)[0]) if np.any(numbers == 0) else None
    return FrameTimes(
        times_s=times,
        frame_numbers=numbers,
        source=str(path),
        trigger_frame=trigger,
        exposure_s=exposure,
        camera=CAMERA,
        event=events if has_flags else None,
        origin_unix_ns=origin,
    ).check_count(n_frames)


def _date_and_clock(unix_ns: int) -> tuple[str, str]:
    """ns since 1970 -> (``Tue Jun 13 2023``, ``HH:MM:SS.mmm uuu.uu``) at PCC's 10 ns
    resolution (rounded before splitting off the day, so 23:59:59.999999995 is tomorrow)."""
    tens = (int(unix_ns) + 5) // 10
    day, tens_of_day = divmod(tens, 86_400 * 10**8)
    stamp = datetime.fromtimestamp(day * 86_400, tz=timezone.utc)
    date_text = f"{stamp:%a} {stamp:%b} {stamp.day} {stamp.year}"
    seconds, tens_frac = divmod(tens_of_day, 10**8)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    millis, micro_tens = divmod(tens_frac, 10**5)
    micro = f"{micro_tens // 100:03d}.{micro_tens % 100:02d}"
    return date_text, f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d} {micro}"


def write_phantom_xml(
    path: os.PathLike | str,
    times: FrameTimes,
    *,
    width: int = 1280,
    height: int = 800,
    bit_depth: int = 16,
    rate_hz: float | None = None,
    event: np.ndarray | None = None,
) -> Path:
    """Write a Phantom-XML-style metadata file (see the module docstring) for ``times``.

    Parameters
    ----------
    path : path-like
        Output ``.xml`` file.
    times : FrameTimes
        Frame times and numbers; t = 0 is put at ``times.origin_unix_ns`` (default
        2026-01-01T00:00:00Z) and written as clock time + date per frame.
    width, height, bit_depth : int
        Image geometry for ``BitmapInfoHeader``.
    rate_hz : float, optional
        ``FrameRateDouble``; default the rate of ``times``.
    event : ndarray of bool, shape (N,), optional
        Frames to flag ``E``; default ``times.event`` (none when that is None).

    Returns
    -------
    pathlib.Path
    """
    from napari_xfusion.core.cameras.cine import DEFAULT_ORIGIN_UNIX_NS

    path = Path(path)
    origin = DEFAULT_ORIGIN_UNIX_NS if times.origin_unix_ns is None else times.origin_unix_ns
    flags = times.event if event is None else np.asarray(event, dtype=bool)
    if flags is not None and flags.shape != (len(times),):
        raise ValueError(f"write_phantom_xml: {flags.size} event flags for {len(times)} frames")
    rate = times.rate_hz if rate_hz is None else float(rate_hz)
    numbers = times.frame_numbers
    root = ET.Element("chd")
    header = ET.SubElement(root, "CineFileHeader")
    for name, value in (("Type", "CI"), ("Compression", 0), ("Version", 1),
                        ("FirstMovieImage", int(numbers[0])), ("TotalImageCount", len(times)),
                        ("FirstImageNo", int(numbers[0])), ("ImageCount", len(times))):  # fmt: skip
        ET.SubElement(header, name).text = str(value)
    trigger = ET.SubElement(header, "TriggerTime")
    trigger_date, trigger_time = _date_and_clock(origin)
    ET.SubElement(trigger, "Date").text = trigger_date
    ET.SubElement(trigger, "Time").text = trigger_time
    bitmap = ET.SubElement(root, "BitmapInfoHeader")
    for name, value in (("biWidth", width), ("biHeight", height), ("biBitCount", bit_depth),
                        ("biCompression", 0)):  # fmt: skip
        ET.SubElement(bitmap, name).text = str(value)
    setup = ET.SubElement(root, "CameraSetup")
    ET.SubElement(setup, "FrameRateDouble").text = f"{rate:.6f}" if math.isfinite(rate) else "0"
    ET.SubElement(setup, "FrameRate").text = str(round(rate)) if math.isfinite(rate) else "0"
    if times.exposure_s is not None:
        ET.SubElement(setup, "ShutterNs").text = str(round(times.exposure_s * 1e9))
    ET.SubElement(setup, "Gamma").text = "0"
    block = ET.SubElement(root, "TIMEBLOCK")
    for i, (number, t) in enumerate(zip(numbers.tolist(), times.times_s.tolist(), strict=True)):
        date_text, text = _date_and_clock(origin + round(t * 1e9))
        ET.SubElement(block, "Date", {"Frame": str(number)}).text = date_text
        if flags is not None and flags[i]:
            text += " E"
        ET.SubElement(block, "Time", {"Frame": str(number)}).text = text
    ET.indent(root)
    path.write_bytes(b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root) + b"\n")
    return path
