"""``xfusion sample --dual-camera`` and ``xfusion register``: the simulated misaligned pair,
aligned from the command line, fused by ``xfusion fuse``; one-line errors with status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from napari_xfusion.cli import main


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "pair"
    assert main(["sample", "--dual-camera", str(out), "--seed", "5"]) == 0
    return out


def test_sample_dual_camera_writes_both_cameras_and_the_truth(pair):
    names = {p.name for p in pair.iterdir()}
    assert {"lr.tif", "lr.ini", "hr.tif", "hr.xml", "truth.tif", "truth.json"} <= names


def test_register_prints_the_match_and_transform_and_fuse_runs(pair, tmp_path, capsys):
    out = tmp_path / "aligned"
    argv = ["register", "--lr", str(pair / "lr.tif"), "--hr", str(pair / "hr.tif")]
    assert main([*argv, "--truth", str(pair / "truth.tif"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("ns", "frames", "refined", "flip x", "scale", "rotation", "shift", "residual"):
        assert needle in text, needle
    for name in ("lr.tif", "hr.tif", "transform.json", "alignment.json", "alignment.txt"):
        assert (out / name).is_file(), name
    assert (out / "truth.tif").is_file()
    report = json.loads((out / "alignment.json").read_text())
    record = json.loads((pair / "truth.json").read_text())
    assert abs(report["time_offset_frames"] - record["time_offset_frames"]) < 0.1
    fused = tmp_path / "fused.tif"
    fuse = ["fuse", "--lr", str(out / "lr.tif"), "--hr", str(out / "hr.tif"), "--no-progress"]
    assert main([*fuse, "-o", str(fused)]) == 0
    assert fused.is_file()
    # The saved transform is reused (no estimate).
    again = tmp_path / "again"
    assert main([*argv, "--transform", str(out / "transform.json"), "-o", str(again)]) == 0
    assert "file" in capsys.readouterr().out


def test_register_with_the_calibration_target(pair, tmp_path, capsys):
    argv = [
        "register",
        "--lr",
        str(pair / "lr.tif"),
        "--hr",
        str(pair / "hr.tif"),
        "--target-lr",
        str(pair / "target_lr.tif"),
        "--target-hr",
        str(pair / "target_hr.tif"),
        "--lr-pixel",
        "3.82",
        "--hr-pixel",
        "1.317",
        "-o",
        str(tmp_path / "t"),
    ]
    assert main(argv) == 0
    assert "calibration target" in capsys.readouterr().out
    report = json.loads((tmp_path / "t" / "alignment.json").read_text())
    assert report["residual_lr_px"] < 0.1


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    # Progress lines ("register: ...") may come first; the error is one line, the last.
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    return errors[0]


def test_missing_metadata_without_rate_is_one_line(pair, tmp_path, capsys):
    shutil.copy(pair / "hr.tif", tmp_path / "hr.tif")
    err = _error(
        [
            "register",
            "--lr",
            str(pair / "lr.tif"),
            "--hr",
            str(tmp_path / "hr.tif"),
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "hr.tif" in err and "--hr-rate" in err and "--hr-times" in err


def test_missing_stack_and_half_a_target_are_one_line(pair, tmp_path, capsys):
    err = _error(
        [
            "register",
            "--lr",
            str(tmp_path / "nope.tif"),
            "--hr",
            str(pair / "hr.tif"),
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "nope.tif" in err
    err = _error(
        [
            "register",
            "--lr",
            str(pair / "lr.tif"),
            "--hr",
            str(pair / "hr.tif"),
            "--target-lr",
            str(pair / "lr.tif"),
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "--target-hr" in err


def test_unmatched_frames_are_one_line(pair, tmp_path, capsys):
    err = _error(
        [
            "register",
            "--lr",
            str(pair / "lr.tif"),
            "--hr",
            str(pair / "hr.tif"),
            "--hr-rate",
            "50000",
            "-o",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "HR frame" in err


def test_outputs_may_not_overwrite_inputs(pair, capsys):
    err = _error(
        ["register", "--lr", str(pair / "lr.tif"), "--hr", str(pair / "hr.tif"), "-o", str(pair)],
        capsys,
    )
    assert "lr.tif" in err or "hr.tif" in err


def test_sample_needs_a_folder(capsys):
    err = _error(["sample"], capsys)
    assert "--dual-camera" in err
