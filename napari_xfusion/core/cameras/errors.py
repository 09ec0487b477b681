"""The errors of :mod:`napari_xfusion.core.cameras`."""

from __future__ import annotations

import os

from napari_xfusion.core.io import StackError


class CameraMetadataError(StackError):
    """A camera metadata file (``.cine``, Phantom ``.xml``, Shimadzu ``.ini``) is unreadable.

    The message names the file, the field and what was expected, e.g.
    ``hr.cine: field OffImageOffsets = 9000 points past the end of the file (4096 bytes)``.
    A :class:`~napari_xfusion.core.io.StackError` (so a ``ValueError``): callers that already
    report bad input stacks report these the same way.
    """

    def __init__(self, path: os.PathLike | str | None, message: str, *,
                 field: str | None = None) -> None:  # fmt: skip
        self.field = field
        name = "" if path is None else f"{os.fspath(path)}: "
        super().__init__(f"{name}{message}", path=path)


class TimingError(ValueError):
    """Frame times that cannot be paired (an HR frame with no LR frame within the tolerance,
    two HR frames on one LR frame, too few frames to refine an offset)."""
