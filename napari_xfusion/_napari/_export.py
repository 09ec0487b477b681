"""Export of results: fused stacks as TIFF (atomic, with metadata) and the metrics/attention CSVs.

Plain functions (no dialogs) so the widget, the writer contribution and the tests share them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion._napari._layers import META, fused_layers
from napari_xfusion._napari._session import rows_to_csv, session_for
from napari_xfusion.core.io import write_stack, write_text_atomic

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "layer_metadata",
    "write_layer",
    "in_detector_units",
    "export_results",
    "write_text_atomic",
]


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


def write_layer(path: str | os.PathLike[str], layer: Layer) -> Path:
    """Write one image layer as a ``(T, H, W)`` TIFF (atomic), with its metadata."""
    data = np.asarray(layer.data)
    if data.ndim == 2:
        data = data[np.newaxis]
    return write_stack(path, data, _layer_metadata(layer))


def _layer_metadata(layer: Layer) -> dict[str, Any]:
    return layer_metadata(
        layer.name,
        layer.metadata,
        layer.scale,
        layer.translate,
        getattr(layer, "units", None),
        getattr(layer, "axis_labels", None),
    )


def _file_stem(name: str) -> str:
    """``fused [edvr-stf]`` -> ``fused_edvr-stf``: a file name safe on every OS."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return "_".join(part for part in keep.split("_") if part) or "layer"


def in_detector_units(layer: Layer) -> tuple[np.ndarray, dict[str, Any] | None]:
    """A fused layer's frames mapped back to the HR detector's units, and the mapping used.

    The HR input's normalisation (clip values, dtype) is stored with each run; without one
    (inputs already in [0, 1]) the data are returned unchanged with None.
    """
    from napari_xfusion.core.normalise import Normalisation

    entry = layer.metadata.get(META, {})
    stored = entry.get("parameters", {}).get("normalisation") if isinstance(entry, dict) else None
    if not stored:
        return np.asarray(layer.data), None
    return Normalisation.from_dict(stored).invert(np.asarray(layer.data)), stored


def export_results(
    viewer: napari.Viewer,
    folder: str | os.PathLike[str],
    methods: Iterable[str] | None = None,
    *,
    detector_units: bool = False,
) -> list[Path]:
    """Export the fused stacks of ``methods`` (all when None) and the CSVs into ``folder``.

    Files: ``fused_<method>.tif`` per method (float32 in [0, 1], or with ``detector_units``
    mapped back to the HR detector's values and dtype where the inputs were normalised);
    ``metrics.csv`` and ``metrics_summary.csv`` when there are metrics; ``attention.csv`` when
    there are attention scores. Returns the paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"export folder {folder} does not exist; create it first")
    wanted = None if methods is None else set(methods)
    written = []
    for layer in fused_layers(viewer):
        method = layer.metadata[META].get("method", layer.name)
        if wanted is not None and method not in wanted:
            continue
        path = folder / f"{_file_stem(layer.name)}.tif"
        if detector_units:
            data, mapping = in_detector_units(layer)
            meta = _layer_metadata(layer)
            meta["units"] = "detector" if mapping is not None else "normalised"
            written.append(write_stack(path, data, meta))
        else:
            written.append(write_layer(path, layer))
    if wanted is not None and not written:
        raise ValueError(f"no fused layer of {', '.join(sorted(wanted))} to export: run it first")
    session = session_for(viewer)
    metrics = [r for r in session.metrics_rows() if wanted is None or r["method"] in wanted]
    if metrics:
        written.append(write_text_atomic(folder / "metrics.csv", rows_to_csv(metrics)))
        summary = [r for r in session.metrics_summary() if wanted is None or r["method"] in wanted]
        written.append(write_text_atomic(folder / "metrics_summary.csv", rows_to_csv(summary)))
    attention = [r for r in session.attention_rows() if wanted is None or r["method"] in wanted]
    if attention:
        written.append(write_text_atomic(folder / "attention.csv", rows_to_csv(attention)))
    return written
