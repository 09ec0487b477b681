"""Frame times from any supported camera metadata file: :func:`read_frame_times`."""

from __future__ import annotations

import os
from pathlib import Path

from napari_xfusion.core.cameras.cine import read_cine_times
from napari_xfusion.core.cameras.errors import CameraMetadataError
from napari_xfusion.core.cameras.phantom_xml import read_phantom_xml
from napari_xfusion.core.cameras.shimadzu import read_shimadzu_ini
from napari_xfusion.core.cameras.times import FrameTimes

READERS = {
    ".cine": read_cine_times,
    ".xml": read_phantom_xml,
    ".ini": read_shimadzu_ini,
}


def read_frame_times(path: os.PathLike | str, *, n_frames: int | None = None) -> FrameTimes:
    """Frame times from a camera's metadata file, chosen by suffix.

    ``.cine`` (Phantom header + time block), ``.xml`` (Phantom XML export beside TIFFs:
    TIMEBLOCK times and event flags), ``.ini`` (Shimadzu HPV-X2: RecSpeed, RecFrame,
    ImageRelative).

    Parameters
    ----------
    path : path-like
        The metadata file.
    n_frames : int, optional
        Frame count of the image stack it belongs to; a different count raises.

    Returns
    -------
    FrameTimes

    Raises
    ------
    CameraMetadataError
        Unknown suffix or a malformed file; the message names the file and the field.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise CameraMetadataError(
            path,
            f"unknown camera metadata suffix {path.suffix!r}: expected one of "
            f"{', '.join(READERS)} (or give the frame rate instead)",
            field="suffix",
        )
    return reader(path, n_frames=n_frames)
