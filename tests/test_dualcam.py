"""app.dualcam on the simulated misaligned pair (known transform and time offset): the whole
chain recovers them, the aligned pair fuses and beats bicubic against the truth cropped the
same way, and bad inputs give clear errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_xfusion.app.dualcam import (
    DualCameraConfig,
    DualCameraError,
    align_pair,
    crop_truth,
    prepare_pair,
    simulate_dual_camera,
    write_aligned,
)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pair")
    simulate_dual_camera(out, seed=3)
    return out


@pytest.fixture(scope="module")
def truth(pair_dir) -> dict:
    return json.loads((pair_dir / "truth.json").read_text())


@pytest.fixture(scope="module")
def aligned(pair_dir):
    return align_pair(DualCameraConfig(lr=pair_dir / "lr.tif", hr=pair_dir / "hr.tif"))


HINT = {"lr_pixel_um": 3.82, "hr_pixel_um": 3.82 / 2.9}  # the simulated cameras' pixel sizes


def _points(hr_shape) -> np.ndarray:
    h, w = hr_shape
    return np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2]])


def _apply(matrix, points) -> np.ndarray:
    m = np.asarray(matrix, dtype=float)
    return points @ m[:2, :2].T + m[:2, 2]


def test_simulated_pair_is_written_in_the_cameras_formats(pair_dir, truth):
    from napari_xfusion.core.cameras import read_frame_times
    from napari_xfusion.core.io import read_stack

    lr, hr = read_stack(pair_dir / "lr.tif"), read_stack(pair_dir / "hr.tif")
    assert lr.dtype == np.uint16 and hr.dtype == np.uint16
    assert lr.shape == (truth["n_frames"], *truth["lr_shape"])
    assert hr.shape[1:] == tuple(truth["hr_shape"])
    assert read_stack(pair_dir / "truth.tif").shape == (
        lr.shape[0],
        4 * lr.shape[1],
        4 * lr.shape[2],
    )
    lr_times = read_frame_times(pair_dir / "lr.ini")
    hr_times = read_frame_times(pair_dir / "hr.xml")
    assert len(lr_times) == lr.shape[0] and len(hr_times) == hr.shape[0]
    assert lr_times.rate_hz == pytest.approx(truth["lr_rate_hz"], rel=1e-6)
    assert hr_times.rate_hz == pytest.approx(truth["hr_rate_hz"], rel=1e-6)
    # The HR clock is off by clock_error_frames: only the images can tell.
    recorded = hr_times.times_s[0] * truth["lr_rate_hz"]
    assert recorded == pytest.approx(truth["time_offset_frames"] - truth["clock_error_frames"])
    # A pixel ratio of 2.9, a flip, a rotation: not the 4x grid.
    assert truth["pixel_ratio"] != 4 and truth["flip_x"] and truth["rotation_deg"] != 0


def test_chain_recovers_transform_and_time_offset(aligned, truth):
    report = aligned.report
    est = aligned.transform.params()
    true = truth["params"]
    points = _points(truth["hr_shape"])
    err = np.linalg.norm(
        _apply(aligned.transform.matrix, points) - _apply(truth["matrix_hr_to_lr"], points), axis=1
    )
    assert err.max() < 0.1, f"transform off by {err.max():.3f} LR px at the HR frame's corners"
    assert abs(est["rotation_deg"] - true["rotation_deg"]) < 0.2
    assert abs(est["scale"] / true["scale"] - 1) < 0.005
    assert bool(est["flip_x"]) == bool(true["flip_x"])
    assert bool(est["flip_y"]) == bool(true["flip_y"])
    assert abs(report.time_offset_frames - truth["time_offset_frames"]) < 0.1
    key_times = np.asarray(report.key_times_frames)
    assert np.abs(key_times - np.asarray(truth["hr_frame_lr_times"])).max() < 0.1
    assert abs(report.clock_correction_frames - truth["clock_error_frames"]) < 0.1
    # Each key goes to the LR frame nearest its true time.
    assert aligned.key_indices.tolist() == np.rint(truth["hr_frame_lr_times"]).astype(int).tolist()
    assert report.residual_lr_px < 0.1


def test_aligned_pair_is_on_the_exact_4x_grid(aligned):
    t, h, w = aligned.lr.shape
    k = aligned.key_indices.size
    assert aligned.hr_keys.shape == (k, 4 * h, 4 * w)
    assert aligned.lr.dtype == aligned.hr_keys.dtype == np.float32
    assert 0.0 <= aligned.hr_keys.min() and aligned.hr_keys.max() <= 1.0
    y0, y1, x0, x1 = aligned.report.lr_crop
    assert (y1 - y0, x1 - x0) == (h, w)
    # The keys binned 4x4 look like their LR frames (intensities mapped into the LR's units).
    from napari_xfusion.core.degrade import bin_frames

    binned = bin_frames(aligned.hr_keys)
    lr = aligned.lr[aligned.key_indices]
    corr = np.corrcoef(binned.ravel(), lr.ravel())[0, 1]
    assert corr > 0.95
    assert abs(float(binned.mean() - lr.mean())) < 0.02


def test_summary_reports_time_and_transform(aligned):
    text = aligned.report.summary()
    for needle in ("ns", "frames", "flip x", "rotation", "scale", "shift", "residual", "refined"):
        assert needle in text, needle


def test_write_aligned_then_fuse_beats_bicubic(aligned, pair_dir, tmp_path):
    from napari_xfusion.cli import main
    from napari_xfusion.core.io import read_metadata, read_stack
    from napari_xfusion.core.metrics import psnr

    truth_stack = read_stack(pair_dir / "truth.tif")
    paths = write_aligned(aligned, tmp_path / "al", truth=truth_stack)
    assert set(paths) == {"lr", "hr", "transform", "alignment", "summary", "truth"}
    meta = read_metadata(paths["hr"])
    assert meta["key_indices"] == aligned.key_indices.tolist()
    assert json.loads(paths["alignment"].read_text())["key_indices"] == meta["key_indices"]
    out = tmp_path / "fused.tif"
    argv = [
        "fuse",
        "--lr",
        str(paths["lr"]),
        "--hr",
        str(paths["hr"]),
        "--method",
        "bicubic,flow",
        "--truth",
        str(paths["truth"]),
        "--no-progress",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "fused_comparison.csv"))}
    gain = float(rows["flow"]["psnr_mean"]) - float(rows["bicubic"]["psnr_mean"])
    assert gain > 1.0, rows
    # Honest: the truth written by write_aligned is the raw truth cropped and normalised
    # exactly like the LR stream; recompute the bicubic score from it by hand.
    crop = crop_truth(aligned, truth_stack)
    np.testing.assert_array_equal(read_stack(paths["truth"]), crop)
    from napari_xfusion.core.resample import upscale_bicubic

    keys = set(aligned.key_indices.tolist())
    frames = [t for t in range(aligned.lr.shape[0]) if t not in keys]
    by_hand = np.mean([psnr(upscale_bicubic(aligned.lr[t]), crop[t]) for t in frames])
    assert by_hand == pytest.approx(float(rows["bicubic"]["psnr_mean"]), abs=0.05)


def test_transform_file_is_reused(aligned, pair_dir, tmp_path):
    path = aligned.transform.save(tmp_path / "transform.json") or tmp_path / "transform.json"
    again = align_pair(
        DualCameraConfig(lr=pair_dir / "lr.tif", hr=pair_dir / "hr.tif", transform=path)
    )
    np.testing.assert_allclose(again.transform.matrix, aligned.transform.matrix, atol=1e-12)
    assert again.key_indices.tolist() == aligned.key_indices.tolist()
    assert again.report.transform_source.startswith("file")


def test_rates_and_trigger_delay_instead_of_metadata(pair_dir, truth, tmp_path):
    for name in ("lr.tif", "hr.tif"):
        shutil.copy(pair_dir / name, tmp_path / name)
    rate = truth["lr_rate_hz"]
    delay = (truth["time_offset_frames"] - truth["clock_error_frames"]) / rate
    config = DualCameraConfig(
        lr=tmp_path / "lr.tif",
        hr=tmp_path / "hr.tif",
        lr_rate_hz=rate,
        hr_rate_hz=truth["hr_rate_hz"],
        trigger_delay_s=delay,
        **HINT,
    )
    pair = align_pair(config)
    assert abs(pair.report.time_offset_frames - truth["time_offset_frames"]) < 0.1
    assert "rate" in pair.report.lr_times_source.lower() or "rate" in pair.report.summary()


def test_missing_metadata_and_no_rate_is_refused(pair_dir, tmp_path):
    shutil.copy(pair_dir / "lr.tif", tmp_path / "lr.tif")
    config = DualCameraConfig(lr=tmp_path / "lr.tif", hr=pair_dir / "hr.tif")
    with pytest.raises(DualCameraError, match=r"lr\.tif.*no camera metadata.*--lr-rate"):
        prepare_pair(config)


def test_metadata_of_another_length_is_refused(pair_dir, tmp_path):
    from napari_xfusion.core.io import read_stack, write_stack

    write_stack(tmp_path / "hr.tif", read_stack(pair_dir / "hr.tif")[:-1])
    config = DualCameraConfig(
        lr=pair_dir / "lr.tif", hr=tmp_path / "hr.tif", hr_times=pair_dir / "hr.xml"
    )
    with pytest.raises(DualCameraError, match=r"hr\.xml.*frame times.*frames"):
        prepare_pair(config)


def test_unmatched_times_are_refused(pair_dir, truth, tmp_path):
    from napari_xfusion.core.cameras import TimingError

    # HR rate claimed twice as slow: its later frames fall after the last LR frame.
    config = DualCameraConfig(
        lr=pair_dir / "lr.tif", hr=pair_dir / "hr.tif", hr_rate_hz=truth["hr_rate_hz"] / 2
    )
    with pytest.raises(TimingError, match=r"HR frame"):
        prepare_pair(config)


def test_hr_frames_outside_the_lr_recording_can_be_dropped(pair_dir, truth, tmp_path):
    from napari_xfusion.core.cameras import (
        FrameTimes,
        TimingError,
        read_frame_times,
        write_phantom_xml,
    )
    from napari_xfusion.core.io import read_stack, write_stack

    # The HR camera also recorded one frame before and one after the LR camera.
    times = read_frame_times(pair_dir / "hr.xml")
    step = float(np.median(np.diff(times.times_s)))
    longer = np.concatenate([[times.times_s[0] - step], times.times_s, [times.times_s[-1] + step]])
    write_phantom_xml(tmp_path / "hr.xml", FrameTimes(longer, np.arange(longer.size) - 1, "test"))
    hr = np.asarray(read_stack(pair_dir / "hr.tif"))
    write_stack(tmp_path / "hr.tif", np.concatenate([hr[:1], hr, hr[-1:]]))
    config = DualCameraConfig(lr=pair_dir / "lr.tif", hr=tmp_path / "hr.tif", **HINT)
    with pytest.raises(TimingError, match="HR frame -1"):
        prepare_pair(config)
    prepared = prepare_pair(config.replace(drop_outside=True))
    assert prepared.hr.shape[0] == hr.shape[0]
    assert prepared.lr_index.tolist() == [2, 6, 10, 14, 18, 22]
    assert any("2 HR frame(s) recorded outside" in n for n in prepared.notes)


def test_too_poor_registration_is_refused(aligned, pair_dir):
    from napari_xfusion.core.registration import CameraTransform, RegistrationError

    bad = np.array(aligned.transform.matrix, dtype=float)
    bad[:2, 2] += (1.5, -1.0)  # 1.8 LR px off
    config = DualCameraConfig(
        lr=pair_dir / "lr.tif",
        hr=pair_dir / "hr.tif",
        transform=CameraTransform(bad),
        refine_time=False,
    )
    with pytest.raises(RegistrationError, match=r"too poor"):
        align_pair(config)


def test_config_is_checked():
    with pytest.raises(DualCameraError, match="model"):
        DualCameraConfig(model="projective")
    with pytest.raises(DualCameraError, match="target_lr and target_hr"):
        DualCameraConfig(target_lr="a.tif")
    with pytest.raises(DualCameraError, match="lr_rate_hz"):
        DualCameraConfig(lr_rate_hz=-1)
    with pytest.raises(DualCameraError, match="trigger_delay_s"):
        DualCameraConfig(trigger_delay_s=math.nan)


def test_cine_hr_camera(tmp_path, truth):
    paths = simulate_dual_camera(tmp_path, seed=3, hr_format="cine")
    assert paths["hr"].suffix == ".cine" and not (tmp_path / "hr.tif").exists()
    pair = align_pair(DualCameraConfig(lr=paths["lr"], hr=paths["hr"], **HINT))
    assert abs(pair.report.time_offset_frames - truth["time_offset_frames"]) < 0.1
    assert pair.report.residual_lr_px < 0.1


def test_refinement_moves_keys_to_other_lr_frames(tmp_path):
    # The metadata puts the keys 0.9 frames early: nearest LR frame is the wrong one.
    simulate_dual_camera(tmp_path, seed=4, time_offset_frames=2.3, clock_error_frames=0.9)
    pair = align_pair(DualCameraConfig(lr=tmp_path / "lr.tif", hr=tmp_path / "hr.tif", **HINT))
    record = json.loads((tmp_path / "truth.json").read_text())
    assert pair.report.rematched
    assert pair.key_indices.tolist() == np.rint(record["hr_frame_lr_times"]).astype(int).tolist()
    assert abs(pair.report.time_offset_frames - 2.3) < 0.1


def test_calibration_target_pair(pair_dir, truth):
    from napari_xfusion.core.io import read_stack

    assert read_stack(pair_dir / "target_hr.tif").shape[1:] == tuple(truth["hr_shape"])
    config = DualCameraConfig(
        lr=pair_dir / "lr.tif",
        hr=pair_dir / "hr.tif",
        target_lr=pair_dir / "target_lr.tif",
        target_hr=pair_dir / "target_hr.tif",
        **HINT,
    )
    pair = align_pair(config)
    assert pair.report.transform_source.startswith("calibration target")
    points = _points(truth["hr_shape"])
    err = np.linalg.norm(
        _apply(pair.transform.matrix, points) - _apply(truth["matrix_hr_to_lr"], points), axis=1
    )
    assert err.max() < 0.1
    assert abs(pair.report.time_offset_frames - truth["time_offset_frames"]) < 0.1


def test_unsupported_time_refinement_keeps_the_metadata_times(pair_dir, aligned, monkeypatch):
    import types

    from napari_xfusion.core import cameras

    def unsure(lr, hr_binned, lr_index, **_):
        k = len(lr_index)  # what a static scene or a wrong transform gives: +2 at the edge
        return types.SimpleNamespace(
            offset_frames=2.0,
            per_key_offset_frames=np.full(k, 2.0),
            confidence=0.05,
            at_search_edge=np.ones(k, bool),
        )

    monkeypatch.setattr(cameras, "refine_time_offset", unsure)
    config = DualCameraConfig(
        lr=pair_dir / "lr.tif", hr=pair_dir / "hr.tif", transform=aligned.transform
    )
    report = align_pair(config).report
    assert not report.refined and report.clock_correction_frames == 0.0
    assert any("time refinement not applied: confidence 0.05" in n for n in report.notes)
    assert "time refinement not applied" in report.summary()
    # The keys keep the metadata's times (1.7 + 4j): LR frames 2, 6, ...
    assert report.key_indices == [2, 6, 10, 14, 18, 22]


def test_another_camera_pair_is_recovered_too(tmp_path):
    # Another seed, mirror, ratio, rotation and offset; no scale hint.
    simulate_dual_camera(
        tmp_path,
        seed=7,
        pixel_ratio=3.1,
        rotation_deg=-2.5,
        flip_x=False,
        shift_lr_px=(-1.0, 0.7),
        time_offset_frames=1.6,
        clock_error_frames=-0.3,
    )
    truth = json.loads((tmp_path / "truth.json").read_text())
    pair = align_pair(DualCameraConfig(lr=tmp_path / "lr.tif", hr=tmp_path / "hr.tif"))
    points = _points(truth["hr_shape"])
    err = np.linalg.norm(
        _apply(pair.transform.matrix, points) - _apply(truth["matrix_hr_to_lr"], points), axis=1
    )
    params = pair.transform.params()
    assert err.max() < 0.1
    assert abs(params["rotation_deg"] + 2.5) < 0.2
    assert abs(params["scale"] * 3.1 - 1) < 0.005
    assert not params["flip_x"] and not params["flip_y"]
    assert abs(pair.report.time_offset_frames - 1.6) < 0.1


def test_a_poor_unhinted_estimate_is_searched_again_near_its_scale(pair_dir, monkeypatch):
    import dataclasses

    from napari_xfusion.core import registration

    real, calls = registration.estimate_transform, []

    def first_poor(hr, lr, *, scale_hint=None, **options):
        calls.append(scale_hint)
        found = real(hr, lr, scale_hint=scale_hint or 1 / 2.9, **options)
        if scale_hint is None:  # what a search settling off the right scale reports
            return dataclasses.replace(found, residual_lr_px=1.5)
        return found

    monkeypatch.setattr(registration, "estimate_transform", first_poor)
    pair = align_pair(DualCameraConfig(lr=pair_dir / "lr.tif", hr=pair_dir / "hr.tif"))
    assert calls[0] is None and calls[1] == pytest.approx(1 / 2.9, rel=0.01)
    assert pair.report.residual_lr_px < 0.1
