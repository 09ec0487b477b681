"""core.normalise: percentile clip + min-max to [0, 1] and back to detector units."""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_xfusion.core.normalise as module
from napari_xfusion.core.normalise import Normalisation, fit_normalisation, normalise


@pytest.fixture
def detector_stack() -> np.ndarray:
    """A uint16 stack with a few hot and dead pixels the percentile clip must ignore."""
    rng = np.random.default_rng(0)
    stack = rng.integers(1000, 3001, size=(6, 40, 50), dtype=np.uint16)
    stack[0, 0, :3] = 65535
    stack[5, 10, :3] = 0
    return stack


def test_known_percentiles_of_a_ramp() -> None:
    ramp = np.arange(10001, dtype=np.float64).reshape(1, 73, 137)
    params = fit_normalisation(ramp)
    assert params.low == pytest.approx(35.0)
    assert params.high == pytest.approx(9965.0)
    assert params.dtype == "float64"
    out = params.apply(ramp)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert out.ravel()[5000] == pytest.approx((5000 - 35) / (9965 - 35))


def test_normalise_clips_outliers(detector_stack: np.ndarray) -> None:
    out, params = normalise(detector_stack)
    assert out.shape == detector_stack.shape and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert 1000 <= params.low < 1020 and 2980 < params.high <= 3000
    assert out[0, 0, 0] == 1.0 and out[5, 10, 0] == 0.0
    assert params.dtype == "uint16"


def test_round_trip_to_original_dtype(detector_stack: np.ndarray) -> None:
    out, params = normalise(detector_stack)
    back = params.invert(out)
    assert back.dtype == np.uint16
    inside = (detector_stack >= params.low) & (detector_stack <= params.high)
    np.testing.assert_array_equal(back[inside], detector_stack[inside])
    # Clipped outliers come back at the clip values.
    assert back[0, 0, 0] == round(params.high) and back[5, 10, 0] == round(params.low)


def test_round_trip_float_and_float32_detector_units() -> None:
    stack = np.random.default_rng(1).normal(1e6, 50.0, size=(3, 20, 20))
    out, params = normalise(stack, lower=0.0, upper=100.0)
    np.testing.assert_allclose(params.invert(out), stack, rtol=0, atol=1e-3)
    assert params.invert(out).dtype == np.float64
    as_float32 = params.invert(out, to_dtype=False)
    assert as_float32.dtype == np.float32


def test_invert_rounds_and_clips_to_integer_range() -> None:
    params = Normalisation(low=0.0, high=250.0, dtype="uint8")
    back = params.invert(np.array([-0.5, 0.0, 0.4999 / 250, 0.5, 1.0, 1.1]))
    np.testing.assert_array_equal(back, [0, 0, 0, 125, 250, 255])
    assert back.dtype == np.uint8
    unclipped = params.invert(np.array([-0.5, 1.1]), to_dtype=False)
    np.testing.assert_allclose(unclipped, [-125.0, 275.0])


def test_constant_stack_maps_to_zero_and_back() -> None:
    stack = np.full((4, 8, 8), 777, dtype=np.uint16)
    out, params = normalise(stack)
    assert params.low == params.high == 777.0
    assert np.all(out == 0.0) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(params.invert(out), stack)


def test_max_frames_subsamples_evenly() -> None:
    stack = np.random.default_rng(2).random((101, 6, 7))
    sampled = fit_normalisation(stack, max_frames=5)
    # Evenly spaced, first and last included: frames 0, 25, 50, 75, 100.
    assert sampled == fit_normalisation(stack[[0, 25, 50, 75, 100]])
    assert sampled != fit_normalisation(stack)
    assert fit_normalisation(stack, max_frames=200) == fit_normalisation(stack)


def test_frame_and_memmap_input(tmp_path) -> None:
    path = tmp_path / "stack.dat"
    data = np.memmap(path, dtype=np.uint16, mode="w+", shape=(5, 16, 16))
    data[:] = np.arange(5 * 16 * 16).reshape(5, 16, 16)
    data.flush()
    stack = np.memmap(path, dtype=np.uint16, mode="r", shape=(5, 16, 16))
    out, params = normalise(stack, max_frames=3)
    assert out.shape == (5, 16, 16) and out.dtype == np.float32
    frame_params = fit_normalisation(np.asarray(stack[2]))
    assert frame_params.low < frame_params.high


def test_dict_round_trip_is_json() -> None:
    params = Normalisation(low=12.5, high=4000, dtype=np.dtype(np.uint16))
    data = json.loads(json.dumps(params.to_dict()))
    assert data == {"low": 12.5, "high": 4000.0, "dtype": "uint16"}
    assert Normalisation.from_dict(data) == params


def test_from_dict_names_missing_keys() -> None:
    with pytest.raises(ValueError, match="lacks dtype, high"):
        Normalisation.from_dict({"low": 0.0})


@pytest.mark.parametrize(
    ("low", "high", "dtype", "message"),
    [
        (2.0, 1.0, "uint16", "low <= high"),
        (float("nan"), 1.0, "uint16", "finite"),
        (0.0, 1.0, "not-a-dtype", "not a NumPy dtype"),
        (0.0, 1.0, "complex64", "integer or float"),
    ],
)
def test_bad_normalisation(low: float, high: float, dtype: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Normalisation(low, high, dtype)


@pytest.mark.parametrize(
    ("stack", "kwargs", "message"),
    [
        (np.zeros(5), {}, r"\(T, H, W\) or a frame \(H, W\)"),
        (np.zeros((2, 3, 4, 5)), {}, r"got \(2, 3, 4, 5\)"),
        (np.zeros((0, 4, 4)), {}, "got"),
        (np.zeros((2, 4, 4), dtype=bool), {}, "dtype bool"),
        (np.zeros((2, 4, 4)), {"lower": 50, "upper": 50}, "lower < upper"),
        (np.zeros((2, 4, 4)), {"upper": 101}, "<= 100"),
        (np.zeros((2, 4, 4)), {"max_frames": 0}, "max_frames"),
    ],
)
def test_bad_stack(stack: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_normalisation(stack, **kwargs)


def test_non_finite_values_are_located() -> None:
    stack = np.zeros((3, 4, 5), dtype=np.float32)
    stack[2, 1, 3] = np.nan
    with pytest.raises(
        ValueError, match=r"frame 2 has 1 NaN/inf pixel\(s\), the first at pixel \(y=1, x=3\)"
    ):
        fit_normalisation(stack)
    with pytest.raises(ValueError, match="frame 2 has"):
        fit_normalisation(stack, max_frames=2)


def test_slab_processing_matches_whole(
    monkeypatch: pytest.MonkeyPatch, detector_stack: np.ndarray
) -> None:
    import napari_xfusion.core.normalise as module

    out, params = normalise(detector_stack)
    back = params.invert(out)
    monkeypatch.setattr(module, "_CHUNK_PIXELS", 3 * 40 * 50 - 1)  # slabs of 2 frames
    np.testing.assert_array_equal(params.apply(detector_stack), out)
    np.testing.assert_array_equal(params.invert(out), back)


# -- issue 13, item 11: clip values without a copy of the stack ----------------------------------


@pytest.fixture
def long_memmap(tmp_path):
    """A 2,000-frame uint16 stack on disk, memory-mapped, whose level drifts over time."""
    from napari_xfusion.core.io import read_stack, write_stack

    rng = np.random.default_rng(3)
    t = np.arange(2000, dtype=np.float64)[:, None, None]
    data = rng.normal(20000 + 8000 * np.sin(t / 300), 1500, (2000, 48, 64))
    data[:, 5, 7] = 65535  # a hot pixel, and saturated spots in some frames
    data[::97, 20:24, 30:34] = 60000
    write_stack(tmp_path / "long.tif", np.clip(data, 0, 65535).astype(np.uint16))
    stack = read_stack(tmp_path / "long.tif")
    assert isinstance(stack, np.memmap) and stack.size > module.SAMPLE_PIXELS
    return stack


def test_sampled_percentiles_are_close_to_the_exact_ones(long_memmap):
    params = fit_normalisation(long_memmap)
    exact_low, exact_high = np.percentile(np.asarray(long_memmap), [0.35, 99.65])
    span = exact_high - exact_low
    assert abs(params.low - exact_low) < 0.01 * span
    assert abs(params.high - exact_high) < 0.01 * span
    # In rank terms: the share of all pixels below the estimates is within 0.1 % of the target.
    flat = np.asarray(long_memmap).ravel()
    assert abs(np.mean(flat < params.low) * 100 - 0.35) < 0.1
    assert abs(np.mean(flat > params.high) * 100 - 0.35) < 0.1
    assert fit_normalisation(long_memmap) == params  # deterministic


def test_fit_never_holds_a_copy_of_the_stack(long_memmap, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(module, "SAMPLE_PIXELS", 1 << 16)
    tracemalloc.start()
    try:
        fit_normalisation(long_memmap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The sample (65k pixels) and a frame, not the 12 MB stack.
    assert peak < long_memmap.nbytes / 20
