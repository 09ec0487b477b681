"""Export of results through the application layer's one export schema.

Each fused layer goes out as the CLI's exports do
(:class:`~napari_xfusion.app.export.ExportWriter`):
``fused.tif`` for one method, else ``fused_<method>.tif`` (the names ``xfusion fuse -o
FOLDER/`` writes), holding only the frames computed, with their LR indices, the run
configuration, the normalisation and (when known) pixel size and frame interval; beside each,
``<stem>.csv`` (the session's :class:`~napari_xfusion.app.results.ResultTable` rows) and
``<stem>.config.json``. :func:`~napari_xfusion.app.export.check_writes` refuses a write onto
a file any layer came from. Plain functions (no dialogs), so the widget and the tests share
them; :func:`write_layer` is the npe2 writer's plain layer export.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion._napari._layers import META, fused_layers, meta
from napari_xfusion._napari._request import source_path
from napari_xfusion._napari._session import session_for
from napari_xfusion.app.export import ExportWriter, check_writes, export_files, export_paths
from napari_xfusion.core.io import write_stack, write_text_atomic

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from napari_xfusion.app.config import RunConfig
    from napari_xfusion.app.results import ResultTable

__all__ = [
    "layer_metadata",
    "write_layer",
    "export_results",
    "export_layer",
    "physical_units",
    "write_text_atomic",
]

EXPORT_NAME = "fused.tif"
"""The export's name in a folder (the CLI's for ``-o FOLDER/``)."""


def layer_metadata(
    name: str,
    meta: dict[str, Any] | None,
    scale: Any = None,
    translate: Any = None,
    units: Any = None,
    axis_labels: Any = None,
) -> dict[str, Any]:
    """Metadata stored with an exported layer: our entry plus what re-creates the layer
    (scale and translate in world units, napari's units and axis labels per axis)."""
    out: dict[str, Any] = {
        "layer": {
            "name": name,
            "scale": [float(s) for s in scale] if scale is not None else None,
            "translate": [float(t) for t in translate] if translate is not None else None,
            "units": [str(u) for u in units] if units is not None else None,
            "axis_labels": [str(a) for a in axis_labels] if axis_labels is not None else None,
        }
    }
    entry = (meta or {}).get(META)
    if isinstance(entry, dict):
        out[META] = entry
    return out


def _layer_entry(layer: Layer, with_meta: bool = False) -> dict[str, Any]:
    return layer_metadata(
        layer.name,
        layer.metadata if with_meta else None,
        layer.scale,
        layer.translate,
        getattr(layer, "units", None),
        getattr(layer, "axis_labels", None),
    )


def write_layer(path: str | os.PathLike[str], layer: Layer) -> Path:
    """Write one image layer as a ``(T, H, W)`` TIFF (atomic), with its metadata."""
    data = np.asarray(layer.data)
    if data.ndim == 2:
        data = data[np.newaxis]
    return write_stack(path, data, _layer_entry(layer, with_meta=True))


def physical_units(layer: Layer) -> tuple[float | None, float | None]:
    """(pixel size in micrometres, frame interval in seconds) of ``layer``'s scale, where its
    napari units say (None for pixels / frames)."""

    def convert(axis: int, unit: str) -> float | None:
        try:
            quantity = float(layer.scale[axis]) * layer.units[axis]
            value = float(quantity.to(unit).magnitude)
        except Exception:  # "pixel", or a unit of another kind (pint raises its own errors)
            return None
        return value if math.isfinite(value) and value > 0 else None

    return convert(-1, "micrometer"), convert(0, "second")


def _config(layer: Layer) -> RunConfig:
    from napari_xfusion.app.config import RunConfig

    stored = meta(layer).get("parameters", {}).get("config")
    try:
        return RunConfig.from_dict(stored)
    except (TypeError, ValueError):  # a layer from an older export, or a plugin gone
        return RunConfig(methods=())


def export_layer(
    layer: Layer,
    path: str | os.PathLike[str],
    table: ResultTable | None = None,
    *,
    detector_units: bool = False,
) -> list[Path]:
    """Export one fused layer to ``path`` (+ sidecars; ``table``: the rows of its frames, the
    session's); returns the files written."""
    from napari_xfusion.core.normalise import Normalisation

    entry = meta(layer)
    method = entry.get("method", layer.name)
    done = sorted(int(t) for t in entry.get("frames_done", []))
    if not done:
        raise ValueError(f"{layer.name!r} has no computed frame to export: run it first")
    params = entry.get("parameters", {})
    config = _config(layer).replace(units="detector" if detector_units else "float")
    stored = params.get("normalisation")
    normalisation = Normalisation.from_dict(stored) if stored else None
    pixel_size, interval = physical_units(layer)
    rows = {r.index: r for r in table.rows(method)} if table is not None else {}
    writer = ExportWriter(
        path,
        config,
        method,
        tuple(layer.data.shape[1:]),
        len(done),
        description=params.get("describe") or None,
        normalisation=normalisation,
        pixel_size_um=pixel_size,
        frame_interval_s=interval,
        metadata={**params.get("run", {}), **_layer_entry(layer)},
    )
    try:
        for t in done:
            writer.write(np.asarray(layer.data[t], dtype=np.float32), t, rows.get(t))
    except BaseException:
        writer.discard()
        raise
    writer.close(table if rows else None)
    return [p for p in export_files(path, partial=False) if p.exists()]


def export_results(
    viewer: napari.Viewer,
    folder: str | os.PathLike[str],
    methods: Iterable[str] | None = None,
    *,
    detector_units: bool = False,
) -> list[Path]:
    """Export the fused layers of ``methods`` (all when None) into ``folder``.

    Files per method: ``fused.tif`` (one method) or ``fused_<method>.tif``, each with
    ``<stem>.csv`` and ``<stem>.config.json``; only the computed frames, float32 in [0, 1]
    or, with ``detector_units``, the HR detector's values and dtype. Nothing is written when
    any file would replace a file a layer was read from (``OutputError``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder {folder} does not exist; create it first")
    wanted = None if methods is None else set(methods)
    layers = {
        meta(layer).get("method", layer.name): layer
        for layer in fused_layers(viewer)
        if wanted is None or meta(layer).get("method", layer.name) in wanted
    }
    if not layers:
        what = ", ".join(sorted(wanted)) if wanted else "any method"
        raise ValueError(f"no fused layer of {what} to export: run it first")
    paths = export_paths(folder / EXPORT_NAME, list(layers))
    sources = {f"layer {layer.name!r} file": source_path(layer) for layer in viewer.layers}
    check_writes([f for p in paths.values() for f in export_files(p)], sources)
    table = session_for(viewer).table
    written: list[Path] = []
    for method, layer in layers.items():
        written += export_layer(layer, paths[method], table, detector_units=detector_units)
    return written
