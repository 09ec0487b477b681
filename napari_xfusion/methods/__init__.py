"""Reconstruction methods behind one :class:`Reconstructor` interface.

>>> from napari_xfusion.methods import get_reconstructor
>>> bicubic = get_reconstructor("bicubic")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from napari_xfusion.methods.base import SCALE, Reconstruction, Reconstructor, WindowInputs

__all__ = [
    "METHODS",
    "SCALE",
    "Reconstruction",
    "Reconstructor",
    "WindowInputs",
    "get_reconstructor",
]

# name -> "module:Class"; imported on demand so `bicubic` never pays for torch.
METHODS: dict[str, str] = {
    "bicubic": "napari_xfusion.methods.bicubic:Bicubic",
    "bayesian": "napari_xfusion.methods.bayesian:Bayesian",
    "edvr": "napari_xfusion.methods.network:EDVRMethod",
    "edvr-stf": "napari_xfusion.methods.network:EDVRSTFMethod",
    "flow": "napari_xfusion.methods.flow:FlowMethod",
}


def get_reconstructor(name: str, **options: Any) -> Reconstructor:
    """Instantiate the method called ``name`` (see :data:`METHODS`) with its options."""
    try:
        target = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
    module_name, class_name = target.split(":")
    cls = getattr(import_module(module_name), class_name)
    return cls(**options)
