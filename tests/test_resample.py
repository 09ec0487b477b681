"""core.resample: bicubic up-sampling must equal PyTorch's ``bicubic`` mode."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion.core.resample import upscale_bicubic

torch = pytest.importorskip("torch")


def _torch_bicubic(frames: np.ndarray, factor: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    lead = x.shape[:-2]
    x = x.reshape(1, -1, *x.shape[-2:])
    y = torch.nn.functional.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)
    return y.reshape(*lead, *y.shape[-2:]).numpy()


@pytest.mark.parametrize("shape", [(13, 21), (1, 1), (1, 7), (2, 3), (4, 5, 6), (2, 3, 5, 4)])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_equals_torch_bicubic(shape: tuple[int, ...], factor: int) -> None:
    frames = np.random.default_rng(1).random(shape, dtype=np.float32)
    result = upscale_bicubic(frames, factor)
    expected = _torch_bicubic(frames, factor)
    assert result.dtype == np.float32
    assert result.shape == (*shape[:-2], factor * shape[-2], factor * shape[-1])
    # PyTorch computes each source position in float32 from a rounded 1/factor, so for factors
    # that are not powers of two its phases wobble by an ulp; ours are exact.
    atol = 1e-6 if factor & (factor - 1) == 0 else 5e-6
    np.testing.assert_allclose(result, expected, rtol=0, atol=atol)


def test_sharp_edges_overshoot_like_torch() -> None:
    # A step has the kernel's negative lobes visible: the result must not be clipped.
    frames = np.zeros((8, 8), dtype=np.float32)
    frames[:, 4:] = 1.0
    result = upscale_bicubic(frames)
    np.testing.assert_allclose(result, _torch_bicubic(frames, 4), atol=1e-6)
    assert result.min() < 0.0 and result.max() > 1.0


def test_constant_and_integer_input() -> None:
    frames = np.full((2, 5, 6), 1234, dtype=np.uint16)
    result = upscale_bicubic(frames)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, 1234.0, rtol=1e-6)


def test_factor_one_is_a_float32_copy() -> None:
    frames = np.arange(12, dtype=np.float64).reshape(3, 4)
    result = upscale_bicubic(frames, factor=1)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, frames)


def test_non_contiguous_input() -> None:
    frames = np.random.default_rng(2).random((10, 12), dtype=np.float32)[::2, ::-1]
    np.testing.assert_allclose(upscale_bicubic(frames), _torch_bicubic(frames, 4), atol=1e-6)


@pytest.mark.parametrize(
    ("frames", "factor", "error", "message"),
    [
        (np.zeros(5), 4, ValueError, r"\(\.\.\., h, w\)"),
        (np.zeros((0, 4)), 4, ValueError, "empty"),
        (np.zeros((4, 4)), 0, ValueError, "integer >= 1"),
        (np.zeros((4, 4)), 2.5, ValueError, "integer >= 1"),
        (np.zeros((4, 4), dtype=complex), 4, TypeError, "real-valued"),
    ],
)
def test_bad_input(frames: np.ndarray, factor: float, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        upscale_bicubic(frames, factor)
