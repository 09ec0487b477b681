"""Camera metadata and time synchronisation of a dual-camera pair (numpy only).

Read and write the cameras' own metadata formats (Phantom ``.cine`` and XML, Shimadzu HPV-X2
``.ini``), build frame times from user-given rates, match each HR frame to its LR frame
(:func:`match_frames`), and refine the offset to a fraction of an LR frame from the images
(:func:`refine_time_offset`). Times are seconds on each camera's own axis, t = 0 at its
trigger (see :mod:`~napari_xfusion.core.cameras.times`).
"""

from napari_xfusion.core.cameras.cine import read_cine, read_cine_times, write_cine
from napari_xfusion.core.cameras.errors import CameraMetadataError, TimingError
from napari_xfusion.core.cameras.matching import FrameMatch, match_frames
from napari_xfusion.core.cameras.phantom_xml import read_phantom_xml, write_phantom_xml
from napari_xfusion.core.cameras.read import read_frame_times
from napari_xfusion.core.cameras.refine import TimeRefinement, refine_time_offset
from napari_xfusion.core.cameras.shimadzu import read_shimadzu_ini, write_shimadzu_ini
from napari_xfusion.core.cameras.times import FrameTimes, format_seconds, frame_times_from_rate

__all__ = [
    "CameraMetadataError",
    "FrameMatch",
    "FrameTimes",
    "TimeRefinement",
    "TimingError",
    "format_seconds",
    "frame_times_from_rate",
    "match_frames",
    "read_cine",
    "read_cine_times",
    "read_frame_times",
    "read_phantom_xml",
    "read_shimadzu_ini",
    "refine_time_offset",
    "write_cine",
    "write_phantom_xml",
    "write_shimadzu_ini",
]
