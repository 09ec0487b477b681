"""Reconstruction methods behind one :class:`Reconstructor` interface, declared in
:mod:`napari_xfusion.methods.registry`.

>>> from napari_xfusion.methods import available_methods, get_reconstructor
>>> sorted(available_methods())[:2]
['bayesian', 'bicubic']
>>> bicubic = get_reconstructor("bicubic")
"""

from __future__ import annotations

from napari_xfusion.methods.base import SCALE, Reconstruction, Reconstructor, WindowInputs
from napari_xfusion.methods.registry import (
    BUILTIN_SPECS,
    MethodSpec,
    OptionSpec,
    available_methods,
    coerce_options,
    get_reconstructor,
    get_spec,
    parse_option,
)

__all__ = [
    "METHODS",
    "SCALE",
    "MethodSpec",
    "OptionSpec",
    "Reconstruction",
    "Reconstructor",
    "WindowInputs",
    "available_methods",
    "coerce_options",
    "get_reconstructor",
    "get_spec",
    "parse_option",
]

METHODS: dict[str, str] = {spec.name: spec.target for spec in BUILTIN_SPECS}
"""name -> ``"module:Class"`` (the older API; the registry keeps plugins in it too). Adding an
entry here still works (a bare declaration without options); prefer a :class:`MethodSpec`."""
