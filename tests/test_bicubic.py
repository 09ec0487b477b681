"""The ``bicubic`` method: x4 bicubic of the centre LR frame, whatever the other inputs."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.core.windows import key_indices, window
from napari_xfusion.methods import SCALE, Reconstruction, WindowInputs, get_reconstructor


@pytest.fixture
def inputs() -> WindowInputs:
    rng = np.random.default_rng(0)
    lr_sequence = rng.random((12, 6, 10), dtype=np.float32)
    win = window(5, n_frames=12, separation=2, keys=key_indices(12, key_step=4))
    hr_keys = rng.random((2, SCALE * 6, SCALE * 10), dtype=np.float32)
    return WindowInputs(
        window=win,
        lr=lr_sequence[list(win.lr_indices)],
        hr_keys=hr_keys,
        lr_at_keys=lr_sequence[list(win.keys)],
    )


def test_reconstructs_the_upscaled_centre_frame(inputs: WindowInputs) -> None:
    method = get_reconstructor("bicubic")
    result = method.reconstruct(inputs)
    assert isinstance(result, Reconstruction)
    assert result.frame.dtype == np.float32
    assert result.frame.shape == (SCALE * 6, SCALE * 10)
    np.testing.assert_array_equal(result.frame, upscale_bicubic(inputs.lr[1], SCALE))
    assert result.attention is None and result.variance is None


def test_ignores_neighbours_and_keys(inputs: WindowInputs) -> None:
    method = get_reconstructor("bicubic")
    expected = method.reconstruct(inputs).frame
    scrambled = WindowInputs(
        window=inputs.window,
        lr=np.stack([np.zeros_like(inputs.lr[0]), inputs.lr[1], np.ones_like(inputs.lr[2])]),
        hr_keys=np.zeros_like(inputs.hr_keys),
        lr_at_keys=np.ones_like(inputs.lr_at_keys),
    )
    np.testing.assert_array_equal(method.reconstruct(scrambled).frame, expected)


def test_stream_equals_single_frames(inputs: WindowInputs) -> None:
    method = get_reconstructor("bicubic")
    streamed = list(method.reconstruct_stream([inputs, inputs]))
    assert len(streamed) == 2
    for result in streamed:
        np.testing.assert_array_equal(result.frame, method.reconstruct(inputs).frame)
    assert method.describe()["method"] == "bicubic"
    assert method.uses_hr_keys is False


def test_matches_torch_bicubic(inputs: WindowInputs) -> None:
    torch = pytest.importorskip("torch")
    centre = torch.from_numpy(inputs.lr[1].copy())[None, None]
    expected = torch.nn.functional.interpolate(
        centre, scale_factor=SCALE, mode="bicubic", align_corners=False
    )[0, 0].numpy()
    frame = get_reconstructor("bicubic").reconstruct(inputs).frame
    np.testing.assert_allclose(frame, expected, atol=1e-6)
