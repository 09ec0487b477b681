"""Writing an export (:mod:`napari_xfusion.app.export`): the schema's metadata of a run
(:func:`run_metadata`), the sidecars (:func:`write_sidecars`) and :class:`ExportWriter`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion import __version__
from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.export.files import (
    config_path,
    csv_path,
    export_files,
    partial_path,
    writing,
)
from napari_xfusion.core.io import stage_text

EXPORT_SCHEMA = 1
SOFTWARE = f"napari-xfusion {__version__}"
KIND = "xfusion-fused"


def run_metadata(config: RunConfig, prepared: Any, *, device: str | None = None) -> dict[str, Any]:
    """The metadata every export of one run shares (both faces call this)."""
    keys = prepared.keys
    targets = prepared.targets
    lr_norm, hr_norm = prepared.lr_normalisation, keys.normalisation
    return {
        "schema": EXPORT_SCHEMA,
        "kind": KIND,
        "software": SOFTWARE,
        "config": config.to_dict(),
        "inputs": dict(prepared.sources),
        "separation": int(prepared.separation),
        "key_rule": dict(keys.rule),
        "key_indices": [int(k) for k in keys.indices],
        "noise": prepared.noise,
        "window": {"frames": [int(targets[0]), int(targets[-1]) + 1], "n_frames": len(targets)},
        "normalisation": {
            "lr": None if lr_norm is None else lr_norm.to_dict(),
            "hr": None if hr_norm is None else hr_norm.to_dict(),
        },
        "device": device if device is not None else config.device,
    }


def write_sidecars(
    path: str | os.PathLike[str], config: RunConfig | None, csv_text: str
) -> list[Path]:
    """Write ``<stem>.csv`` (``csv_text``) and ``<stem>.config.json`` atomically."""
    from napari_xfusion.core.io import write_text_atomic

    with writing(csv_path(path)):
        written = [write_text_atomic(csv_path(path), csv_text)]
    if config is not None:
        with writing(config_path(path)):
            written.append(config.save(config_path(path)))
    return written


class ExportWriter:
    """Stream one method's fused frames into an export (TIFF + CSV + config JSON).

    Parameters
    ----------
    path : path-like
        The TIFF; the sidecars go next to it.
    config : RunConfig
    method : str
        Method name (``config.method(method)`` gives its options and weights hash).
    frame_shape : (H, W)
    n_frames : int
        Frames announced (at most this many are written).
    description : mapping, optional
        The method's ``describe()`` (parameters, weights sha256).
    normalisation : Normalisation, optional
        The HR normalisation; with ``config.units == "detector"`` frames are mapped back
        through it and stored in its dtype.
    dtype : numpy dtype, optional
        Stored dtype; default float32, or the detector's (see ``normalisation``).
    pixel_size_um, frame_interval_s : float, optional
        HR pixel size (micrometres) and LR frame interval (seconds), when known.
    metadata : mapping, optional
        Run metadata (:func:`run_metadata`), merged in.
    sidecars : bool
        Write the CSV and config JSON when closing (False for torchrun parts).
    partial : bool
        An aborted export goes to :func:`partial_path` (False for torchrun parts, which are
        assembled under their final name).

    The TIFF is written to a hidden temp file next to ``path`` and renamed when finished, so
    ``path`` only ever holds a complete export (see :meth:`close`, :meth:`abort`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: RunConfig,
        method: str,
        frame_shape: tuple[int, int],
        n_frames: int,
        *,
        description: Mapping[str, Any] | None = None,
        normalisation: Any = None,
        dtype: Any = None,
        pixel_size_um: float | None = None,
        frame_interval_s: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        sidecars: bool = True,
        partial: bool = True,
    ) -> None:
        from napari_xfusion.core.io import StackWriter

        self.path = Path(path)
        self.partial = partial
        self.written_to: Path | None = None
        self.config = config
        self.method = method
        self.detector = config.units == "detector" and normalisation is not None
        self.normalisation = normalisation
        if dtype is None:
            dtype = np.dtype(normalisation.dtype) if self.detector else np.float32
        self.sidecars = sidecars
        try:
            choice = config.method(method)
            options, sha = dict(choice.options), choice.weights_sha256
        except KeyError:
            options, sha = {}, None
        description = dict(description or {"method": method})
        meta: dict[str, Any] = {
            "schema": EXPORT_SCHEMA,
            "kind": KIND,
            "software": SOFTWARE,
            "config": config.to_dict(),
            **dict(metadata or {}),
            "method": method,
            "method_description": description,
            "method_options": options,
            "weights_sha256": sha or description.get("sha256"),
            "units": "detector" if self.detector else "float",
            "pixel_size_um": None if pixel_size_um is None else float(pixel_size_um),
            "frame_interval_s": None if frame_interval_s is None else float(frame_interval_s),
        }
        if normalisation is not None:
            meta.setdefault("normalisation", {})
            meta["normalisation"] = {**(meta["normalisation"] or {}), "hr": normalisation.to_dict()}
        with writing(self.path):
            self._writer = StackWriter(self.path, (int(n_frames), *frame_shape), dtype, meta)
        self._rows: list[Any] = []

    @property
    def count(self) -> int:
        """Frames written so far."""
        return self._writer.count

    @property
    def indices(self) -> list[int]:
        return list(self._writer.indices)

    def write(self, frame: np.ndarray, index: int, row: Any = None) -> None:
        """Append the fused frame (float32 [0, 1]) at LR time ``index``; ``row`` (its
        :class:`~napari_xfusion.app.results.FrameRow`) goes to the CSV and metadata."""
        if self.detector:
            frame = self.normalisation.invert(np.asarray(frame), to_dtype=True)
        with writing(self.path):
            self._writer.write(frame, index=int(index))
        if row is not None:
            self._rows.append(row)

    def _finish(self, table: Any, complete: bool) -> int:
        from napari_xfusion.app.results import ResultTable

        if table is None:
            table = ResultTable()
            table.extend(self._rows)
        done = self.indices
        target = self.path if complete or not self.partial else partial_path(self.path)
        self._writer.update_metadata({"frames": table.attention_columns(self.method, done)})
        staged: list[tuple[Path, Path]] = []
        try:
            with writing(target):
                if self.sidecars and self.count:
                    # The sidecars are written before the TIFF is renamed and renamed right
                    # after it, so the three files of one export always belong together.
                    rows = [r for r in table.rows(self.method) if r.index in set(done)]
                    sub = ResultTable(table.key_indices)
                    sub.extend(rows)
                    csv_text = sub.to_csv_text()
                    staged.append((csv_path(target), stage_text(csv_path(target), csv_text)))
                    if self.config is not None:
                        json_text = self.config.to_json()
                        json_file = config_path(target)
                        staged.append((json_file, stage_text(json_file, json_text)))
                self._writer.path = target
                n = self._writer.close() if complete else self._writer.abort()
                for final, tmp in staged:
                    os.replace(tmp, final)
        except BaseException:
            for _, tmp in staged:
                tmp.unlink(missing_ok=True)
            self._writer.discard()  # no temp file left behind (a no-op once renamed)
            raise
        self.written_to = target if n else None
        if complete and n and self.partial:
            # A complete export supersedes what an interrupted earlier run left.
            for stale in export_files(partial_path(self.path), partial=False):
                stale.unlink(missing_ok=True)
        return n

    def discard(self) -> None:
        """Drop the frames written: nothing at ``path`` (or its partial name) is created or
        changed and the temp file is removed."""
        self._writer.discard()

    def close(self, table: Any = None) -> int:
        """Finish the TIFF (complete) and write the sidecars; returns the frames written.

        ``table`` (the run's ResultTable) gives the final rows (attention normalised over the
        whole run); without it the rows passed to :meth:`write` are used."""
        return self._finish(table, complete=True)

    def abort(self, table: Any = None) -> int:
        """Keep the frames done as a valid export marked ``complete: false``, under
        :func:`partial_path` (``partial=False``: under ``path``); a complete export already at
        ``path`` stays as it was. :attr:`written_to` says where it went."""
        return self._finish(table, complete=False)
