"""flow: the optical-flow primitives, the key transfer (detail lands where the motion puts it),
confidence in occlusions, LR consistency, noise, the engine path and the option checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_xfusion import engine
from napari_xfusion.core import flow as core
from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.core.windows import window
from napari_xfusion.methods import get_reconstructor
from napari_xfusion.methods.base import WindowInputs
from napari_xfusion.methods.flow import FlowMethod

SHAPE = (64, 128)
VELOCITY = (2, 1)  # HR pixels per frame along (x, y)


def _texture(shape, seed=0):
    """Smooth random texture in [0.1, 0.9] with fine (1 px) and coarse (4 px) structure."""
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 1.2)
    coarse = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 4.0)
    t = fine + 2 * coarse
    return (0.1 + 0.8 * (t - t.min()) / (t.max() - t.min())).astype(np.float32)


def _translating(n_frames=9, seed=0, velocity=VELOCITY):
    """HR frames of a texture moving by ``velocity``: frame_t(x) = texture(x + v t)."""
    vx, vy = velocity
    big = _texture((SHAPE[0] + vy * n_frames + 8, SHAPE[1] + vx * n_frames + 8), seed)
    return np.stack(
        [
            big[4 + vy * t : 4 + vy * t + SHAPE[0], 4 + vx * t : 4 + vx * t + SHAPE[1]]
            for t in range(n_frames)
        ]  # fmt: skip
    )


@pytest.fixture(scope="module")
def moving():
    hr = _translating()
    return hr, bin_frames(hr)


def _fuse(hr, lr, t, keys=(0, 8), fuser=None, read=True):
    fuser = fuser or core.FlowFuser()
    ks = list(keys)
    return fuser.fuse(t, keys, lr[t], hr[ks], lr[ks], (lambda i: lr[i]) if read else None)


# --------------------------------------------------------------------------------------------
# Primitives


def test_compose_and_fb_error_of_translations():
    shape = (16, 20)
    a = np.broadcast_to(np.float32([1.5, -0.5]), (*shape, 2)).copy()
    b = np.broadcast_to(np.float32([-0.25, 2.0]), (*shape, 2)).copy()
    np.testing.assert_allclose(core.compose(a, b), a + b, atol=1e-5)
    err, _ = core.fb_error(a, -a)
    assert err.max() < 1e-5
    err, _ = core.fb_error(a, b)
    assert np.allclose(err[4:-4, 4:-4], np.hypot(1.25, 1.5), atol=1e-4)
    up = core.resize_flow(a, (32, 40))
    assert np.allclose(up[8:-8, 8:-8], 2 * a[0, 0], atol=1e-4)  # values in new pixels


def test_dis_recovers_a_known_translation(moving):
    hr, lr = moving
    images = [core.flow_image(upscale_bicubic(f), 0.0, 1.0) for f in lr[[2, 5]]]
    flow = core.dis_flow(core.make_dis("fast"), images[0], images[1])
    # frame_2(x) = frame_5(x - 3 v): the flow 2 -> 5 is -3 v
    inner = flow[8:-8, 8:-8].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [-6.0, -3.0], atol=0.4)


def test_motion_to_each_key_direct_and_chained(moving):
    hr, lr = moving
    fuser = core.FlowFuser()
    for t in (3, 5):
        motions = fuser.motion(t, (0, 8), hr[[0, 8]], lr[[0, 8]], lambda i: lr[i], lr_t=lr[t])
        for m in motions:
            expected = np.float32(VELOCITY) * (t - m.key)  # frame_t(x) = key(x + v (t - k))
            inner = m.flow[8:-8, 8:-8].reshape(-1, 2)
            np.testing.assert_allclose(np.median(inner, axis=0), expected, atol=0.6)
            assert np.median(m.confidence) > 0.8
        assert sum(m.weight for m in motions) == pytest.approx(1.0)


def test_back_projection_converges():
    rng = np.random.default_rng(3)
    lr = rng.random((8, 12)).astype(np.float32)
    start = np.zeros((32, 48), np.float32)
    errors = [np.abs(bin_frames(core.back_project(start, lr, n)) - lr).max() for n in (0, 1, 4, 8)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.1 * errors[0]


def test_key_noise_and_denoise_width():
    hr = _translating(2)
    lr = bin_frames(hr)
    assert core.key_noise_sigma(hr, lr) < 1e-6
    noisy = add_shot_noise(lr, 1e3, rng=0)
    sigma = core.key_noise_sigma(hr, noisy)
    expected = np.sqrt(np.mean(lr) / 1e3)  # shot noise: var = I / b0
    assert 0.7 * expected < sigma < 1.3 * expected
    assert core.denoise_width(0.0, 0.004) == 0.0
    assert core.denoise_width(0.1, 0.004) == pytest.approx(0.1 / (2 * np.sqrt(np.pi) * 0.004))


# --------------------------------------------------------------------------------------------
# Fusion


def test_key_detail_lands_where_the_motion_puts_it(moving):
    hr, lr = moving
    fuser = core.FlowFuser()
    for t in (2, 4, 6):
        frame, conf = _fuse(hr, lr, t, fuser=fuser)
        bicubic = upscale_bicubic(lr[t])
        assert psnr(frame, hr[t]) > psnr(bicubic, hr[t]) + 6.0
        # The fine structure (what bicubic lacks) correlates with the truth's: detail was
        # moved to the right place, not just added.
        detail, truth = frame - bicubic, hr[t] - bicubic
        assert np.corrcoef(detail.ravel(), truth.ravel())[0, 1] > 0.9
        assert conf.shape == hr[t].shape and conf.dtype == np.float32
        assert 0.0 <= conf.min() and conf.max() <= 1.0 and np.median(conf) > 0.8


def test_confidence_is_low_where_an_object_appears_and_disappears(moving):
    hr, _ = moving
    hr = hr.copy()
    rows, cols = slice(20, 40), slice(52, 72)
    for t in (3, 4, 5):  # in neither key: appears after key 0, gone before key 8
        hr[t, rows, cols] = 0.7 + 0.3 * _texture((20, 20), seed=5)
    lr = bin_frames(hr)
    frame, conf = _fuse(hr, lr, 4)
    outside = np.ones(conf.shape, bool)
    outside[12:48, 44:80] = False
    assert conf[22:38, 54:70].mean() < 0.2
    assert np.median(conf[outside]) > 0.8
    # There the frame falls back to bicubic instead of pasting the background over the object.
    bicubic = upscale_bicubic(lr[4])
    truth = hr[4, rows, cols]
    assert psnr(frame[rows, cols], truth) > psnr(bicubic[rows, cols], truth) - 1.5
    # Frames where the keys see the same scene are trusted again.
    _, conf_1 = _fuse(hr, lr, 1)
    assert conf_1[22:38, 54:70].mean() > 0.8


def test_binning_the_output_reproduces_the_lr_frame(moving):
    hr, lr = moving
    frame, _ = _fuse(hr, lr, 3)
    assert np.abs(bin_frames(frame) - lr[3]).max() < 0.01
    raw, _ = core.FlowFuser(bp_iterations=0).fuse(3, (0, 8), lr[3], hr[[0, 8]], lr[[0, 8]])
    assert np.abs(bin_frames(raw) - lr[3]).max() > np.abs(bin_frames(frame) - lr[3]).max()


def test_direct_flows_only_without_a_reader(moving):
    hr, lr = moving
    frame, _ = _fuse(hr, lr, 4, read=False)
    assert psnr(frame, hr[4]) > psnr(upscale_bicubic(lr[4]), hr[4]) + 6.0


@pytest.mark.parametrize("db", [20.0, 30.0])
def test_noise_is_not_amplified(moving, db):
    hr, clean = moving
    lr = add_shot_noise(clean, solve_b0(clean, db), rng=1)
    fuser = core.FlowFuser()
    for t in (2, 5):
        frame, _ = _fuse(hr, lr, t, fuser=fuser)
        assert psnr(frame, hr[t]) > psnr(upscale_bicubic(lr[t]), hr[t])


# --------------------------------------------------------------------------------------------
# The method through the engine


def test_engine_yields_confidence_and_each_pair_is_computed_once(moving):
    hr, lr = moving
    keys = engine.KeyFrames.from_full_rate(hr, key_step=4)  # keys 0, 4, 8
    method = FlowMethod()
    calls = []
    results = []
    original = method._fuser._calc

    def counting(a, b):
        calls.append(1)
        return original(a, b)

    method._fuser._calc = counting
    for r in engine.run([method, "bicubic"], lr, keys):
        results.append(r)
    flow = {r.index: r for r in results if r.method == "flow"}
    bic = {r.index: r for r in results if r.method == "bicubic"}
    assert sorted(flow) == list(range(9))
    for t, r in flow.items():
        conf = r.extras["confidence"]
        assert conf.shape == hr[t].shape and conf.dtype == np.float32
        if t in keys:
            np.testing.assert_array_equal(r.frame, hr[t])
        else:
            assert psnr(r.frame, hr[t]) > psnr(bic[t].frame, hr[t]) + 3.0
    # 6 targets x 4 direct flows + 8 consecutive pairs x 2 directions: each pair once.
    assert len(calls) == 6 * 4 + 8 * 2


def test_first_and_last_keys_only_and_frames_at_both_ends():
    hr = _translating(7)
    lr = bin_frames(hr)
    keys = engine.KeyFrames.from_full_rate(hr, first_last=True)
    out = {r.index: r for r in engine.run("flow", lr, keys)}
    np.testing.assert_array_equal(out[0].frame, hr[0])
    np.testing.assert_array_equal(out[6].frame, hr[6])
    for t in range(1, 6):
        assert np.isfinite(out[t].frame).all()
        assert psnr(out[t].frame, hr[t]) > psnr(upscale_bicubic(lr[t]), hr[t]) + 3.0


def test_targets_past_the_last_key_and_before_the_first(moving):
    hr, lr = moving
    keys = engine.KeyFrames(hr[[2, 5]], [2, 5])
    out = {r.index: r for r in engine.run("flow", lr, keys, frames=[0, 1, 7, 8])}
    for t, r in out.items():
        assert psnr(r.frame, hr[t]) > psnr(upscale_bicubic(lr[t]), hr[t]) + 3.0


def test_reconstruct_without_reader_matches_the_core(moving):
    hr, lr = moving
    w = window(3, 9, 1, [0, 8])
    inputs = WindowInputs(w, lr[[2, 3, 4]], hr[[0, 8]], lr[[0, 8]])
    rec = FlowMethod().reconstruct(inputs)
    frame, conf = _fuse(hr, lr, 3, read=False)
    np.testing.assert_array_equal(rec.frame, frame)
    np.testing.assert_array_equal(rec.extras["confidence"], conf)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"preset": "slow"}, "unknown preset 'slow'"),
        ({"consistency": 0}, "consistency must be a finite number > 0"),
        ({"photometric": float("nan")}, "photometric must be a finite number > 0"),
        ({"noise_target": -1.0}, "noise_target must be a finite number > 0"),
        ({"bp_iterations": -1}, "bp_iterations must be an integer >= 0"),
        ({"max_chain": 1.5}, "max_chain must be an integer >= 0"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        get_reconstructor("flow", **options)


def test_describe_lists_the_options():
    desc = get_reconstructor("flow", preset="ultrafast", bp_iterations=2).describe()
    assert desc["method"] == "flow" and desc["preset"] == "ultrafast"
    assert desc["bp_iterations"] == 2 and desc["max_chain"] == 100


def test_the_methods_defaults_are_the_fusers():
    # edvr-stf-flow builds its FlowFuser with the fuser's own defaults (as in training); the
    # flow method repeats them in its signature for the GUI's and the engine's option lists.
    import inspect

    from napari_xfusion.core.flow import FlowFuser
    from napari_xfusion.methods.flow import FlowMethod

    def defaults(fn):
        params = inspect.signature(fn).parameters.values()
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    assert defaults(FlowMethod) == defaults(FlowFuser)
