"""Shimadzu HPV-X/HPV-X2 ``.ini`` recording information.

No public specification was found; the keys are those the paper's reference code
(xray-imaging/XFusion, ``match_phantom_shimadzu_frame_indices2``) reads from real files:

.. code-block:: ini

    [REC_INFO]
    RecSpeed=200ns          ; the frame interval with its unit (5 Mfps); also read: 5Mfps
    RecFrame=256            ; frames recorded
    [IMAGE_INFO_1]
    ImageRelative=0         ; time of frame 1 in ns (a unit suffix is accepted)
    [IMAGE_INFO_2]
    ImageRelative=200
    ...

Frames are numbered 1 .. RecFrame. Times are ``ImageRelative`` when every frame has one (they
must agree with ``RecSpeed`` within 1 %, which catches a unit mix-up), else
``(n - 1) x interval``; plus ``[REC_INFO] TriggerDelay`` when present (with a unit, default
ns). ``[REC_INFO] TriggerFrame`` (1-based), when present, marks the trigger frame. Keys and
sections are matched case-insensitively; the file may be UTF-8 or Shift-JIS.
"""

from __future__ import annotations

import configparser
import math
import os
import re
from pathlib import Path

import numpy as np

from napari_xfusion.core.cameras.errors import CameraMetadataError
from napari_xfusion.core.cameras.times import FrameTimes

CAMERA = "Shimadzu HPV-X2"
_INTERVAL_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_RATE_UNITS = {"fps": 1.0, "hz": 1.0, "kfps": 1e3, "khz": 1e3, "mfps": 1e6, "mhz": 1e6}
_VALUE = re.compile(r"^\s*([+-]?[\d,]*\.?\d+(?:[eE][+-]?\d+)?)\s*([a-zA-Zµμ/]*)\s*$")


def parse_quantity(path: Path | None, field: str, text: str, *, default_unit: str | None,
                   kind: str) -> float:  # fmt: skip
    """``"200ns"`` / ``"5 Mfps"`` / ``"1,000,000fps"`` -> seconds (``kind="interval"``: a rate
    is inverted; ``kind="time"``: only time units). Raises naming ``field``."""
    expected = (
        "expected an interval with its unit ('200ns', '0.2us') or a rate ('5Mfps')"
        if kind == "interval"
        else "expected a time with its unit ('150ns', '1.5us')"
    )
    match = _VALUE.match(text or "")
    if not match:
        raise CameraMetadataError(path, f"field {field} is {text!r}: {expected}", field=field)
    number = float(match.group(1).replace(",", ""))
    unit = (match.group(2) or "").lower().replace("/s", "ps") or default_unit
    if unit is None:
        raise CameraMetadataError(path, f"field {field} is {text!r} without a unit: {expected}",
                                  field=field)  # fmt: skip
    if unit in _INTERVAL_UNITS:
        value = number * _INTERVAL_UNITS[unit]
    elif kind == "interval" and unit in _RATE_UNITS and number > 0:
        value = 1.0 / (number * _RATE_UNITS[unit])
    else:
        raise CameraMetadataError(path, f"field {field} has unit {match.group(2)!r}: {expected}",
                                  field=field)  # fmt: skip
    if not math.isfinite(value) or (kind == "interval" and value <= 0):
        raise CameraMetadataError(path, f"field {field} is {text!r}: {expected} (> 0)",
                                  field=field)  # fmt: skip
    return value


def _load(path: Path) -> configparser.ConfigParser:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CameraMetadataError(path, "no such file") from None
    except OSError as exc:
        raise CameraMetadataError(path, f"cannot be read: {exc.strerror or exc}") from None
    for encoding in ("utf-8-sig", "cp932", "latin-1"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       inline_comment_prefixes=(";",))  # fmt: skip
    parser.optionxform = str.lower  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise CameraMetadataError(path, f"is not a valid .ini file: {first}",
                                  field="ini syntax") from None  # fmt: skip
    return parser


def _section(parser: configparser.ConfigParser, name: str) -> configparser.SectionProxy | None:
    for section in parser.sections():
        if section.strip().lower() == name.lower():
            return parser[section]
    return None


def read_shimadzu_ini(path: os.PathLike | str, *, n_frames: int | None = None) -> FrameTimes:
    """Frame times from a Shimadzu HPV-X2 ``.ini`` (see the module docstring).

    Parameters
    ----------
    path : path-like
        The ``.ini`` file.
    n_frames : int, optional
        Frame count of the image stack it describes; a different count raises.

    Returns
    -------
    FrameTimes
        Frame numbers 1 .. RecFrame.

    Raises
    ------
    CameraMetadataError
        Missing ``[REC_INFO]``, ``RecSpeed`` or ``RecFrame``, unreadable values, some but not
        all frames with ``ImageRelative``, per-frame times that disagree with ``RecSpeed``,
        non-increasing times, a count different from ``n_frames``.
    """
    path = Path(path)
    parser = _load(path)
    rec = _section(parser, "REC_INFO")
    if rec is None:
        raise CameraMetadataError(
            path, "has no [REC_INFO] section: expected a Shimadzu HPV-X2 recording .ini",
            field="REC_INFO",
        )  # fmt: skip
    if "recspeed" not in rec:
        raise CameraMetadataError(
            path, "[REC_INFO] has no RecSpeed: expected the frame interval, e.g. RecSpeed=200ns",
            field="RecSpeed",
        )  # fmt: skip
    interval = parse_quantity(path, "RecSpeed", rec["recspeed"], default_unit=None,
                              kind="interval")  # fmt: skip
    if "recframe" not in rec:
        raise CameraMetadataError(
            path, "[REC_INFO] has no RecFrame: expected the number of frames recorded, e.g. "
            "RecFrame=256", field="RecFrame",
        )  # fmt: skip
    try:
        count = int(rec["recframe"].strip())
    except ValueError:
        count = 0
    if count < 1:
        raise CameraMetadataError(path, f"field RecFrame is {rec['recframe']!r}: expected an "
                                  "integer >= 1", field="RecFrame")  # fmt: skip
    delay = 0.0
    if "triggerdelay" in rec:
        delay = parse_quantity(path, "TriggerDelay", rec["triggerdelay"], default_unit="ns",
                               kind="time")  # fmt: skip
    trigger = None
    if "triggerframe" in rec:
        try:
            trigger_number = int(rec["triggerframe"].strip())
        except ValueError:
            trigger_number = 0
        if not 1 <= trigger_number <= count:
            raise CameraMetadataError(
                path, f"field TriggerFrame is {rec['triggerframe']!r}: expected 1 .. {count}",
                field="TriggerFrame",
            )  # fmt: skip
        trigger = trigger_number - 1
    relative = []
    missing = []
    for n in range(1, count + 1):
        info = _section(parser, f"IMAGE_INFO_{n}")
        if info is None or "imagerelative" not in info:
            missing.append(n)
            continue
        field = f"[IMAGE_INFO_{n}] ImageRelative"
        value = parse_quantity(path, field, info["imagerelative"], default_unit="ns", kind="time")
        relative.append(value)
    extra = _section(parser, f"IMAGE_INFO_{count + 1}")
    if extra is not None:
        raise CameraMetadataError(
            path,
            f"has a section [IMAGE_INFO_{count + 1}] but RecFrame is {count}: expected one "
            "[IMAGE_INFO_n] per recorded frame",
            field="RecFrame",
        )
    numbers = np.arange(1, count + 1, dtype=np.int64)
    if relative and missing:
        raise CameraMetadataError(
            path,
            f"[IMAGE_INFO_{missing[0]}] has no ImageRelative ({len(missing)} of {count} frames "
            "lack one): expected a time for every frame or for none",
            field="ImageRelative",
        )
    if relative:
        times = np.asarray(relative, dtype=np.float64)
        if count > 1:
            steps = np.diff(times)
            if np.all(steps > 0):
                measured = float(np.median(steps))
                if abs(measured / interval - 1) > 0.01:
                    raise CameraMetadataError(
                        path,
                        f"ImageRelative steps are {measured * 1e9:.6g} ns but RecSpeed says "
                        f"{interval * 1e9:.6g} ns: expected them to agree (ImageRelative is "
                        "read in ns unless it carries a unit)",
                        field="ImageRelative",
                    )
    else:
        times = (numbers - 1) * interval
    return FrameTimes(
        times_s=times + delay,
        frame_numbers=numbers,
        source=str(path),
        trigger_frame=trigger,
        camera=CAMERA,
    ).check_count(n_frames)


def write_shimadzu_ini(
    path: os.PathLike | str,
    times: FrameTimes,
    *,
    per_frame: bool = True,
    width: int = 400,
    height: int = 250,
) -> Path:
    """Write a Shimadzu-HPV-X2-style ``.ini`` for ``times`` (see the module docstring).

    Parameters
    ----------
    path : path-like
        Output file.
    times : FrameTimes
        N frame times, written as ``RecSpeed`` (the median interval in ns) and, with
        ``per_frame``, ``ImageRelative`` per frame in integer ns; numbered 1 .. N.
    per_frame : bool
        Write the ``[IMAGE_INFO_n]`` sections (False: only ``RecSpeed`` / ``RecFrame``; the
        times must then start at 0 and be evenly spaced to round-trip).
    width, height : int
        Image size for ``[REC_INFO]`` (informative).

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    interval = times.interval_s
    if not math.isfinite(interval):
        interval = 2e-7
    lines = [
        "[CAMERA_INFO]",
        "CameraName=HPV-X2",
        "",
        "[REC_INFO]",
        f"RecSpeed={interval * 1e9:.6g}ns",
        f"RecFrame={len(times)}",
        f"Width={width}",
        f"Height={height}",
    ]
    if times.trigger_frame is not None:
        lines.append(f"TriggerFrame={times.trigger_frame + 1}")
    lines += ["", "[PLAY_INFO]", "FrameStart=1", f"FrameStop={len(times)}"]
    if per_frame:
        for n, t in enumerate(times.times_s.tolist(), start=1):
            lines += ["", f"[IMAGE_INFO_{n}]", f"ImageRelative={round(t * 1e9)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
