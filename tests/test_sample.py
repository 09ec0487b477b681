"""Tests of the simulated x-ray sample (small frames: the whole module runs in seconds)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion.core.sample import SampleState, simulate_sequence

SMALL = {"n_frames": 8, "shape": (32, 64)}


def test_shape_dtype_and_range():
    frames = simulate_sequence(**SMALL, seed=1)
    assert frames.shape == (8, 32, 64)
    assert frames.dtype == np.float32
    assert np.isfinite(frames).all()
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    # The stretch uses most of [0, 1], not a sliver of it.
    assert np.percentile(frames, 99) - np.percentile(frames, 1) > 0.5


def test_same_seed_same_sequence_and_different_seeds_differ():
    a = simulate_sequence(**SMALL, seed=3)
    b = simulate_sequence(**SMALL, seed=3)
    c = simulate_sequence(**SMALL, seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


def test_noise_changes_pixels_not_the_scene():
    clean = simulate_sequence(**SMALL, seed=2, noise=False)
    noisy = simulate_sequence(**SMALL, seed=2, noise=True)
    difference = noisy - clean
    assert 0.001 < np.abs(difference).mean() < 0.1
    # Zero-mean noise: averaging over the stack leaves the scene.
    assert abs(float(difference.mean())) < 0.01


@pytest.fixture(scope="module")
def sequence_with_state() -> tuple[np.ndarray, SampleState]:
    """A noise-free sequence around the keyhole, with its ground truth."""
    return simulate_sequence(n_frames=24, shape=(128, 192), seed=0, noise=False, return_state=True)


def test_frames_between_keys_differ_from_the_keys(sequence_with_state):
    clean, _ = sequence_with_state
    noisy = simulate_sequence(n_frames=24, shape=(128, 192), seed=0, noise=True)
    noise = noisy[0] - clean[0]
    motion = np.abs(clean[10] - clean[0])
    # Over the frame, ten frames of motion change more than the shot noise does...
    assert motion.mean() > 1.5 * np.abs(noise).mean(), (motion.mean(), np.abs(noise).mean())
    # ...and a good part of the frame changes by more than three noise sigmas.
    assert (motion > 3 * noise.std()).mean() > 0.05


def test_keyhole_moves_along_x_and_fluctuates(sequence_with_state):
    _, state = sequence_with_state
    assert np.all(np.diff(state.keyhole_x) > 0)
    assert state.keyhole_depth.std() > 0.02 * state.keyhole_depth.mean()
    assert np.all(state.keyhole_depth > 0)


def test_spatter_flies_above_the_surface_some_faster_than_an_lr_pixel(sequence_with_state):
    frames, state = sequence_with_state
    visible = state.spatter_visible(frames.shape[1:])
    assert visible.any(), "no spatter particle inside the frame"
    rows = state.spatter_yx[..., 0][visible]
    assert np.all(rows < state.surface_row)
    speed = state.spatter_speed()
    in_view = speed[visible[:-1] & visible[1:]]
    assert np.any(in_view > 4.0)  # faster than one LR pixel (4 HR pixels) per frame, in view
    assert np.nanmin(speed) > 0.5  # every particle really moves
    # A particle is dark: the pixel under its centre is darker than that pixel usually is.
    t, n = np.argwhere(visible & (state.spatter_radius[None, :] >= 4))[0]
    y, x = np.round(state.spatter_yx[t, n]).astype(int)
    assert frames[t, y, x] < np.median(frames[:, y, x]) - 0.05


def test_pores_form_at_the_keyhole_tip_and_get_trapped():
    _, state = simulate_sequence(
        n_frames=40, shape=(128, 256), seed=5, n_pores=6, noise=False, return_state=True
    )
    born = ~np.isnan(state.pore_yx[..., 0])
    assert born.any()
    assert np.all(state.pore_yx[..., 0][born] > state.surface_row)  # inside the metal
    # A pore born during the sequence appears near the keyhole tip: deep, just behind the mouth.
    new = np.flatnonzero(~born[0] & born[-1])
    assert new.size > 0
    for p in new:
        t = int(np.argmax(born[:, p]))
        y, x = state.pore_yx[t, p]
        depth_below_surface = y - state.surface_row
        assert 0.4 * state.keyhole_depth.max() < depth_below_surface
        assert state.keyhole_x[t] - state.keyhole_depth.max() < x < state.keyhole_x[t] + 5
    trapped = state.pore_trapped
    assert trapped.any()
    # A trapped pore no longer moves.
    t, p = np.argwhere(trapped[:-1])[0]
    np.testing.assert_array_equal(state.pore_yx[t, p], state.pore_yx[-1, p])


def test_speed_scales_the_motion():
    _, slow = simulate_sequence(**SMALL, seed=0, speed=0.5, return_state=True)
    _, fast = simulate_sequence(**SMALL, seed=0, speed=2.0, return_state=True)
    assert np.nanmedian(fast.spatter_speed()) == pytest.approx(
        4 * np.nanmedian(slow.spatter_speed()), rel=0.05
    )
    assert np.diff(fast.keyhole_x).mean() == pytest.approx(4 * np.diff(slow.keyhole_x).mean())


def test_flat_field_is_static(sequence_with_state):
    _, state = sequence_with_state
    assert state.flat_field.shape == (128, 192)
    assert state.flat_field.std() > 0.005


@pytest.mark.parametrize("shape", [(9, 11), (17, 33), (31, 8)])
def test_tiny_odd_sizes(shape):
    frames = simulate_sequence(n_frames=3, shape=shape, seed=7)
    assert frames.shape == (3, *shape)
    assert np.isfinite(frames).all()


def test_no_pores_no_spatter():
    frames, state = simulate_sequence(**SMALL, n_pores=0, n_spatter=0, return_state=True)
    assert frames.shape == (8, 32, 64)
    assert state.pore_yx.shape == (8, 0, 2) and state.spatter_yx.shape == (8, 0, 2)


def test_single_frame():
    assert simulate_sequence(n_frames=1, shape=(16, 16)).shape == (1, 16, 16)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_frames": 0}, "n_frames"),
        ({"shape": (4, 64)}, "shape"),
        ({"shape": (32,)}, "shape"),
        ({"speed": 0.0}, "speed"),
        ({"photons": -1.0}, "photons"),
        ({"pixel_size_um": float("nan")}, "pixel_size_um"),
        ({"n_pores": -1}, "n_pores"),
        ({"n_spatter": 2.5}, "n_spatter"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_sequence(**{**SMALL, **kwargs})
