"""The background half of a fusion run: a generator that a napari ``thread_worker`` drives.

Everything here runs on the worker thread and never touches Qt or a layer. The GUI builds a
:class:`FusionRequest` from its widgets (arrays taken from the layers when Run is pressed), and
:func:`fusion_job` yields plain messages that the GUI turns into layer updates on its own
thread: first one :class:`Prepared` (the inputs as the engine sees them), then one
:class:`FrameDone` per reconstructed frame. Errors are caught here and returned in the
:class:`Finished` summary as a message for the user, never raised across the thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.core.degrade import add_shot_noise, bin_frames, lr_psnr_for_b0, solve_b0
from napari_xfusion.core.metrics import frame_metrics
from napari_xfusion.core.normalise import Normalisation, fit_normalisation
from napari_xfusion.core.windows import key_indices as make_key_indices

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

NETWORK_METHODS = ("edvr", "edvr-stf")
"""Methods that need trained weights."""


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


class UserInputError(ValueError):
    """Inputs the user must change; the message says what to do."""


def _as_stack(data: Any, name: str) -> np.ndarray:
    """``data`` as a (T, H, W) array; memmaps stay memmaps (the engine reads frames lazily)."""
    arr = data if isinstance(data, np.ndarray) else np.asarray(data)
    if arr.ndim != 3:
        raise UserInputError(
            f"the {name} must be a time series of shape (T, H, W), got shape {arr.shape}"
        )
    return arr


def _normaliser(arr: np.ndarray, name: str, notes: list[str]) -> Normalisation | None:
    """None for floats already in [0, 1]; otherwise the percentile normalisation to apply."""
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if 0.0 <= lo and hi <= 1.0:
            return None
    norm = fit_normalisation(arr, max_frames=64)
    notes.append(
        f"{name} normalised to [0, 1]: values clipped at {norm.low:g} .. {norm.high:g} "
        f"({arr.dtype})"
    )
    return norm


def _key_indices(request: FusionRequest, n_frames: int, n_hr: int) -> tuple[np.ndarray, bool]:
    """LR time indices of the HR keys and whether ``hr`` is a full-rate stack."""
    if request.key_frames is not None:
        keys = np.asarray(request.key_frames, dtype=np.int64)
        if keys.size != n_hr:
            raise UserInputError(
                f"the HR layer has {n_hr} frames but its metadata lists {keys.size} key times"
            )
        return keys, False
    if n_hr == n_frames:
        # A full-rate HR stack (ground truth or the stack to simulate from): take the keys.
        return make_key_indices(n_frames, request.key_step, first_last=request.first_last), True
    # Only the key frames were recorded: frame i of the HR stack is at LR time i * k.
    if request.first_last:
        if n_hr != 2:
            raise UserInputError(
                f"'first and last only' needs an HR layer of 2 frames (or {n_frames}, full "
                f"rate); the HR layer has {n_hr}"
            )
        return np.array([0, n_frames - 1], dtype=np.int64), False
    step = int(request.key_step or 0)
    keys = np.arange(n_hr, dtype=np.int64) * step
    if step < 1 or keys[-1] >= n_frames:
        most = (n_frames - 1) // max(n_hr - 1, 1)
        raise UserInputError(
            f"the HR layer has {n_hr} key frames; with a key step of {step} the last one falls "
            f"at LR frame {keys[-1]}, past the {n_frames} LR frames. Set the key step to at "
            f"most {most}, or pick a full-rate HR stack of {n_frames} frames"
        )
    return keys, False


def _inference_mode() -> contextlib.AbstractContextManager[Any]:
    """torch's inference mode when torch is in use (it is thread-local: entered per frame here)."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, (ValueError, FileNotFoundError, KeyError, RuntimeError, ImportError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[0].upper() + text[1:] if text else text


@dataclass
class _Inputs:
    """What the engine and the metrics read (arrays stay lazy; normalisation per frame)."""

    lr: np.ndarray
    lr_norm: Normalisation | None
    keys: Any  # engine.KeyFrames
    truth: np.ndarray | None
    truth_norm: Normalisation | None
    methods: list[Any]  # Reconstructor instances, in request order

    def truth_frame(self, t: int) -> np.ndarray:
        frame = self.truth[t]
        return self.truth_norm.apply(frame) if self.truth_norm is not None else frame


def _build_methods(request: FusionRequest) -> list[Any]:
    """The request's methods, from its cache where name, options and device match."""
    from napari_xfusion.engine import build_methods

    cache = request.method_cache if request.method_cache is not None else {}
    out = []
    for name in request.methods:
        options = request.method_options.get(name, {})
        key = json.dumps([name, options, request.device], sort_keys=True, default=str)
        if key not in cache:
            # One instance per method name: a network loaded with other weights or on another
            # device is dropped, not kept in memory.
            for stale in [k for k in cache if json.loads(k)[0] == name]:
                del cache[stale]
            (cache[key],) = build_methods(
                [name], {name: options} if options else None, request.device
            )
        out.append(cache[key])
    return out


def prepare(request: FusionRequest) -> tuple[Prepared, _Inputs]:
    """Check the inputs and set up what the engine reads; :class:`UserInputError` says what
    to fix."""
    from napari_xfusion.engine import KeyFrames

    notes: list[str] = []
    hr = _as_stack(request.hr, "HR stack" if request.simulate else "HR layer")
    hr_norm = _normaliser(hr, "HR", notes)
    b0 = lr_psnr = None
    simulated_lr = None
    if request.simulate:
        hr_unit = hr_norm.apply(hr) if hr_norm is not None else np.asarray(hr, np.float32)
        lr = bin_frames(hr_unit, SCALE)
        if request.noise_psnr is not None:
            b0 = solve_b0(lr, request.noise_psnr, seed=request.seed)
            lr_psnr = lr_psnr_for_b0(lr, b0, seed=request.seed)
            lr = add_shot_noise(lr, b0, np.random.default_rng(request.seed))
        simulated_lr = lr
        lr_norm = None
    else:
        if request.lr is None:
            raise UserInputError("choose an LR layer, or tick 'simulate from an HR stack'")
        lr = _as_stack(request.lr, "LR layer")
        lr_norm = _normaliser(lr, "LR", notes)
    n_frames, h, w = lr.shape
    if hr.shape[1:] != (SCALE * h, SCALE * w):
        raise UserInputError(
            f"HR frames must be exactly {SCALE}x the LR frames: LR is {h}x{w}, so HR must be "
            f"{SCALE * h}x{SCALE * w}, but it is {hr.shape[1]}x{hr.shape[2]}. Register or crop "
            "the HR stack onto the LR view first"
        )
    if n_frames < 2:
        raise UserInputError(f"the LR stream needs at least 2 frames, it has {n_frames}")
    keys, full_rate = _key_indices(request, n_frames, hr.shape[0])
    if full_rate:
        keyframes = KeyFrames.from_full_rate(
            hr, request.key_step if not request.first_last else None, request.first_last, hr_norm
        )
    else:
        keyframes = KeyFrames(hr, keys, hr_norm)

    first, last = request.frames if request.frames is not None else (0, n_frames - 1)
    if not (0 <= first <= last < n_frames):
        raise UserInputError(
            f"the time window {first}..{last} is not inside the LR stream's frames "
            f"0..{n_frames - 1}: set Frames from/to within it"
        )
    truth = truth_norm = None
    if request.truth is not None:
        truth = _as_stack(request.truth, "ground truth")
        if truth.shape != (n_frames, SCALE * h, SCALE * w):
            raise UserInputError(
                f"the ground truth must have shape {(n_frames, SCALE * h, SCALE * w)} (every LR "
                f"frame at HR size), got {truth.shape}: choose another layer or (none)"
            )
        truth_norm = _normaliser(truth, "ground truth", notes)
    elif full_rate:
        truth, truth_norm = hr, hr_norm  # a full-rate HR stack is the ground truth
    methods = _build_methods(request)
    prepared = Prepared(
        n_frames=n_frames,
        hr_shape=(SCALE * h, SCALE * w),
        key_indices=np.asarray(keyframes.indices, dtype=np.int64),
        key_frames=None,
        frames=(int(first), int(last)),
        lr=simulated_lr,
        b0=b0,
        lr_psnr=lr_psnr,
        has_truth=truth is not None,
        normalisation=hr_norm.to_dict() if hr_norm is not None else {},
        notes=notes,
        descriptions={m.name: m.describe() for m in methods},
    )
    if request.simulate:
        prepared.key_frames = np.stack([keyframes[int(k)] for k in prepared.key_indices])
    return prepared, _Inputs(lr, lr_norm, keyframes, truth, truth_norm, methods)


def fusion_job(request: FusionRequest, cancel: threading.Event) -> Iterator[Prepared | FrameDone]:
    """Run the engine for ``request``, yielding :class:`Prepared` then one :class:`FrameDone`
    per frame; returns a :class:`Finished`.

    ``cancel`` is checked between frames: setting it ends the run after the frame in progress,
    keeping everything done so far.
    """
    from napari_xfusion import engine

    started = time.perf_counter()
    summary = Finished()
    stream = None
    try:
        prepared, inputs = prepare(request)
        yield prepared
        first, last = prepared.frames
        targets = range(first, last + 1)
        if request.targets is not None:
            targets = [t for t in request.targets if first <= t <= last]
        stream = engine.run(
            inputs.methods,
            inputs.lr,
            inputs.keys,
            separation=request.separation,
            frames=targets,
            device=request.device,
            lr_normalisation=inputs.lr_norm,
        )
        while not cancel.is_set():
            with _inference_mode():
                result = next(stream, None)
            if result is None:
                break
            metrics = None
            if inputs.truth is not None:
                truth = inputs.truth_frame(int(result.index))
                metrics = frame_metrics(np.asarray(result.frame), truth)
            summary.frames_done += 1
            yield FrameDone(result, metrics)
        summary.cancelled = cancel.is_set()
    except Exception as exc:  # reported to the user on the GUI thread, never raised there
        log.debug("fusion run failed", exc_info=True)
        summary.error = _user_message(exc)
    finally:
        if stream is not None:
            stream.close()
        summary.seconds = time.perf_counter() - started
    return summary


def available_devices() -> list[str]:
    """Devices torch can run on here: ``auto`` first, then cpu, each cuda device, mps."""
    devices = ["auto", "cpu"]
    try:
        import torch
    except ImportError:  # the methods that need torch will say so when run
        return devices
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda"] if count == 1 else [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def describe_keys(keys: Sequence[int]) -> str:
    """``"0, 10, 20 .. 90 (10 keys)"``: short text for a status line."""
    keys = [int(k) for k in keys]
    if len(keys) <= 4:
        return ", ".join(map(str, keys))
    return f"{keys[0]}, {keys[1]}, {keys[2]} .. {keys[-1]} ({len(keys)} keys)"
