"""Our metadata as JSON in a TIFF's ImageDescription: encode (:func:`_description`) and decode.

tifffile's "shaped" format: a JSON object with the array ``shape``, which any TIFF reader
ignores and tifffile reads back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def _parse_description(description: str) -> dict[str, Any] | None:
    try:
        value = json.loads(description)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths and tuples turned into JSON types.

    Non-finite floats become ``None`` (strict JSON has no NaN).
    """
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON-able")


def _description(shape: tuple[int, ...], metadata: Mapping[str, Any] | None) -> str:
    meta = _jsonable(dict(metadata or {}))
    if "shape" in meta:
        raise ValueError("metadata key 'shape' is reserved (tifffile stores the array shape there)")
    # ensure_ascii: the TIFF ImageDescription is 7-bit ASCII.
    return json.dumps({"shape": list(shape), **meta}, ensure_ascii=True, allow_nan=False)
