"""The background half of a fusion run: a generator that a napari ``thread_worker`` drives.

Everything here runs on the worker thread and never touches Qt or a layer. The GUI builds a
:class:`FusionRequest` from its widgets (arrays taken from the layers when Run is pressed), and
:func:`fusion_job` yields plain messages that the GUI turns into layer updates on its own
thread: first one :class:`Prepared` (the inputs as the engine sees them), then one
:class:`FrameDone` per reconstructed frame. Errors are caught here and returned in the
:class:`Finished` summary as a message for the user, never raised across the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.devices import available_devices
from napari_xfusion.app.inputs import InputError, PreparedInputs
from napari_xfusion.methods.registry import available_methods

__all__ = [
    "NETWORK_METHODS",
    "FusionRequest",
    "Prepared",
    "FrameDone",
    "Finished",
    "fusion_job",
    "available_devices",
]

log = logging.getLogger(__name__)

SCALE = 4
"""HR pixels per LR pixel along each axis (the methods' fixed ratio)."""

NETWORK_METHODS = tuple(name for name, spec in available_methods().items() if spec.needs_weights)
"""Methods that need trained weights (from the registry's declarations)."""


@dataclass(frozen=True)
class FusionRequest:
    """Everything one run needs, captured when Run is pressed.

    Attributes
    ----------
    methods : tuple of str
        Method names in display order.
    hr : array-like, shape (K, H, W) or (T, H, W)
        HR key frames (``key_frames`` gives their LR time indices), or a full-rate HR stack from
        which the keys are taken by the key rule (and, when ``simulate``, the LR made).
    lr : array-like, shape (T, h, w), optional
        LR stream; None when ``simulate``.
    key_frames : sequence of int, optional
        LR time index of each HR frame when ``hr`` holds only key frames.
    key_step, first_last : key rule used when ``key_frames`` is None.
    truth : array-like, shape (T, H, W), optional
        Ground truth for metrics (the HR stack itself when simulating).
    simulate : bool
        Make the LR stream from ``hr`` by 4x4 binning (plus shot noise at ``noise_psnr``).
    noise_psnr : float, optional
        Target LR PSNR in dB for the simulated shot noise; None for clean LR.
    separation : int
        LR frame separation s.
    frames : (int, int)
        First and last LR frame to reconstruct (inclusive).
    method_options : dict
        Per-method options passed to the engine (weights, batch size).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    seed : int
        Seed of the simulated noise.
    targets : tuple of int, optional
        Only these LR frames (inside ``frames``), e.g. the frames a cancelled run left undone;
        None: every frame of ``frames``.
    method_cache : dict, optional
        Methods built by earlier runs, reused when name, options and device match (a network
        loads its weights once per session, not once per Run). Only one job uses it at a time.
    """

    methods: tuple[str, ...]
    hr: Any
    lr: Any = None
    key_frames: tuple[int, ...] | None = None
    key_step: int | None = 10
    first_last: bool = False
    truth: Any = None
    simulate: bool = False
    noise_psnr: float | None = None
    separation: int = 1
    frames: tuple[int, int] | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    seed: int = 0
    targets: tuple[int, ...] | None = None
    method_cache: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass
class Prepared:
    """The inputs as the engine receives them (yielded once, before the first frame).

    ``lr`` and ``key_frames`` are set only when simulated (the GUI shows them as layers).
    """

    n_frames: int
    hr_shape: tuple[int, int]
    key_indices: np.ndarray
    key_frames: np.ndarray | None
    frames: tuple[int, int]
    lr: np.ndarray | None = None
    b0: float | None = None
    lr_psnr: float | None = None
    has_truth: bool = False
    normalisation: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    descriptions: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class FrameDone:
    """One reconstructed frame (the engine's ``FrameResult``) and its metrics, if truth exists."""

    result: Any
    metrics: dict[str, float] | None = None


@dataclass
class Finished:
    """Summary returned when the job ends: normally, cancelled, or on an error."""

    frames_done: int = 0
    cancelled: bool = False
    error: str | None = None
    seconds: float = 0.0


class UserInputError(InputError):
    """Inputs the user must change; the message says what to do (the app layer's error)."""


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, (ValueError, FileNotFoundError, KeyError, RuntimeError, ImportError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[0].upper() + text[1:] if text else text


@dataclass
class _Inputs:
    """What the job runs on: the app layer's inputs and configuration, and the built methods."""

    config: RunConfig
    prepared: PreparedInputs
    methods: list[Any]  # Reconstructor instances, in request order

    @property
    def truth(self) -> Any:
        return self.prepared.truth

    def truth_frame(self, t: int) -> np.ndarray | None:
        return self.prepared.truth_frame(t)


def run_config(request: FusionRequest) -> RunConfig:
    """The :class:`~napari_xfusion.app.config.RunConfig` a request describes (the widget's
    inclusive frame range becomes the half-open ``[first, last + 1)``)."""
    from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig

    if request.key_frames is not None:
        keys = KeyRule(indices=tuple(int(k) for k in request.key_frames))
    elif request.first_last:
        keys = KeyRule(first_last=True)
    else:
        keys = KeyRule(step=request.key_step)
    choices = []
    for name in request.methods:
        options = dict(request.method_options.get(name, {}))
        weights = options.pop("weights", None)
        choices.append(
            MethodChoice(name, options, weights=None if weights is None else str(weights))
        )
    frames = None
    if request.frames is not None:
        first, last = request.frames
        if last < first:
            raise UserInputError(f"the time window {first}..{last} is empty: set Frames to >= from")
        frames = (int(first), int(last) + 1)
    return RunConfig(
        simulate=request.simulate,
        keys=keys,
        separation=request.separation,
        frames=frames,
        device=request.device,
        lr_psnr=request.noise_psnr if request.simulate else None,
        seed=request.seed,
        methods=tuple(choices),
    )


def prepare(request: FusionRequest) -> tuple[Prepared, _Inputs]:
    """Check the inputs (:func:`napari_xfusion.app.inputs.prepare_inputs`, the policy the CLI
    uses too) and build the methods; errors say what to fix."""
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.job import build_methods

    if not request.simulate and request.lr is None:
        raise UserInputError("choose an LR layer, or tick 'simulate from an HR stack'")
    config = run_config(request)
    names = {"hr": "HR stack" if request.simulate else "HR layer", "truth": "ground truth"}
    inputs = prepare_inputs(
        config,
        lr=None if request.simulate else request.lr,
        hr=request.hr,
        truth=request.truth,
        names=names,
    )
    methods = build_methods(config, request.method_cache)
    keyframes = inputs.keys
    hr_norm = keyframes.normalisation
    simulated = inputs.simulated
    first, stop = int(inputs.targets[0]), int(inputs.targets[-1]) + 1
    prepared = Prepared(
        n_frames=inputs.n_frames,
        hr_shape=inputs.frame_shape,
        key_indices=np.asarray(keyframes.indices, dtype=np.int64),
        key_frames=None,
        frames=(first, stop - 1),
        lr=None if simulated is None else simulated.lr,
        b0=None if simulated is None else simulated.b0,
        lr_psnr=None if simulated is None else simulated.lr_psnr,
        has_truth=inputs.truth is not None,
        normalisation=hr_norm.to_dict() if hr_norm is not None else {},
        notes=list(inputs.notes),
        descriptions={m.name: m.describe() for m in methods},
    )
    if request.simulate:
        prepared.key_frames = np.stack([keyframes[int(k)] for k in prepared.key_indices])
    return prepared, _Inputs(config, inputs, methods)


def fusion_job(request: FusionRequest, cancel: threading.Event) -> Iterator[Prepared | FrameDone]:
    """Run the engine for ``request``, yielding :class:`Prepared` then one :class:`FrameDone`
    per frame; returns a :class:`Finished`.

    ``cancel`` is checked between frames: setting it ends the run after the frame in progress,
    keeping everything done so far.
    """
    from napari_xfusion.app.job import run_job
    from napari_xfusion.app.results import METRICS

    started = time.perf_counter()
    summary = Finished()
    job = None
    try:
        prepared, inputs = prepare(request)
        yield prepared
        # The app layer's run loop: the same frames and metrics (computed once, in its
        # ResultTable) as the CLI's. A resumed run asks only for the frames still missing.
        targets = None
        if request.targets is not None:
            first, last = prepared.frames
            targets = [t for t in request.targets if first <= t <= last]
        job = run_job(
            inputs.config,
            inputs.prepared,
            methods=inputs.methods,
            targets=targets,
            device=request.device,
        )
        next(job)  # JobStarted: the methods are already built
        while not cancel.is_set():
            event = next(job, None)
            if event is None:
                break
            metrics = None
            if inputs.truth is not None:
                metrics = {name: getattr(event.row, name) for name in METRICS}
            summary.frames_done += 1
            yield FrameDone(event.result, metrics)
        summary.cancelled = cancel.is_set()
    except Exception as exc:  # reported to the user on the GUI thread, never raised there
        log.debug("fusion run failed", exc_info=True)
        summary.error = _user_message(exc)
    finally:
        if job is not None:
            job.close()
        summary.seconds = time.perf_counter() - started
    return summary


def describe_keys(keys: Sequence[int]) -> str:
    """``"0, 10, 20 .. 90 (10 keys)"``: short text for a status line."""
    keys = [int(k) for k in keys]
    if len(keys) <= 4:
        return ", ".join(map(str, keys))
    return f"{keys[0]}, {keys[1]}, {keys[2]} .. {keys[-1]} ({len(keys)} keys)"
