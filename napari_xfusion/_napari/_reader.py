"""npe2 reader: TIFF stacks, ImageJ hyperstacks and folders of TIFF frames as image layers.

A fused export of either face (read with :func:`napari_xfusion.app.export.read_export`)
reopens as a result layer ``fused [method]``: its computed frames at their LR indices, the
run configuration and the frames done in our ``xfusion`` entry, scale / units / axis labels
restored (from the GUI's stored layer placement, else the export's pixel size and frame
interval), so the fusion dock lists it with its results. Layers the writer stored get back
their name, placement and our entry; HR keys from ``xfusion sample`` show the key in force.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion._napari._layers import META, key_hold_translate
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


def _is_export(meta: dict[str, Any]) -> bool:
    """A fused export of either face (this schema, or an earlier CLI export), not a layer the
    writer stored with our entry (those reopen as they were)."""
    if "schema" in meta:
        return True
    return not isinstance(meta.get(META), dict) and ("method" in meta and "frame_indices" in meta)


def _placement(stored: dict[str, Any], ndim: int) -> dict[str, Any]:
    """scale / translate / units / axis_labels stored with a layer (wrong ones ignored)."""
    kwargs: dict[str, Any] = {}
    for key in ("scale", "translate"):
        value = _numbers(stored.get(key), ndim, positive=key == "scale")
        if value is not None:
            kwargs[key] = value
    for key in ("units", "axis_labels"):
        value = stored.get(key)
        if (
            isinstance(value, list)
            and len(value) == ndim
            and all(isinstance(v, str) for v in value)
        ):
            kwargs[key] = tuple(value)
    if "units" in kwargs:
        try:  # napari checks units with pint: an unknown one would fail the whole layer
            import pint

            registry = pint.get_application_registry()
            for unit in kwargs["units"]:
                registry.Unit(unit)
        except Exception:
            kwargs.pop("units")
    return kwargs


def _fused_layer(path: Path) -> LayerData:
    """A fused export as the widget's result layer: ``fused [method]``, the computed frames at
    their LR indices (float [0, 1]), the run configuration and frames in our entry."""
    from napari_xfusion.app.export import read_export

    stack, info = read_export(path)
    pages = info.pages[info.computed]
    n = int(pages.max()) + 1 if pages.size else 0
    data = np.zeros((n, *stack.shape[1:]), dtype=np.float32)
    for page, t in zip(info.computed_pages, pages, strict=True):
        data[t] = info.to_unit(stack[page])
    data.flags.writeable = False  # an export is a record: a new run makes a fresh layer
    method = info.method or path.stem
    run = {k: v for k, v in info.metadata.items() if k not in ("layer", "frames", META)}
    parameters = {
        "method": method,
        "config": info.config.to_dict() if info.config is not None else None,
        "key_indices": None if info.key_indices is None else info.key_indices.tolist(),
        "normalisation": info.normalisation.to_dict() if info.normalisation else {},
        "describe": info.metadata.get("method_description") or {},
        "run": run,
    }
    entry = {
        "role": "fused",
        "method": method,
        "inputs": {"export": str(path)},  # a new run replaces it rather than adding to it
        "frames_done": sorted(int(t) for t in pages),
        "parameters": parameters,
        "source": {"path": str(path), "complete": info.complete},
    }
    stored = info.metadata.get("layer") if isinstance(info.metadata.get("layer"), dict) else {}
    kwargs = _placement(stored, 3)
    if "scale" not in kwargs:  # a CLI export: its physical sizes, when it recorded them
        pixel, interval = info.pixel_size_um, info.frame_interval_s
        known = [isinstance(v, (int, float)) and v > 0 for v in (interval, pixel)]
        if any(known):
            kwargs["scale"] = (interval if known[0] else 1.0, *(2 * [pixel if known[1] else 1.0]))
            kwargs["units"] = ("s" if known[0] else "pixel", *(2 * ["um" if known[1] else "pixel"]))
    kwargs.setdefault("axis_labels", ("time" if "units" in kwargs else "frame", "y", "x"))
    kwargs.update(name=f"fused [{method}]", metadata={META: entry}, contrast_limits=(0.0, 1.0))
    return data, kwargs, "image"


def _key_layer_placement(entry: dict[str, Any], n_frames: int, time_scale: float) -> dict:
    """A sparse HR keys stack with evenly spaced ``key_indices``: scale and offset in time so
    that each frame shows the key in force (the last key <= t)."""
    keys = entry.get("key_indices")
    if not isinstance(keys, list) or len(keys) != n_frames or n_frames < 2:
        return {}
    steps = {b - a for a, b in zip(keys, keys[1:], strict=False)}
    if len(steps) != 1:
        return {}
    step = steps.pop()
    return {
        "scale": (step * time_scale, 1.0, 1.0),
        "translate": (keys[0] * time_scale + key_hold_translate(step, time_scale), 0.0, 0.0),
    }


def _layer(path: Path) -> LayerData:
    from napari_xfusion.engine import InputError

    meta = read_metadata(path)
    note = None
    if _is_export(meta):
        try:
            return _fused_layer(path)
        except InputError as exc:
            # Looks like an export but cannot be mapped to [0, 1] (e.g. detector units without
            # their normalisation): its pixels still open as they are, with the reason kept.
            note = str(exc)
    stack = read_stack(path)
    stored = meta.get("layer") if isinstance(meta.get("layer"), dict) else {}
    name = stored.get("name")
    kwargs: dict[str, Any] = {"name": name if isinstance(name, str) and name else path.stem}
    # Metadata comes from the file: values of the wrong type or size are ignored, not trusted.
    kwargs.update(_placement(stored, stack.ndim))
    entry = meta.get(META)
    if isinstance(entry, dict):
        entry = _checked_entry(entry, path, stack.shape[0])
        kwargs["metadata"] = {META: entry}
    elif meta.get("key_indices") is not None and stack.ndim == 3:
        # HR keys written by ``xfusion sample``: recognised as the key layer of a run.
        keys = parse_key_indices(meta["key_indices"], None, f"{path.name} metadata key_indices")
        entry = {"role": "hr_keys", "key_indices": keys.tolist()}
        kwargs["metadata"] = {META: entry, "tiff": meta}
    else:
        # Someone else's metadata (ImageJ, a camera): keep it for reference.
        kwargs["metadata"] = {"tiff": meta} if meta else {}
        if meta.get("separation") is not None:
            # An LR stack of ``xfusion sample``/``simulate``: its separation is what the CLI
            # reads from the file; the fusion dock's "auto" takes it from here.
            where = f"{path.name} metadata separation"
            kwargs["metadata"][META] = {
                "separation": parse_separation(meta["separation"], None, where)
            }
    if note is not None:
        kwargs["metadata"]["not_a_fused_result"] = note
    if isinstance(entry, dict) and entry.get("role") == "hr_keys" and "translate" not in kwargs:
        kwargs.update(_key_layer_placement(entry, stack.shape[0], 1.0))
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
