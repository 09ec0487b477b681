"""Training: sampler geometry, data sources, config, schedule, loop, resume and DDP."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.nn.checkpoint import load_model
from napari_xfusion.train import TrainConfig, load_config, main
from napari_xfusion.train.config import OptimConfig, apply_overrides
from napari_xfusion.train.datasets import (
    ArraySource,
    MovingTexture,
    SimulatedPool,
    StackFolder,
    TexturePool,
    TrainingWindows,
    WindowSampler,
    bundled_textures,
)
from napari_xfusion.train.loop import (
    ModelTrainer,
    charbonnier,
    learning_rate,
    run_progress,
    setup_distributed,
    train,
)

ROOT = Path(__file__).resolve().parents[1]


def _time_coded(n_frames: int = 130, shape: tuple[int, int] = (32, 48)) -> np.ndarray:
    """Frame t holds a spatial ramp plus t / 1000: values identify the time and the pixel."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ramp = (yy * shape[1] + xx) / (shape[0] * shape[1] * 10)
    return np.stack([ramp + t / 1000 for t in range(n_frames)]).astype(np.float32)


def _tiny_overrides(run_dir: Path, iterations: int = 2) -> list[str]:
    return [
        "--net", "tiny", "--iterations", str(iterations), "--batch-size", "2", "--crop", "32",
        "--run-dir", str(run_dir), "--threads", "1",
        "--set", "val.shape=[32,64]", "--set", "val.targets=2", "--set", "val.n_frames=24",
        "--set", "val.key_step=10", "--set", f"val.every={iterations}", "--set", "log_every=1",
        "--set", "data.sources=[{kind: simulated, options: {pool_size: 1, n_frames: 48, "
        "shape: [32, 64]}}, {kind: textures, options: {shape: [64, 64]}}]",
        "--set", "data.key_offsets=[1,6]",
    ]  # fmt: skip


# -- sampler ------------------------------------------------------------------------------------


def test_windows_follow_the_recipe():
    sampler = WindowSampler(crop=16)
    rng = np.random.default_rng(0)
    seen_s, seen_a = set(), set()
    for _ in range(400):
        w = sampler.draw_window(130, rng)
        s = w.separation
        a, b = (w.target - w.key_before) // s, (w.key_after - w.target) // s
        assert w.lr_indices == (w.target - s, w.target, w.target + s)
        assert (w.target - w.key_before) % s == 0 and (w.key_after - w.target) % s == 0
        assert 1 <= a <= 20 and 1 <= b <= 20
        assert 0 <= w.key_before and w.key_after <= 129
        seen_s.add(s)
        seen_a.update((a, b))
    assert seen_s == {1, 2, 3}
    assert seen_a == set(range(1, 21))


def test_short_sequences_cap_the_offsets_and_refuse_when_nothing_fits():
    sampler = WindowSampler(crop=16)
    rng = np.random.default_rng(1)
    for _ in range(100):
        w = sampler.draw_window(7, rng)
        assert w.key_before >= 0 and w.key_after <= 6 and w.key_before < w.target < w.key_after
    with pytest.raises(ValueError, match="holds no window"):
        sampler.draw_window(2, rng)


def test_sample_reads_the_right_times_and_bins_the_same_crop():
    # Every value encodes its frame and pixel: stack[t, y, x] = 10000 t + 100 y + x (exact).
    t, y, x = np.mgrid[:130, :32, :48]
    stack = (10000 * t + 100 * y + x).astype(np.float32)
    sampler = WindowSampler(crop=16, log10_b0=None, augment=False)
    rng = np.random.default_rng(2)
    for _ in range(20):
        item = sampler.draw(ArraySource(stack), rng)
        w = item.window
        assert item.lr.shape == (3, 1, 4, 4) and item.hr.shape == (2, 1, 16, 16)
        assert item.target.shape == (1, 16, 16)
        t0, rest = divmod(int(item.target[0, 0, 0]), 10000)
        y0, x0 = divmod(rest, 100)
        assert t0 == w.target and y0 % 4 == 0 and x0 % 4 == 0  # crop on the LR grid
        np.testing.assert_array_equal(item.target[0], stack[t0, y0 : y0 + 16, x0 : x0 + 16])
        for k, key in enumerate(w.keys):
            np.testing.assert_array_equal(item.hr[k, 0], stack[key, y0 : y0 + 16, x0 : x0 + 16])
        for k, i in enumerate(w.lr_indices):
            expected = bin_frames(stack[i, y0 : y0 + 16, x0 : x0 + 16])
            np.testing.assert_allclose(item.lr[k, 0], expected, rtol=1e-6)


def test_augmentation_is_shared_by_all_frames_and_noise_hits_the_lr_only():
    stack = _time_coded()
    rng = np.random.default_rng(3)
    clean = WindowSampler(crop=16, log10_b0=None, augment=True)
    orientations = set()
    for _ in range(40):
        item = clean.draw(ArraySource(stack), rng)
        # Frames differ by a constant in time only if they got the same flip/rotation.
        for a, b in ((bin_frames(item.target[0]), item.lr[0, 0]), (item.hr[0, 0], item.target[0])):
            np.testing.assert_allclose(a - b, (a - b).mean(), atol=1e-6)
        np.testing.assert_allclose(item.lr[1, 0], bin_frames(item.target[0]), atol=1e-6)
        orientations.add(tuple(np.sign(np.diff(item.target[0], axis=a).mean()) for a in (0, 1)))
    assert len(orientations) > 2  # flips/rotations do happen
    noisy = WindowSampler(crop=16, log10_b0=(1.0, 1.0), augment=False)
    item = noisy.draw(ArraySource(stack), np.random.default_rng(4))
    assert item.b0 == pytest.approx(10.0)
    assert np.abs(item.lr[1, 0] - bin_frames(item.target[0])).mean() > 0.01
    assert item.lr.min() >= 0 and item.lr.max() <= 1
    assert item.hr.dtype == np.float32 and np.all(np.diff(item.hr[0, 0], axis=1) != 0)  # clean


def test_focus_prefers_structured_crops():
    frame = np.zeros((64, 64), np.float32)
    frame[:16, :16] = np.random.default_rng(0).random((16, 16))
    stack = np.repeat(frame[None], 40, 0)
    picks = [WindowSampler(crop=16, focus=f, log10_b0=None, augment=False) for f in (1, 8)]
    rng = np.random.default_rng(5)
    hits = [
        np.mean([p.draw(ArraySource(stack), rng).target.std() > 0.1 for _ in range(60)])
        for p in picks
    ]
    assert hits[1] > hits[0] + 0.3


# -- sources ------------------------------------------------------------------------------------


def test_moving_texture_is_smooth_in_time_and_crops_consistently():
    image = bundled_textures(["camera"])[0]
    assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    tex = MovingTexture(image, 100, (64, 64), np.random.default_rng(6), max_speed=1.0)
    full = tex.read([10, 11, 40], (0, 0, 64, 64))
    assert full.shape == (3, 64, 64) and full.dtype == np.float32
    assert np.abs(full[1] - full[0]).mean() < np.abs(full[2] - full[0]).mean()
    np.testing.assert_allclose(tex.read([11], (8, 12, 16, 16))[0], full[1, 8:24, 12:28], atol=1e-5)


def test_texture_and_simulated_pools_hand_out_sources():
    rng = np.random.default_rng(7)
    tex = TexturePool(n_frames=50, shape=(48, 48), images=bundled_textures(["coins", "moon"]))
    assert tex.draw(rng).read([0, 49], (0, 0, 48, 48)).shape == (2, 48, 48)
    sim = SimulatedPool(pool_size=2, refresh_every=3, n_frames=12, shape=(32, 32))
    first = [sim.draw(rng) for _ in range(2)]
    assert {s.n_frames for s in first} == {12}
    later = [sim.draw(rng) for _ in range(6)]
    assert not all(any(s is f for f in first) for s in later)  # the pool was refreshed


def test_stack_folder_reads_tiffs_and_frame_folders(tmp_path):
    rng = np.random.default_rng(8)
    counts = (rng.random((12, 32, 32)) * 4000 + 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "raw.tif", counts)
    tifffile.imwrite(tmp_path / "short.tif", counts[:2])
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(10):
        tifffile.imwrite(frames / f"f{i}.tif", rng.random((32, 32), dtype=np.float32))
    folder = StackFolder(tmp_path)
    assert [p.name for p in folder.paths] == ["raw.tif", "frames"]  # "short" has no window
    sampler = WindowSampler(crop=16, key_offsets=(1, 3), log10_b0=None)
    for _ in range(10):
        item = sampler.draw(folder.draw(rng), rng)
        assert 0 <= item.target.min() and item.target.max() <= 1
    with pytest.raises(ValueError, match="no stack"):
        StackFolder(frames / "f0.tif")


class _OnePool:
    def __init__(self, source: ArraySource) -> None:
        self.source = source

    def draw(self, rng: np.random.Generator) -> ArraySource:
        return self.source


def test_streams_are_reproducible_and_differ_between_ranks():
    sources = [_OnePool(ArraySource(_time_coded()))]
    sampler = WindowSampler(crop=16)

    def first(rank: int, seed: int = 0) -> torch.Tensor:
        return next(iter(TrainingWindows(sources, [1.0], sampler, seed=seed, rank=rank)))["lr"]

    assert torch.equal(first(0), first(0))
    assert not torch.equal(first(0), first(1))
    assert not torch.equal(first(0), first(0, seed=1))


def test_a_data_worker_runs_opencv_on_one_thread(monkeypatch):
    import types

    import cv2

    import napari_xfusion.train.datasets.sampler as sampler_module

    sources = [_OnePool(ArraySource(_time_coded()))]
    windows = TrainingWindows(sources, [1.0], WindowSampler(crop=16), seed=0)
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        next(iter(windows))  # the training process itself keeps its setting
        assert cv2.getNumThreads() == 2
        worker = types.SimpleNamespace(id=0, num_workers=4)
        monkeypatch.setattr(sampler_module, "get_worker_info", lambda: worker)
        next(iter(windows))
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


# -- config, schedule, loss ---------------------------------------------------------------------


def test_config_round_trips_and_rejects_unknown_keys(tmp_path):
    cfg = apply_overrides(TrainConfig(), ["optim.lr=4e-4", "data.crop=96", "val.every=0"])
    assert cfg.optim.lr == 4e-4 and cfg.data.crop == 96
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(path) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1e-3}})
    with pytest.raises(ValueError, match="unknown key"):
        apply_overrides(cfg, ["data.cropp=64"])
    with pytest.raises(ValueError, match="multiple of 4"):
        apply_overrides(cfg, ["data.crop=30"])
    shipped = load_config(ROOT / "napari_xfusion/train/configs/shipped-small.yaml")
    assert [m.arch for m in shipped.models] == ["edvr-stf", "edvr"]


def test_learning_rate_warms_up_then_anneals_to_eta_min():
    opt = OptimConfig(iterations=1000, lr=4e-4, eta_min=1e-6, warmup=10)
    assert learning_rate(opt, 0, 0.0) == pytest.approx(4e-5)
    assert learning_rate(opt, 9, 0.009) == pytest.approx(4e-4, rel=1e-3)
    assert learning_rate(opt, 500, 0.5) == pytest.approx((4e-4 + 1e-6) / 2)
    assert learning_rate(opt, 1000, 1.0) == pytest.approx(1e-6)
    timed = OptimConfig(iterations=1000, time_budget_minutes=2.0)
    assert run_progress(timed, 100, 30.0) == pytest.approx(0.25)  # the clock leads
    assert run_progress(timed, 900, 30.0) == pytest.approx(0.9)  # the steps lead


def test_charbonnier_is_a_smooth_l1():
    x = torch.zeros(4)
    assert float(charbonnier(x + 0.5, x, eps=1e-6)) == pytest.approx(0.5, abs=1e-5)
    assert float(charbonnier(x, x, eps=1e-3)) == pytest.approx(1e-3)


# -- the loop -----------------------------------------------------------------------------------


def test_trainer_fits_one_batch_and_tsa_warmup_trains_only_fusion(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict(
        {"models": [{"arch": "edvr-stf", "net": "tiny"}], "run_dir": str(tmp_path),
         "optim": {"iterations": 100, "tsa_iterations": 2, "lr": 2e-3}}
    )  # fmt: skip
    trainer = ModelTrainer(cfg.models[0], cfg, setup_distributed("cpu"))
    still = np.repeat(bundled_textures(["camera"])[0][None, 200:264, 200:264], 40, 0)
    item = WindowSampler(crop=32, log10_b0=None).draw(ArraySource(still), np.random.default_rng(9))
    batch = {
        "lr": torch.from_numpy(item.lr)[None],
        "hr": torch.from_numpy(item.hr)[None],
        "target": torch.from_numpy(item.target)[None],
    }
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    losses = [trainer.step(batch, 0, 2e-3), trainer.step(batch, 1, 2e-3)]
    changed = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("fusion.") for k in changed)
    losses += [trainer.step(batch, step, 2e-3) for step in range(2, 30)]
    changed = {k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("conv_first_hi") for k in changed)  # warm-up over: all train
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])  # it learns the fixed batch


def test_cli_trains_both_archs_deterministically_and_resumes(tmp_path):
    args = ["--arch", "edvr-stf", "--arch", "edvr", "--seed", "3"]
    assert main([*args, *_tiny_overrides(tmp_path / "a")]) == 0
    assert main([*args, *_tiny_overrides(tmp_path / "b")]) == 0
    for name, arch in (("edvr-stf-tiny", "edvr-stf"), ("edvr-tiny", "edvr")):
        a = load_model(tmp_path / "a" / name / "model_latest.pt", expect=arch)
        b = load_model(tmp_path / "b" / name / "model_latest.pt", expect=arch)
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(va, vb), k
        prov = a.checkpoint_info["provenance"]
        assert prov["iteration"] == 2 and prov["training"]["seed"] == 3
        log = (tmp_path / "a" / name / "log.csv").read_text().splitlines()
        assert log[0].startswith("iteration,") and len(log) == 3
        assert math.isfinite(float(log[-1].split(",")[4]))  # validation PSNR at the end
    saved = load_config(tmp_path / "a" / "config.yaml")
    assert saved.optim.iterations == 2 and saved.data.crop == 32
    # Resume to 4 steps: continues from step 2 and appends to the log.
    assert main([*args, *_tiny_overrides(tmp_path / "a", iterations=4), "--resume"]) == 0
    resumed = load_model(tmp_path / "a" / "edvr-tiny" / "model_latest.pt")
    assert resumed.checkpoint_info["provenance"]["iteration"] == 4
    assert len((tmp_path / "a" / "edvr-tiny" / "log.csv").read_text().splitlines()) == 5


def test_init_fine_tunes_from_a_checkpoint_of_the_same_arch(tmp_path):
    base = [
        "models=[{arch: edvr, net: tiny}]", f"run_dir={tmp_path / 'a'}", "optim.iterations=1",
        "val.every=0", "data.crop=32", "data.batch_size=1",
        "data.sources=[{kind: textures, options: {shape: [64, 64]}}]",
    ]  # fmt: skip
    first = train(apply_overrides(TrainConfig(), base))["edvr-tiny"]
    wrong = apply_overrides(TrainConfig(), [*base, f"models=[{{arch: edvr-stf, init: {first}}}]"])
    with pytest.raises(ValueError, match="edvr"):
        train(wrong)
    tuned = apply_overrides(
        TrainConfig(), [*base, f"models=[{{arch: edvr, init: {first}}}]", f"run_dir={tmp_path}/b"]
    )
    out = train(tuned)["edvr-small"]
    assert load_model(out).config == load_model(first).config  # the checkpoint's net, not "small"


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_stay_in_sync(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "napari_xfusion.train", "--arch", "edvr-stf", *_tiny_overrides(tmp_path, 3),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = load_model(tmp_path / "edvr-stf-tiny" / "model_latest.pt")
    prov = model.checkpoint_info["provenance"]
    assert prov["world_size"] == 2 and prov["iteration"] == 3
    sums = prov["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]


def test_cli_source_flags_and_a_stack_folder_run(tmp_path, capsys):
    from napari_xfusion.train.cli import build_parser, config_from_args

    args = build_parser().parse_args(
        ["--data", "textures:0.25", "--stacks", f"{tmp_path}:2", "--lr", "4e-4"]
    )
    sources = config_from_args(args).data.sources
    assert [(s.kind, s.weight, s.path) for s in sources] == [
        ("textures", 0.25, None),
        ("stacks", 2.0, str(tmp_path)),
    ]
    assert main(["--set", "data.cropp=3", "--print-config"]) == 2
    assert "unknown key" in capsys.readouterr().err
    frames = np.random.default_rng(0).integers(0, 255, (12, 64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", frames)
    run = [
        "--arch", "edvr", "--net", "tiny", "--stacks", str(tmp_path), "--iterations", "1",
        "--batch-size", "1", "--crop", "32", "--run-dir", str(tmp_path / "run"), "--threads", "1",
        "--set", "val.every=0", "--set", "data.key_offsets=[1,3]",
    ]  # fmt: skip
    assert main(run) == 0
    prov = load_model(tmp_path / "run" / "edvr-tiny" / "model_latest.pt").checkpoint_info
    assert prov["provenance"]["training"]["data"]["sources"][0]["kind"] == "stacks"


@pytest.mark.parametrize("arch", ["edvr-stf", "edvr"])
def test_shipped_weights_match_their_model_cards(arch):
    from napari_xfusion.nn.checkpoint import sha256_file
    from napari_xfusion.nn.edvr import named_config

    weights = ROOT / "resources" / "weights" / f"{arch}-small.pt"
    if not weights.exists():
        pytest.skip(f"{weights.name} not shipped yet")
    digest = sha256_file(weights)
    assert (weights.parent / f"{weights.name}.sha256").read_text().split()[0] == digest
    assert f"sha256 `{digest}`" in weights.with_suffix(".md").read_text()
    model = load_model(weights, expect=arch)
    assert model.config == named_config("small", arch)
    assert weights.stat().st_size < 8e6  # "a few MB"


# -- resume state without pickled objects (issue 13, item 10) -----------------------------------


class _Payload:
    """Pickles to a call that creates ``marker``: what a crafted run folder could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _trainer(tmp_path):
    cfg = TrainConfig.from_dict(
        {"models": [{"arch": "edvr", "net": "tiny"}], "run_dir": str(tmp_path),
         "optim": {"iterations": 10}}
    )  # fmt: skip
    return ModelTrainer(cfg.models[0], cfg, setup_distributed("cpu"))


def test_resume_state_is_plain_tensors_and_restores_everything(tmp_path):
    from napari_xfusion.train.loop import load_train_state

    torch.manual_seed(0)
    trainer = _trainer(tmp_path)
    batch = {"lr": torch.rand(1, 3, 1, 8, 8), "hr": torch.rand(1, 2, 1, 32, 32),
             "target": torch.rand(1, 1, 32, 32)}  # fmt: skip
    trainer.step(batch, 0, 1e-3)
    trainer.skipped = 2
    trainer.save(1, 12.5, {}, snapshot=False)
    after_save = torch.rand(3)
    state_path = trainer.out_dir / "state_latest.pt"
    raw = torch.load(state_path, weights_only=True)  # loads without unpickling objects
    assert raw["format"] == "napari-xfusion-train-state" and raw["iteration"] == 1
    assert isinstance(raw["rng"]["numpy"]["keys"], torch.Tensor)

    other = _trainer(tmp_path)
    assert other.load_state() == (1, 12.5) and other.skipped == 2
    torch.testing.assert_close(torch.rand(3), after_save)  # the RNG continues where it was
    for a, b in zip(other.model.state_dict().values(), trainer.model.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    exp_avg = next(iter(other.optimizer.state_dict()["state"].values()))["exp_avg"]
    assert torch.equal(exp_avg, next(iter(trainer.optimizer.state_dict()["state"].values()))
                       ["exp_avg"])  # fmt: skip
    assert load_train_state(state_path)["seconds"] == 12.5


def test_a_crafted_state_file_does_not_run_code(tmp_path):
    import pickle

    from napari_xfusion.train.loop import TrainStateError

    # The payload is live: unpickled plainly, it creates its marker file.
    live = tmp_path / "live_marker"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists()

    trainer = _trainer(tmp_path / "run")
    trainer.out_dir.mkdir(parents=True)
    marker = tmp_path / "pwned"
    state = {"format": "napari-xfusion-train-state", "version": 2, "iteration": 0,
             "evil": _Payload(marker)}  # fmt: skip
    torch.save(state, trainer.out_dir / "state_latest.pt")
    with pytest.raises(TrainStateError, match=r"state_latest\.pt: cannot resume: it holds Python "
                       r"objects .* could run code; it was not loaded"):  # fmt: skip
        trainer.load_state()
    assert not marker.exists()

    # A state file of the old layout (no format field): refused with what to do instead.
    torch.save({"iteration": 3, "seconds": 1.0}, trainer.out_dir / "state_latest.pt")
    with pytest.raises(TrainStateError, match="not a napari-xfusion training state.*init:"):
        trainer.load_state()


# -- edvr-stf-flow: real-motion data, flow inputs, offsets, curves --------------------------------


def test_real_motion_pool_uses_training_stills_only(monkeypatch):
    from napari_xfusion.core.motion import training_stills, validation_stills
    from napari_xfusion.train.datasets import RealMotionPool, pools

    loaded: list[str] = []
    real_load = pools.load_still

    def spy(name):
        loaded.append(name)
        return real_load(name)

    # RealMotionPool (train.datasets.pools) looks load_still up in its own module.
    monkeypatch.setattr(pools, "load_still", spy)
    # Layers are loaded by core.motion.composite_layers itself, which looks load_still up in
    # its own module (core.motion.layers): watch that module too.
    from napari_xfusion.core.motion import layers as motion_layers

    real_motion_load = motion_layers.load_still
    monkeypatch.setattr(
        motion_layers, "load_still", lambda n: (loaded.append(n), real_motion_load(n))[1]
    )
    pool = RealMotionPool(pool_size=3, refresh_every=1, n_frames=6, shape=(32, 32))
    rng = np.random.default_rng(5)
    for _ in range(6):
        source = pool.draw(rng)
        assert source.n_frames == 6 and source.shape == (32, 32)
        frames = source.read(range(6), (0, 0, 32, 32))
        assert frames.dtype == np.float32 and 0 <= frames.min() and frames.max() <= 1
    assert loaded and set(loaded) <= set(training_stills())
    assert not set(loaded) & set(validation_stills())
    assert set(pool.rendered) == set(loaded)
    with pytest.raises(ValueError, match="reserved for validation"):
        RealMotionPool(stills=["camera", validation_stills()[0]])


def test_simulated_pool_richer_motion_options():
    pool = SimulatedPool(pool_size=1, n_frames=4, shape=(32, 64), speed=(3.0, 4.0),
                         spatter=(2.0, 3.0), drift=2.0)  # fmt: skip
    source = pool.draw(np.random.default_rng(0))
    assert source.stack.shape == (4, 32, 64) and np.isfinite(source.stack).all()


def test_flow_sampler_gives_the_flow_inputs_on_the_crop():
    from napari_xfusion.train.datasets import FlowSampling

    # A scene that does not move: the warped keys and the flow frame are the target.
    still = np.repeat(bundled_textures(["camera"])[0][None, :64, :96], 40, axis=0)
    sampler = WindowSampler(crop=32, key_offsets=(1, 6), log10_b0=None, augment=False,
                            flow=FlowSampling(context=48))  # fmt: skip
    item = sampler.draw(ArraySource(still), np.random.default_rng(1))
    assert item.lr.shape == (3, 1, 8, 8) and item.hr.shape == (2, 1, 32, 32)
    assert item.hr_flow.shape == (2, 3, 32, 32) and item.hr_flow.dtype == np.float32
    np.testing.assert_array_equal(item.hr_flow[0, 2], item.hr_flow[1, 2])
    assert 0 <= item.hr_flow[:, 1].min() and item.hr_flow[:, 1].max() <= 1
    np.testing.assert_allclose(item.hr_flow[:, 0], item.hr[:, 0], atol=2e-3)
    np.testing.assert_allclose(item.hr_flow[0, 2], item.target[0], atol=2e-3)
    np.testing.assert_allclose(item.lr[:, 0], bin_frames(item.hr[:1, 0]).repeat(3, 0), atol=1e-6)
    with pytest.raises(ValueError, match="smaller than the crop"):
        WindowSampler(crop=64, flow=FlowSampling(context=48))
    # Augmented: every array turned alike (the flow frame is still the target).
    sampler = WindowSampler(crop=32, key_offsets=(1, 6), log10_b0=None, augment=True,
                            flow=FlowSampling(context=48))  # fmt: skip
    for seed in range(3):
        item = sampler.draw(ArraySource(still), np.random.default_rng(seed))
        np.testing.assert_allclose(item.hr_flow[0, 2], item.target[0], atol=2e-3)
        np.testing.assert_allclose(item.hr_flow[1, 0], item.hr[1, 0], atol=2e-3)


def _flow_overrides(run_dir: Path, iterations: int) -> list[str]:
    return [
        "--arch", "edvr-stf-flow", "--net", "tiny", "--iterations", str(iterations),
        "--batch-size", "2", "--crop", "32", "--run-dir", str(run_dir), "--threads", "1",
        "--set", "val.shape=[32,64]", "--set", "val.targets=2", "--set", "val.n_frames=12",
        "--set", "val.key_step=10", "--set", f"val.every={iterations}", "--set", "log_every=1",
        "--set", "val.real_motion=[pan-slow]", "--set", "val.real_shape=[32,64]",
        "--set", "val.real_targets=1", "--set", "data.flow_context=48",
        "--set", "data.sources=[{kind: simulated, options: {pool_size: 1, n_frames: 16, "
        "shape: [32, 64]}}, {kind: real-motion, options: {pool_size: 1, n_frames: 16, "
        "shape: [48, 48]}}]",
        "--set", "data.key_offsets=[1,4]",
    ]  # fmt: skip


def test_flow_training_logs_offsets_plots_curves_and_resumes(tmp_path):
    import csv as csv_module

    from napari_xfusion.train.loop import LOG_FIELDS, OFFSET_LEVELS, load_train_state

    run = tmp_path / "run"
    assert main(_flow_overrides(run, 2)) == 0
    out = run / "edvr-stf-flow-tiny"
    rows = list(csv_module.DictReader(open(out / "log.csv", encoding="utf-8")))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    last = rows[-1]
    for level in OFFSET_LEVELS:
        mean, peak = float(last[f"offset_{level}_mean"]), float(last[f"offset_{level}_max"])
        assert math.isfinite(mean) and 0 <= mean <= peak
    for col in ("val_psnr", "flow_psnr", "real_psnr", "real_flow_psnr", "real_bicubic_psnr"):
        assert math.isfinite(float(last[col])), col
    # Two steps from a zero residual: still within a hair of flow on the same frames.
    assert abs(float(last["val_psnr"]) - float(last["flow_psnr"])) < 1.0
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(rows[0]) == set(LOG_FIELDS)
    model = load_model(out / "model_latest.pt", expect="edvr-stf-flow")
    assert model.checkpoint_info["provenance"]["iteration"] == 2
    assert load_train_state(out / "state_latest.pt")["iteration"] == 2  # weights_only load

    before = png.stat().st_mtime_ns
    assert main([*_flow_overrides(run, 4), "--resume"]) == 0
    rows = list(csv_module.DictReader(open(out / "log.csv", encoding="utf-8")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert load_model(out / "model_latest.pt").checkpoint_info["provenance"]["iteration"] == 4
    assert png.stat().st_mtime_ns >= before


def test_offset_stats_of_a_trainer_step(tmp_path):
    from napari_xfusion.train.loop import offset_stats

    cfg = TrainConfig.from_dict(
        {"models": [{"arch": "edvr-stf-flow", "net": {**_tiny_net(), "max_offset": 2.0}}],
         "run_dir": str(tmp_path), "optim": {"iterations": 10}}
    )  # fmt: skip
    trainer = ModelTrainer(cfg.models[0], cfg, setup_distributed("cpu"))
    assert offset_stats(trainer.model) == {}
    with torch.no_grad():  # offsets far past the bound
        trainer.model.pcd_align.cas_dcnpack.conv_offset.bias.fill_(5.0)
    batch = {
        "lr": torch.rand(1, 3, 1, 8, 8),
        "hr": torch.rand(1, 2, 1, 32, 32),
        "hr_flow": torch.rand(1, 2, 3, 32, 32),
        "target": torch.rand(1, 1, 32, 32),
    }
    assert math.isfinite(trainer.step(batch, 0, 1e-4))
    logged = trainer.take_offsets()
    assert logged["offset_cascade_max"] >= 5.0 - 1e-6  # measured before the clamp
    assert set(logged) == {f"offset_{lv}_{k}" for lv in ("l3", "l2", "l1", "cascade")
                           for k in ("mean", "max")}  # fmt: skip
    assert trainer.take_offsets() == {}  # cleared once logged


def _tiny_net() -> dict:
    from napari_xfusion.nn.edvr import named_config

    d = named_config("tiny", "edvr-stf-flow").to_dict()
    del d["arch"]
    return d
