"""The one input policy: keys, normalisation, checks; the same from paths and from arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion import engine
from napari_xfusion.app.config import KeyRule, RunConfig
from napari_xfusion.app.inputs import LR_SAMPLE_FRAMES, InputError, prepare_inputs
from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.io import read_stack, write_stack
from napari_xfusion.core.normalise import fit_normalisation
from napari_xfusion.core.sample import simulate_sequence

T = 12


@pytest.fixture(scope="module")
def truth():
    return simulate_sequence(T, (32, 64), seed=2)


def _counts(x):
    return (200 + 3000 * x).astype(np.uint16)


def test_input_error_is_the_engines():
    assert issubclass(InputError, engine.InputError) and issubclass(InputError, ValueError)


def test_full_rate_uint16_hr_normalised_on_its_key_rows(truth):
    hr = _counts(truth)
    hr[1] = 65535  # a hot frame that is no key must not move the clip values
    lr = bin_frames(truth)
    prepared = prepare_inputs(RunConfig(keys=KeyRule(step=4)), lr=lr, hr=hr)
    expected = fit_normalisation(hr[[0, 4, 8]])
    assert prepared.hr_normalisation == expected
    assert prepared.lr_normalisation is None  # float LR in [0, 1]: as is
    assert prepared.keys.indices.tolist() == [0, 4, 8]
    # full-rate HR is the truth, in the HR keys' units
    assert prepared.truth is hr and prepared.truth_normalisation == expected
    np.testing.assert_allclose(prepared.truth_frame(4), expected.apply(hr[4]))
    assert any(n.startswith("HR normalised to [0, 1] (HR layer)") for n in prepared.notes)


def test_sparse_hr_without_metadata_takes_key_i_at_i_times_step(truth):
    lr, keys = bin_frames(truth), truth[[0, 5, 10]]
    prepared = prepare_inputs(RunConfig(keys=KeyRule(step=5)), lr=lr, hr=keys)
    assert prepared.keys.indices.tolist() == [0, 5, 10] and prepared.truth is None
    np.testing.assert_array_equal(prepared.keys[5], keys[1])
    assert any("taken at LR times 0, 5, 10" in n for n in prepared.notes)
    with pytest.raises(InputError, match=r"HR layer: 3 HR key frames with key step 6 .* at most 5"):
        prepare_inputs(RunConfig(keys=KeyRule(step=6)), lr=lr, hr=keys)
    with pytest.raises(InputError, match=r"disagree with the key rule"):
        prepare_inputs(
            RunConfig(keys=KeyRule(step=4)), lr=lr, hr=keys, hr_metadata={"key_indices": [0, 5, 10]}
        )
    with pytest.raises(InputError, match="HR layer: no key_indices in its metadata"):
        prepare_inputs(RunConfig(), lr=lr, hr=keys)
    meta = prepare_inputs(RunConfig(), lr=lr, hr=keys, hr_metadata={"key_indices": [0, 5, 10]})
    assert meta.keys.indices.tolist() == [0, 5, 10]
    with pytest.raises(InputError, match="'first and last' need 2 HR frames"):
        prepare_inputs(RunConfig(keys=KeyRule(first_last=True)), lr=lr, hr=keys)


def test_files_and_arrays_give_the_same_inputs(truth, tmp_path):
    """The CLI reads paths, the GUI passes layer arrays: one policy, the same result."""
    lr, hr = _counts(bin_frames(truth)), _counts(truth[[0, 6, 11]])
    write_stack(tmp_path / "lr.tif", lr, {"separation": 2})
    write_stack(tmp_path / "hr.tif", hr, {"key_indices": [0, 6, 11]})
    by_path = prepare_inputs(RunConfig(lr=str(tmp_path / "lr.tif"), hr=str(tmp_path / "hr.tif")))
    by_array = prepare_inputs(
        RunConfig(),
        lr=read_stack(tmp_path / "lr.tif"),
        hr=hr,
        lr_metadata={"separation": 2},
        hr_metadata={"key_indices": [0, 6, 11]},
    )
    for a, b in ((by_path, by_array),):
        assert a.lr_normalisation == b.lr_normalisation is not None
        assert a.hr_normalisation == b.hr_normalisation is not None
        assert a.keys.indices.tolist() == b.keys.indices.tolist() == [0, 6, 11]
        assert a.separation == b.separation == 2
        np.testing.assert_array_equal(a.keys[6], b.keys[6])
    assert isinstance(by_path.lr, np.memmap)  # lazy: never read whole
    assert str(tmp_path / "hr.tif") in by_path.sources["hr"]


def test_lr_normalisation_uses_a_bounded_sample(tmp_path):
    rng = np.random.default_rng(0)
    lr = rng.integers(100, 4000, (3 * LR_SAMPLE_FRAMES, 4, 8)).astype(np.uint16)
    hr = rng.random((2, 16, 32), dtype=np.float32)
    prepared = prepare_inputs(RunConfig(keys=KeyRule(first_last=True)), lr=lr, hr=hr)
    rows = np.unique(np.linspace(0, len(lr) - 1, LR_SAMPLE_FRAMES).round()).astype(int)
    assert prepared.lr_normalisation == fit_normalisation(lr[rows])
    assert any(f"fitted on {LR_SAMPLE_FRAMES} frame(s)" in n for n in prepared.notes)


def test_truth_units_rule(truth):
    lr = bin_frames(truth)
    # float truth in [0, 1] with raw HR keys: the truth is used as is
    p = prepare_inputs(RunConfig(keys=KeyRule(step=4)), lr=lr, hr=_counts(truth[[0, 4, 8]]),
                       truth=truth)  # fmt: skip
    assert p.truth_normalisation is None
    # raw truth with raw keys: the keys' clip values, so fused frames and truth share units
    p = prepare_inputs(RunConfig(keys=KeyRule(step=4)), lr=lr, hr=_counts(truth[[0, 4, 8]]),
                       truth=_counts(truth))  # fmt: skip
    assert p.truth_normalisation == p.hr_normalisation
    # raw truth with float keys: its own clip values
    p = prepare_inputs(RunConfig(keys=KeyRule(step=4)), lr=lr, hr=truth[[0, 4, 8]],
                       truth=_counts(truth))  # fmt: skip
    assert p.truth_normalisation is not None and p.truth_normalisation.dtype == "uint16"


def test_checks_name_the_input(truth, tmp_path):
    lr, keys = bin_frames(truth), truth[[0, 4, 8]]
    config = RunConfig(keys=KeyRule(step=4))
    with pytest.raises(InputError, match=r"HR layer: HR keys are 32x64 but LR frames are 8x15"):
        prepare_inputs(config, lr=lr[:, :, :15], hr=keys)
    with pytest.raises(InputError, match=r"frame 12 is outside the LR sequence LR layer"):
        prepare_inputs(config.replace(frames=(10, 20)), lr=lr, hr=keys)
    with pytest.raises(InputError, match=r"truth layer: shape \(11, 32, 64\); expected 12 frames"):
        prepare_inputs(config, lr=lr, hr=keys, truth=truth[:11])
    with pytest.raises(InputError, match=r"LR layer: expected a \(T, H, W\) time series"):
        prepare_inputs(config, lr=lr[0], hr=keys)
    with pytest.raises(InputError, match="no LR input"):
        prepare_inputs(config, hr=keys)
    with pytest.raises(InputError, match=r"HR key index 12 is out of range"):
        prepare_inputs(RunConfig(keys=KeyRule(indices=(0, 4, 12))), lr=lr, hr=keys)
    write_stack(tmp_path / "flat.tif", np.full((T, 32, 64), 7, np.uint16))
    with pytest.raises(InputError, match="flat.tif: constant values"):
        prepare_inputs(RunConfig(hr=str(tmp_path / "flat.tif"), keys=KeyRule(step=4)), lr=lr)
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        prepare_inputs(RunConfig(lr=str(tmp_path / "missing.tif"), hr=str(tmp_path / "flat.tif")))


def test_frames_are_half_open(truth):
    lr, keys = bin_frames(truth), truth[[0, 4, 8]]
    p = prepare_inputs(RunConfig(keys=KeyRule(step=4), frames=(3, 7)), lr=lr, hr=keys)
    assert p.targets.tolist() == [3, 4, 5, 6]


def test_simulation_bins_the_normalised_hr_and_adds_noise(truth):
    hr = _counts(truth)
    config = RunConfig(simulate=True, keys=KeyRule(step=4), lr_psnr=35.0, seed=1)
    p = prepare_inputs(config, hr=hr)
    assert p.simulated is not None and p.lr is p.simulated.lr
    assert p.lr.shape == (T, 8, 16) and p.lr.dtype == np.float32
    assert abs(p.simulated.lr_psnr - 35.0) < 0.5 and p.noise["model"] == "poisson"
    clean = bin_frames(p.hr_normalisation.apply(hr))
    assert 0 < np.abs(p.lr - clean).mean() < 0.05
    assert p.truth is hr and p.truth_normalisation == p.hr_normalisation
    again = prepare_inputs(config, hr=hr)
    np.testing.assert_array_equal(again.lr, p.lr)  # seeded
    with pytest.raises(InputError, match="multiples of 4"):
        prepare_inputs(config, hr=hr[:, :30])
