"""The engine's inputs: key frames, per-frame normalisation checks and the frame selection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from napari_xfusion.core import windows as win
from napari_xfusion.core.meta import MetadataError, parse_key_indices
from napari_xfusion.methods import (
    SCALE,
)


class InputError(ValueError):
    """The engine's inputs are inconsistent (shapes, key indices, frame range, NaNs)."""


class Normaliser(Protocol):
    """What the engine needs of :class:`napari_xfusion.core.normalise.Normalisation`."""

    def apply(self, arr: np.ndarray) -> np.ndarray: ...


def _to_unit_float(
    frame: np.ndarray, normalisation: Normaliser | None, what: str, index: int
) -> np.ndarray:
    """One frame as float32 in [0, 1]; refuses non-finite values naming ``what`` and ``index``."""
    if normalisation is not None:
        out = np.asarray(normalisation.apply(np.asarray(frame)), dtype=np.float32)
    else:
        out = np.asarray(frame, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InputError(f"{what} frame {index} has {bad} non-finite value(s) (NaN or infinity)")
    return out


def _check_unit_dtype(array: np.ndarray, normalisation: Normaliser | None, what: str) -> None:
    if normalisation is None and not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            f"{what} is {array.dtype} (detector units): pass its Normalisation "
            "(core.normalise.fit_normalisation) or a float stack already scaled to [0, 1]"
        )


class KeyFrames:
    """HR key frames at explicit LR time indices, read lazily one frame at a time.

    Parameters
    ----------
    frames : array-like, shape (K, H, W)
        The key frames (a memory-mapped TIFF stays memory-mapped: only accessed frames are
        read), raw detector values with ``normalisation`` or floats in [0, 1].
    indices : sequence of int, length K
        Strictly increasing LR time index of each key frame (real dual-camera data: from the
        cameras' trigger metadata).
    normalisation : Normalisation, optional
        Applied per frame on access; None when ``frames`` is already float in [0, 1].

    Examples
    --------
    >>> keys = KeyFrames(hr_keys, [0, 20, 40])
    >>> keys = KeyFrames.from_full_rate(hr, key_step=20)  # simulation: a full-rate HR stack
    >>> keys[20].shape
    (400, 1024)
    """

    def __init__(
        self,
        frames: np.ndarray,
        indices: Sequence[int] | np.ndarray,
        normalisation: Normaliser | None = None,
        *,
        rule: Mapping[str, Any] | None = None,
    ) -> None:
        if getattr(frames, "ndim", None) != 3:
            raise InputError(
                f"HR keys must be a (K, H, W) stack, got shape {getattr(frames, 'shape', None)}"
            )
        try:  # refuses fractions (5.7 is not silently 5), strings, dicts, duplicates
            indices = parse_key_indices(indices, None, "HR key indices", min_keys=0)
        except MetadataError as exc:
            raise InputError(str(exc)) from None
        if indices.size != frames.shape[0]:
            raise InputError(
                f"HR keys: {frames.shape[0]} frames but {indices.size} key indices; give one "
                "LR time index per key frame"
            )
        if indices.size < 2:
            raise InputError(f"need at least 2 HR key frames, got {indices.size}")
        if np.any(np.diff(indices) <= 0):
            raise InputError(f"HR key indices must be strictly increasing, got {indices.tolist()}")
        if indices[0] < 0:
            raise InputError(f"HR key index {int(indices[0])} is negative")
        _check_unit_dtype(frames, normalisation, "HR keys")
        self._setup(
            frames,
            indices,
            rows=range(indices.size),
            normalisation=normalisation,
            rule=rule or {"key_indices": indices.tolist()},
            full_rate_frames=None,
        )

    def _setup(
        self,
        frames: np.ndarray,
        indices: np.ndarray,
        rows: Iterable[int],
        normalisation: Normaliser | None,
        rule: Mapping[str, Any],
        full_rate_frames: int | None,
    ) -> None:
        self._frames = frames
        self._rows = {int(t): int(row) for t, row in zip(indices, rows, strict=True)}
        self.indices = indices
        self.normalisation = normalisation
        self.rule: dict[str, Any] = dict(rule)
        self._full_rate_frames = full_rate_frames

    @classmethod
    def from_full_rate(
        cls,
        hr: np.ndarray,
        key_step: int | None = None,
        first_last: bool = False,
        normalisation: Normaliser | None = None,
    ) -> KeyFrames:
        """Keys taken from a full-rate ``(T, H, W)`` HR stack: every ``key_step``-th frame, or
        the first and last only (:func:`napari_xfusion.core.windows.key_indices`). The stack is
        not copied: key frames are read from it on access."""
        if getattr(hr, "ndim", None) != 3:
            raise InputError(
                f"full-rate HR must be a (T, H, W) stack, got shape {getattr(hr, 'shape', None)}"
            )
        try:
            indices = win.key_indices(hr.shape[0], key_step, first_last=first_last)
        except ValueError as exc:
            raise InputError(f"HR keys: {exc}") from None
        _check_unit_dtype(hr, normalisation, "HR stack")
        keys = cls.__new__(cls)
        keys._setup(
            hr,
            indices,
            rows=indices,  # the key at LR time t is row t of the full-rate stack
            normalisation=normalisation,
            rule={"first_last": True} if first_last else {"key_step": int(key_step or 0)},
            full_rate_frames=int(hr.shape[0]),
        )
        return keys

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one key frame."""
        return tuple(int(n) for n in self._frames.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.indices.size)

    def __contains__(self, t: object) -> bool:
        return t in self._rows

    def __getitem__(self, t: int) -> np.ndarray:
        """The key frame at LR time ``t`` as float32 (H, W) in [0, 1]."""
        try:
            row = self._rows[int(t)]
        except KeyError:
            raise KeyError(
                f"no HR key frame at LR time {t}; keys are at {self.indices.tolist()}"
            ) from None
        return _to_unit_float(self._frames[row], self.normalisation, "HR key", int(t))

    def validate(self, n_frames: int, lr_frame_shape: tuple[int, int]) -> None:
        """Check the keys against an LR sequence of ``n_frames`` frames of ``lr_frame_shape``."""
        h, w = lr_frame_shape
        if self.frame_shape != (SCALE * h, SCALE * w):
            raise InputError(
                f"HR keys are {self.frame_shape[0]}x{self.frame_shape[1]} but LR frames are "
                f"{h}x{w}: HR must be exactly {SCALE}x the LR, i.e. {SCALE * h}x{SCALE * w}"
            )
        if self._full_rate_frames is not None and self._full_rate_frames != n_frames:
            raise InputError(
                f"full-rate HR stack has {self._full_rate_frames} frames but the LR stream has "
                f"{n_frames}: they must cover the same times"
            )
        if self.indices[-1] >= n_frames:
            raise InputError(
                f"HR key index {int(self.indices[-1])} is out of range: the LR stream has "
                f"{n_frames} frames (0..{n_frames - 1})"
            )


def resolve_targets(frames: Iterable[int] | slice | range | None, n_frames: int) -> np.ndarray:
    """Sorted unique LR time indices of a frame selection, checked against the sequence.

    ``None`` means all frames; a ``slice``/``range`` must lie inside ``[0, n_frames)`` (no
    silent clipping: asking for frames that do not exist is an error).
    """
    if frames is None:
        return np.arange(n_frames, dtype=np.int64)
    if isinstance(frames, slice):
        start = 0 if frames.start is None else frames.start
        stop = n_frames if frames.stop is None else frames.stop
        frames = range(start, stop, frames.step or 1)
    targets = np.asarray(list(frames), dtype=np.int64).ravel()
    if targets.size == 0:
        raise InputError("the frame selection is empty")
    bad = targets[(targets < 0) | (targets >= n_frames)]
    if bad.size:
        raise InputError(
            f"frame {int(bad[0])} is outside the LR sequence: it has {n_frames} frames "
            f"(0..{n_frames - 1})"
        )
    return np.unique(targets)


def split_targets(targets: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The contiguous chunk of ``targets`` that rank ``rank`` of ``world_size`` reconstructs."""
    return np.array_split(np.asarray(targets), world_size)[rank]
