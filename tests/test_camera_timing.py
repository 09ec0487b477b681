"""Sub-frame time offset of HR keys from the images (core.cameras.refine_time_offset)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion.core.cameras import TimingError, refine_time_offset
from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.sample import simulate_sequence

FINE = 10  # simulated time steps per LR frame
N_LR = 41
KEYS = np.arange(4, N_LR - 4, 4)  # 9 keys


@pytest.fixture(scope="module")
def scene():
    """41 LR frames (32 x 64) of a scene simulated at 1/10 of an LR frame, binned 4x; the
    finer frames give HR keys at known fractional times."""
    fine = simulate_sequence(n_frames=N_LR * FINE, shape=(128, 256), seed=3, speed=1 / FINE,
                             noise=False, n_pores=3, n_spatter=12)  # fmt: skip
    fine_lr = bin_frames(fine)
    return fine_lr[::FINE], fine_lr


def _keys(fine_lr, offset_frames):
    return fine_lr[KEYS * FINE + round(offset_frames * FINE)]


@pytest.mark.parametrize("offset", [0.3, -0.4, 0.0, 0.5])
def test_offset_recovered_clean(scene, offset):
    lr, fine_lr = scene
    result = refine_time_offset(lr, _keys(fine_lr, offset), KEYS)
    assert result.offset_frames == pytest.approx(offset, abs=0.1)
    assert result.per_key_offset_frames.shape == (KEYS.size,)
    assert result.confidence > 0.5


@pytest.mark.parametrize("kernel", ["bspline", "cubic", "linear"])
def test_offset_recovered_from_time_interpolated_keys(scene, kernel):
    lr, _ = scene
    # Blends of two LR frames, seen by a camera with another gain and black level.
    keys = 0.5 * (0.7 * lr[KEYS] + 0.3 * lr[KEYS + 1]) + 0.2
    result = refine_time_offset(lr, keys, KEYS, kernel=kernel)
    # Linear interpolation is the very model of such keys: exact.
    tol = 0.01 if kernel == "linear" else 0.05
    assert result.offset_frames == pytest.approx(0.3, abs=tol)
    assert np.allclose(result.per_key_offset_frames, 0.3, atol=2 * tol)


@pytest.mark.parametrize("psnr_db", [20.0, 25.0, 30.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_offset_recovered_with_lr_shot_noise(scene, psnr_db, seed):
    lr_clean, fine_lr = scene
    lr = add_shot_noise(lr_clean, solve_b0(lr_clean, psnr_db), seed)
    result = refine_time_offset(lr, _keys(fine_lr, 0.3), KEYS)
    assert result.offset_frames == pytest.approx(0.3, abs=0.1)


def test_gain_and_offset_between_cameras_do_not_matter(scene):
    lr, fine_lr = scene
    keys = 0.6 * _keys(fine_lr, -0.4) + 0.25
    result = refine_time_offset(lr, keys, KEYS)
    assert result.offset_frames == pytest.approx(-0.4, abs=0.1)


def test_offset_beyond_the_search_range_is_flagged(scene):
    lr, fine_lr = scene
    result = refine_time_offset(lr, _keys(fine_lr, 1.5), KEYS, search_frames=1.0)
    assert result.at_search_edge.all()
    assert result.confidence == 0.0
    assert "edge" in result.report()


def test_report_and_seconds(scene):
    lr, fine_lr = scene
    result = refine_time_offset(lr, _keys(fine_lr, 0.3), KEYS)
    assert result.offset_s(1e-6) == pytest.approx(result.offset_frames * 1e-6)
    text = result.report(lr_interval_s=1e-6)
    assert "LR frames" in text and " ns" in text and "per key" in text


def test_bad_inputs(scene):
    lr, fine_lr = scene
    keys = _keys(fine_lr, 0.0)
    with pytest.raises(ValueError, match="on the LR grid"):
        refine_time_offset(lr, keys[:, :-1], KEYS)
    with pytest.raises(ValueError, match="9 keys but 2 LR indices"):
        refine_time_offset(lr, keys, KEYS[:2])
    with pytest.raises(ValueError, match="outside the 41 LR frames"):
        refine_time_offset(lr, keys, KEYS + 40)
    with pytest.raises(ValueError, match="kernel must be"):
        refine_time_offset(lr, keys, KEYS, kernel="sinc")
    with pytest.raises(TimingError, match=">= 2 LR frames"):
        refine_time_offset(lr[:1], keys[:1], [0])
