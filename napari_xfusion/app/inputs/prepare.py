"""The input policy's entry point (:mod:`napari_xfusion.app.inputs`): :func:`prepare_inputs`
reads and checks the inputs, simulates LR when asked and picks the target frames.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.inputs.keys import _metadata_keys, _resolve_keys, _separation
from napari_xfusion.app.inputs.normalisation import (
    _BLOCK_FRAMES,
    fit_stream,
    sample_rows,
    truth_normalisation,
)
from napari_xfusion.app.inputs.prepared import InputError, PreparedInputs, Simulated
from napari_xfusion.engine import InputError as EngineInputError
from napari_xfusion.methods import SCALE


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
