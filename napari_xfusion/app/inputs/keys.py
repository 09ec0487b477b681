"""The key rule of :mod:`napari_xfusion.app.inputs` (its docstring): HR key frames from a key
step, first-and-last, key indices or ``key_indices`` metadata; and the LR separation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.inputs.normalisation import fit_stream
from napari_xfusion.app.inputs.prepared import InputError


class _Rows:
    """Lazy view of some rows of a stack (keeps a memmap a memmap)."""

    def __init__(self, stack: Any, rows: Sequence[int]) -> None:
        self._stack, self._rows = stack, [int(r) for r in rows]
        self.shape = (len(self._rows), *stack.shape[1:])
        self.dtype = stack.dtype
        self.ndim = 3

    def __getitem__(self, i: int) -> np.ndarray:
        return self._stack[self._rows[i]]


def _metadata_keys(meta: Mapping[str, Any], name: str) -> list[int] | None:
    """The ``key_indices`` metadata, checked (:func:`core.meta.parse_key_indices`), or None."""
    from napari_xfusion.core.meta import MetadataError, parse_key_indices

    try:
        keys = parse_key_indices(
            meta.get("key_indices"), None, f"{name} metadata key_indices", required=False
        )
    except MetadataError as exc:
        raise InputError(str(exc)) from None
    return None if keys is None else [int(k) for k in keys]


def _separation(config: RunConfig, meta: Mapping[str, Any], n_lr: int, name: str) -> int:
    """The LR separation: the configuration's, else the LR metadata's, else 1; checked."""
    from napari_xfusion.core.meta import MetadataError, parse_separation

    try:
        if config.separation is not None:
            return parse_separation(config.separation, n_lr, f"separation (for {name})")
        if meta.get("separation") is None:
            return 1
        return parse_separation(meta["separation"], n_lr, f"{name} metadata separation")
    except MetadataError as exc:
        raise InputError(str(exc)) from None


def _resolve_keys(
    config: RunConfig, hr: Any, hr_meta: Mapping[str, Any], name: str, n_lr: int, notes: list[str]
) -> Any:
    from napari_xfusion.engine import KeyFrames

    rule, n_hr = config.keys, int(hr.shape[0])
    meta_keys = _metadata_keys(hr_meta, name)
    if rule.step is not None or rule.first_last:
        if n_hr == n_lr:  # a full-rate stack: its rows at the key indices
            from napari_xfusion.core.windows import key_indices

            try:
                rows = key_indices(n_lr, rule.step, first_last=rule.first_last)
            except ValueError as exc:
                raise InputError(f"{name}: {exc}") from None
            norm = fit_stream(hr, rows, config.normalise, name, notes)
            return KeyFrames.from_full_rate(hr, rule.step, rule.first_last, normalisation=norm)
        if rule.first_last:
            if n_hr != 2:
                raise InputError(
                    f"{name}: keys 'first and last' need 2 HR frames (or {n_lr}, full rate), "
                    f"but it has {n_hr}"
                )
            indices = [0, n_lr - 1]
        else:
            indices = [i * int(rule.step) for i in range(n_hr)]
            if indices[-1] >= n_lr:
                most = (n_lr - 1) // max(n_hr - 1, 1)
                raise InputError(
                    f"{name}: {n_hr} HR key frames with key step {rule.step} put the last key at "
                    f"LR frame {indices[-1]}, past the {n_lr} LR frames; expected a key step of "
                    f"at most {most}, or a full-rate HR stack of {n_lr} frames"
                )
        if meta_keys is not None and meta_keys != indices:
            raise InputError(
                f"{name}: its key_indices metadata {meta_keys} disagree with the key rule "
                f"({indices}); drop the key rule to use the metadata, or fix the rule"
            )
        if meta_keys is None:
            notes.append(f"{name}: {n_hr} key frames taken at LR times {_short(indices)}")
        source = "key rule"
        rule_dict: dict[str, Any] = {"key_indices": indices, "source": source}
    else:
        if rule.indices is not None:
            indices, source = list(rule.indices), "key indices"
        elif meta_keys is not None:
            indices, source = meta_keys, f"{name} metadata"
        else:
            raise InputError(
                f"{name}: no key_indices in its metadata; give a key step K or first-and-last "
                "(full-rate HR or key frames at i*K), or key indices i,j,... (one per HR frame)"
            )
        rule_dict = {"key_indices": indices, "source": source}
        if n_hr != len(indices):
            if n_hr != n_lr:
                raise InputError(
                    f"{name}: has {n_hr} frames; with {len(indices)} key indices ({source}) it "
                    f"must hold either those {len(indices)} key frames or all {n_lr} LR-rate frames"
                )
            if indices and max(indices) >= n_lr:
                raise InputError(f"{name}: key index {max(indices)} is past the {n_lr} LR frames")
            norm = fit_stream(hr, indices, config.normalise, name, notes)
            return KeyFrames(_Rows(hr, indices), indices, norm, rule=rule_dict)
    norm = fit_stream(hr, range(n_hr), config.normalise, name, notes)
    return KeyFrames(hr, indices, norm, rule=rule_dict)


def _short(indices: Sequence[int]) -> str:
    keys = [int(k) for k in indices]
    if len(keys) <= 4:
        return ", ".join(map(str, keys))
    return f"{keys[0]}, {keys[1]}, {keys[2]} .. {keys[-1]} ({len(keys)} keys)"
