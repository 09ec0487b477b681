"""Fine-tuning on the user's own keys (app.finetune): split, keep-the-better, checkpoint, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig
from napari_xfusion.app.finetune import (
    FinetuneError,
    FinetuneSettings,
    KeyPairs,
    finetune,
    iter_finetune,
    split_keys,
)
from napari_xfusion.app.inputs import prepare_inputs
from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.nn.checkpoint import load_model, read_checkpoint, save_checkpoint
from napari_xfusion.nn.edvr import build_model, named_config

CONFIG = RunConfig(keys=KeyRule(step=4), device="cpu")
FAST = FinetuneSettings(lr=1e-3, batch_size=2, crop=32, warmup=2, focus=1)


@pytest.fixture(scope="module")
def prepared():
    """25 frames of 64x128 HR, keys every 4 frames: 7 keys, 5 interior."""
    truth = simulate_sequence(25, (64, 128), seed=3, noise=False)
    return prepare_inputs(CONFIG, lr=bin_frames(truth), hr=truth)


def _tiny(folder, name, arch="edvr-stf", scale=None):
    torch.manual_seed(0)
    model = build_model(named_config("tiny", arch))
    with torch.no_grad():
        if scale is None:  # residual zero: the network's output is the bilinear base exactly
            model.conv_last.weight.zero_()
            model.conv_last.bias.zero_()
        else:  # a loud residual: far worse than bilinear, easy to improve on
            model.conv_last.weight.mul_(scale)
            model.conv_last.bias.add_(0.05)
    path = folder / f"{name}.pt"
    save_checkpoint(path, model, provenance={"purpose": "test"})
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {
        "bilinear": _tiny(folder, "bilinear"),
        "harmful": _tiny(folder, "harmful", scale=20.0),
        "edvr": _tiny(folder, "edvr", arch="edvr"),
        "edvr-stf-flow": _tiny(folder, "flow", arch="edvr-stf-flow"),
    }


def _params(path):
    return read_checkpoint(path).state_dict


# --- the split ------------------------------------------------------------------------------


@pytest.mark.parametrize("n_keys", [4, 5, 7, 10, 21])
def test_split_never_holds_out_a_training_target(n_keys):
    keys = list(range(0, 4 * n_keys, 4))
    split = split_keys(keys)
    assert split.validation and split.train
    assert not set(split.validation) & set(split.train)
    assert set(split.validation) | set(split.train) == set(keys[1:-1])  # interior only
    assert keys[0] not in split.train + split.validation
    assert keys[-1] not in split.train + split.validation


def test_split_errors_name_the_keys():
    with pytest.raises(
        FinetuneError, match=r"too few HR keys.*3 key\(s\).*\[0, 4, 8\].*at least 4"
    ):
        split_keys([0, 4, 8])
    with pytest.raises(FinetuneError, match=r"\[0\] are not interior"):
        split_keys([0, 4, 8, 12], validation=[0])
    with pytest.raises(FinetuneError, match="no interior key left"):
        split_keys([0, 4, 8, 12], validation=[4, 8])
    assert split_keys([0, 4, 8, 12], validation=[4]).train == (8,)


def test_training_pairs_never_target_a_held_out_key(prepared, weights, tmp_path, monkeypatch):
    from napari_xfusion.app.finetune import scoring

    scored = []
    real_score = scoring.score_weights

    def spy(config, prepared_, method, path, held_out, device):
        scored.append(tuple(held_out))
        return real_score(config, prepared_, method, path, held_out, device)

    monkeypatch.setattr(scoring, "score_weights", spy)
    result = finetune(
        CONFIG,
        prepared,
        minutes=1,
        out=tmp_path / "m.pt",
        init=weights["harmful"],
        settings=FinetuneSettings(batch_size=1, crop=32, max_steps=2),
    )
    split = result.split
    assert split.validation == (8, 16) and split.train == (4, 12, 20)
    targets = {p["target"] for p in result.provenance["pairs"]}
    assert targets == set(split.train) and not targets & set(split.validation)
    assert scored == [split.validation, split.validation]  # before and after, held-out keys only
    assert set(result.loo_before.per_key) == set(split.validation)
    assert set(result.loo_after.per_key) == set(split.validation)


def test_pairs_hold_the_real_lr_window_and_the_neighbour_keys(prepared):
    pairs = KeyPairs(prepared, [12], "edvr-stf", crop=32, augment=False, focus=1)
    (pair,) = pairs.pairs
    assert pair.keys == (8, 16)
    np.testing.assert_array_equal(pair.target, prepared.keys[12])
    np.testing.assert_array_equal(pair.hr[0], prepared.keys[8])
    np.testing.assert_array_equal(pair.lr[1], prepared.lr[12])  # float [0, 1] LR: as is
    item = pairs.item(np.random.default_rng(0))
    assert item["lr"].shape == (3, 1, 8, 8) and item["hr"].shape == (2, 1, 32, 32)
    assert item["target"].shape == (1, 32, 32)
    # The crop is on the LR grid: the LR crop is the binned target crop (LR = binned HR here).
    np.testing.assert_allclose(bin_frames(item["target"])[0], item["lr"][1, 0], atol=1e-6)
    wide = KeyPairs(prepared, [12], "edvr-stf", max_key_offset=2)
    assert sorted(p.keys for p in wide.pairs) == [(4, 16), (4, 20), (8, 16), (8, 20)]


def test_pairs_of_detector_counts_are_normalised_as_the_engine_reads_them(prepared):
    truth = np.asarray(prepared.truth)
    counts = (200 + 3000 * truth).astype(np.uint16)
    raw = prepare_inputs(
        CONFIG, lr=bin_frames(counts.astype(np.float32)).astype(np.uint16), hr=counts
    )
    assert raw.lr_normalisation is not None and raw.hr_normalisation is not None
    (pair,) = KeyPairs(raw, [12], "edvr-stf", crop=32).pairs
    np.testing.assert_allclose(pair.lr[1], raw.lr_normalisation.apply(raw.lr[12]))
    np.testing.assert_allclose(pair.target, raw.keys[12])
    assert 0 <= pair.lr.min() and pair.lr.max() <= 1 and pair.target.max() <= 1


# --- keep the better ------------------------------------------------------------------------


def test_helpful_finetuning_is_kept(prepared, weights, tmp_path):
    out = tmp_path / "better.pt"
    result = finetune(
        CONFIG,
        prepared,
        minutes=5,
        out=out,
        init=weights["harmful"],
        settings=FinetuneSettings(lr=1e-3, batch_size=2, crop=32, warmup=2, max_steps=25),
    )
    assert result.steps == 25 and result.stopped == "steps"
    assert result.loo_after.psnr > result.loo_before.psnr + 1.0
    assert result.kept == "finetuned" and result.gain_db > 1.0
    saved = _params(out)
    source = _params(weights["harmful"])
    assert not torch.equal(saved["conv_last.weight"], source["conv_last.weight"])
    prov = read_checkpoint(out).provenance
    assert prov["kept"] == "finetuned" and prov["steps"] == 25
    assert prov["source_weights"]["sha256"] == read_checkpoint(weights["harmful"]).sha256
    assert prov["loo_after"]["psnr"] == pytest.approx(result.loo_after.psnr)
    assert prov["keys"]["validation"] == [8, 16]
    assert len(prov["data"]["training_arrays_sha256"]) == 64
    assert "kept the fine-tuned weights" in result.summary_text()


def test_harmful_finetuning_keeps_the_original(prepared, weights, tmp_path):
    out = tmp_path / "worse.pt"
    # lr 1.0 without clipping: every Adam step moves each weight by ~1, wrecking the network.
    bad = FinetuneSettings(
        lr=1.0, eta_min=1.0, warmup=0, grad_clip=None, batch_size=1, crop=32, max_steps=3
    )
    result = finetune(CONFIG, prepared, minutes=5, out=out, init=weights["bilinear"], settings=bad)
    assert result.steps == 3
    assert result.loo_after.psnr < result.loo_before.psnr
    assert result.kept == "original"
    for name, tensor in _params(weights["bilinear"]).items():
        assert torch.equal(_params(out)[name], tensor), name
    assert read_checkpoint(out).provenance["kept"] == "original"
    assert "did not help" in result.summary_text()


def test_no_time_scores_and_keeps_the_original(prepared, weights, tmp_path):
    result = finetune(
        CONFIG, prepared, minutes=0, out=tmp_path / "same.pt", init=weights["bilinear"]
    )
    assert result.steps == 0 and result.kept == "original"
    assert result.loo_after == result.loo_before
    assert "no training step" in result.summary_text()


def test_cancel_returns_the_best_so_far(prepared, weights, tmp_path):
    cancel = threading.Event()
    seen = []

    def progress(event):
        seen.append(event.phase)
        if event.phase == "train" and event.step == 5:
            cancel.set()

    out = tmp_path / "cancelled.pt"
    result = finetune(
        CONFIG,
        prepared,
        minutes=5,
        out=out,
        init=weights["harmful"],
        cancel=cancel,
        on_progress=progress,
        settings=FAST,
    )
    assert result.stopped == "cancelled" and result.steps == 5
    assert seen[:2] == ["validate-before", "prepare"] and seen[-2:] == ["validate-after", "save"]
    assert result.kept == (
        "finetuned" if result.loo_after.psnr > result.loo_before.psnr else "original"
    )
    assert result.kept == "finetuned"  # 5 steps at 1e-3 already beat the loud residual
    assert (
        load_model(out, expect="edvr-stf").checkpoint_info["provenance"]["stopped"] == "cancelled"
    )
    assert not list(tmp_path.glob(".*candidate*"))  # the scored candidate is removed


def test_iter_finetune_yields_progress_and_returns_the_result(prepared, weights, tmp_path):
    events = iter_finetune(
        CONFIG,
        prepared,
        minutes=5,
        out=tmp_path / "m.pt",
        init=weights["harmful"],
        settings=FinetuneSettings(batch_size=1, crop=32, max_steps=2),
    )
    got = []
    with pytest.raises(StopIteration) as stop:
        while True:
            got.append(next(events))
    steps = [e.step for e in got if e.phase == "train"]
    assert steps == [1, 2] and all(np.isfinite(e.loss) for e in got if e.phase == "train")
    assert stop.value.value.steps == 2


# --- the checkpoint runs ----------------------------------------------------------------------


def test_checkpoint_runs_through_fusion(prepared, weights, tmp_path):
    from napari_xfusion.app.job import FrameEvent, run_job

    out = tmp_path / "tuned.pt"
    finetune(
        CONFIG,
        prepared,
        minutes=5,
        out=out,
        init=weights["harmful"],
        settings=FinetuneSettings(batch_size=1, crop=32, max_steps=2),
    )
    config = CONFIG.replace(methods=(MethodChoice("edvr-stf", weights=str(out)),))
    events = run_job(config, prepared, targets=[5, 6, 7])
    frames = [e.result.frame for e in events if isinstance(e, FrameEvent)]
    assert len(frames) == 3 and all(f.shape == (64, 128) and np.isfinite(f).all() for f in frames)


@pytest.mark.parametrize("arch", ["edvr", "edvr-stf-flow"])
def test_other_networks_finetune(prepared, weights, tmp_path, arch):
    out = tmp_path / f"{arch}.pt"
    result = finetune(
        CONFIG,
        prepared,
        method=arch,
        minutes=5,
        out=out,
        init=weights[arch],
        settings=FinetuneSettings(batch_size=1, crop=32, max_steps=1),
    )
    assert result.steps == 1 and np.isfinite(result.loo_before.psnr)
    assert load_model(out, expect=arch).config.arch == arch
    if arch == "edvr-stf-flow":
        item = KeyPairs(prepared, [12], arch, crop=32).item(np.random.default_rng(0))
        assert item["hr_flow"].shape == (2, 3, 32, 32)


def test_training_runs_on_one_thread_and_restores_the_count(
    prepared, weights, tmp_path, monkeypatch
):
    from napari_xfusion.engine import building

    # The engine sets its own count on its first run in a process (the scoring runs it): the
    # training steps must still get settings.threads.
    monkeypatch.setattr(building, "_threads_configured", False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    seen = []

    def progress(event):
        if event.phase == "train":
            seen.append(torch.get_num_threads())

    result = finetune(
        CONFIG,
        prepared,
        minutes=5,
        out=tmp_path / "t.pt",
        init=weights["harmful"],
        on_progress=progress,
        settings=FinetuneSettings(batch_size=1, crop=32, max_steps=2, threads=1),
    )
    assert seen == [1, 1] and result.provenance["threads"] == 1
    assert torch.get_num_threads() == 2  # the engine's choice, kept for the rest of the process
    torch.set_num_threads(before)


# --- errors ---------------------------------------------------------------------------------


def test_errors_say_what_to_change(prepared, weights, tmp_path):
    out = tmp_path / "x.pt"
    with pytest.raises(FinetuneError, match="bicubic uses no network weights.*edvr-stf"):
        finetune(CONFIG, prepared, method="bicubic", out=out)
    with pytest.raises(FinetuneError, match="unknown method 'nope'"):
        finetune(CONFIG, prepared, method="nope", out=out)
    with pytest.raises(FinetuneError, match="missing.pt: no such file"):
        finetune(CONFIG, prepared, out=out, init=tmp_path / "missing.pt")
    with pytest.raises(FinetuneError, match="minutes must be >= 0"):
        finetune(CONFIG, prepared, out=out, minutes=-1, init=weights["bilinear"])
    with pytest.raises(FinetuneError, match="crop must be a multiple of 4"):
        FinetuneSettings(crop=30)
    few = prepare_inputs(CONFIG, lr=prepared.lr[:9], hr=np.asarray(prepared.truth[:9]))
    with pytest.raises(FinetuneError, match="too few HR keys"):
        finetune(CONFIG, few, out=out, init=weights["bilinear"])
    assert not out.exists()


def test_refuses_to_overwrite_an_input(prepared, weights, tmp_path):
    from napari_xfusion.app.export import OutputError

    lr_path = tmp_path / "lr.tif"
    lr_path.write_bytes(b"x")
    with pytest.raises(OutputError):
        finetune(CONFIG.replace(lr=str(lr_path)), prepared, out=lr_path, init=weights["bilinear"])
