"""One input policy for both faces: a :class:`RunConfig` plus arrays or paths -> what the
engine runs on (:class:`PreparedInputs`), with every shape, range and key check.

Every problem raises :class:`InputError` (a subclass of :class:`napari_xfusion.engine.InputError`)
whose message names the input (its file, or "LR layer"/"HR layer"/"truth layer" for arrays)
and says what was expected.

Normalisation (one rule, the same in the CLI and the GUI)
---------------------------------------------------------
``normalise="auto"``: float data already within [0, 1] is used as is; anything else (detector
counts, floats outside [0, 1]) gets percentile clip values (0.35th / 99.65th,
:func:`napari_xfusion.core.normalise.fit_normalisation`) fitted on the frames the run uses of
that stream:

- HR: the key rows (for a full-rate stack, only its rows at the key indices; at most
  :data:`LR_SAMPLE_FRAMES` of them, evenly spaced);
- LR: an evenly spaced sample of at most :data:`LR_SAMPLE_FRAMES` frames across the whole
  stream (first and last included), so memory does not grow with T;
- truth: used as is when it is float in [0, 1] (on the same kind of sample); otherwise the HR
  keys' normalisation when HR was normalised (so fused frames and truth share units), else
  its own clip values fitted like the LR's.

``"percentile"`` always fits clip values (same frames); ``"none"`` never does (float data is
used as it is). The "already in [0, 1]" test looks at the same frames as the fit.

Key frames
----------
- ``keys.indices``: one LR index per HR frame (a stack of key frames only), or rows of a
  full-rate HR stack (one frame per LR frame).
- ``keys.step`` / ``keys.first_last`` on a full-rate HR stack: its rows at those indices. On a
  stack of key frames only (fewer frames than LR): key ``i`` is at LR time ``i * step`` (or the
  2 frames at 0 and T-1); when the HR input has ``key_indices`` metadata it must agree.
- no rule: the HR input's ``key_indices`` metadata (file or layer), else an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.app.config import RunConfig
from napari_xfusion.engine import InputError as EngineInputError
from napari_xfusion.methods import SCALE

__all__ = [
    "LR_SAMPLE_FRAMES",
    "InputError",
    "PreparedInputs",
    "Simulated",
    "fit_stream",
    "is_unit_float",
    "prepare_inputs",
    "sample_rows",
    "source_path",
    "truth_normalisation",
]

LR_SAMPLE_FRAMES = 64
"""Frames (evenly spaced) that an LR or truth stream's clip values are fitted on."""

_BLOCK_FRAMES = 32  # frames per block when binning a full-rate HR stack


class InputError(EngineInputError):
    """Bad input for a run; the message names the input and what was expected."""


@dataclass
class Simulated:
    """The LR stream made from a full-rate HR stack (``simulate=True``)."""

    lr: np.ndarray  # (T, h, w) float32 in [0, 1]
    b0: float | None  # blank-scan factor of the shot noise (None: clean)
    lr_psnr: float | None  # achieved LR PSNR in dB (None: clean)
    noise: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedInputs:
    """What :func:`napari_xfusion.engine.run` and the metrics read; arrays stay lazy.

    Attributes
    ----------
    lr : array-like (T, h, w)
        The LR stream (memmap or layer data, or the simulated stream).
    lr_normalisation : Normalisation or None
        Applied by the engine per LR frame.
    keys : engine.KeyFrames
        HR keys (with their normalisation, :attr:`hr_normalisation`).
    truth : array-like (T, H, W) or None; truth_normalisation : Normalisation or None
    targets : numpy.ndarray of int64
        LR indices to reconstruct (``config.frames``, sorted).
    separation : int
    simulated : Simulated or None
    notes : list of str
        What was decided (normalisation applied, keys taken from...), for the user.
    noise : dict or None
        The LR stream's noise record (its metadata's ``noise``, or the simulation's).
    sources : dict
        ``{"lr": ..., "hr": ..., "truth": ...}``: the file path or layer label of each input.
    """

    lr: Any
    lr_normalisation: Any
    keys: Any
    truth: Any
    truth_normalisation: Any
    targets: np.ndarray
    separation: int
    simulated: Simulated | None = None
    notes: list[str] = field(default_factory=list)
    noise: dict[str, Any] | None = None
    sources: dict[str, str | None] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.lr.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of an HR (fused) frame."""
        return self.keys.frame_shape

    @property
    def hr_normalisation(self) -> Any:
        return self.keys.normalisation

    def truth_frame(self, t: int) -> np.ndarray | None:
        """Truth at LR time ``t`` as float32 in [0, 1] (None without truth)."""
        if self.truth is None:
            return None
        frame = np.asarray(self.truth[int(t)])
        if self.truth_normalisation is not None:
            return self.truth_normalisation.apply(frame)
        return frame.astype(np.float32, copy=False)


class _Rows:
    """Lazy view of some rows of a stack (keeps a memmap a memmap)."""

    def __init__(self, stack: Any, rows: Sequence[int]) -> None:
        self._stack, self._rows = stack, [int(r) for r in rows]
        self.shape = (len(self._rows), *stack.shape[1:])
        self.dtype = stack.dtype
        self.ndim = 3

    def __getitem__(self, i: int) -> np.ndarray:
        return self._stack[self._rows[i]]


def sample_rows(n: int, limit: int = LR_SAMPLE_FRAMES) -> list[int]:
    """At most ``limit`` evenly spaced indices of ``range(n)``, first and last included."""
    if n <= limit:
        return list(range(n))
    return [int(i) for i in np.unique(np.linspace(0, n - 1, limit).round())]


def _subsample(rows: Sequence[int]) -> list[int]:
    rows = [int(r) for r in rows]
    return [rows[i] for i in sample_rows(len(rows))]


def is_unit_float(stack: Any, rows: Sequence[int]) -> bool:
    """Whether ``stack[rows]`` is float data within [0, 1] (read block by block)."""
    if not np.issubdtype(stack.dtype, np.floating):
        return False
    for start in range(0, len(rows), _BLOCK_FRAMES):
        block = np.asarray(stack[list(rows[start : start + _BLOCK_FRAMES])])
        if block.size and (block.min() < 0.0 or block.max() > 1.0):
            return False
    return True


def fit_stream(
    stack: Any,
    rows: Sequence[int],
    mode: str = "auto",
    name: str = "stack",
    notes: list[str] | None = None,
    role: str = "HR",
) -> Any:
    """The normalisation of one stream by the module's rule, fitted on ``stack[rows]`` (at
    most :data:`LR_SAMPLE_FRAMES` of them, evenly spaced); None when it is used as is."""
    from napari_xfusion.core.normalise import fit_normalisation

    rows = _subsample(rows)
    notes = [] if notes is None else notes
    if mode == "none" or (mode == "auto" and is_unit_float(stack, rows)):
        return None
    data = np.asarray(stack[list(rows)])
    try:
        norm = fit_normalisation(data)
    except ValueError as exc:
        raise InputError(f"{name}: {exc}") from None
    if not norm.high > norm.low:
        raise InputError(
            f"{name}: constant values ({norm.low:g}) in the frames used for normalisation; "
            "expected an image with contrast"
        )
    notes.append(
        f"{role} normalised to [0, 1] ({name}): clipped at {norm.low:g} .. {norm.high:g} "
        f"({stack.dtype}, fitted on {len(rows)} frame(s))"
    )
    return norm


def truth_normalisation(
    truth: Any,
    rows: Sequence[int],
    mode: str = "auto",
    hr_normalisation: Any = None,
    name: str = "truth",
    notes: list[str] | None = None,
) -> Any:
    """The truth's normalisation by the module's rule: None when float in [0, 1] (on
    ``rows``, sampled), else the HR keys' clip values when HR was normalised, else its own."""
    notes = [] if notes is None else notes
    sample = _subsample(rows)
    if mode == "none" or (mode == "auto" and is_unit_float(truth, sample)):
        return None
    if hr_normalisation is not None:
        notes.append(f"{name}: compared in the HR keys' units (their clip values)")
        return hr_normalisation
    return fit_stream(truth, sample, mode, name, notes, "truth")


def _stack(data: Any, name: str) -> Any:
    """``data`` as a (T, H, W) array-like; memmaps and lazy arrays are not read."""
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    if len(data.shape) != 3:
        raise InputError(f"{name}: expected a (T, H, W) time series, got shape {tuple(data.shape)}")
    if np.dtype(data.dtype).kind not in "uif":
        raise InputError(f"{name}: expected integer or float pixel values, got {data.dtype}")
    return data


def _read(
    path: str | None,
    array: Any,
    metadata: Mapping[str, Any] | None,
    layer: str,
    role: str | None = None,
) -> tuple[Any, dict[str, Any], str | None]:
    """(array, metadata, name) of one input: the array given, else the file at ``path``
    (``role``, e.g. ``"--lr"``, prefixes its read errors)."""
    from napari_xfusion.core.io import read_metadata, read_stack

    if array is not None:
        return _stack(array, layer), dict(metadata or {}), layer
    if path is None:
        return None, {}, None
    name = f"{role} {path}" if role else str(path)  # messages say which option it came from
    # The engine checks each frame it reads for NaN / infinity.
    stack = read_stack(path, check_finite=False, role=role)
    meta = dict(metadata) if metadata is not None else read_metadata(path, role=role)
    return _stack(stack, name), meta, name


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


def _simulate(config: RunConfig, hr: Any, norm: Any, name: str) -> Simulated:
    """4x4-binned LR from the (normalised) full-rate HR stack, block by block, plus noise."""
    from napari_xfusion.core.degrade import add_shot_noise, bin_frames, lr_psnr_for_b0, solve_b0

    n, h, w = (int(v) for v in hr.shape)
    if h % SCALE or w % SCALE:
        raise InputError(
            f"{name}: HR frames are {h}x{w}; simulation bins 4x4, so both sides must be "
            "multiples of 4 (crop the stack first)"
        )
    lr = np.empty((n, h // SCALE, w // SCALE), dtype=np.float32)
    for start in range(0, n, _BLOCK_FRAMES):
        block = np.asarray(hr[start : start + _BLOCK_FRAMES])
        block = norm.apply(block) if norm is not None else block.astype(np.float32, copy=False)
        if not np.isfinite(block).all():
            raise InputError(
                f"{name}: non-finite values in frames {start}..{start + len(block) - 1}"
            )
        lr[start : start + len(block)] = bin_frames(block, SCALE)
    if config.lr_psnr is None:
        return Simulated(lr, None, None, {"model": "none"})
    b0 = solve_b0(lr, config.lr_psnr, seed=config.seed)
    achieved = lr_psnr_for_b0(lr, b0, seed=config.seed)
    noisy = add_shot_noise(lr, b0, np.random.default_rng(config.seed)).astype(np.float32)
    noise = {"model": "poisson", "b0": b0, "target_lr_psnr_db": config.lr_psnr,
             "lr_psnr_db": achieved, "seed": config.seed}  # fmt: skip
    return Simulated(noisy, b0, achieved, noise)


def _targets(config: RunConfig, n_frames: int, name: str) -> np.ndarray:
    if config.frames is None:
        return np.arange(n_frames, dtype=np.int64)
    start, stop = config.frames
    if stop > n_frames:
        raise InputError(
            f"frames {start}:{stop} (stop exclusive): frame {max(start, n_frames)} is outside "
            f"the LR sequence {name}: it has {n_frames} frames (0..{n_frames - 1}); expected "
            f"stop <= {n_frames}"
        )
    return np.arange(start, stop, dtype=np.int64)


def prepare_inputs(
    config: RunConfig,
    *,
    lr: Any = None,
    hr: Any = None,
    truth: Any = None,
    lr_metadata: Mapping[str, Any] | None = None,
    hr_metadata: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
    roles: Mapping[str, str] | None = None,
) -> PreparedInputs:
    """Check the inputs of ``config`` and set up what the engine runs on.

    Parameters
    ----------
    config : RunConfig
        The run; its ``lr``/``hr``/``truth`` paths are read (lazily, memory-mapped) for every
        array not given.
    lr, hr, truth : array-like, optional
        Arrays (the GUI's layer data; a memmap stays a memmap, nothing is read whole).
    lr_metadata, hr_metadata : mapping, optional
        Metadata of the arrays (``key_indices``, ``separation``, ``noise``); for files, theirs.
    names : mapping, optional
        Labels of array inputs in messages (default ``"LR layer"``, ``"HR layer"``,
        ``"truth layer"``).
    roles : mapping, optional
        The option or input each file came from (``{"lr": "--lr", ...}``), prefixed to its
        read errors: ``--lr lr.tif: truncated TIFF ...``.

    Raises
    ------
    InputError
        Anything inconsistent; the message names the input and what was expected.
    FileNotFoundError, napari_xfusion.core.io.StackError
        A path that does not exist or is not a readable stack.
    """
    labels = {"lr": "LR layer", "hr": "HR layer", "truth": "truth layer", **(names or {})}
    notes: list[str] = []
    roles = dict(roles or {})
    hr_arr, hr_meta, hr_name = _read(config.hr, hr, hr_metadata, labels["hr"], roles.get("hr"))
    if hr_arr is None:
        raise InputError("no HR input: give the HR key frames (or a full-rate HR stack)")
    simulated = None
    if config.simulate:
        n_lr = int(hr_arr.shape[0])
        if config.keys.from_metadata and _metadata_keys(hr_meta, hr_name) is None:
            raise InputError(
                f"{hr_name}: simulation needs a key rule (key step, first-and-last or indices) "
                "for the full-rate HR stack"
            )
        # The HR stack is full rate by definition here (the LR is made from every frame).
        keys = _resolve_keys(config, hr_arr, hr_meta, hr_name, n_lr, notes)
        simulated = _simulate(config, hr_arr, keys.normalisation, hr_name)
        lr_arr, lr_meta, lr_name, lr_norm = simulated.lr, {}, "simulated LR", None
        notes.append(f"LR simulated from {hr_name}: 4x4 binning" + (
            f", shot noise b0={simulated.b0:.3g} (LR PSNR {simulated.lr_psnr:.2f} dB)"
            if simulated.b0 is not None else ", no noise"))  # fmt: skip
    else:
        lr_arr, lr_meta, lr_name = _read(config.lr, lr, lr_metadata, labels["lr"], roles.get("lr"))
        if lr_arr is None:
            raise InputError(
                "no LR input: give the LR stream, or simulate it from a full-rate HR stack"
            )
        n_lr = int(lr_arr.shape[0])
        if n_lr < 2:
            raise InputError(f"{lr_name}: has {n_lr} frame(s); expected at least 2")
        lr_norm = fit_stream(lr_arr, sample_rows(n_lr), config.normalise, lr_name, notes, "LR")
        keys = _resolve_keys(config, hr_arr, hr_meta, hr_name, n_lr, notes)
    h, w = (int(v) for v in lr_arr.shape[1:])
    if keys.frame_shape != (SCALE * h, SCALE * w):
        raise InputError(
            f"{hr_name}: HR keys are {keys.frame_shape[0]}x{keys.frame_shape[1]} but LR frames "
            f"are {h}x{w} ({lr_name}): HR must be exactly {SCALE}x the LR, i.e. "
            f"{SCALE * h}x{SCALE * w}; register or crop the HR stack onto the LR view first"
        )
    try:
        keys.validate(n_lr, (h, w))
    except EngineInputError as exc:
        raise InputError(f"{hr_name}: {exc} (LR: {lr_name})") from None
    targets = _targets(config, n_lr, lr_name)
    separation = _separation(config, lr_meta, n_lr, lr_name or labels["lr"])
    truth_arr, _, truth_name = _read(config.truth, truth, None, labels["truth"], roles.get("truth"))
    truth_norm = None
    if truth_arr is not None:
        if tuple(truth_arr.shape) != (n_lr, SCALE * h, SCALE * w):
            raise InputError(
                f"{truth_name}: shape {tuple(truth_arr.shape)}; expected {n_lr} frames of "
                f"{SCALE * h}x{SCALE * w} (the LR times at HR size)"
            )
        truth_norm = truth_normalisation(
            truth_arr, targets, config.normalise, keys.normalisation, truth_name, notes
        )
    elif int(hr_arr.shape[0]) == n_lr:
        truth_arr, truth_norm, truth_name = hr_arr, keys.normalisation, hr_name
        notes.append(f"{hr_name} is full rate: it is the ground truth of the metrics")
    if config.units == "detector" and keys.normalisation is None:
        notes.append("HR input is already float in [0, 1]: detector units are float32 [0, 1]")
    noise = simulated.noise if simulated is not None else lr_meta.get("noise")
    return PreparedInputs(
        lr=lr_arr,
        lr_normalisation=lr_norm,
        keys=keys,
        truth=truth_arr,
        truth_normalisation=truth_norm,
        targets=targets,
        separation=int(separation),
        simulated=simulated,
        notes=notes,
        noise=noise,
        sources={
            # provenance: the file paths (not the messages' "--lr path" names)
            "lr": config.lr if lr is None and not config.simulate else lr_name,
            "hr": config.hr if hr is None else hr_name,
            "truth": config.truth if truth is None and config.truth else truth_name,
        },
    )


def source_path(path: str | os.PathLike[str] | None) -> str | None:
    """An absolute path string for provenance (None stays None). Symbolic links are kept as
    given (not resolved), so messages name the path the user gave."""
    return None if path is None else os.path.abspath(path)
