"""The issue's scenario: the same uint16 full-rate HR stack with a key step through the CLI
and through the GUI's (Qt-free) job gives bit-identical frames and the same metrics."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest

from napari_xfusion import cli
from napari_xfusion._napari._job import FrameDone, FusionRequest, Prepared, fusion_job
from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig
from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.io import read_stack, write_stack
from napari_xfusion.core.sample import simulate_sequence


def test_cli_and_gui_job_agree_on_a_uint16_full_rate_stack(tmp_path):
    truth = simulate_sequence(11, (32, 64), seed=7)
    hr = (300 + 2500 * truth).astype(np.uint16)
    hr[3] = 9000  # a hot non-key frame: the CLI and the GUI both ignore it for clip values
    lr = (100 + 2000 * bin_frames(truth)).astype(np.uint16)
    write_stack(tmp_path / "hr.tif", hr)
    write_stack(tmp_path / "lr.tif", lr)
    out = tmp_path / "cli.tif"
    rc = cli.main(
        ["fuse", "--lr", str(tmp_path / "lr.tif"), "--hr", str(tmp_path / "hr.tif"),
         "--key-step", "5", "--method", "bicubic,bayesian", "--frames", "1:9", "--no-progress",
         "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    # The GUI's run is a RunConfig plus the layers' arrays: the same window as --frames 1:9.
    config = RunConfig(
        keys=KeyRule(step=5),
        frames=(1, 9),
        methods=(MethodChoice("bicubic"), MethodChoice("bayesian")),
    )
    request = FusionRequest(
        config=config, hr=read_stack(tmp_path / "hr.tif"), lr=read_stack(tmp_path / "lr.tif")
    )
    gen = fusion_job(request, threading.Event())
    events = list(gen)
    assert isinstance(events[0], Prepared) and events[0].key_indices.tolist() == [0, 5, 10]
    done = [e for e in events[1:] if isinstance(e, FrameDone)]
    assert len(done) == 16
    for method in ("bicubic", "bayesian"):
        fused = read_stack(tmp_path / f"cli_{method}.tif")
        gui = np.stack([e.result.frame for e in done if e.result.method == method])
        assert fused.tobytes() == gui.tobytes()  # bit for bit
        with open(tmp_path / f"cli_{method}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        gui_psnr = [e.metrics["psnr"] for e in done if e.result.method == method]
        cli_psnr = [float(r["psnr"]) if r["psnr"] else np.nan for r in rows]
        np.testing.assert_array_equal(cli_psnr, gui_psnr)
        assert not any(np.isinf(gui_psnr))
    assert pytest.approx(events[0].normalisation["low"]) == float(
        np.percentile(hr[[0, 5, 10]], 0.35)
    )
