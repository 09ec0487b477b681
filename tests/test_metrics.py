"""core.metrics: PSNR, AAD and SSIM (Wang et al. 2004) on [0, 1] data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from napari_xfusion.core.metrics import aad, frame_metrics, psnr, ssim


def _wang_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM written out from Wang, Bovik, Sheikh & Simoncelli (2004), eqs. (13)-(16).

    Gaussian window sigma 1.5 truncated at 3.5 sigma (11x11), population statistics, L = 1,
    averaged over the pixels whose window lies entirely inside the frame.
    """
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=1.5, truncate=3.5)

    x, y = x.astype(np.float64), y.astype(np.float64)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map[5:-5, 5:-5].mean())


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:48, 0:64]
    truth = 0.5 + 0.3 * np.sin(rows / 4.0) * np.cos(cols / 6.0)
    pred = np.clip(truth + rng.normal(0.0, 0.05, truth.shape), 0.0, 1.0)
    return pred.astype(np.float32), truth.astype(np.float32)


def test_psnr_of_a_known_error() -> None:
    truth = np.full((16, 16), 0.5)
    assert psnr(truth + 0.01, truth) == pytest.approx(40.0, abs=1e-9)
    assert psnr(truth - 0.1, truth) == pytest.approx(20.0, abs=1e-9)
    # Half the pixels off by 0.1: MSE 0.005.
    half = truth.copy()
    half[:8] += 0.1
    assert psnr(half, truth) == pytest.approx(10 * math.log10(1 / 0.005))


def test_psnr_identical_is_inf() -> None:
    frame = np.random.default_rng(1).random((8, 8))
    assert psnr(frame, frame.copy()) == math.inf


def test_aad_of_a_known_error() -> None:
    truth = np.zeros((4, 5), dtype=np.float32)
    pred = truth.copy()
    pred[0] = 0.25
    pred[1] = -0.25
    assert aad(pred, truth) == pytest.approx(0.125)  # 10 of 20 pixels off by 0.25
    assert aad(truth, truth) == 0.0


def test_ssim_equals_wang_2004(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, truth = pair
    value = ssim(pred, truth)
    assert value == pytest.approx(_wang_ssim(pred, truth), abs=1e-7)
    assert 0.0 < value < 1.0


def test_ssim_known_values(pair: tuple[np.ndarray, np.ndarray]) -> None:
    _, truth = pair
    assert ssim(truth, truth) == pytest.approx(1.0)
    # A constant offset changes only luminance: the l-term of a flat 0.5 vs 0.6 image.
    flat = np.full((20, 20), 0.5)
    expected = (2 * 0.5 * 0.6 + 1e-4) / (0.5**2 + 0.6**2 + 1e-4)
    assert ssim(flat + 0.1, flat) == pytest.approx(expected)


def test_stacks_pool_pixels_and_average_ssim(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, truth = pair
    pred_stack = np.stack([pred, truth])
    truth_stack = np.stack([truth, truth])
    assert ssim(pred_stack, truth_stack) == pytest.approx((ssim(pred, truth) + 1.0) / 2)
    assert aad(pred_stack, truth_stack) == pytest.approx(aad(pred, truth) / 2)
    assert psnr(pred_stack, truth_stack) == pytest.approx(psnr(pred, truth) + 10 * math.log10(2))


def test_frame_metrics(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, truth = pair
    result = frame_metrics(pred, truth)
    assert set(result) == {"psnr", "aad", "ssim"}
    assert all(isinstance(v, float) for v in result.values())
    assert result["psnr"] == psnr(pred, truth)
    assert result["aad"] == aad(pred, truth)
    assert result["ssim"] == ssim(pred, truth)


@pytest.mark.parametrize("metric", [psnr, aad, ssim])
def test_shape_mismatch(metric) -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(12, 12\) and \(12, 13\)"):
        metric(np.zeros((12, 12)), np.zeros((12, 13)))


@pytest.mark.parametrize("metric", [psnr, aad, ssim])
def test_empty(metric) -> None:
    with pytest.raises(ValueError, match="empty"):
        metric(np.zeros((0, 12)), np.zeros((0, 12)))


@pytest.mark.parametrize("shape", [(10, 40), (2, 40, 8), (40,)])
def test_ssim_needs_a_full_window(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros(shape), np.zeros(shape))
