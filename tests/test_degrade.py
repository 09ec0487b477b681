"""core.degrade: binning, shot noise and the b0 solver."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_xfusion.core.degrade import add_shot_noise, bin_frames, lr_psnr_for_b0, solve_b0


def test_bin_ramp_gives_block_centres() -> None:
    # A linear ramp's block mean is its value at the block centre.
    rows, cols = np.mgrid[0:8, 0:12].astype(np.float64)
    ramp = 3.0 * rows + 0.5 * cols
    binned = bin_frames(ramp)
    centre_rows, centre_cols = np.mgrid[0:2, 0:3] * 4 + 1.5
    assert binned.dtype == np.float32
    assert binned.shape == (2, 3)
    np.testing.assert_allclose(binned, 3.0 * centre_rows + 0.5 * centre_cols, rtol=1e-6)


def test_bin_leading_dims_and_integer_input() -> None:
    frames = np.arange(2 * 3 * 4 * 8, dtype=np.uint16).reshape(2, 3, 4, 8)
    binned = bin_frames(frames, factor=4)
    assert binned.shape == (2, 3, 1, 2)
    assert binned.dtype == np.float32
    np.testing.assert_allclose(binned[1, 2, 0, 1], frames[1, 2, :, 4:].mean())


def test_bin_factor_two_known_values() -> None:
    frames = np.array([[0, 2, 4, 4], [2, 4, 8, 0]], dtype=np.float32)
    np.testing.assert_array_equal(bin_frames(frames, 2), [[2.0, 4.0]])


def test_bin_keeps_the_mean_of_the_stack() -> None:
    frames = np.random.default_rng(0).random((3, 16, 20), dtype=np.float32)
    assert bin_frames(frames).mean() == pytest.approx(frames.mean(), rel=1e-6)


def test_bin_not_a_multiple_names_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(2, 10, 12\).*2 rows and 0 columns"):
        bin_frames(np.zeros((2, 10, 12)))


def test_bin_crop_warns_how_many() -> None:
    frames = np.ones((2, 10, 13), dtype=np.float32)
    with pytest.warns(UserWarning, match="cropped 2 bottom rows and 1 right columns"):
        binned = bin_frames(frames, crop=True)
    assert binned.shape == (2, 2, 3)
    np.testing.assert_array_equal(binned, 1.0)


def test_bin_exact_multiple_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bin_frames(np.zeros((8, 8)), crop=True)


@pytest.mark.parametrize(
    ("frames", "factor", "message"),
    [
        (np.zeros(8), 4, r"\(\.\.\., H, W\)"),
        (np.zeros((8, 8)), 0, "integer >= 1"),
        (np.zeros((8, 8)), 1.5, "integer >= 1"),
    ],
)
def test_bin_bad_input(frames: np.ndarray, factor: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bin_frames(frames, factor)


def test_bin_crop_to_nothing_is_an_error() -> None:
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no full 4x4 block"):
        bin_frames(np.zeros((3, 8)), crop=True)


def test_shot_noise_statistics() -> None:
    b0 = 1000.0
    clean = np.full((200, 200), 0.3, dtype=np.float32)
    noisy = add_shot_noise(clean, b0, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    # Counts are integers, so every value is a multiple of 1 / b0.
    np.testing.assert_allclose(noisy * b0, np.round(noisy * b0), atol=1e-3)
    assert noisy.mean() == pytest.approx(0.3, abs=0.002)
    assert noisy.var() == pytest.approx(0.3 / b0, rel=0.05)


def test_shot_noise_clips_and_is_seeded() -> None:
    clean = np.linspace(-0.2, 1.0, 1000).reshape(10, 100)
    noisy = add_shot_noise(clean, 5.0, 7)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert noisy.max() == 1.0  # bright pixels overshoot and are clipped
    np.testing.assert_array_equal(noisy[clean <= 0], 0.0)  # no photons, no noise
    np.testing.assert_array_equal(noisy, add_shot_noise(clean, 5.0, np.random.default_rng(7)))


@pytest.mark.parametrize("b0", [0.0, -1.0, float("nan"), float("inf")])
def test_shot_noise_bad_b0(b0: float) -> None:
    with pytest.raises(ValueError, match="b0 must be a finite number > 0"):
        add_shot_noise(np.zeros((2, 2)), b0, 0)


def test_lr_psnr_grows_with_b0() -> None:
    clean = np.random.default_rng(1).uniform(0.2, 0.8, (32, 32))
    values = [lr_psnr_for_b0(clean, b0) for b0 in (10.0, 1e3, 1e5)]
    assert values == sorted(values)
    # Noise variance I / b0 averaged over the image: PSNR ~ 10 log10(b0 / mean(I)).
    assert values[1] == pytest.approx(10 * np.log10(1e3 / clean.mean()), abs=0.3)


@pytest.fixture(scope="module")
def clean_lr() -> np.ndarray:
    rows, cols = np.mgrid[0:24, 0:40]
    base = 0.5 + 0.4 * np.sin(rows / 5.0) * np.cos(cols / 7.0)
    return np.stack([np.roll(base, t, axis=1) for t in range(3)]).astype(np.float32)


@pytest.mark.parametrize("target_db", [20.0, 30.0, 40.0, 50.0, 60.0])
def test_solve_b0_hits_target(clean_lr: np.ndarray, target_db: float) -> None:
    b0 = solve_b0(clean_lr, target_db, seed=3)
    assert b0 > 0
    assert lr_psnr_for_b0(clean_lr, b0, seed=3) == pytest.approx(target_db, abs=0.5)
    # A different noise draw at the same b0 lands near the target too.
    assert lr_psnr_for_b0(clean_lr, b0, seed=4) == pytest.approx(target_db, abs=0.5)


def test_solve_b0_subsamples_long_stacks(clean_lr: np.ndarray) -> None:
    stack = np.concatenate([clean_lr] * 20)  # 60 frames
    b0 = solve_b0(stack, 35.0, max_frames=5)
    assert lr_psnr_for_b0(stack, b0) == pytest.approx(35.0, abs=0.5)


@pytest.mark.parametrize("target_db", [19.9, 60.5, float("nan")])
def test_solve_b0_target_out_of_range(clean_lr: np.ndarray, target_db: float) -> None:
    with pytest.raises(ValueError, match="between 20 and 60 dB"):
        solve_b0(clean_lr, target_db)


def test_solve_b0_unreachable_target() -> None:
    with pytest.raises(ValueError, match="cannot reach an LR PSNR of 30 dB"):
        solve_b0(np.zeros((8, 8)), 30.0)


def test_solve_b0_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"\(h, w\) or \(T, h, w\)"):
        solve_b0(np.zeros(8), 30.0)
