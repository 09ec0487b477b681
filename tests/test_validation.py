"""app.validation: leave-one-key-out and LR consistency on the simulated sample (41 frames,
HR 64x128, keys every 10), against direct computations and the truth."""

from __future__ import annotations

import csv
import io
import math
import sys
import textwrap

import numpy as np
import pytest

from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig
from napari_xfusion.app.inputs import InputError, prepare_inputs
from napari_xfusion.app.job import run_job
from napari_xfusion.app.validation import (
    LOO_COLUMNS,
    ConsistencyTable,
    LrChecker,
    LrMapping,
    consistency_table,
    estimate_lr_noise,
    keys_without,
    leave_one_key_out,
    lr_consistency,
    lr_mapping,
    withheld_keys,
)
from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.core.sample import simulate_sequence

N, SHAPE, STEP = 41, (64, 128), 10
INTERIOR = [10, 20, 30]


@pytest.fixture(scope="module")
def truth():
    return simulate_sequence(N, SHAPE, seed=0)


def _config(*methods, **changes):
    base = RunConfig(
        simulate=True, keys=KeyRule(step=STEP), device="cpu",
        methods=tuple(MethodChoice(m) for m in methods),
    )  # fmt: skip
    return base.replace(**changes)


@pytest.fixture(scope="module")
def loo(truth):
    """``(config, prepared, result)``: bicubic and flow, every interior key."""
    config = _config("bicubic", "flow")
    prepared = prepare_inputs(config, hr=truth)
    return config, prepared, leave_one_key_out(config, prepared)


def _row(result, method, t):
    (row,) = [r for r in result.rows if r.method == method and r.key_index == t]
    return row


# --- leave-one-key-out ------------------------------------------------------------------


def test_bicubic_loo_is_bicubics_psnr_at_that_frame(loo, truth):
    """bicubic ignores the keys: withholding one changes nothing."""
    _, prepared, result = loo
    assert result.withheld == INTERIOR and result.complete
    for t in INTERIOR:
        row = _row(result, "bicubic", t)
        direct = psnr(upscale_bicubic(np.asarray(prepared.lr[t])), truth[t])
        assert row.psnr == pytest.approx(direct, abs=1e-9)
        assert row.gap_frames == 2 * STEP and not row.one_sided


def test_flow_loo_is_the_true_psnr_of_a_run_without_that_key(loo, truth):
    """LOO at key t == the truth-scored PSNR at t of a normal run whose keys lack t (the same
    gap 2k); with all keys flow returns the key itself at t (identical), so LOO is lower."""
    config, prepared, result = loo
    all_keys = {e.row.index: e.row for e in list(run_job(config, prepared, targets=INTERIOR))[1:]
                if e.row.method == "flow"}  # fmt: skip
    for t in INTERIOR:
        row = _row(result, "flow", t)
        kept = tuple(k for k in range(0, N, STEP) if k != t)
        sparse = prepare_inputs(config.replace(keys=KeyRule(indices=kept)), hr=truth)
        (_, event) = list(run_job(config.replace(methods=(MethodChoice("flow"),)), sparse,
                                  targets=[t]))  # fmt: skip
        assert row.psnr == pytest.approx(event.row.psnr, abs=1e-6)
        assert math.isfinite(row.psnr) and row.psnr < 40.0
        assert all_keys[t].identical  # with the key: a copy of it
        assert row.psnr > _row(result, "bicubic", t).psnr + 2.0  # the keys still help


class _Spy:
    def __init__(self, run):
        self.run, self.keys = run, []

    def __call__(self, methods, lr, keys, **kwargs):
        self.keys.append((list(kwargs.get("frames")), [int(k) for k in keys.indices]))
        return self.run(methods, lr, keys, **kwargs)


def test_the_engine_never_sees_the_withheld_key(truth, monkeypatch):
    from napari_xfusion import engine

    spy = _Spy(engine.run)
    monkeypatch.setattr(engine, "run", spy)
    config = _config("flow")
    leave_one_key_out(config, prepare_inputs(config, hr=truth), checker=False)
    assert [targets for targets, _ in spy.keys] == [[t] for t in INTERIOR]
    for targets, keys in spy.keys:
        assert targets[0] not in keys
        assert keys == [k for k in range(0, N, STEP) if k != targets[0]]


KEY_COPY = '''
from napari_xfusion.methods.base import Reconstruction, Reconstructor


class KeyCopy(Reconstructor):
    """Returns the key before t: a perfect score at a key if that key leaked."""

    name = "key-copy"

    def reconstruct(self, inputs):
        return Reconstruction(frame=inputs.hr_keys[0].copy())
'''


@pytest.fixture
def key_copy(tmp_path, monkeypatch):
    from napari_xfusion import methods
    from napari_xfusion.methods import registry

    (tmp_path / "xf_key_copy.py").write_text(textwrap.dedent(KEY_COPY))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register(registry.MethodSpec("key-copy", "xf_key_copy:KeyCopy", "copies a key",
                                          uses_hr_keys=True))  # fmt: skip
    yield "key-copy"
    registry._extra.pop("key-copy", None)
    methods.METHODS.pop("key-copy", None)
    sys.modules.pop("xf_key_copy", None)
    registry.available_methods(refresh=True)


def test_a_method_that_copies_a_key_scores_the_previous_key_not_itself(truth, key_copy):
    config = _config(key_copy)
    prepared = prepare_inputs(config, hr=truth)
    result = leave_one_key_out(config, prepared)
    for t in INTERIOR:
        row = _row(result, key_copy, t)
        assert row.psnr == pytest.approx(psnr(truth[t - STEP], truth[t]), abs=1e-6)
    (_, event) = list(run_job(config, prepared, targets=[20]))  # all keys: itself
    assert event.row.identical


def test_with_large_motion_the_withheld_frame_is_not_the_key(monkeypatch):
    from napari_xfusion.app.validation import iter_leave_one_key_out

    fast = simulate_sequence(N, SHAPE, seed=3, speed=4.0)
    config = _config("flow")
    events = list(iter_leave_one_key_out(config, prepare_inputs(config, hr=fast), checker=False))
    for event in events[1:]:
        t = event.row.key_index
        assert not np.array_equal(event.frame, fast[t])
        assert psnr(event.frame, fast[t]) == pytest.approx(event.row.psnr)
        assert event.row.psnr < 45.0


def test_edge_keys_are_scored_one_sided_and_summarised_apart(truth):
    config = _config("bicubic")
    result = leave_one_key_out(config, prepare_inputs(config, hr=truth), edges=True)
    assert result.withheld == [0, 10, 20, 30, 40]
    edge = [r for r in result.rows if r.one_sided]
    assert [r.key_index for r in edge] == [0, 40]
    assert all(r.gap_frames == STEP for r in edge)  # keys 10, 20 (or 20, 30): one side
    (summary,) = result.summary()
    assert summary["keys_scored"] == 3 and summary["edge_keys"] == 2
    assert math.isfinite(summary["edge_psnr_mean"])


def test_withheld_subset_and_bad_requests(truth):
    config = _config("bicubic")
    prepared = prepare_inputs(config, hr=truth)
    result = leave_one_key_out(config, prepared, withheld=[20, 20])
    assert [r.key_index for r in result.rows] == [20]
    with pytest.raises(InputError, match=r"frame 15: it is not an HR key; keys are at 0, 10, 20"):
        leave_one_key_out(config, prepared, withheld=[15])
    with pytest.raises(InputError, match="at least 3 HR keys .* has 2 \\(0, 40\\)"):
        withheld_keys([0, 40])
    two = _config("bicubic", keys=KeyRule(first_last=True))
    with pytest.raises(InputError, match="at least 3 HR keys"):
        leave_one_key_out(two, prepare_inputs(two, hr=truth))
    with pytest.raises(InputError, match="not an HR key"):
        keys_without(prepared.keys, 5)
    subset = keys_without(prepared.keys, 20)
    assert 20 not in subset and subset.indices.tolist() == [0, 10, 30, 40]
    np.testing.assert_array_equal(subset[30], prepared.keys[30])


def test_methods_are_built_once_through_the_cache_and_cancel_keeps_rows(truth):
    config = _config("bicubic", "flow")
    prepared = prepare_inputs(config, hr=truth)
    cache: dict = {}
    seen = []
    stop = {"now": False}

    def on_row(row, done, total):
        seen.append((row.method, row.key_index, done, total))
        stop["now"] = done == 3

    result = leave_one_key_out(
        config, prepared, method_cache=cache, on_row=on_row, cancel=lambda: stop["now"],
        checker=False,
    )  # fmt: skip
    assert seen == [("bicubic", 10, 1, 6), ("flow", 10, 2, 6), ("bicubic", 20, 3, 6)]
    assert len(result.rows) == 3 and not result.complete
    assert math.isnan(result.rows[0].lr_psnr)  # checker=False: no LR consistency
    built = dict(cache)
    assert len(built) == 2
    leave_one_key_out(config, prepared, method_cache=cache, withheld=[30])
    assert all(cache[k] is v for k, v in built.items())


def test_csv_summary_and_plot(loo, tmp_path):
    _, _, result = loo
    rows = list(csv.DictReader(io.StringIO(result.to_csv_text())))
    assert tuple(rows[0]) == LOO_COLUMNS and len(rows) == 6
    for line, row in zip(rows, result.rows, strict=True):
        assert float(line["psnr"]) == row.psnr and int(line["key_index"]) == row.key_index
    summary = {s["method"]: s for s in result.summary()}
    flow = [r.psnr for r in result.rows_of("flow")]
    assert summary["flow"]["psnr_median"] == pytest.approx(np.median(flow))
    assert summary["flow"]["keys_scored"] == 3
    assert summary["flow"]["psnr_median"] > summary["bicubic"]["psnr_median"]
    assert "flow" in result.summary_text() and "PSNR median" in result.summary_text()
    paths = result.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "loo.csv",
        "loo.png",
        "loo_summary.csv",
    ]  # fmt: skip  (no temp file left)
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert paths["loo"].read_text() == result.to_csv_text()


# --- LR consistency -----------------------------------------------------------------------


def _blob(frame, amplitude=0.3, sigma=3.0, centre=(30, 60)):
    yy, xx = np.mgrid[: frame.shape[0], : frame.shape[1]]
    bump = amplitude * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))
    return np.clip(frame + bump, 0, 1).astype(np.float32)


@pytest.mark.parametrize("lr_psnr", [None, 30.0])
def test_the_truth_is_consistent_and_an_invented_blob_is_flagged(truth, lr_psnr):
    config = _config("bicubic", lr_psnr=lr_psnr)
    checker = LrChecker.from_prepared(prepare_inputs(config, hr=truth))
    fractions = [checker.check(truth[t], t).flagged_fraction for t in range(N)]
    assert max(fractions) < 0.005  # < 1 in 200 LR pixels, no frame flagged
    c = checker.check(_blob(truth[20]), 20)
    assert c.flagged and c.flagged_fraction > 0.02
    assert c.map.shape == (16, 32) and c.flags.shape == (16, 32)
    # The flags sit on the blob (LR pixel ~ (7.5, 15)); noise may add a stray one elsewhere.
    ys, xs = np.nonzero(c.flags)
    near = (np.abs(ys - 7.5) <= 3) & (np.abs(xs - 15) <= 3)
    assert near.sum() >= 0.9 * near.size


def test_noise_estimate_follows_the_shot_noise(truth):
    config = _config("bicubic", lr_psnr=20.0)
    prepared = prepare_inputs(config, hr=truth)
    noise = LrChecker.from_prepared(prepared).noise
    level = float(bin_frames(truth[20]).mean())
    expected = math.sqrt(level / prepared.simulated.b0)  # Poisson: var = x / b0
    assert float(noise.sigma(np.array([level]))[0]) == pytest.approx(expected, rel=0.25)
    clean = estimate_lr_noise(bin_frames(truth[:4]))
    assert clean.median < 0.25 * noise.median
    with pytest.raises(ValueError, match="h, w >= 3"):
        estimate_lr_noise(np.zeros((2, 2)))


def test_lr_consistency_checks_shapes_and_takes_a_mapping(truth):
    lr = bin_frames(truth[5])
    c = lr_consistency(truth[5], 0.5 * lr + 0.1, mapping=LrMapping(2.0, -0.2), noise_sigma=0.01)
    assert c.flagged_fraction == 0 and c.aad < 1e-6
    with pytest.raises(ValueError, match="exactly 4x the LR frame"):
        lr_consistency(truth[5][:, :64], lr)


def _uint16(prepared_keys_like):
    return np.round(prepared_keys_like).astype(np.uint16)


def test_lr_units_map_through_detector_units_or_a_fit(truth):
    """Same detector units (one camera binned): the detector map; two cameras with different
    gains and offsets: the fit. Either way the truth is consistent with its LR."""
    keys = list(range(0, N, STEP))
    hr_keys = _uint16(truth[keys] * 40000 + 2000)
    lr_same = _uint16(bin_frames(truth) * 40000 + 2000)
    lr_other = _uint16(bin_frames(truth) * 9000 + 300)  # another camera's gain and offset
    config = RunConfig(keys=KeyRule(indices=tuple(keys)), methods=(MethodChoice("bicubic"),))
    for lr, source in ((lr_same, "detector"), (lr_other, "fit")):
        prepared = prepare_inputs(config, lr=lr, hr=hr_keys)
        assert prepared.lr_normalisation is not None and prepared.hr_normalisation is not None
        mapping = lr_mapping(prepared)
        assert mapping.source == source
        assert mapping.residual < 2e-3
        checker = LrChecker(prepared.lr, prepared.lr_normalisation, mapping)
        hr01 = prepared.hr_normalisation.apply(truth * 40000 + 2000)
        fractions = [checker.check(hr01[t], t).flagged_fraction for t in range(0, N, 4)]
        assert max(fractions) < 0.01
    with pytest.raises(ValueError, match="auto, detector or fit"):
        lr_mapping(prepared, "magic")


def test_consistency_table_of_a_run(truth):
    config = _config("bicubic", "flow")
    prepared = prepare_inputs(config, hr=truth)
    checker = LrChecker.from_prepared(prepared)
    table = ConsistencyTable(checker=checker)
    for event in list(run_job(config, prepared))[1:]:
        table.add(event.result.method, event.result.index, event.result.frame)
    summary = {s["method"]: s for s in table.summary()}
    assert summary["flow"]["frames"] == N and summary["flow"]["flagged_frames"] == 0
    # bicubic's binned frames are blurrier than the LR (clean here): it loses what LR shows.
    assert summary["bicubic"]["flagged_frames"] > N // 2
    rows = list(csv.DictReader(io.StringIO(table.to_csv_text())))
    assert len(rows) == 2 * N and rows[0]["method"] == "bicubic" and rows[0]["frame"] == "0"
    assert all(r.method == "bicubic" for r in table.flagged())
    invented = consistency_table([_blob(truth[t]) for t in (5, 6)], [5, 6], checker,
                                 method="blob")  # fmt: skip
    assert [r.flagged for r in invented.rows] == [True, True]
    with pytest.raises(ValueError, match="2 frames for 3 frame indices"):
        consistency_table([truth[0], truth[1]], [0, 1, 2], checker)
