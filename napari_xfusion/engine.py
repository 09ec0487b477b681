"""One reconstruction engine for the GUI, the CLI and the benchmarks.

:func:`run` walks the requested LR times in time order and yields one :class:`FrameResult` per
(time, method) as soon as it is ready, so the GUI can update layers live and the CLI can write
frame by frame. Nothing is held beyond the current window: input frames are read (and
normalised) lazily from arrays or memory-mapped TIFFs through a small cache, so memory is
O(window), not O(T). Stop early by closing the generator (``gen.close()`` or leaving a ``for``
loop); every result yielded before stays valid.

Several methods run side by side: each frame's inputs are read once and shared; each method's
:meth:`~napari_xfusion.methods.base.Reconstructor.reconstruct_stream` is driven by its own
time-ordered feed of :class:`~napari_xfusion.methods.base.WindowInputs`, so network methods can
reuse per-frame features and batch targets.

Attention scores: for methods that report them (``edvr-stf``), ``backward``/``forward`` are the
raw scores of the HR key before / after t (indices 3 and 4 of
:attr:`Reconstruction.attention`). The normalised values divide by the score at the preceding
key's own time (:func:`napari_xfusion.core.attention.normalise_scores`); when that key frame is
not among the requested times it is reconstructed too (once, not yielded), so normalised values
are available live.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Protocol

import numpy as np

from napari_xfusion.core import windows as win
from napari_xfusion.core.meta import MetadataError, parse_key_indices
from napari_xfusion.core.windows import Window
from napari_xfusion.methods import (
    METHODS,
    SCALE,
    Reconstructor,
    WindowInputs,
    available_methods,
    get_reconstructor,
)

__all__ = [
    "DEVICES",
    "FrameResult",
    "InputError",
    "KeyFrames",
    "attention_table",
    "build_methods",
    "configure_torch_threads",
    "resolve_targets",
    "run",
    "split_targets",
]

DEVICES = ("auto", "cpu", "cuda", "mps")
"""Device names the engine passes to network methods (``cuda:N`` is accepted too)."""

# Raw attention score positions in Reconstruction.attention (TSA input order).
_BACKWARD, _FORWARD = 3, 4


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


@dataclass
class FrameResult:
    """One reconstructed frame, as :func:`run` yields it.

    Attributes
    ----------
    method : str
        Label of the method (its name, e.g. ``"edvr-stf"``).
    index : int
        LR time index t of the frame.
    frame : numpy.ndarray, float32, shape (H, W)
        The HR frame at t, normalised units ([0, 1]).
    window : Window
        The LR and key indices it was built from.
    attention : numpy.ndarray of float64, shape (5,) or (3,), or None
        Raw attention scores when the method has them.
    backward, forward : float or None
        Raw scores with the HR key before / after t (None when the method has no key
        attention).
    backward_norm, forward_norm : float or None
        The same divided by the score at the time of the window's ``key_before`` (NaN while
        unknown: before the first key that time comes later; :func:`attention_table` fills
        those in at the end).
    variance : numpy.ndarray, float32, shape (H, W), or None
        Per-pixel posterior variance when the method has it (``bayesian``).
    seconds : float
        Wall time spent producing this result (a batched network charges a batch to its
        first frame).
    done, total : int
        Results yielded so far (including this one) and in all, over every method.
    eta_seconds : float
        Estimated seconds until the last result (from the mean time per result so far).
    """

    method: str
    index: int
    frame: np.ndarray
    window: Window
    attention: np.ndarray | None
    backward: float | None
    forward: float | None
    backward_norm: float | None
    forward_norm: float | None
    variance: np.ndarray | None
    seconds: float
    done: int
    total: int
    eta_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


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


_threads_configured = False


def configure_torch_threads(n_threads: int | None = None) -> int:
    """Set torch's intra-op thread count once per process; returns it.

    Default: ``OMP_NUM_THREADS`` when set, else the CPU cores divided among the local ranks of
    a ``torchrun`` job (``LOCAL_WORLD_SIZE``), so ranks do not oversubscribe the machine.
    """
    global _threads_configured
    import torch

    if n_threads is None:
        if _threads_configured:
            return torch.get_num_threads()
        if os.environ.get("OMP_NUM_THREADS"):
            n_threads = int(os.environ["OMP_NUM_THREADS"])
        else:
            local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            n_threads = max(1, (os.cpu_count() or 1) // max(local_ranks, 1))
    torch.set_num_threads(int(n_threads))
    _threads_configured = True
    return int(n_threads)


def _check_device(device: str) -> str:
    """``device`` if this machine can run it, else :class:`InputError` saying what to use.

    Names: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``. CUDA / MPS are checked by
    :func:`napari_xfusion.nn.device.check_device` against the installed PyTorch build and the
    GPUs present (torch is imported only for those names).
    """
    device = str(device).strip().lower()
    base, _, index = device.partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise InputError(f"unknown device {device!r}; choose from {', '.join(DEVICES)} or cuda:N")
    if base in ("cuda", "mps"):
        from napari_xfusion.nn.device import DeviceError, check_device

        try:
            check_device(device)
        except DeviceError as exc:
            raise InputError(str(exc)) from None
    return device


def _accepts(name: str, option: str) -> bool:
    """Whether method ``name``'s constructor takes ``option`` (imports its class)."""
    module_name, class_name = METHODS[name].split(":")
    cls = getattr(import_module(module_name), class_name)
    return option in inspect.signature(cls).parameters


def build_methods(
    methods: str | Reconstructor | Sequence[str | Reconstructor],
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
) -> list[Reconstructor]:
    """Instantiate methods by name (instances pass through), as :func:`run` does.

    Network methods get ``device`` unless their options name one; torch's thread count is set
    once when one is built. Use it to build (and :meth:`~Reconstructor.describe`) methods once
    and pass the instances to several runs.
    """
    return [m for _, m in _make_methods(methods, method_options, _check_device(device))]


def _make_methods(
    methods: str | Reconstructor | Sequence[str | Reconstructor],
    method_options: Mapping[str, Mapping[str, Any]] | None,
    device: str,
) -> list[tuple[str, Reconstructor]]:
    items = [methods] if isinstance(methods, (str, Reconstructor)) else list(methods)
    if not items:
        raise InputError("no method given")
    options = dict(method_options or {})
    available_methods()  # entry-point plugins join METHODS on first use
    out: list[tuple[str, Reconstructor]] = []
    uses_torch = False
    for item in items:
        if isinstance(item, Reconstructor):
            label, method = item.name, item
        else:
            label = item
            if label not in METHODS:
                raise InputError(f"unknown method {label!r}; choose from {', '.join(METHODS)}")
            opts = dict(options.get(label, {}))
            if _accepts(label, "device"):
                opts.setdefault("device", device)
                uses_torch = True
            method = get_reconstructor(label, **opts)
        if label in (name for name, _ in out):
            raise InputError(f"method {label!r} is given twice")
        out.append((label, method))
    unknown = set(options) - {name for name, _ in out}
    if unknown:
        raise InputError(f"options given for methods that are not run: {sorted(unknown)}")
    if uses_torch:
        configure_torch_threads()
    return out


class _FrameCache:
    """Least-recently-used cache of normalised frames, so each frame is read once per window."""

    def __init__(self, load: Callable[[int], np.ndarray], capacity: int) -> None:
        self._load = load
        self._capacity = capacity
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self.reads = 0

    def __getitem__(self, t: int) -> np.ndarray:
        frame = self._frames.get(t)
        if frame is None:
            frame = self._load(t)
            self.reads += 1
            self._frames[t] = frame
            if len(self._frames) > self._capacity:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(t)
        return frame


@dataclass
class _MethodState:
    label: str
    method: Reconstructor
    pending: deque = field(default_factory=deque)  # windows fed, results not yet received
    has_attention: bool | None = None  # unknown until the first result
    key_scores: dict[int, np.ndarray] = field(default_factory=dict)  # key time -> raw scores
    stream: Iterator[Any] | None = None


def _group_key(t: int, keys: np.ndarray) -> int:
    """The key whose own-time score normalises t's scores: t's window's ``key_before``
    (as :func:`napari_xfusion.core.attention.preceding_keys` groups them)."""
    return win.bracketing_keys(t, keys)[0]


def _normalised(t: int, score: float, key: int, key_score: float | None, keys: np.ndarray) -> float:
    """``score`` of ``t`` normalised by its group key's score (NaN while that is unknown)."""
    if key_score is None:
        return math.nan
    from napari_xfusion.core.attention import normalise_scores

    if key == t:
        targets, scores = np.array([t]), np.array([score])
    else:
        targets, scores = np.array([key, t]), np.array([key_score, score])
    return float(np.asarray(normalise_scores(targets, scores, keys))[-1])


def run(
    methods: str | Reconstructor | Sequence[str | Reconstructor],
    lr: np.ndarray,
    keys: KeyFrames,
    *,
    separation: int = 1,
    frames: Iterable[int] | slice | range | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    device: str = "auto",
    lr_normalisation: Normaliser | None = None,
) -> Iterator[FrameResult]:
    """Reconstruct HR frames at LR times, yielding one :class:`FrameResult` per frame and method.

    Parameters
    ----------
    methods : str, Reconstructor or sequence of them
        Method names (``"bicubic"``, ``"bayesian"``, ``"edvr"``, ``"edvr-stf"``) or ready
        instances (the GUI keeps loaded networks). Results of one time come out for every
        method before the next time.
    lr : array-like, shape (T, h, w)
        The LR stream (ndarray or memmap; read lazily frame by frame), float in [0, 1] or raw
        with ``lr_normalisation``.
    keys : KeyFrames
        HR key frames, ``(4h, 4w)`` each, at indices inside ``[0, T)``.
    separation : int
        LR frame separation s (>= 1): the LR inputs of t are t-s, t, t+s (clamped).
    frames : iterable of int, range or slice, optional
        LR times to reconstruct (default all); walked in ascending order.
    method_options : mapping, optional
        Per method name, keyword options for :func:`~napari_xfusion.methods.get_reconstructor`
        (e.g. ``{"edvr-stf": {"weights": "w.pt"}}``).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"mps"``; passed to network
        methods unless their options name one.
    lr_normalisation : Normalisation, optional
        Applied to each LR frame as it is read.

    Yields
    ------
    FrameResult
        In time order; for each time, one per method in the order given.

    Raises
    ------
    InputError
        Before any work when shapes, keys, separation or the frame range are inconsistent;
        while running when a frame read contains NaN or infinity (naming input and frame).
    """
    if getattr(lr, "ndim", None) != 3:
        raise InputError(f"LR must be a (T, h, w) stack, got shape {getattr(lr, 'shape', None)}")
    n_frames = int(lr.shape[0])
    if n_frames < 2:
        raise InputError(f"the LR stream has {n_frames} frame(s); need at least 2")
    _check_unit_dtype(lr, lr_normalisation, "LR stream")
    keys.validate(n_frames, (int(lr.shape[1]), int(lr.shape[2])))
    if int(separation) != separation or separation < 1:
        raise InputError(f"LR separation must be an integer >= 1, got {separation!r}")
    separation = int(separation)
    targets = resolve_targets(frames, n_frames)
    device = _check_device(device)
    states = [_MethodState(label, m) for label, m in _make_methods(methods, method_options, device)]
    return _run(states, lr, keys, separation, targets, lr_normalisation)


def _run(
    states: list[_MethodState],
    lr: np.ndarray,
    keys: KeyFrames,
    separation: int,
    targets: np.ndarray,
    lr_normalisation: Normaliser | None,
) -> Iterator[FrameResult]:
    n_frames = int(lr.shape[0])
    key_idx = keys.indices
    target_set = {int(t) for t in targets}
    # Preceding keys whose own time is not requested: reconstructed (not yielded) so that the
    # attention of their group can be normalised live.
    aux = sorted({_group_key(int(t), key_idx) for t in targets} - target_set)
    timeline = sorted(target_set | set(aux))

    # Big enough for a window's LR frames (2s + 1 span) plus look-ahead of batched methods.
    lr_cache = _FrameCache(
        lambda t: _to_unit_float(lr[t], lr_normalisation, "LR", t), capacity=2 * separation + 40
    )
    key_cache = _FrameCache(keys.__getitem__, capacity=6)

    def inputs_of(w: Window) -> WindowInputs:
        return WindowInputs(
            window=w,
            lr=np.stack([lr_cache[i] for i in w.lr_indices]),
            hr_keys=np.stack([key_cache[k] for k in w.keys]),
            lr_at_keys=np.stack([lr_cache[k] for k in w.keys]),
            read_lr=lr_cache.__getitem__,
        )

    def feed(state: _MethodState) -> Iterator[WindowInputs]:
        for t in timeline:
            if t not in target_set and state.has_attention is False:
                continue  # no attention: nothing to normalise, skip the extra frame
            w = win.window(t, n_frames, separation, key_idx)
            item = inputs_of(w)
            state.pending.append(w)
            yield item

    for state in states:
        state.method.reset()
        state.stream = iter(state.method.reconstruct_stream(feed(state)))

    total = len(targets) * len(states)
    done = 0
    start = time.perf_counter()
    try:
        for t in targets:
            t = int(t)
            for state in states:
                assert state.stream is not None
                while True:  # drain auxiliary key frames until the result of t arrives
                    tic = time.perf_counter()
                    try:
                        rec = next(state.stream)
                    except StopIteration:
                        raise RuntimeError(
                            f"method {state.label!r} stopped before frame {t}"
                        ) from None
                    seconds = time.perf_counter() - tic
                    w = state.pending.popleft()
                    att = None if rec.attention is None else np.asarray(rec.attention, np.float64)
                    if state.has_attention is None:
                        state.has_attention = att is not None and att.size > _FORWARD
                    if state.has_attention and w.target in keys:
                        state.key_scores[w.target] = att
                    if w.target == t:
                        break
                done += 1
                elapsed = time.perf_counter() - start
                backward = forward = backward_norm = forward_norm = None
                if state.has_attention and att is not None:
                    backward, forward = float(att[_BACKWARD]), float(att[_FORWARD])
                    group = _group_key(t, key_idx)
                    ref = state.key_scores.get(group)
                    backward_norm = _normalised(
                        t, backward, group, None if ref is None else ref[_BACKWARD], key_idx
                    )
                    forward_norm = _normalised(
                        t, forward, group, None if ref is None else ref[_FORWARD], key_idx
                    )
                yield FrameResult(
                    method=state.label,
                    index=t,
                    frame=np.asarray(rec.frame, dtype=np.float32),
                    window=w,
                    attention=att,
                    backward=backward,
                    forward=forward,
                    backward_norm=backward_norm,
                    forward_norm=forward_norm,
                    variance=rec.variance,
                    seconds=seconds,
                    done=done,
                    total=total,
                    eta_seconds=elapsed / done * (total - done),
                    extras=dict(rec.extras),
                )
    finally:
        # Runs on normal end, on an error and when the consumer closes the generator.
        for state in states:
            close = getattr(state.stream, "close", None)
            if close is not None:
                close()
            state.method.reset()


def attention_table(results: Iterable[FrameResult], keys: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame attention of one method's results as columns, normalised over the whole run.

    Returns ``index``, ``backward``, ``forward``, ``backward_norm``, ``forward_norm`` (float64,
    NaN where the method has no score); normalisation by
    :func:`napari_xfusion.core.attention.normalise_scores` over all given frames.
    """
    from napari_xfusion.core.attention import normalise_scores

    rows = sorted(((r.index, r.backward, r.forward) for r in results), key=lambda row: row[0])
    index = np.array([r[0] for r in rows], dtype=np.int64)
    backward = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    forward = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64)
    return {
        "index": index,
        "backward": backward,
        "forward": forward,
        "backward_norm": np.asarray(normalise_scores(index, backward, keys), dtype=np.float64),
        "forward_norm": np.asarray(normalise_scores(index, forward, keys), dtype=np.float64),
    }
