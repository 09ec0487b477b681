"""npe2 reader: TIFF stacks, ImageJ hyperstacks and folders of TIFF frames as image layers.

Metadata written by napari-xfusion (exports, the writer) is restored: the layer's name, scale
and translate, and our ``xfusion`` entry (method, parameters, frames done), so an exported
fused stack reopens as what it was.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion._napari._layers import META
from napari_xfusion.core.io import TIFF_SUFFIXES, read_metadata, read_stack
from napari_xfusion.core.meta import (
    MetadataError,
    parse_frame_indices,
    parse_key_indices,
    parse_separation,
)

__all__ = ["get_reader", "read_layers"]

LayerData = tuple[Any, dict[str, Any], str]


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def _readable(path: Path) -> bool:
    """Whether to claim ``path``: a TIFF name, or a folder holding TIFF names.

    Claimed paths that turn out unreadable (a pipe named ``x.tif``, a damaged file) raise a
    :class:`~napari_xfusion.core.io.StackError` from :func:`read_layers`, so napari shows why,
    rather than being passed silently to another reader.
    """
    try:
        if path.is_dir():
            return any(_is_tiff(p) and not p.name.startswith(".") for p in path.iterdir())
    except OSError:  # an unreadable folder: claim it, read_stack says what is wrong
        return True
    return _is_tiff(path)


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return :func:`read_layers` if every path is a TIFF or a folder holding TIFFs, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_readable(Path(p)) for p in paths):
        return None
    return read_layers


def _numbers(value: Any, n: int, positive: bool) -> tuple[float, ...] | None:
    """``value`` as ``n`` finite floats (positive ones for a scale), else None (ignored)."""
    if not isinstance(value, list) or len(value) != n:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    out = tuple(float(v) for v in value)
    if not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        return None
    return out


def _checked_entry(entry: dict[str, Any], path: Path, n_frames: int) -> dict[str, Any]:
    """Our metadata entry with its frame numbers checked (the widget and jobs use them).

    Raises MetadataError (a StackError) naming the file and the key: a fraction, a string or
    a negative index in a file is refused here, not truncated or met as a traceback later.
    """
    entry = dict(entry)
    where = f"{path.name} metadata"
    if entry.get("key_indices") is not None:
        keys = parse_key_indices(entry["key_indices"], None, f"{where} key_indices", min_keys=0)
        entry["key_indices"] = keys.tolist()
    if entry.get("frame_indices") is not None:
        frames = parse_frame_indices(entry["frame_indices"], None, f"{where} frame_indices")
        if frames.size != n_frames:
            raise MetadataError(
                f"{where} frame_indices: {frames.size} indices for a {n_frames}-frame stack; "
                "expected one per frame"
            )
        entry["frame_indices"] = frames.tolist()
    if entry.get("separation") is not None:
        entry["separation"] = parse_separation(entry["separation"], None, f"{where} separation")
    return entry


def _layer(path: Path) -> LayerData:
    stack = read_stack(path)
    meta = read_metadata(path)
    stored = meta.get("layer") if isinstance(meta.get("layer"), dict) else {}
    name = stored.get("name")
    kwargs: dict[str, Any] = {"name": name if isinstance(name, str) and name else path.stem}
    # Metadata comes from the file: values of the wrong type or size are ignored, not trusted.
    for key in ("scale", "translate"):
        value = _numbers(stored.get(key), stack.ndim, positive=key == "scale")
        if value is not None:
            kwargs[key] = value
    entry = meta.get(META)
    if isinstance(entry, dict):
        entry = _checked_entry(entry, path, stack.shape[0])
        kwargs["metadata"] = {META: entry}
    else:
        # Someone else's metadata (ImageJ, a camera): keep it for reference.
        kwargs["metadata"] = {"tiff": meta} if meta else {}
    if np.issubdtype(stack.dtype, np.floating) and isinstance(entry, dict):
        kwargs["contrast_limits"] = (0.0, 1.0)
    return stack, kwargs, "image"


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read each TIFF (or folder of TIFF frames) in ``path`` as one ``(T, H, W)`` image layer.

    Raises
    ------
    StackError
        (from :func:`~napari_xfusion.core.io.read_stack`) for a missing, special, damaged,
        truncated or oversized file; the message names it.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [_layer(Path(p)) for p in paths]
