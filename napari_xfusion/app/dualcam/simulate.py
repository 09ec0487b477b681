"""A simulated misaligned dual-camera recording, written as the two cameras would write it.

The scene (:func:`napari_xfusion.core.sample.simulate_sequence`, noise-free) lives on the exact
4x grid of the LR camera and is saved as ``truth.tif``. The LR camera bins it 4x4 and adds
shot noise, every frame, and writes 10-bit counts (``lr.tif``) and a Shimadzu HPV-X2 ``lr.ini``.
The HR camera sees the scene through a similarity transform (a non-4x pixel ratio, a mirror
flip, a rotation, a shift: :func:`napari_xfusion.core.registration.warp_hr_view`), every
``key_step``-th LR interval from a trigger offset with a sub-frame part (the scene is
interpolated linearly in time between two truth frames), and writes 12-bit counts with its own
gain (``hr.tif``) and a Phantom ``hr.xml`` (and/or ``hr.cine``). The HR clock in its metadata is
off by ``clock_error_frames`` (an unrecorded trigger delay), which only the image-based time
refinement can find. ``truth.tif`` is the noise-free scene on the LR camera's 4x grid in LR
counts (float32); ``truth.json`` records everything applied, for tests and the README.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["grid_target", "similarity_matrix", "simulate_dual_camera"]

LR_GAIN, LR_DARK = 1000.0, 20.0  # 10-bit Shimadzu-like counts per unit transmission
HR_GAIN, HR_DARK = 3600.0, 150.0  # 12-bit Phantom-like counts: another gain and dark level


def similarity_matrix(
    hr_shape: tuple[int, int],
    lr_shape: tuple[int, int],
    *,
    pixel_ratio: float,
    rotation_deg: float,
    flip_x: bool,
    shift_lr_px: tuple[float, float],
) -> np.ndarray:
    """The 3x3 matrix HR-camera pixel (x, y) -> LR-camera pixel (x, y) of a similarity.

    The HR frame centre lands ``shift_lr_px`` (x, y) away from the LR frame centre; one HR
    pixel is ``1 / pixel_ratio`` LR pixels; ``flip_x`` mirrors the HR x axis; the rotation is
    counter-clockwise in (x, y) by ``rotation_deg``.
    """
    s = 1.0 / float(pixel_ratio)
    a = math.radians(rotation_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    flip = np.diag([-1.0 if flip_x else 1.0, 1.0])
    linear = s * rot @ flip
    c_hr = np.array([(hr_shape[1] - 1) / 2.0, (hr_shape[0] - 1) / 2.0])
    c_lr = np.array([(lr_shape[1] - 1) / 2.0, (lr_shape[0] - 1) / 2.0]) + np.asarray(shift_lr_px)
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = c_lr - linear @ c_hr
    return matrix


def grid_target(shape: tuple[int, int], pitch: int = 48, bar: int = 14) -> np.ndarray:
    """A copper-grid calibration target on the 4x grid (H4, W4), float32 in [0, 1]: square
    holes (0.85 transmission) between bars (0.2) every ``pitch`` samples, and the grid's solid
    rim as an arc across the top right, which breaks the lattice's period ambiguity."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    holes = ((x + 7) % pitch >= bar) & ((y + 5) % pitch >= bar)
    target = np.where(holes, 0.85, 0.2)
    target[np.hypot(x - 0.75 * w, y + 1.0 * h) < 1.6 * h] = 0.2
    return target.astype(np.float32)


def _counts(frames01: np.ndarray, gain: float, dark: float, bits: int) -> np.ndarray:
    counts = np.rint(np.asarray(frames01, dtype=np.float64) * gain + dark)
    return np.clip(counts, 0, 2**bits - 1).astype(np.uint16)


def simulate_dual_camera(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_frames: int = 24,
    lr_shape: tuple[int, int] = (32, 64),
    key_step: int = 4,
    pixel_ratio: float = 2.9,
    rotation_deg: float = 3.0,
    flip_x: bool = True,
    shift_lr_px: tuple[float, float] = (1.3, -0.8),
    fov_fraction: float = 0.85,
    time_offset_frames: float = 2.3,
    clock_error_frames: float = 0.6,
    lr_rate_hz: float = 500_000.0,
    lr_psnr: float | None = 30.0,
    hr_psnr: float | None = 40.0,
    lr_pixel_um: float = 3.82,
    hr_format: str = "xml",
    speed: float = 1.0,
    target: bool = True,
) -> dict[str, Path]:
    """Write a simulated misaligned camera pair with its metadata into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    seed : int
        Scene and noise seed.
    n_frames : int
        LR frames T (the truth has T frames too).
    lr_shape : (int, int)
        LR frame (h, w) in LR pixels; the truth is (4h, 4w).
    key_step : int
        The HR camera records one frame every ``key_step`` LR intervals (>= 2).
    pixel_ratio : float
        LR pixel / HR pixel (2.9 in the paper's real pair; 4 would be the exact grid).
    rotation_deg, flip_x, shift_lr_px :
        The HR camera's rotation, mirror flip and centre offset (LR pixels x, y).
    fov_fraction : float
        HR field of view as a fraction of the LR one (per axis): HR frame = lr_shape *
        fov_fraction * pixel_ratio pixels.
    time_offset_frames : float
        LR time (in LR frames) of the first HR frame; keys at ``offset + j * key_step``.
    clock_error_frames : float
        What the HR metadata gets wrong: its times are the true ones minus this (LR frames).
    lr_rate_hz : float
        LR frame rate; the HR rate is ``lr_rate_hz / key_step``.
    lr_psnr, hr_psnr : float, optional
        Shot noise of each camera as a target PSNR (dB) of its [0, 1] frames; None: none.
    lr_pixel_um : float
        LR pixel size (HR pixel = ``lr_pixel_um / pixel_ratio``).
    hr_format : {"xml", "cine", "both"}
        HR as ``hr.tif`` + Phantom ``hr.xml``, as a Phantom ``hr.cine``, or both.
    speed : float
        Motion speed factor of the scene.
    target : bool
        Also write a calibration target pair seen by both cameras (``target_lr.tif``,
        ``target_hr.tif``: :func:`grid_target`), for ``xfusion register --target-lr/--target-hr``.

    Returns
    -------
    dict
        Paths by role: ``lr``, ``lr_times``, ``hr`` (``hr.tif``, or ``hr.cine`` when only
        that is written), ``hr_times`` (``hr.xml`` or ``hr.cine``), ``hr_cine`` (if written),
        ``truth`` (``truth.tif``), ``truth_json`` (, ``target_lr``, ``target_hr``).
    """
    from napari_xfusion.core import cameras
    from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
    from napari_xfusion.core.io import write_stack, write_text_atomic
    from napari_xfusion.core.registration import CameraTransform, warp_hr_view
    from napari_xfusion.core.sample import simulate_sequence

    if hr_format not in ("xml", "cine", "both"):
        raise ValueError(f"hr_format: expected xml, cine or both, got {hr_format!r}")
    if key_step < 2:
        raise ValueError(f"key_step: expected >= 2, got {key_step}")
    h, w = (int(v) for v in lr_shape)
    last = time_offset_frames + key_step * np.arange(n_frames)
    key_times = last[(last >= 0) & (last < n_frames - 1)]  # room to interpolate to the next
    if key_times.size < 2:
        raise ValueError(
            f"{n_frames} frames with key step {key_step} from offset {time_offset_frames} give "
            f"{key_times.size} HR frame(s); expected at least 2"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = simulate_sequence(n_frames, (4 * h, 4 * w), seed=seed, speed=speed, noise=False)
    rng = np.random.default_rng(seed + 7919)

    lr = bin_frames(truth)
    if lr_psnr is not None:
        lr = add_shot_noise(lr, solve_b0(lr, lr_psnr, seed=seed), rng)

    hr_shape = (
        int(round(h * fov_fraction * pixel_ratio)),
        int(round(w * fov_fraction * pixel_ratio)),
    )
    matrix = similarity_matrix(
        hr_shape,
        (h, w),
        pixel_ratio=pixel_ratio,
        rotation_deg=rotation_deg,
        flip_x=flip_x,
        shift_lr_px=shift_lr_px,
    )
    transform = CameraTransform(matrix, hr_shape)
    hr = np.empty((key_times.size, *hr_shape), dtype=np.float32)
    for j, t in enumerate(key_times):
        i = int(math.floor(t))
        a = float(t - i)
        scene = (1.0 - a) * truth[i] + a * truth[min(i + 1, n_frames - 1)]
        hr[j] = warp_hr_view(scene, transform, hr_shape)
    if hr_psnr is not None:
        hr = add_shot_noise(np.clip(hr, 0, 1), solve_b0(np.clip(hr, 0, 1), hr_psnr, seed=seed), rng)

    lr_interval = 1.0 / lr_rate_hz
    lr_times = cameras.frame_times_from_rate(n_frames, lr_rate_hz, source="simulated Shimadzu")
    recorded = (key_times - clock_error_frames) * lr_interval
    hr_times = cameras.FrameTimes(
        times_s=np.asarray(recorded, dtype=np.float64),
        frame_numbers=np.arange(key_times.size, dtype=np.int64),
        source="simulated Phantom",
        trigger_frame=0,
        camera="Phantom TMX7510 (simulated)",
    )
    paths: dict[str, Path] = {}
    lr_counts, hr_counts = _counts(lr, LR_GAIN, LR_DARK, 10), _counts(hr, HR_GAIN, HR_DARK, 12)
    camera_note = {"simulated": "napari-xfusion dual-camera sample"}
    paths["lr"] = write_stack(out / "lr.tif", lr_counts, {**camera_note, "camera": "LR"})
    paths["lr_times"] = out / "lr.ini"
    cameras.write_shimadzu_ini(paths["lr_times"], lr_times)
    if hr_format in ("xml", "both"):
        paths["hr"] = write_stack(out / "hr.tif", hr_counts, {**camera_note, "camera": "HR"})
        paths["hr_times"] = out / "hr.xml"
        cameras.write_phantom_xml(paths["hr_times"], hr_times)
    if hr_format in ("cine", "both"):
        paths["hr_cine"] = out / "hr.cine"
        cameras.write_cine(paths["hr_cine"], hr_counts, hr_times)
        if hr_format == "cine":
            paths["hr"] = paths["hr_times"] = paths["hr_cine"]
    if target:
        grid = grid_target((4 * h, 4 * w))
        grid_lr, grid_hr = bin_frames(grid[None]), warp_hr_view(grid, transform, hr_shape)[None]
        if lr_psnr is not None:
            grid_lr = add_shot_noise(grid_lr, solve_b0(grid_lr, lr_psnr, seed=seed), rng)
        if hr_psnr is not None:
            grid_hr = np.clip(grid_hr, 0, 1)
            grid_hr = add_shot_noise(grid_hr, solve_b0(grid_hr, hr_psnr, seed=seed), rng)
        paths["target_lr"] = write_stack(
            out / "target_lr.tif", _counts(grid_lr, LR_GAIN, LR_DARK, 10), camera_note
        )
        paths["target_hr"] = write_stack(
            out / "target_hr.tif", _counts(grid_hr, HR_GAIN, HR_DARK, 12), camera_note
        )
    # The truth in the LR camera's units (noise-free counts, float32): what a perfect LR camera
    # with 4x finer pixels would record, so `xfusion register --truth` can normalise it exactly
    # like the LR stream and fused frames can be scored against it.
    truth_counts = (truth * np.float32(LR_GAIN) + np.float32(LR_DARK)).astype(np.float32)
    paths["truth"] = write_stack(out / "truth.tif", truth_counts, {**camera_note, "role": "truth"})
    record: dict[str, Any] = {
        "version": 1,
        "what": "the transform and time offset applied by simulate_dual_camera",
        "matrix_hr_to_lr": matrix.tolist(),
        "params": _jsonable(transform.params()),
        "pixel_ratio": pixel_ratio,
        "rotation_deg": rotation_deg,
        "flip_x": flip_x,
        "shift_lr_px": list(shift_lr_px),
        "hr_shape": list(hr_shape),
        "lr_shape": [h, w],
        "n_frames": n_frames,
        "key_step": key_step,
        "time_offset_frames": time_offset_frames,
        "clock_error_frames": clock_error_frames,
        "hr_frame_lr_times": key_times.tolist(),
        "lr_rate_hz": lr_rate_hz,
        "hr_rate_hz": lr_rate_hz / key_step,
        "lr_psnr_db": lr_psnr,
        "hr_psnr_db": hr_psnr,
        "lr_counts": {"gain": LR_GAIN, "dark": LR_DARK, "bits": 10},
        "hr_counts": {"gain": HR_GAIN, "dark": HR_DARK, "bits": 12},
        "lr_pixel_um": lr_pixel_um,
        "hr_pixel_um": lr_pixel_um / pixel_ratio,
        "seed": seed,
        "truth": "truth.tif: the noise-free scene on the exact 4x grid of the LR camera, in LR "
        "counts (lr_counts gain * scene + dark, float32)",
    }
    paths["truth_json"] = write_text_atomic(out / "truth.json", json.dumps(record, indent=2))
    return paths


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return (
            [_jsonable(v) for v in np.asarray(value).tolist()]
            if isinstance(value, np.ndarray)
            else [_jsonable(v) for v in value]
        )
    if isinstance(value, np.generic):
        return value.item()
    return value
