"""Reading an export (:mod:`napari_xfusion.app.export`): :func:`read_export` and
:class:`ExportInfo`, for this schema, the earlier CLI exports and the GUI's layer exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.config import ConfigError, RunConfig


@dataclass
class ExportInfo:
    """What :func:`read_export` knows about an export.

    Attributes
    ----------
    path : Path
    source : str
        ``"schema"`` (this writer), ``"cli"`` (earlier CLI exports), ``"gui-layer"`` (earlier
        GUI layer exports) or ``"plain"`` (any TIFF stack).
    schema : int or None
    method : str or None
    pages : numpy.ndarray of int64
        The LR frame index of each page.
    computed : numpy.ndarray of bool
        Per page: whether it holds a reconstructed frame (GUI layer exports keep frames never
        run as placeholders; no tool may score those).
    complete : bool
    units : str
        ``"float"`` or ``"detector"``.
    normalisation : Normalisation or None
        The HR normalisation (maps detector units back to [0, 1]).
    key_indices : numpy.ndarray or None
    config : RunConfig or None
        The run configuration when the export has one this version reads.
    metadata : dict
    pixel_size_um, frame_interval_s : float or None
    """

    path: Path
    source: str
    schema: int | None
    method: str | None
    pages: np.ndarray
    computed: np.ndarray
    complete: bool = True
    units: str = "float"
    normalisation: Any = None
    key_indices: np.ndarray | None = None
    config: RunConfig | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    pixel_size_um: float | None = None
    frame_interval_s: float | None = None

    @property
    def computed_pages(self) -> np.ndarray:
        """Page numbers holding reconstructed frames."""
        return np.flatnonzero(self.computed)

    def to_unit(self, page: np.ndarray) -> np.ndarray:
        """One page as float32 in [0, 1] (detector units mapped back)."""
        if self.units == "detector" and self.normalisation is not None:
            return self.normalisation.apply(np.asarray(page))
        return np.asarray(page, dtype=np.float32)


def read_export(
    path: str | os.PathLike[str], *, role: str | None = None
) -> tuple[np.ndarray, ExportInfo]:
    """Read a fused export of either face (any version) as ``(stack, info)``.

    ``role`` (the option or input it came from, e.g. ``"fused stack"``) prefixes read errors.
    Frame and key indices in the metadata are checked (:mod:`napari_xfusion.core.meta`).

    Raises
    ------
    napari_xfusion.app.inputs.InputError
        Integer pages without the normalisation that maps them to [0, 1], or frame indices
        that do not match the pages; the message names the file.
    """
    from napari_xfusion.core.io import read_metadata, read_stack

    path = Path(path)
    stack = read_stack(path, role=role)
    meta = read_metadata(path, role=role)
    return stack, _interpret(path, stack, meta, f"{role} {path}" if role else str(path))


def _interpret(path: Path, stack: np.ndarray, meta: dict[str, Any], name: str) -> ExportInfo:
    """The :class:`ExportInfo` of an export from its metadata (checked; ``name`` names the
    file in messages)."""
    from napari_xfusion.app.inputs import InputError
    from napari_xfusion.core.meta import MetadataError, parse_frame_indices, parse_key_indices
    from napari_xfusion.core.normalise import Normalisation

    n = int(stack.shape[0])
    source_name = f"{name} metadata"
    layer_entry = meta.get("xfusion") if isinstance(meta.get("xfusion"), dict) else None
    norm_dict = (
        (meta.get("normalisation") or {}).get("hr")
        if isinstance(meta.get("normalisation"), dict)
        else None
    )
    if "schema" in meta:
        source = "schema"
    elif layer_entry is not None:
        source = "gui-layer"
    elif "frame_indices" in meta or "method" in meta:
        source = "cli"
    else:
        source = "plain"
    units = meta.get("units", "float")
    if source == "gui-layer":
        params = layer_entry.get("parameters") or {}
        norm_dict = params.get("normalisation") or None
        units = "detector" if meta.get("units") == "detector" else "float"
        pages = np.arange(n, dtype=np.int64)
        done = layer_entry.get("frames_done")
        computed = (
            np.isin(pages, parse_frame_indices(done, n, f"{source_name} frames_done"))
            if done is not None
            else np.ones(n, bool)
        )
        method = layer_entry.get("method")
        keys = params.get("key_indices")
    else:
        indices = meta.get("frame_indices")
        pages = (
            parse_frame_indices(indices, None, f"{source_name} frame_indices")
            if indices is not None
            else np.arange(n, dtype=np.int64)
        )
        if pages.size != n:
            raise InputError(f"{name}: metadata lists {pages.size} frame indices for {n} frames")
        computed = np.ones(n, dtype=bool)
        method = meta.get("method")
        keys = meta.get("key_indices")
    try:
        normalisation = Normalisation.from_dict(norm_dict) if norm_dict else None
    except (TypeError, ValueError, KeyError) as exc:
        raise MetadataError(f"{source_name} normalisation: {exc}") from None
    key_array = parse_key_indices(keys, None, f"{source_name} key_indices", required=False)
    if units not in ("float", "detector"):
        units = "float"
    if not np.issubdtype(stack.dtype, np.floating) and (
        units != "detector" or normalisation is None
    ):
        if normalisation is not None:
            units = "detector"  # integer pages with the HR clip values: detector units
        else:
            raise InputError(
                f"{name}: {stack.dtype} pages without normalisation metadata; expected float "
                "[0, 1] pages or a detector-units export with its HR normalisation"
            )
    config = None
    if isinstance(meta.get("config"), dict):
        try:
            config = RunConfig.from_dict(meta["config"])
        except (ConfigError, ValueError):
            config = None  # written by another version or with a plugin not installed here
    info = ExportInfo(
        path=path,
        source=source,
        schema=meta.get("schema"),
        method=method,
        pages=pages,
        computed=computed,
        complete=bool(meta.get("complete", True)),
        units=units,
        normalisation=normalisation,
        key_indices=key_array,
        config=config,
        metadata=meta,
        pixel_size_um=meta.get("pixel_size_um"),
        frame_interval_s=meta.get("frame_interval_s"),
    )
    return info
