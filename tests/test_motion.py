"""Real-motion sequences: each motion does what it claims, at tiny sizes, offline."""

from __future__ import annotations

import hashlib
import math
import socket

import numpy as np
import pytest
from skimage.registration import phase_cross_correlation
from skimage.transform import rotate, warp

from napari_xfusion.core import motion
from napari_xfusion.core.motion import CameraMotion, Layer


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Every still must load without the network (pooch downloads are not available)."""

    def refuse(*args, **kwargs):
        raise AssertionError("core.motion tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _shift(moved: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Content displacement (dy, dx) from ``reference`` to ``moved``, sub-pixel."""
    shift, _, _ = phase_cross_correlation(moved, reference, upsample_factor=100)
    return np.asarray(shift)


@pytest.fixture(scope="module")
def still() -> np.ndarray:
    return np.asarray(motion.load_still("motorcycle_left"))


def test_training_and_validation_stills_are_disjoint_by_name_and_content():
    train, val = motion.training_stills(), motion.validation_stills()
    assert len(val) >= 4 and len(train) >= 10
    assert not set(train) & set(val)

    def digest(name: str) -> str:
        return hashlib.sha256(np.ascontiguousarray(motion.load_still(name)).tobytes()).hexdigest()

    # cat and chelsea are one photograph: duplicates may exist inside a side, never across.
    assert not {digest(n) for n in train} & {digest(n) for n in val}


@pytest.mark.parametrize("name", motion.validation_stills() + ("camera", "retina"))
def test_stills_are_grey_unit_float32_and_read_only(name):
    img = motion.load_still(name)
    assert img.ndim == 2 and img.dtype == np.float32 and min(img.shape) >= 200
    assert img.min() == 0.0 and img.max() == 1.0
    with pytest.raises(ValueError):
        img[0, 0] = 0.5


def test_unknown_still_is_named():
    with pytest.raises(ValueError, match="unknown still 'nope'"):
        motion.load_still("nope")


@pytest.mark.parametrize("velocity", [(1.3, 2.7), (-0.4, 12.5), (0.0, 0.0)])
def test_pan_moves_content_by_its_velocity(still, velocity):
    frames = motion.render_camera(still, (96, 192), 3, CameraMotion(velocity=velocity))
    for t in (1, 2):
        np.testing.assert_allclose(
            _shift(frames[t], frames[t - 1]), velocity, atol=0.2, err_msg=f"frame {t}"
        )


def test_acceleration_ramps_the_speed(still):
    frames = motion.render_camera(
        still, (96, 192), 5, CameraMotion(velocity=(0.0, 1.0), acceleration=(0.0, 2.0))
    )
    # shift(t) = v t + a t^2 / 2: frame-to-frame steps v + a (t - 1/2) = 2, 4, 6, 8 px
    steps = [_shift(frames[t], frames[t - 1])[1] for t in range(1, 5)]
    np.testing.assert_allclose(steps, [2.0, 4.0, 6.0, 8.0], atol=0.2)


def test_rotation_turns_counter_clockwise_about_the_centre(still):
    frames = motion.render_camera(still, (128, 128), 2, CameraMotion(rotation_deg=5.0))
    inner = (slice(32, 96), slice(32, 96))
    err = {a: np.abs(rotate(frames[0], a, order=3) - frames[1])[inner].mean() for a in (5, -5)}
    static = np.abs(frames[0] - frames[1])[inner].mean()
    assert err[5] < 0.15 * static
    assert err[-5] > static


def test_zoom_magnifies_about_the_centre(still):
    frames = motion.render_camera(still, (128, 192), 2, CameraMotion(zoom=(0.8, 1.0)))
    # frame_1(p) = frame_0(c + (p - c) * 0.8): resample frame 0 and compare with frame 1.
    h, w = frames.shape[1:]
    yy, xx = np.meshgrid(np.arange(h, dtype=float), np.arange(w, dtype=float), indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    expected = warp(frames[0], np.stack([cy + (yy - cy) * 0.8, cx + (xx - cx) * 0.8]), order=3)
    inner = (slice(16, -16), slice(16, -16))
    err = np.abs(expected - frames[1])[inner].mean()
    assert err < 0.2 * np.abs(frames[0] - frames[1])[inner].mean()
    with pytest.raises(ValueError, match="never magnifies"):
        CameraMotion(zoom=(1.0, 1.5))


def test_shake_follows_its_path_and_has_the_claimed_spread(still):
    m = CameraMotion(shake_px=3.0)
    frames = motion.render_camera(still, (96, 192), 5, m, seed=4)
    path = motion.camera_path(5, m, np.random.default_rng(4))
    for t in range(1, 5):
        np.testing.assert_allclose(
            _shift(frames[t], frames[0]), path["shift"][t], atol=0.2, err_msg=f"frame {t}"
        )
    long = motion.camera_path(4000, m, 1)["shift"][1:]
    assert long.std(axis=0) == pytest.approx([3.0, 3.0], rel=0.08)
    assert np.abs(long.mean(axis=0)).max() < 0.3


def test_nonrigid_warp_moves_parts_differently_within_its_amplitude(still):
    amp = 4.0
    m = CameraMotion(warp_px=amp, warp_corr_px=24.0, warp_period=8.0)
    frames = motion.render_camera(still, (128, 256), 3, m, seed=2)
    rigid = motion.render_camera(still, (128, 256), 1, CameraMotion(), seed=2)
    np.testing.assert_array_equal(frames[0], rigid[0])  # the deformation starts at 0
    # t = 2 is a quarter period: displacement = F1 + F2, |.| <= 2 amp.
    shifts = np.array(
        [
            _shift(frames[2][y : y + 64, x : x + 64], frames[0][y : y + 64, x : x + 64])
            for y in (0, 64)
            for x in (0, 64, 128, 192)
        ]
    )
    assert np.abs(shifts).max() <= 2 * amp + 0.5
    assert np.ptp(shifts, axis=0).max() > 1.0  # not one rigid shift


def test_field_is_smooth_and_normalised():
    f = motion.smooth_field((64, 96), 16.0, 0)
    assert f.shape == (2, 64, 96)
    assert np.sqrt((f**2).sum(0)).max() == pytest.approx(1.0)
    assert np.abs(np.diff(f, axis=2)).max() < 0.2  # smooth: small steps per pixel


def test_layers_occlude_the_background_and_each_other():
    background = np.full((4, 64, 96), 0.5, np.float32)
    bottom = Layer("grace_hopper", radii=(20, 20), position=(32, 40), velocity=(0, 2))
    top = Layer("mri_s1045", radii=(12, 16), position=(32, 40), velocity=(0, 4), softness=2)
    both, alpha = motion.composite_layers(background, [bottom, top], return_alpha=True)
    only_bottom = motion.composite_layers(background, [bottom])
    only_top = motion.composite_layers(background, [top])
    assert both.dtype == np.float32 and alpha.shape == (4, 2, 64, 96)
    for t in range(4):
        covered = alpha[t, 1] == 1.0
        assert covered.sum() > 200, f"frame {t}"
        # Where the top layer covers, it alone is seen: the bottom layer and background are hidden.
        np.testing.assert_allclose(both[t][covered], only_top[t][covered], atol=1e-6)
        assert np.abs(both[t][covered] - only_bottom[t][covered]).mean() > 0.05
        free = alpha[t].max(axis=0) == 0.0
        np.testing.assert_array_equal(both[t][free], 0.5)
    # The layers move at their velocities: the top one's centre column advances 4 px/frame.
    cols = [np.average(np.arange(96), weights=alpha[t, 1].sum(0)) for t in range(4)]
    np.testing.assert_allclose(np.diff(cols), 4.0, atol=0.05)


def test_brightness_changes_the_mean():
    frames = np.full((3, 32, 48), 0.4, np.float32)
    out = motion.apply_brightness(frames, gain=(1.0, 1.5), offset=(0.0, 0.1))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), [0.4, 0.4 * 1.25 + 0.05, 0.7], atol=1e-6)
    spot = motion.apply_brightness(frames, local_amplitude=0.5, local_sigma_px=4.0,
                                   local_position=(16, 10), local_velocity=(0, 10))  # fmt: skip
    assert spot[0, 16, 10] == pytest.approx(0.6) and spot[2, 16, 30] == pytest.approx(0.6)
    assert spot[0].mean() > 0.4 and spot[0, 16, 40] == pytest.approx(0.4, abs=1e-3)
    flick = motion.apply_brightness(frames, flicker=0.05, seed=3)
    assert flick[0].mean() == pytest.approx(0.4) and flick[1].mean() != pytest.approx(0.4)
    clipped = motion.apply_brightness(frames, gain=(3.0, 3.0))
    assert clipped.max() == 1.0


def test_suite_is_deterministic_valid_and_covers_the_motion_types():
    shape = (64, 160)
    suite = motion.validation_suite(shape, n_frames=6, seed=1)
    assert [n for n, _ in suite] == list(motion.SUITE) and len(suite) >= 6
    for name, frames in suite:
        assert frames.shape == (6, *shape) and frames.dtype == np.float32, name
        assert frames.min() >= 0.0 and frames.max() <= 1.0, name
        assert np.abs(np.diff(frames, axis=0)).mean() > 1e-3, f"{name} does not move"
    again = dict(motion.validation_suite(shape, n_frames=6, seed=1))
    other = dict(motion.validation_suite(shape, n_frames=6, seed=2))
    for name, frames in suite:
        np.testing.assert_array_equal(frames, again[name], err_msg=name)
    assert not np.array_equal(dict(suite)["shake"], other["shake"])
    # A subset renders the same frames as the full suite.
    ((_, layers),) = motion.validation_suite(shape, n_frames=6, seed=1, names=["layers"])
    np.testing.assert_array_equal(layers, dict(suite)["layers"])
    with pytest.raises(ValueError, match="unknown sequence"):
        motion.validation_suite(shape, names=["spin"])


def test_suite_speed_ramp_reaches_40_px_per_frame_at_full_scale():
    shape = (100, 256)  # speeds scale with min(H / 400, W / 1024) = 0.25
    ((_, frames),) = motion.validation_suite(shape, n_frames=21, names=["pan-ramp"])
    scale = 0.25
    first = _shift(frames[1], frames[0])
    last = _shift(frames[20], frames[19])
    # acceleration 40 / 20 = 2 px/frame^2: steps a (t - 1/2), from 1 to 39 px/frame.
    np.testing.assert_allclose(first, [0.0, -1.0 * scale], atol=0.2)
    np.testing.assert_allclose(last, [0.0, -39.0 * scale], atol=0.2)
    assert math.isclose(40 * scale, 10.0)
