"""npe2 writer: an image layer to a ``(T, H, W)`` TIFF through the atomic stack writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion._napari._export import layer_metadata
from napari_xfusion.core.io import TIFF_SUFFIXES, write_stack

__all__ = ["write_image"]


def write_image(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one image layer (``data`` and its layer ``attributes``) to ``path``.

    2-D layers are stored as one-frame stacks; RGB layers are refused (the stacks here are
    greyscale).
    """
    if attributes.get("rgb"):
        raise ValueError(
            f"layer {attributes.get('name')!r} is RGB; napari-xfusion writes greyscale "
            "(T, H, W) stacks only"
        )
    target = Path(path)
    if target.suffix.lower() not in TIFF_SUFFIXES:
        target = target.with_name(target.name + ".tif")
    stack = np.asarray(data[0] if attributes.get("multiscale") else data)
    if stack.ndim == 2:
        stack = stack[np.newaxis]
    meta = layer_metadata(
        attributes.get("name", target.stem),
        attributes.get("metadata"),
        attributes.get("scale"),
        attributes.get("translate"),
        attributes.get("units"),
        attributes.get("axis_labels"),
    )
    return [str(write_stack(target, stack, meta))]
