"""The run loop: windows in time order, inputs shared between methods, results yielded live."""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.core import windows as win
from napari_xfusion.core.windows import Window
from napari_xfusion.engine.building import _check_device, _make_methods
from napari_xfusion.engine.inputs import (
    InputError,
    KeyFrames,
    Normaliser,
    _check_unit_dtype,
    _to_unit_float,
    resolve_targets,
)
from napari_xfusion.engine.results import FrameResult
from napari_xfusion.methods import (
    Reconstructor,
    WindowInputs,
)

# Raw attention score positions in Reconstruction.attention (TSA input order).
_BACKWARD, _FORWARD = 3, 4


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
