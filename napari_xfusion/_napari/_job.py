"""The background half of a fusion run: a generator that a napari ``thread_worker`` drives.

Everything here runs on the worker thread and never touches Qt or a layer. The GUI builds a
:class:`FusionRequest` - a :class:`~napari_xfusion.app.config.RunConfig` plus the chosen
layers' arrays - from its widgets when Run is pressed, and
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
from napari_xfusion.app.results import METRICS

__all__ = [
    "FusionRequest",
    "Prepared",
    "FrameDone",
    "Finished",
    "fusion_job",
    "available_devices",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionRequest:
    """One run: its :class:`~napari_xfusion.app.config.RunConfig` plus what only the GUI has.

    Attributes
    ----------
    config : RunConfig
        The run (methods and options, key rule, window, device, noise): the same object the
        CLI runs and every export stores.
    hr, lr, truth : array-like, optional
        The chosen layers' data (they win over the config's paths); ``lr`` None when
        simulating, ``truth`` None without a ground-truth layer.
    hr_metadata : dict, optional
        The HR layer's metadata as a file's would be (``key_indices``), for a config whose key
        rule is "the HR metadata's".
    lr_metadata : dict, optional
        The LR layer's metadata as a file's would be (``separation``), for a config whose
        separation is "the LR metadata's" (None).
    targets : dict, optional
        Per method: only these LR frames (a resumed run: the frames each method lacks);
        None: every frame of ``config.frames``.
    method_cache : dict, optional
        Methods built by earlier runs, reused when name, options and device match (a network
        loads its weights once per session, not once per Run). Only one job uses it at a time.
    new_stacks : tuple of str
        Methods whose result layer will be new: :func:`prepare` allocates their (T, H, W)
        stacks here, off the GUI thread, with the run's frames already written once (zeros).
    """

    config: RunConfig
    hr: Any = None
    lr: Any = None
    truth: Any = None
    hr_metadata: dict[str, Any] | None = None
    lr_metadata: dict[str, Any] | None = None
    targets: dict[str, tuple[int, ...]] | None = None
    method_cache: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    new_stacks: tuple[str, ...] = ()

    @property
    def methods(self) -> tuple[str, ...]:
        """Method names in display order."""
        return self.config.method_names

    def groups(self) -> list[tuple[tuple[str, ...], list[int] | None]]:
        """(methods, targets) runs: methods missing the same frames run together, so a
        resumed run computes for each method only the frames it lacks."""
        if self.targets is None:
            return [(self.methods, None)]
        out: dict[tuple[int, ...], list[str]] = {}
        for name in self.methods:
            frames = tuple(self.targets.get(name, ()))
            if frames:
                out.setdefault(frames, []).append(name)
        return [(tuple(names), list(frames)) for frames, names in out.items()]


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
    inputs: PreparedInputs | None = field(default=None, repr=False)  # for the export
    stacks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # new_stacks


@dataclass
class FrameDone:
    """One reconstructed frame (the engine's ``FrameResult``) and its
    :class:`~napari_xfusion.app.results.FrameRow` (metrics NaN without truth)."""

    result: Any
    row: Any = None

    @property
    def metrics(self) -> dict[str, float] | None:
        """PSNR / AAD / SSIM of the frame, None without truth."""
        if self.row is None or not self.row.has_metrics:
            return None
        return {name: getattr(self.row, name) for name in METRICS}


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


def prepare_request_inputs(request: FusionRequest) -> PreparedInputs:
    """The request's inputs checked by :func:`napari_xfusion.app.inputs.prepare_inputs` (the
    policy the CLI uses too), the layers' data and metadata standing in for files; every dock
    that runs on the fusion dock's inputs (fusion, fine-tuning) prepares them here."""
    from napari_xfusion.app.inputs import prepare_inputs

    config = request.config
    if not config.simulate and request.lr is None and config.lr is None:
        raise UserInputError("choose an LR layer, or tick 'simulate from an HR stack'")
    names = {"hr": "HR stack" if config.simulate else "HR layer", "truth": "ground truth"}
    return prepare_inputs(
        config,
        lr=None if config.simulate else request.lr,
        hr=request.hr,
        truth=request.truth,
        hr_metadata=request.hr_metadata,
        lr_metadata=request.lr_metadata,
        names=names,
    )


def prepare(request: FusionRequest) -> tuple[Prepared, _Inputs]:
    """Check the inputs (:func:`prepare_request_inputs`) and build the methods; errors say
    what to fix."""
    from napari_xfusion.app.job import build_methods

    config = request.config
    inputs = prepare_request_inputs(request)
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
        inputs=inputs,
    )
    if config.simulate:
        prepared.key_frames = np.stack([keyframes[int(k)] for k in prepared.key_indices])
    for name in request.new_stacks:
        prepared.stacks[name] = result_stack(
            (inputs.n_frames, *inputs.frame_shape), [int(t) for t in inputs.targets]
        )
    return prepared, _Inputs(config, inputs, methods)


def result_stack(shape: tuple[int, int, int], frames: Sequence[int]) -> np.ndarray:
    """A zeroed float32 stack whose ``frames`` are written once already.

    A fresh allocation is zeroed lazily: the first write of each frame faults its pages in,
    which cost the GUI thread 1-9 ms per full-size frame when it copied results in (under
    load; ~0.2 ms once committed). Done here, on the worker thread; other frames stay
    uncommitted, so a short window of a long stream does not pay for the whole stack.
    """
    stack = np.zeros(shape, dtype=np.float32)
    for t in frames:
        if 0 <= t < shape[0]:
            stack[t].fill(0.0)
    return stack


def fusion_job(request: FusionRequest, cancel: threading.Event) -> Iterator[Prepared | FrameDone]:
    """Run ``request``, yielding :class:`Prepared` then one :class:`FrameDone` per frame and
    method; returns a :class:`Finished`.

    ``cancel`` is checked between frames: setting it ends the run after the frame in progress,
    keeping everything done so far.
    """
    from napari_xfusion.app.job import run_job

    started = time.perf_counter()
    summary = Finished()
    job = None
    try:
        prepared, inputs = prepare(request)
        yield prepared
        built = dict(zip(request.methods, inputs.methods, strict=True))
        first, last = prepared.frames
        # The app layer's run loop: the same frames and metrics (computed once, in its
        # ResultTable) as the CLI's. A resumed run asks each method only for its missing frames.
        for names, targets in request.groups():
            if cancel.is_set():
                break
            if targets is not None:
                targets = [t for t in targets if first <= t <= last]
                if not targets:
                    continue
            config = inputs.config.replace(methods=tuple(inputs.config.method(n) for n in names))
            job = run_job(
                config,
                inputs.prepared,
                methods=[built[n] for n in names],
                targets=targets,
            )
            next(job)  # JobStarted: the methods are already built
            while not cancel.is_set():
                event = next(job, None)
                if event is None:
                    break
                summary.frames_done += 1
                yield FrameDone(event.result, event.row)
            job.close()
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
