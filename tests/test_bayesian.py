"""bayesian: the vectorised maths against a per-pixel loop reference, and the behaviour the paper
reports on the simulated sample (better than bicubic, better with cleaner LR, keys come back)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion.core import bayesian as core
from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.core.windows import key_indices, plan, window
from napari_xfusion.methods import get_reconstructor
from napari_xfusion.methods.base import WindowInputs
from napari_xfusion.methods.bayesian import Bayesian

# --------------------------------------------------------------------------------------------
# Reference: the module docstring's equations, one pixel at a time.


def _reference(hr_keys, lr_at_keys, lr_t, lr_labels, k, beta0, target_is_key, block_prior, n0):
    h, w = lr_t.shape
    # 1. calibration: block means by hand, least squares from sums
    pairs = []
    for f in range(2):
        for j0 in range(h):
            for j1 in range(w):
                block = [hr_keys[f, 4 * j0 + a, 4 * j1 + b] for a in range(4) for b in range(4)]
                pairs.append(
                    (float(np.float32(sum(float(v) for v in block) / 16)), lr_at_keys[f, j0, j1])
                )
    n = len(pairs)
    mx = sum(p[0] for p in pairs) / n
    my = sum(float(p[1]) for p in pairs) / n
    sxx = sum((p[0] - mx) ** 2 for p in pairs)
    sxy = sum((p[0] - mx) * (float(p[1]) - my) for p in pairs)
    a = sxy / sxx
    b = my - a * mx
    sigma2 = sum((float(p[1]) - a * p[0] - b) ** 2 for p in pairs) / (n - 2)
    s2 = sigma2 / a**2

    # 2. class statistics of the calibrated series
    series, labels = [], []
    for j0 in range(h):
        for j1 in range(w):
            y = (lr_at_keys[0, j0, j1], lr_t[j0, j1], lr_at_keys[1, j0, j1])
            series.append([(float(v) - b) / a for v in y])
            labels.append(int(lr_labels[j0, j1]))
    series = np.array(series)
    gmean = [sum(z[d] for z in series) / len(series) for d in range(3)]
    gcov = np.zeros((3, 3))
    for z in series:
        for p in range(3):
            for q in range(3):
                gcov[p, q] += (z[p] - gmean[p]) * (z[q] - gmean[q]) / len(series)
    noise = np.eye(3)
    if target_is_key[0]:
        noise[0, 1] = noise[1, 0] = 1
    if target_is_key[1]:
        noise[1, 2] = noise[2, 1] = 1
    means, covs, counts = [], [], []
    for c in range(k):
        members = [z for z, lab in zip(series, labels, strict=True) if lab == c]
        mean = [sum(z[d] for z in members) / len(members) for d in range(3)] if members else gmean
        scatter = np.zeros((3, 3))
        for z in members:
            for p in range(3):
                for q in range(3):
                    scatter[p, q] += (z[p] - mean[p]) * (z[q] - mean[q])
        cov = (scatter + n0 * gcov) / (len(members) + n0) - s2 * noise
        evals, evecs = np.linalg.eigh(cov)
        cov = evecs @ np.diag(np.maximum(evals, 0)) @ evecs.T
        means.append(mean)
        covs.append(cov)
        counts.append(len(members))

    # 4. conditional per class
    beta, var_c = [], []
    for c in range(k):
        s = covs[c]
        s_oo = np.array([[s[0, 0], s[0, 2]], [s[2, 0], s[2, 2]]])
        ridge = s2 + 1e-9 * (s_oo[0, 0] + s_oo[1, 1]) / 2 + 1e-12
        s_to = np.array([s[1, 0], s[1, 2]])
        bc = beta0 + np.linalg.solve(s_oo + ridge * np.eye(2), s_to - s_oo @ beta0)
        beta.append(bc)
        var_c.append(max(s[1, 1] - 2 * bc @ s_to + bc @ s_oo @ bc, 0.0))

    mean_out = np.zeros(hr_keys.shape[1:])
    var_out = np.zeros(hr_keys.shape[1:])
    for j0 in range(h):
        for j1 in range(w):
            yt = (float(lr_t[j0, j1]) - b) / a
            mu, var = {}, {}
            for i0 in range(4 * j0, 4 * j0 + 4):
                for i1 in range(4 * j1, 4 * j1 + 4):
                    xb, xa = float(hr_keys[0, i0, i1]), float(hr_keys[1, i0, i1])
                    # 3. nearest class mean (first one on ties)
                    best, cls = np.inf, 0
                    for c in range(k):
                        if counts[c] == 0:
                            continue
                        m = means[c]
                        d = (xb - m[0]) ** 2 + (yt - m[1]) ** 2 + (xa - m[2]) ** 2
                        if d < best:
                            best, cls = d, c
                    m = means[cls]
                    mu[i0, i1] = m[1] + beta[cls][0] * (xb - m[0]) + beta[cls][1] * (xa - m[2])
                    var[i0, i1] = var_c[cls]
            # 5. Kalman update of the block
            r = yt - sum(mu.values()) / 16
            if block_prior == "correlated":
                msd = sum(np.sqrt(v) for v in var.values()) / 16
                for i in mu:
                    mean_out[i] = mu[i] + np.sqrt(var[i]) * msd * r / (msd**2 + s2)
                    var_out[i] = var[i] * s2 / (msd**2 + s2)
            else:
                denom = sum(var.values()) / 256 + s2
                for i in mu:
                    mean_out[i] = mu[i] + var[i] / 16 * r / denom
                    var_out[i] = var[i] - (var[i] / 16) ** 2 / denom
    return mean_out, var_out


def _tiny_case(seed: int = 0, h: int = 8, w: int = 8):
    """Two HR keys with structure, their noisy LR, and an LR frame at t in between."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : 4 * h, 0 : 4 * w] / (4.0 * h)
    base = 0.5 + 0.3 * np.sin(6 * xx + 3 * yy)
    hr_keys = np.stack([base, np.roll(base, 3, axis=1)]) + 0.05 * rng.standard_normal(
        (2, 4 * h, 4 * w)
    )
    hr_keys = hr_keys.astype(np.float32)
    lr_at_keys = (0.9 * bin_frames(hr_keys) + 0.02 + 0.01 * rng.standard_normal((2, h, w))).astype(
        np.float32
    )
    lr_t = (0.5 * (lr_at_keys[0] + lr_at_keys[1]) + 0.02 * rng.standard_normal((h, w))).astype(
        np.float32
    )
    return hr_keys, lr_at_keys, lr_t


@pytest.mark.parametrize("block_prior", ["correlated", "independent"])
@pytest.mark.parametrize(
    ("beta0", "target_is_key"),
    [((0.7, 0.3), (False, False)), ((1.0, 0.0), (True, False)), ((0.0, 1.0), (False, True))],
)
def test_vectorised_equals_loop_reference(block_prior, beta0, target_is_key) -> None:
    hr_keys, lr_at_keys, lr_t = _tiny_case(seed=3)
    if target_is_key[0]:
        lr_t = lr_at_keys[0].copy()
    if target_is_key[1]:
        lr_t = lr_at_keys[1].copy()
    k = 4
    # Fixed labels, one class left empty (3): the comparison is of the maths, not of K-means.
    labels = np.random.default_rng(7).integers(0, 3, size=lr_t.shape)
    got = core.fuse_window(
        hr_keys, lr_at_keys, lr_t, labels, k,
        time_weights=beta0, target_is_key=target_is_key, block_prior=block_prior, prior_weight=5.0,
    )  # fmt: skip
    mean, var = _reference(
        hr_keys, lr_at_keys, lr_t, labels, k, np.array(beta0), target_is_key, block_prior, 5.0
    )
    np.testing.assert_allclose(got.mean, mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.variance, var, rtol=0, atol=1e-6)
    assert got.mean.dtype == got.variance.dtype == np.float32
    assert np.all(got.variance >= 0)


def test_calibration_recovers_gain_offset_and_noise() -> None:
    rng = np.random.default_rng(0)
    hr_keys = rng.random((2, 64, 64)).astype(np.float32)
    lr = (
        0.8 * bin_frames(hr_keys).astype(np.float64) + 0.1 + 0.01 * rng.standard_normal((2, 16, 16))
    )
    deg = core.calibrate(hr_keys, lr)
    assert deg.gain == pytest.approx(0.8, abs=0.03)
    assert deg.offset == pytest.approx(0.1, abs=0.02)
    assert deg.noise_var == pytest.approx(1e-4, rel=0.2)
    # Flat keys carry no gain information: fall back to gain 1 rather than divide by zero.
    flat = core.calibrate(np.full((2, 8, 8), 0.5, np.float32), np.full((2, 2, 2), 0.6))
    assert flat.gain == 1.0 and flat.offset == pytest.approx(0.1)


def test_default_n_classes_follows_the_paper_rule() -> None:
    assert core.default_n_classes((100, 256)) == 8  # 5 % of sqrt(100 * 256) = 160
    assert core.default_n_classes((2, 2)) == 2


# --------------------------------------------------------------------------------------------
# Behaviour on the simulated sample


N_FRAMES = 11
HR_SHAPE = (64, 128)


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    hr = simulate_sequence(N_FRAMES, HR_SHAPE, seed=2)
    return hr, bin_frames(hr)


def _inputs(hr, lr, w) -> WindowInputs:
    return WindowInputs(w, lr[list(w.lr_indices)], hr[list(w.keys)], lr[list(w.keys)])


def _mean_psnr(method, hr, lr, keys, targets) -> tuple[float, float]:
    """Mean PSNR of the method and of bicubic over the targets."""
    ours, bic = [], []
    for w in plan(targets, len(hr), 1, keys):
        ours.append(psnr(method.reconstruct(_inputs(hr, lr, w)).frame, hr[w.target]))
        bic.append(psnr(np.clip(upscale_bicubic(lr[w.target]), 0, 1), hr[w.target]))
    return float(np.mean(ours)), float(np.mean(bic))


def _noisy(clean_lr: np.ndarray, db: float) -> np.ndarray:
    return add_shot_noise(clean_lr, solve_b0(clean_lr, db), rng=1)


@pytest.mark.parametrize("db", [20.0, 40.0, 60.0])
@pytest.mark.parametrize("key_step", [5, 10])
def test_better_than_bicubic(sample, db, key_step) -> None:
    hr, clean = sample
    lr = _noisy(clean, db)
    targets = [2, 4, 7] if key_step == 5 else [3, 5, 8]  # between the keys, not on them
    ours, bic = _mean_psnr(Bayesian(seed=0), hr, lr, key_indices(N_FRAMES, key_step), targets)
    assert ours > bic + 1.0, (ours, bic)


def test_improves_markedly_with_cleaner_lr(sample) -> None:
    hr, clean = sample
    keys = key_indices(N_FRAMES, 10)
    method = Bayesian(seed=0)
    noisy, _ = _mean_psnr(method, hr, _noisy(clean, 20.0), keys, [3, 5, 7])
    clean_db, _ = _mean_psnr(method, hr, _noisy(clean, 60.0), keys, [3, 5, 7])
    assert clean_db > noisy + 3.0, (noisy, clean_db)


@pytest.mark.parametrize("target", [0, 5, 10])
def test_returns_the_key_at_key_times(sample, target) -> None:
    hr, clean = sample
    lr = _noisy(clean, 30.0)
    keys = key_indices(N_FRAMES, 5)  # 0, 5, 10: at 10 the key is the window's key_after
    result = Bayesian().reconstruct(_inputs(hr, lr, window(target, N_FRAMES, 1, keys)))
    np.testing.assert_allclose(result.frame, hr[target], atol=1e-4)
    assert float(result.variance.max()) < 1e-6


def test_variance_map_is_larger_between_keys(sample) -> None:
    hr, clean = sample
    lr = _noisy(clean, 40.0)
    keys = key_indices(N_FRAMES, 10)
    result = Bayesian().reconstruct(_inputs(hr, lr, window(5, N_FRAMES, 1, keys)))
    assert result.variance.shape == hr.shape[1:] and result.variance.dtype == np.float32
    assert float(result.variance.mean()) > 1e-5 and np.all(result.variance >= 0)


def test_deterministic_and_stream_equals_single(sample) -> None:
    hr, clean = sample
    lr = _noisy(clean, 30.0)
    windows = plan(range(N_FRAMES), N_FRAMES, 2, key_indices(N_FRAMES, 5))
    inputs = [_inputs(hr, lr, w) for w in windows]
    first = [r.frame for r in get_reconstructor("bayesian", seed=4).reconstruct_stream(inputs)]
    again = [get_reconstructor("bayesian", seed=4).reconstruct(x).frame for x in inputs]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# Errors


def test_hr_not_4x_lr_names_both_shapes() -> None:
    hr_keys, lr_at_keys, lr_t = _tiny_case()
    with pytest.raises(ValueError, match=r"LR 8x8 needs HR 32x32, got HR 30x32"):
        core.fuse_window(hr_keys[:, :30], lr_at_keys, lr_t, np.zeros((8, 8), int), 2)
    w = window(1, 3, 1, [0, 2])
    with pytest.raises(ValueError, match=r"LR 8x8 needs HR keys 32x32, got 24x32"):
        WindowInputs(w, np.stack([lr_t] * 3), hr_keys[:, :24], lr_at_keys)


def test_fewer_than_two_keys() -> None:
    hr_keys, lr_at_keys, lr_t = _tiny_case()
    with pytest.raises(ValueError, match=r"need exactly 2 HR key frames .* got 1"):
        core.fuse_window(hr_keys[:1], lr_at_keys, lr_t, np.zeros((8, 8), int), 2)
    with pytest.raises(ValueError, match=r"at least 2 HR key frames, got 1"):
        window(1, 3, 1, [0])


@pytest.mark.parametrize("field", ["lr", "hr_keys", "lr_at_keys"])
def test_non_finite_input(field) -> None:
    hr_keys, lr_at_keys, lr_t = _tiny_case()
    inputs = WindowInputs(window(1, 3, 1, [0, 2]), np.stack([lr_t] * 3), hr_keys, lr_at_keys)
    getattr(inputs, field)[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match=rf"{field} of target frame 1 contains 1 non-finite"):
        Bayesian().reconstruct(inputs)
    with pytest.raises(ValueError, match="non-finite"):
        core.fuse_window(inputs.hr_keys, inputs.lr_at_keys, inputs.lr[1], np.zeros((8, 8), int), 2)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="n_classes"):
        Bayesian(n_classes=0)
    with pytest.raises(ValueError, match="block_prior"):
        Bayesian(block_prior="diagonal")
