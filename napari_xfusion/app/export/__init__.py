"""One export schema and writer for both faces, and a reader for every export.

An export is ``<stem>.tif`` (the fused frames, streamed through
:class:`napari_xfusion.core.io.StackWriter`) plus, written atomically next to it,
``<stem>.csv`` (the per-frame rows of :class:`~napari_xfusion.app.results.ResultTable`) and
``<stem>.config.json`` (the :class:`~napari_xfusion.app.config.RunConfig`).

Nothing is lost: ``<stem>.tif`` only ever holds a complete export; a cancelled or failed one
goes to ``<stem>.partial.tif`` (with its own ``.partial.csv`` and ``.partial.config.json``)
and an earlier complete export stays as it was. :func:`check_writes` refuses any write onto
an input, and :func:`writing` makes OS errors name the output.

TIFF metadata (JSON in the first page's description), ``schema`` = :data:`EXPORT_SCHEMA`:

- ``schema``, ``kind`` (``"xfusion-fused"``), ``software``;
- ``config`` (``RunConfig.to_dict()``), ``method``, ``method_description``,
  ``method_options``, ``weights_sha256``;
- ``inputs`` (source of LR / HR / truth), ``separation``, ``key_rule``, ``key_indices``,
  ``noise``, ``window`` (``frames`` [start, stop) and ``n_frames`` requested), ``device``;
- ``frame_indices``: the LR index of each page - only the frames actually computed are
  written, so a partial window or a cancelled run holds no placeholder frames;
  ``complete`` (false when cancelled) and ``frames_written``;
- ``normalisation`` (``{"lr": ..., "hr": ...}``, clip values and dtype) and ``units``
  (``"float"`` or ``"detector"``: then pages are the HR detector's values, mapped back to
  [0, 1] by ``normalisation.hr``);
- ``pixel_size_um``, ``frame_interval_s`` (None when unknown);
- ``frames``: per-frame ``index`` and attention columns.

:func:`read_export` also reads the earlier CLI exports (no ``schema``) and the GUI's layer
exports (``xfusion`` layer entry, full-length stacks with ``frames_done``).

Modules: :mod:`.files` (paths, write safety), :mod:`.writer` (:class:`ExportWriter`,
:func:`run_metadata`, :func:`write_sidecars`), :mod:`.reader` (:func:`read_export`,
:class:`ExportInfo`); every name is importable from here.
"""

from __future__ import annotations

from napari_xfusion.app.export.files import (
    OutputError,
    check_writes,
    config_path,
    csv_path,
    export_files,
    export_paths,
    extra_output_path,
    partial_path,
    writing,
)
from napari_xfusion.app.export.reader import ExportInfo, read_export
from napari_xfusion.app.export.writer import (
    EXPORT_SCHEMA,
    SOFTWARE,
    ExportWriter,
    run_metadata,
    write_sidecars,
)

__all__ = [
    "EXPORT_SCHEMA",
    "SOFTWARE",
    "ExportInfo",
    "ExportWriter",
    "OutputError",
    "check_writes",
    "config_path",
    "csv_path",
    "export_files",
    "export_paths",
    "extra_output_path",
    "partial_path",
    "read_export",
    "run_metadata",
    "write_sidecars",
    "writing",
]
