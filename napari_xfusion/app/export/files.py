"""The files of an export (:mod:`napari_xfusion.app.export`): their paths (``<stem>.tif``,
``.csv``, ``.config.json``, ``.partial.*``) and the safety of every write (:func:`check_writes`,
:func:`writing`, :class:`OutputError`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from napari_xfusion.app.config import RunConfig


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
