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
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion import __version__
from napari_xfusion.app.config import ConfigError, RunConfig
from napari_xfusion.core.io import stage_text

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

EXPORT_SCHEMA = 1
SOFTWARE = f"napari-xfusion {__version__}"
KIND = "xfusion-fused"


def csv_path(path: str | os.PathLike[str]) -> Path:
    """``<stem>.csv`` next to the TIFF at ``path``."""
    return Path(path).with_suffix(".csv")


def config_path(path: str | os.PathLike[str]) -> Path:
    """``<stem>.config.json`` next to the TIFF at ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.config.json")


def export_paths(path: str | os.PathLike[str], methods: Iterable[str]) -> dict[str, Path]:
    """``path`` for one method, else ``<stem>_<method>.tif`` next to it (both faces)."""
    path, methods = Path(path), list(methods)
    if len(methods) == 1:
        return {methods[0]: path}
    return {m: path.with_name(f"{path.stem}_{m}{path.suffix or '.tif'}") for m in methods}


def partial_path(path: str | os.PathLike[str]) -> Path:
    """``<stem>.partial.tif``: where an interrupted or failed export goes, so a complete
    ``<stem>.tif`` from an earlier run is never replaced by an incomplete one."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix or '.tif'}")


def extra_output_path(path: str | os.PathLike[str], output: str) -> Path:
    """``<stem>_<output>.tif`` next to the export at ``path``: a method's extra per-frame map
    (``confidence``, ``variance``; its :attr:`MethodSpec.outputs`), same pages as the export."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{output}{path.suffix or '.tif'}")


def export_files(path: str | os.PathLike[str], *, partial: bool = True) -> list[Path]:
    """Every file an export at ``path`` may write: the TIFF and its sidecars, and (``partial``)
    the same for :func:`partial_path`."""
    paths = [Path(path)] + ([partial_path(path)] if partial else [])
    return [f for p in paths for f in (p, csv_path(p), config_path(p))]


class OutputError(ValueError):
    """A write refused before anything is written (it would replace an input, or the output
    path cannot be a file); the message names the output and the input."""


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Operating-system errors inside the block name ``path`` (not a hidden temp file) and say
    what failed: ``OSError(ENOSPC, "cannot write: No space left on device", path)``; the type
    (PermissionError, ...) and errno are kept."""
    try:
        yield
    except OSError as exc:
        if getattr(exc, "_xfusion_named", False):
            raise
        why = exc.strerror or str(exc) or type(exc).__name__
        err = type(exc)(exc.errno, f"cannot write: {why}", str(path))
        err._xfusion_named = True  # type: ignore[attr-defined]
        raise err from exc


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # symlinks and hard links: the same inode
    except OSError:  # one of them does not exist (yet): then it cannot be the other
        return False


def _inside(a: Path, folder: Path) -> bool:
    try:
        return folder.is_dir() and a.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def check_writes(
    writes: Iterable[str | os.PathLike[str]],
    inputs: Mapping[str, str | os.PathLike[str] | None] | RunConfig,
) -> None:
    """Refuse any write that would replace or change an input, before anything is written.

    Parameters
    ----------
    writes : iterable of path-like
        Every file the command may write (an export: :func:`export_files`).
    inputs : mapping or RunConfig
        ``{label: path}`` of the inputs (labels name them in messages: ``"--lr"``), or a run
        configuration (its ``lr``, ``hr`` and ``truth``). None paths are skipped.

    Raises
    ------
    OutputError
        A write is the same file as an input (symlinks resolved, same inode), or lies inside
        an input folder of frames (it would become one of its frames).
    """
    if isinstance(inputs, RunConfig):
        inputs = {"LR input": inputs.lr, "HR input": inputs.hr, "truth": inputs.truth}
    sources = [(label, Path(p)) for label, p in inputs.items() if p is not None]
    for write in map(Path, writes):
        for label, source in sources:
            if _same(write, source):
                raise OutputError(
                    f"{write}: is the {label} {source}; writing it would destroy that input. "
                    "Choose another output name"
                )
            if _inside(write, source):
                raise OutputError(
                    f"{write}: lies inside the {label} folder {source}; writing it would add "
                    "a frame to that input. Choose another output folder"
                )


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
