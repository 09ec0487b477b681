"""core.registration: the HR camera onto the exact 4x grid of the LR view (issue 17, space)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from napari_xfusion.core.degrade import add_shot_noise, bin_frames, solve_b0
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.registration import (
    CameraTransform,
    RegistrationError,
    assess_transform,
    check_residual,
    common_lr_crop,
    coverage_mask,
    estimate_from_target,
    estimate_transform,
    grid_period,
    measure_residual,
    overlay,
    resample_keys,
    warp_hr_view,
)
from napari_xfusion.core.sample import simulate_sequence

HR_SHAPE = (150, 300)  # HR camera, 1/2.9 LR px per pixel: 52 x 103 LR px of the 64 x 128 view
KEYS = [0, 4, 8]
RATIO = 2.9


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """9 frames of the simulated sample on the 4x grid of a 64 x 128 LR view."""
    return simulate_sequence(9, (256, 512), seed=3, noise=False)


def _lr(scene: np.ndarray, psnr_db: float | None, seed: int = 1) -> np.ndarray:
    clean = bin_frames(scene)
    if psnr_db is None:
        return clean
    return add_shot_noise(clean, solve_b0(clean, psnr_db), seed)


def _corner_error(est: CameraTransform, true: CameraTransform, crop: tuple) -> float:
    """Largest LR-pixel distance, over the corners of the LR crop, between the two mappings."""
    y0, y1, x0, x1 = crop
    p = np.array(
        [[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y0 - 0.5], [x0 - 0.5, y1 - 0.5], [x1 - 0.5, y1 - 0.5]]
    )
    q = true.inverse().apply(p)
    return float(np.abs(est.apply(q) - p).max())


# -- the transform and its file --------------------------------------------------------------
@pytest.mark.parametrize("flip_x, flip_y", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("hr_shape", [None, (80, 120)])
def test_params_round_trip(flip_x: bool, flip_y: bool, hr_shape: tuple | None) -> None:
    t = CameraTransform.from_params(0.345, 3.5, (12.0, -4.5), flip_x, flip_y, hr_shape,
                                    shear=0.02, aspect=0.99)  # fmt: skip
    p = t.params()
    assert (p["flip_x"], p["flip_y"]) == (flip_x, flip_y)
    assert p["scale"] == pytest.approx(0.345) and p["rotation_deg"] == pytest.approx(3.5)
    assert p["shear"] == pytest.approx(0.02) and p["aspect"] == pytest.approx(0.99)
    assert p["shift_xy"] == pytest.approx((12.0, -4.5))
    rebuilt = CameraTransform.from_params(**{k: v for k, v in p.items()}, hr_shape=hr_shape)
    assert rebuilt.allclose(t)


def test_flip_in_place_and_apply_inverse() -> None:
    t = CameraTransform.from_params(0.5, 0.0, (0.0, 0.0), flip_x=True, hr_shape=(10, 20))
    # Mirrored in place: HR column 19 (the last) lands where column 0 would unmirrored.
    assert t.apply(np.array([[19.0, 0.0], [0.0, 4.0]])) == pytest.approx(
        np.array([[0.0, 0.0], [9.5, 2.0]])
    )
    pts = np.random.default_rng(0).uniform(0, 20, (5, 2))
    assert t.inverse().apply(t.apply(pts)) == pytest.approx(pts)
    # A left-right mirror plus a half turn is a top-bottom mirror: reported with the small angle.
    flipped_y = CameraTransform.from_params(0.5, 178.0, (3.0, 1.0), flip_x=True)
    p = flipped_y.params()
    assert p["flip_y"] and not p["flip_x"] and p["rotation_deg"] == pytest.approx(-2.0)


def test_bad_matrix() -> None:
    with pytest.raises(ValueError, match="not invertible"):
        CameraTransform(np.zeros((3, 3)) + np.diag([0, 0, 1.0]))
    with pytest.raises(ValueError, match="affine"):
        CameraTransform(np.ones((3, 3)))
    with pytest.raises(ValueError, match="scale"):
        CameraTransform.from_params(-1.0)


def test_json_round_trip(tmp_path) -> None:
    t = CameraTransform.from_params(0.345, -2.0, (5.5, 7.25), flip_x=True, hr_shape=(800, 1280))
    path = t.save(tmp_path / "transform.json", info={"residual_lr_px": 0.03})
    loaded = CameraTransform.load(path)
    assert loaded.allclose(t, atol=0) and loaded.hr_shape == (800, 1280)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["info"]["residual_lr_px"] == 0.03


@pytest.mark.parametrize(
    "content, field",
    [
        ("{not json", None),
        ('{"format": "something else", "version": 1}', "format"),
        ("[1, 2]", "<top level>"),
        ('{"format": "napari-xfusion camera transform", "version": 99, "matrix": []}', "version"),
        ('{"format": "napari-xfusion camera transform", "version": 1}', "matrix"),
        ('{"format": "napari-xfusion camera transform", "version": 1, "matrix": [[1]]}', "matrix"),
        ('{"format": "napari-xfusion camera transform", "version": 1, '
         '"matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "hr_shape": [-3, 4]}', "hr_shape"),
    ],
)  # fmt: skip
def test_bad_transform_file(tmp_path, content: str, field: str | None) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(RegistrationError) as info:
        CameraTransform.load(path)
    assert str(path) in str(info.value)
    if field is not None:
        assert f"'{field}'" in str(info.value) and info.value.field == field
    with pytest.raises(RegistrationError, match="not found"):
        CameraTransform.load(tmp_path / "missing.json")


# -- geometry ----------------------------------------------------------------------------------
def test_crop_is_covered_and_grid_bins_onto_lr() -> None:
    t = CameraTransform.from_params(1 / RATIO, 3.0, (12.3, 4.7), flip_x=True, hr_shape=HR_SHAPE)
    crop = common_lr_crop(t, HR_SHAPE, (64, 128))
    y0, y1, x0, x1 = crop
    mask = coverage_mask(t, HR_SHAPE, (64, 128))
    assert mask[y0:y1, x0:x1].all()
    # Largest: no row or column of whole covered pixels can be added.
    assert not (y0 > 0 and mask[y0 - 1, x0:x1].all()) and not (y1 < 64 and mask[y1, x0:x1].all())
    assert not (x0 > 0 and mask[y0:y1, x0 - 1].all()) and not (x1 < 128 and mask[y0:y1, x1].all())
    # A linear ramp in LR x resampled onto the grid bins back to the LR pixel centres' x.
    ramp_hr = t.apply(np.stack(np.meshgrid(np.arange(300.0), np.arange(150.0)), -1).reshape(-1, 2))
    ramp_hr = ramp_hr[:, 0].reshape(HR_SHAPE).astype(np.float32)
    keys = resample_keys(ramp_hr, t, (64, 128))
    assert keys.lr_crop == crop and keys.valid_fraction == 1.0
    assert keys.hr_on_grid.shape == (1, 4 * (y1 - y0), 4 * (x1 - x0))
    binned = bin_frames(keys.hr_on_grid)[0]
    assert binned == pytest.approx(
        np.broadcast_to(np.arange(x0, x1, dtype=np.float32), binned.shape), abs=2e-3
    )


def test_resample_round_trip_matches_lr(scene: np.ndarray) -> None:
    t = CameraTransform.from_params(1 / RATIO, 3.0, (12.3, 4.7), flip_x=True, hr_shape=HR_SHAPE)
    hr = warp_hr_view(scene[KEYS], t, HR_SHAPE)
    keys = resample_keys(hr, t, (64, 128))
    y0, y1, x0, x1 = keys.lr_crop
    assert psnr(bin_frames(keys.hr_on_grid), bin_frames(scene[KEYS])[:, y0:y1, x0:x1]) > 45
    whole = resample_keys(hr, t, (64, 128), overlap=(0, 64, 0, 128))  # beyond the HR view
    assert whole.hr_on_grid.shape == (3, 256, 512) and 0.4 < whole.valid_fraction < 0.9
    with pytest.raises(ValueError, match="overlap"):
        resample_keys(hr, t, (64, 128), overlap=(0, 65, 0, 128))
    # Coarser HR than the grid (ratio 6 > 4): low-passed, still consistent.
    t6 = CameraTransform.from_params(1 / 6, -2.0, (20.0, 8.0), hr_shape=(64, 128))
    hr6 = warp_hr_view(scene[KEYS], t6, (64, 128))
    keys6 = resample_keys(hr6, t6, (64, 128))
    y0, y1, x0, x1 = keys6.lr_crop
    assert psnr(bin_frames(keys6.hr_on_grid), bin_frames(scene[KEYS])[:, y0:y1, x0:x1]) > 30


# -- estimation --------------------------------------------------------------------------------
@pytest.mark.parametrize("psnr_db", [None, 30.0, 20.0])
def test_estimate_similarity_with_flip(scene: np.ndarray, psnr_db: float | None, tmp_path) -> None:
    true = CameraTransform.from_params(1 / RATIO, 3.0, (12.3, 4.7), flip_x=True, hr_shape=HR_SHAPE)
    hr = warp_hr_view(scene[KEYS], true, HR_SHAPE)
    lr = _lr(scene, psnr_db)[KEYS]
    reg = estimate_transform(hr, lr, scale_hint=1 / 2.8)  # a rough hint
    p, q = reg.transform.params(), true.params()
    assert p["flip_x"] and not p["flip_y"]
    assert p["rotation_deg"] == pytest.approx(q["rotation_deg"], abs=0.2)
    assert p["scale"] == pytest.approx(q["scale"], rel=0.005)
    assert _corner_error(reg.transform, true, reg.overlap_lr) < 0.1
    assert reg.residual_lr_px < 0.2 and reg.per_key_residual_lr_px.shape == (3,)
    assert check_residual(reg) is reg
    # A given transform (file, user adjustment) is assessed the same way.
    again = assess_transform(hr, lr, reg.transform)
    assert again.source == "file" and again.overlap_lr == reg.overlap_lr
    assert again.score == pytest.approx(reg.score, abs=1e-6)
    shifted = CameraTransform(np.array(reg.transform.matrix) + [[0, 0, 1.0], [0, 0, 0], [0, 0, 0]])
    assert assess_transform(hr, lr, shifted).residual_lr_px > 0.7  # 1 LR px off
    assert "mirrored left-right" in reg.report()
    path = reg.transform.save(tmp_path / "t.json", info=reg.info())  # JSON-ready
    assert CameraTransform.load(path).allclose(reg.transform, atol=0)


def test_refuses_unrelated_images(scene: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    texture = rng.random((150, 300)).astype(np.float32)
    texture = np.stack([texture, np.roll(texture, 3, axis=1)])
    reg = estimate_transform(texture, _lr(scene, 30.0)[[0, 8]], scale_hint=1 / RATIO)
    with pytest.raises(RegistrationError, match="too poor to fuse") as info:
        check_residual(reg)
    message = str(info.value)
    assert re.search(r"correlation of the aligned images -?0\.\d+ < 0\.3", message), message
    assert "residual misregistration" in message and "per key" in message
    # Another take of the same kind of scene (same plate, surface and layout, other pores and
    # spatter): it correlates well, but the residual gives it away.
    other = simulate_sequence(3, (256, 512), seed=50, noise=False)
    true = CameraTransform.from_params(1 / RATIO, 3.0, (12.3, 4.7), flip_x=True, hr_shape=HR_SHAPE)
    reg = estimate_transform(warp_hr_view(other, true, HR_SHAPE), _lr(scene, 30.0)[KEYS],
                             scale_hint=1 / RATIO)  # fmt: skip
    with pytest.raises(RegistrationError, match=r"residual misregistration \d.* > 0.5 allowed"):
        check_residual(reg)


def test_measure_residual_sees_a_one_pixel_error(scene: np.ndarray) -> None:
    true = CameraTransform.from_params(1 / RATIO, 3.0, (12.3, 4.7), hr_shape=HR_SHAPE)
    hr = warp_hr_view(scene[KEYS], true, HR_SHAPE)
    lr = _lr(scene, 30.0)[KEYS]
    off = CameraTransform.from_params(1 / RATIO, 3.0, (13.3, 4.7), hr_shape=HR_SHAPE)
    keys = resample_keys(hr, off, (64, 128))
    y0, y1, x0, x1 = keys.lr_crop
    median, per_key = measure_residual(keys.hr_on_grid, lr[:, y0:y1, x0:x1])
    assert 0.8 < median < 1.2 and per_key.shape == (3,)
    with pytest.raises(ValueError, match="grid"):
        measure_residual(keys.hr_on_grid[:, 1:], lr[:, y0:y1, x0:x1])


def test_overlay_modes() -> None:
    a = np.zeros((64, 64), np.float32)
    a[:, 32:] = 1
    b = 1 - a
    board = overlay(a, b, "checkerboard", tile=16)
    assert board.shape == (64, 64) and board[0, 0] == a[0, 0] and board[0, 16] == b[0, 16]
    assert overlay(a, b, "blend") == pytest.approx(np.full((64, 64), 0.5))
    with pytest.raises(ValueError, match="mode"):
        overlay(a, b, "wipe")
    with pytest.raises(ValueError, match="same shape"):
        overlay(a, b[1:])


def test_bad_inputs(scene: np.ndarray) -> None:
    lr = _lr(scene, None)
    hr = np.random.default_rng(0).random((3, 150, 300))
    with pytest.raises(ValueError, match="3 HR keys but 2 LR frames"):
        estimate_transform(hr, lr[:2])
    with pytest.raises(ValueError, match="did you mean 1/2.9"):
        estimate_transform(hr[:2], lr[:2], scale_hint=2.9)
    with pytest.raises(ValueError, match="model"):
        estimate_transform(hr[:2], lr[:2], model="projective")
    with pytest.raises(ValueError, match="HR keys: frame 1 is constant"):
        estimate_transform(np.stack([hr[0], np.zeros((150, 300))]), lr[:2])
    hr[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="HR keys: frame 1 holds non-finite"):
        estimate_transform(hr[:2], lr[:2])


def test_estimate_affine(scene: np.ndarray) -> None:
    true = CameraTransform.from_params(1 / RATIO, -2.5, (10.0, 6.0), flip_y=True,
                                       hr_shape=HR_SHAPE, shear=0.03, aspect=0.98)  # fmt: skip
    keys = [0, 2, 4, 6, 8]  # six parameters: more keys for the same accuracy in the noise
    hr = warp_hr_view(scene[keys], true, HR_SHAPE)
    reg = estimate_transform(hr, _lr(scene, 25.0)[keys], model="affine", scale_hint=1 / RATIO)
    p = reg.transform.params()
    assert p["flip_y"] and not p["flip_x"] and reg.model == "affine"
    assert p["shear"] == pytest.approx(0.03, abs=0.005)
    assert p["aspect"] == pytest.approx(0.98, abs=0.005)
    assert _corner_error(reg.transform, true, reg.overlap_lr) < 0.1


def test_estimate_hr_view_larger_than_lr(scene: np.ndarray) -> None:
    """The paper's cameras: the HR field (1677 x 1048 um) overhangs the LR one (1528 x 955)."""
    hr_shape = (200, 420)
    true = CameraTransform.from_params(1 / RATIO, 1.5, (-8.0, -5.0), flip_x=True, hr_shape=hr_shape)
    hr = warp_hr_view(scene[KEYS], true, hr_shape)
    reg = estimate_transform(hr, _lr(scene, 20.0)[KEYS], scale_hint=1 / RATIO)
    assert reg.overlap_lr == (0, 64, 0, 128)  # the HR view covers the whole LR view
    assert reg.transform.params()["flip_x"]
    assert _corner_error(reg.transform, true, reg.overlap_lr) < 0.1


def test_estimate_without_scale_hint(scene: np.ndarray) -> None:
    true = CameraTransform.from_params(1 / RATIO, 3.0, (12.3, 4.7), flip_x=True, hr_shape=HR_SHAPE)
    hr = warp_hr_view(scene[KEYS], true, HR_SHAPE)
    reg = estimate_transform(hr, _lr(scene, 30.0)[KEYS], scale_range=(0.3, 0.42))
    assert reg.transform.params()["flip_x"]
    assert _corner_error(reg.transform, true, reg.overlap_lr) < 0.1


# -- calibration target ------------------------------------------------------------------------
def _grid_scene(rim: bool) -> np.ndarray:
    """A copper-grid-like target on the 4x grid: 12 LR px pitch, 3.5 px bars (+ the rim)."""
    y, x = np.mgrid[0:256, 0:512].astype(np.float64)
    holes = ((x + 7) % 48 >= 14) & ((y + 5) % 48 >= 14)
    scene = np.where(holes, 0.85, 0.2)
    if rim:  # the grid's rim: an arc of solid copper across the top right
        scene[np.hypot(x - 380, y + 260) < 420] = 0.2
    return scene.astype(np.float32)


@pytest.mark.parametrize("rim", [True, False])
def test_estimate_from_target(rim: bool) -> None:
    scene = _grid_scene(rim)
    lr = _lr(scene, 30.0)
    assert grid_period(lr) == pytest.approx(12.0)
    true = CameraTransform.from_params(1 / RATIO, -2.0, (14.3, 6.2), flip_y=True, hr_shape=HR_SHAPE)
    hr = warp_hr_view(scene, true, HR_SHAPE)
    if rim:  # the rim breaks the periodicity: no coarse estimate needed
        reg = estimate_from_target(hr, lr, scale_hint=1 / RATIO)
        assert reg.source == "target" and reg.transform.params()["flip_y"]
        assert _corner_error(reg.transform, true, reg.overlap_lr) < 0.1
    else:  # perfectly periodic: refused, then resolved by a coarse estimate 3 px and 1 deg off
        with pytest.raises(RegistrationError, match="ambiguous.*coarse="):
            estimate_from_target(hr, lr, scale_hint=1 / RATIO)
    coarse = CameraTransform.from_params(
        1 / 2.85, -1.0, (17.0, 4.0), flip_y=True, hr_shape=HR_SHAPE
    )
    reg = estimate_from_target(hr, lr, coarse=coarse)
    assert _corner_error(reg.transform, true, reg.overlap_lr) < 0.1
    assert reg.transform.params()["rotation_deg"] == pytest.approx(-2.0, abs=0.05)
