"""What a study runs on (:mod:`napari_xfusion.app.study`): the methods, the settings of the
sweeps, the target frames shared by every setting, and the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.study.config import FIRST_LAST, Setting, StudyConfig, StudyError


def default_methods() -> tuple[str, ...]:
    """Every registered method whose dependencies (torch) and shipped weights are present."""
    import importlib.util

    from napari_xfusion.methods.registry import available_methods

    has_torch = importlib.util.find_spec("torch") is not None
    out = []
    for name, spec in available_methods().items():
        if spec.needs_torch and not has_torch:
            continue
        if spec.needs_weights and (
            spec.default_weights is None or not Path(spec.default_weights).is_file()
        ):
            continue
        out.append(name)
    return tuple(out)


def study_settings(config: StudyConfig) -> list[Setting]:
    """The settings in run order: the noise sweep, then the key-step sweep (s by s); a setting
    in both sweeps appears once with ``sweeps == ("noise", "keys")``."""
    cells: dict[tuple[Any, int, float | None], list[str]] = {}
    for p in config.noise_levels:
        cells.setdefault((config.noise_key_step, config.noise_separation, p), []).append("noise")
    for s in config.separations:
        for k in config.key_steps:
            cells.setdefault((k, s, config.key_lr_psnr), []).append("keys")
    return [Setting(k, s, p, tuple(dict.fromkeys(sw))) for (k, s, p), sw in cells.items()]


def _keys_of(setting: Setting, n_frames: int) -> np.ndarray:
    from napari_xfusion.core.windows import key_indices

    if setting.key_step == FIRST_LAST:
        return key_indices(n_frames, first_last=True)
    return key_indices(n_frames, int(setting.key_step))


def study_targets(config: StudyConfig, n_frames: int) -> np.ndarray:
    """The target frames of every setting (module docstring): int64, sorted.

    Raises
    ------
    StudyError
        When no frame is a non-key frame between keys in every setting (too short a stack).
    """
    settings = study_settings(config)
    ok = np.ones(n_frames, dtype=bool)
    for setting in settings:
        if setting.key_step != FIRST_LAST and n_frames <= int(setting.key_step):
            raise StudyError(
                f"the truth has {n_frames} frames: key step {setting.key_step} needs at least "
                f"{int(setting.key_step) + 1}"
            )
        keys = _keys_of(setting, n_frames)
        ok[keys] = False
        ok[: keys[0]] = False
        ok[keys[-1] + 1 :] = False
    candidates = np.flatnonzero(ok).astype(np.int64)
    if not candidates.size:
        raise StudyError(
            f"no frame of the {n_frames}-frame truth lies between keys without being a key in "
            "every setting; use a longer stack or fewer key steps"
        )
    n = config.targets_per_setting
    if n is None or n >= candidates.size:
        return candidates
    picks = np.unique(np.linspace(0, candidates.size - 1, n).round().astype(np.int64))
    return candidates[picks]


def describe_truth(config: StudyConfig) -> str:
    """The truth's path, or a description of the built-in sample."""
    if config.truth is not None:
        return config.truth
    return (
        f"built-in sample (simulate_sequence: {config.sample_frames} frames, "
        f"{config.sample_shape[0]}x{config.sample_shape[1]}, seed {config.sample_seed}, "
        f"HR noise {'on' if config.sample_noise else 'off'})"
    )


def truth_frames(config: StudyConfig) -> int:
    """Frames of the truth (the sample's, or the stack's, read from its header)."""
    if config.truth is None:
        return config.sample_frames
    from napari_xfusion.core.io import read_stack

    return int(read_stack(config.truth, role="--truth", check_finite=False).shape[0])


def load_truth(config: StudyConfig) -> tuple[np.ndarray, str]:
    """The truth as float32 (T, H, W) in [0, 1] and its label (path or sample description)."""
    from napari_xfusion.app.inputs import fit_stream, sample_rows

    if config.truth is None:
        from napari_xfusion.core.sample import simulate_sequence

        label = describe_truth(config)
        stack = simulate_sequence(
            config.sample_frames,
            config.sample_shape,
            seed=config.sample_seed,
            noise=config.sample_noise,
        )
        return np.asarray(stack, dtype=np.float32), label
    from napari_xfusion.core.io import read_stack

    stack = read_stack(config.truth, role="--truth")
    if stack.ndim != 3:
        raise StudyError(f"{config.truth}: expected a (T, H, W) stack, got shape {stack.shape}")
    norm = fit_stream(stack, sample_rows(int(stack.shape[0])), config.normalise, config.truth)
    out = np.empty(stack.shape, dtype=np.float32)
    for start in range(0, stack.shape[0], 32):  # block by block: the memmap is never copied whole
        block = np.asarray(stack[start : start + 32])
        out[start : start + 32] = norm.apply(block) if norm is not None else block
    return out, config.truth
