"""ResultTable: metrics once, summaries between keys, never inf; the job loop that fills it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig
from napari_xfusion.app.inputs import prepare_inputs
from napari_xfusion.app.job import FrameEvent, JobStarted, run_job
from napari_xfusion.app.results import ResultTable
from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.metrics import frame_metrics
from napari_xfusion.core.sample import simulate_sequence


@pytest.fixture(scope="module")
def truth():
    return simulate_sequence(9, (32, 64), seed=4)


def test_summary_between_keys_keys_apart_and_no_inf(truth):
    table = ResultTable([0, 4, 8], lambda t: truth[t])
    rng = np.random.default_rng(0)
    noisy = {
        t: np.clip(truth[t] + 0.02 * rng.standard_normal(truth[t].shape), 0, 1) for t in range(9)
    }
    for t in range(9):
        # "exact" returns the truth at the keys (like bayesian), noise elsewhere
        table.add_frame("exact", t, truth[t] if t in (0, 4, 8) else noisy[t], seconds=0.5)
    rows = table.rows("exact")
    assert [r.is_key for r in rows] == [t in (0, 4, 8) for t in range(9)]
    assert rows[0].identical and math.isnan(rows[0].psnr) and rows[0].aad == 0.0
    assert rows[1].psnr == pytest.approx(frame_metrics(noisy[1], truth[1])["psnr"])
    (summary,) = table.summary()
    between = [frame_metrics(noisy[t], truth[t])["psnr"] for t in (1, 2, 3, 5, 6, 7)]
    assert summary["frames"] == 9 and summary["frames_between_keys"] == 6
    assert summary["key_frames"] == 3 and summary["identical_frames"] == 3
    assert summary["psnr_mean"] == pytest.approx(np.mean(between))
    assert summary["psnr_median"] == pytest.approx(np.median(between))
    assert math.isnan(summary["key_psnr_mean"]) and summary["key_aad_mean"] == 0.0
    assert summary["seconds_per_frame"] == pytest.approx(0.5)
    for text in (table.to_csv_text(), table.summary_csv_text(), table.summary_text()):
        assert "inf" not in text.lower()
    header, first = table.to_csv_text().splitlines()[:2]
    assert header == "method,frame,is_key,seconds,psnr,aad,ssim,identical"
    assert first.startswith("exact,0,1,0.5,,0.0,1.0,1")
    assert "PSNR mean" in table.summary_text() and "SSIM median" in table.summary_text()


def test_without_truth_no_metric_columns(truth):
    table = ResultTable([0, 8])
    table.add_frame("bicubic", 3, truth[3])
    assert (
        not table.has_truth and table.to_csv_text().splitlines()[0] == "method,frame,is_key,seconds"
    )
    assert math.isnan(table.summary()[0]["psnr_mean"])


def test_attention_normalised_over_all_rows():
    table = ResultTable([0, 4, 8])
    for t in range(9):  # the key's own score is 2, decaying to 1 across each gap
        raw = 2.0 - (t % 4) / 4
        table.add_frame("net", t, None, backward=raw, forward=1.0 + t, backward_norm=None)
    rows = table.rows("net")
    assert rows[0].backward_norm == pytest.approx(1.0)
    assert rows[2].backward_norm == pytest.approx((2.0 - 0.5) / 2.0)
    cols = table.attention_columns("net", [1, 2])
    assert cols["index"] == [1, 2] and cols["backward_norm"][1] == pytest.approx(0.75)
    assert "backward,forward,backward_norm,forward_norm" in table.to_csv_text()


def test_run_job_computes_metrics_once_caches_methods_and_cancels(truth):
    config = RunConfig(
        keys=KeyRule(step=4),
        methods=(MethodChoice("bicubic"), MethodChoice("bayesian", {"n_classes": 3})),
    )
    prepared = prepare_inputs(config, lr=bin_frames(truth), hr=truth)
    cache: dict = {}
    events = list(run_job(config, prepared, method_cache=cache))
    started, frames = events[0], events[1:]
    assert isinstance(started, JobStarted) and started.total == 18 and len(frames) == 18
    assert all(isinstance(e, FrameEvent) for e in frames)
    assert [e.result.method for e in frames[:2]] == ["bicubic", "bayesian"]
    assert frames[-1].done == 18 and "variance" in frames[1].extras
    table = frames[-1].table
    assert table.rows("bicubic")[3].psnr == pytest.approx(
        frame_metrics(frames[6].result.frame, truth[3])["psnr"]
    )
    built = list(cache.values())
    assert len(built) == 2
    # a second run reuses the built methods; closing the generator stops between frames
    job = run_job(config, prepared, method_cache=cache)
    assert next(job).methods == built
    first = next(job)
    job.close()
    assert first.table.rows() == [first.row]
    assert list(cache.values()) == built
    # other options replace the cached instance rather than keeping both
    other = config.replace(methods=(MethodChoice("bayesian", {"n_classes": 2}),))
    next(run_job(other, prepared, method_cache=cache))
    assert len(cache) == 2 and built[1] not in cache.values()


def test_run_job_refuses_cuda_on_a_cpu_only_torch(truth):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from napari_xfusion.app.inputs import InputError

    config = RunConfig(keys=KeyRule(step=4), device="cuda", methods=(MethodChoice("edvr-stf"),))
    prepared = prepare_inputs(config, lr=bin_frames(truth), hr=truth)
    with pytest.raises(
        InputError, match="edvr-stf: CUDA was requested but this PyTorch build has no CUDA"
    ):
        next(run_job(config, prepared))
