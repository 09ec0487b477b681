"""The application layer both faces (CLI, napari GUI) share; Qt-free.

- :mod:`.config`: :class:`RunConfig`, the one description of a run (saved with every export);
- :mod:`.inputs`: :func:`prepare_inputs`, the one input policy (keys, normalisation, checks);
- :mod:`.results`: :class:`ResultTable`, per-frame rows, metrics and summaries;
- :mod:`.export`: :class:`ExportWriter` / :func:`read_export`, the one export schema;
- :mod:`.job`: :func:`run_job`, the run loop (methods from the registry, cancel by closing);
- :mod:`.devices`: device names, availability, ``auto``.

Submodules are imported lazily, so ``import napari_xfusion.app`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "ConfigError",
    "ExportInfo",
    "ExportWriter",
    "FrameRow",
    "InputError",
    "KeyRule",
    "MethodChoice",
    "PreparedInputs",
    "ResultTable",
    "RunConfig",
    "prepare_inputs",
    "read_export",
    "run_job",
]

_WHERE = {
    "ConfigError": "config",
    "KeyRule": "config",
    "MethodChoice": "config",
    "RunConfig": "config",
    "InputError": "inputs",
    "PreparedInputs": "inputs",
    "prepare_inputs": "inputs",
    "FrameRow": "results",
    "ResultTable": "results",
    "ExportInfo": "export",
    "ExportWriter": "export",
    "read_export": "export",
    "run_job": "job",
}


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'napari_xfusion.app' has no attribute {name!r}") from None
    return getattr(import_module(f"napari_xfusion.app.{module}"), name)
