"""Which HR keys fine-tuning trains on and which it holds out for validation.

A key can be a training *target* only when it has a key on each side (an interior key): the
network reconstructs it from the LR window around its time and the keys before and after it,
as leave-one-key-out validation does. The rule (:func:`split_keys`):

- the first and the last key are never targets (nothing frames them) and never validated;
- of the ``n`` interior keys, ``max(1, round(fraction * n))`` are held out for validation,
  evenly spaced (the ``i``-th of ``v`` held-out keys is interior key ``floor((i + 1/2) n /
  v)``), the others are the training targets; at least one of each, so at least 4 keys;
- a held-out key is never a training target. It may be a *neighbour input* of a training
  target (its pixels enter the network as a key, as at inference): no leakage, because the
  network is never asked to output it. The score "after" is therefore on keys whose content
  the network was never fitted to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FinetuneError", "KeySplit", "split_keys"]


class FinetuneError(ValueError):
    """Fine-tuning cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class KeySplit:
    """LR indices of the keys: all of them, the training targets, the held-out ones."""

    keys: tuple[int, ...]
    train: tuple[int, ...]
    validation: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "train_targets": list(self.train),
            "validation": list(self.validation),
            "rule": "interior keys only; held-out keys evenly spaced and never a training "
            "target (they may be a target's neighbour input)",
        }


def split_keys(
    key_indices: Sequence[int] | np.ndarray,
    *,
    fraction: float = 1 / 3,
    validation: Sequence[int] | None = None,
) -> KeySplit:
    """Split the keys into training targets and held-out validation keys (module docstring).

    Parameters
    ----------
    key_indices : sequence of int
        LR index of every HR key, increasing.
    fraction : float
        Share of the interior keys held out, in (0, 1).
    validation : sequence of int, optional
        The held-out keys (LR indices) chosen by the caller instead; each must be an interior
        key and at least one interior key must remain for training.

    Raises
    ------
    FinetuneError
        Too few keys, or ``validation`` names a key that is not an interior key.
    """
    keys = tuple(int(k) for k in np.asarray(key_indices).ravel())
    interior = keys[1:-1]
    if len(interior) < 2:
        raise FinetuneError(
            f"too few HR keys to fine-tune and validate: {len(keys)} key(s) at LR frames "
            f"{list(keys)}; need at least 4 (two interior keys: one to train on, one held out "
            "for leave-one-key-out validation)"
        )
    if validation is not None:
        held = tuple(sorted({int(k) for k in validation}))
        bad = [k for k in held if k not in interior]
        if bad:
            raise FinetuneError(
                f"validation keys {bad} are not interior HR keys; choose among {list(interior)}"
            )
        if not held:
            raise FinetuneError("give at least one validation key")
    else:
        if not 0 < fraction < 1:
            raise FinetuneError(f"the validation fraction must lie in (0, 1), got {fraction}")
        n = len(interior)
        v = min(max(1, round(fraction * n)), n - 1)
        held = tuple(interior[math.floor((i + 0.5) * n / v)] for i in range(v))
    train = tuple(k for k in interior if k not in held)
    if not train:
        raise FinetuneError(
            f"no interior key left to train on: all of {list(interior)} are held out"
        )
    return KeySplit(keys, train, held)
