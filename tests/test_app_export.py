"""The one export schema: ExportWriter streams only computed frames with the run's metadata
and sidecars; read_export reads it and the earlier CLI / GUI exports."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_xfusion import cli
from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig
from napari_xfusion.app.export import (
    EXPORT_SCHEMA,
    ExportWriter,
    config_path,
    read_export,
    run_metadata,
)
from napari_xfusion.app.inputs import InputError, prepare_inputs
from napari_xfusion.app.job import FrameEvent, run_job
from napari_xfusion.app.results import ResultTable
from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.io import read_metadata, write_stack, write_text_atomic
from napari_xfusion.core.sample import simulate_sequence


@pytest.fixture(scope="module")
def truth():
    return simulate_sequence(10, (32, 64), seed=5)


def _export(tmp_path, truth, config, hr, name="fused.tif"):
    prepared = prepare_inputs(config, lr=bin_frames(truth), hr=hr)
    path = tmp_path / name
    job = run_job(config, prepared)
    started = next(job)
    writer = ExportWriter(
        path,
        config,
        "bicubic",
        prepared.frame_shape,
        len(prepared.targets),
        description=started.descriptions["bicubic"],
        normalisation=prepared.hr_normalisation,
        pixel_size_um=2.0,
        frame_interval_s=2e-5,
        metadata=run_metadata(config, prepared),
    )
    frames = {}
    for event in job:
        assert isinstance(event, FrameEvent)
        writer.write(event.result.frame, event.result.index, event.row)
        frames[event.result.index] = event.result.frame
    assert writer.close(started.table) == len(frames)
    return path, frames, prepared


def test_partial_window_exports_only_computed_frames_with_metadata(tmp_path, truth):
    config = RunConfig(keys=KeyRule(step=4), frames=(5, 8), methods=(MethodChoice("bicubic"),))
    path, frames, _ = _export(tmp_path, truth, config, truth)
    stack, info = read_export(path)
    assert stack.shape == (3, 32, 64) and info.source == "schema" and info.schema == EXPORT_SCHEMA
    assert info.pages.tolist() == [5, 6, 7] and info.computed.all() and info.complete
    assert info.method == "bicubic" and info.units == "float" and info.config == config
    assert info.pixel_size_um == 2.0 and info.frame_interval_s == 2e-5
    assert info.key_indices.tolist() == [0, 4, 8]
    np.testing.assert_array_equal(stack[1], frames[6])
    meta = read_metadata(path)
    assert meta["software"].startswith("napari-xfusion ") and meta["window"]["frames"] == [5, 8]
    assert meta["frames"]["index"] == [5, 6, 7]
    # sidecars: per-frame CSV with metrics (full-rate HR is the truth) and the configuration
    with open(path.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == [5, 6, 7] and float(rows[0]["psnr"]) > 15
    assert RunConfig.load(config_path(path)) == config
    assert json.loads(config_path(path).read_text())["frames"] == [5, 8]


def test_detector_units_map_back(tmp_path, truth):
    hr = (200 + 3000 * truth).astype(np.uint16)
    config = RunConfig(keys=KeyRule(step=4), units="detector", frames=(0, 4))
    path, frames, prepared = _export(tmp_path, truth, config, hr)
    stack, info = read_export(path)
    assert stack.dtype == np.uint16 and info.units == "detector"
    assert info.normalisation == prepared.hr_normalisation
    np.testing.assert_allclose(info.to_unit(stack[2]), frames[2], atol=1 / 2000)


def test_evaluate_reads_every_face_and_scores_only_computed_frames(tmp_path, truth):
    write_stack(tmp_path / "truth.tif", truth)
    fused = np.zeros_like(truth)
    fused[[2, 3]] = np.clip(truth[[2, 3]] + 0.01, 0, 1)
    # an earlier GUI layer export: all T pages, zeros where never run
    gui_meta = {"layer": {"name": "fused [bicubic]"},
                "xfusion": {"role": "fused", "method": "bicubic", "frames_done": [2, 3],
                            "parameters": {"key_indices": [0, 4, 8]}}}  # fmt: skip
    write_stack(tmp_path / "gui.tif", fused, gui_meta)
    _, info = read_export(tmp_path / "gui.tif")
    assert info.source == "gui-layer" and info.computed_pages.tolist() == [2, 3]
    path, metrics = cli.evaluate(tmp_path / "gui.tif", tmp_path / "truth.tif")
    assert len(metrics["psnr"]) == 2 and min(metrics["psnr"]) > 35  # zeros never scored
    # an earlier CLI export: frame_indices only
    write_stack(tmp_path / "old.tif", fused[[2, 3]], {"method": "bicubic", "frame_indices": [2, 3]})
    _, old = read_export(tmp_path / "old.tif")
    assert old.source == "cli" and old.pages.tolist() == [2, 3]
    assert cli.evaluate(tmp_path / "old.tif", tmp_path / "truth.tif")[1] == metrics
    # uint16 without normalisation cannot be compared in [0, 1] units
    write_stack(tmp_path / "raw.tif", np.zeros((2, 32, 64), np.uint16))
    with pytest.raises(InputError, match=r"raw.tif: uint16 pages without normalisation"):
        read_export(tmp_path / "raw.tif")


def test_cli_export_round_trip_through_evaluate(tmp_path, truth):
    config = RunConfig(keys=KeyRule(step=4), frames=(1, 4))
    path, _, _ = _export(tmp_path, truth, config, truth)
    write_stack(tmp_path / "truth.tif", truth)
    with open(path.with_suffix(".csv"), newline="") as f:
        fused_rows = list(csv.DictReader(f))
    _, metrics = cli.evaluate(path, tmp_path / "truth.tif")
    assert metrics["psnr"] == [float(r["psnr"]) for r in fused_rows]  # the same numbers


def test_cancelled_export_is_valid_and_marked(tmp_path, truth):
    config = RunConfig(keys=KeyRule(step=4))
    writer = ExportWriter(tmp_path / "part.tif", config, "bicubic", (32, 64), 10)
    writer.write(truth[0], 0)
    writer.write(truth[1], 1)
    assert writer.abort() == 2
    assert writer.written_to == tmp_path / "part.partial.tif"
    stack, info = read_export(tmp_path / "part.partial.tif")
    assert stack.shape[0] == 2 and not info.complete and info.pages.tolist() == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part.partial.config.json",
        "part.partial.csv",
        "part.partial.tif",
    ]


def test_a_complete_export_is_never_replaced_by_a_partial_one(tmp_path, truth):
    config = RunConfig(keys=KeyRule(step=4))
    first = ExportWriter(tmp_path / "x.tif", config, "bicubic", (32, 64), 3)
    for t in range(3):
        first.write(truth[t], t)
    assert first.close() == 3
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = ExportWriter(tmp_path / "x.tif", config, "bicubic", (32, 64), 3)
    again.write(truth[0], 0, ResultTable().add_frame("bicubic", 0, truth[0]))
    assert again.abort() == 1
    for name, data in before.items():  # the complete export, byte for byte
        assert (tmp_path / name).read_bytes() == data
    assert read_export(tmp_path / "x.partial.tif")[1].pages.tolist() == [0]
    assert len((tmp_path / "x.partial.csv").read_text().splitlines()) == 2  # header + 1 row
    # a later complete run supersedes the partial files; no temp file anywhere
    last = ExportWriter(tmp_path / "x.tif", config, "bicubic", (32, 64), 3)
    for t in range(3):
        last.write(truth[t], t)
    last.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.config.json", "x.csv", "x.tif"]


def test_write_text_atomic_lives_in_core_io(tmp_path):
    from napari_xfusion._napari import _export

    assert _export.write_text_atomic is write_text_atomic
    path = write_text_atomic(tmp_path / "a.csv", "x\n1\n")
    assert path.read_text() == "x\n1\n" and [p.name for p in tmp_path.iterdir()] == ["a.csv"]
