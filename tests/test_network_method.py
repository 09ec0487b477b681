"""``edvr`` / ``edvr-stf`` behind the Reconstructor interface, with tiny checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_xfusion.core import windows as win
from napari_xfusion.methods import WindowInputs, get_reconstructor, network
from napari_xfusion.nn.checkpoint import save_checkpoint, sha256_file
from napari_xfusion.nn.edvr import build_model, named_config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for arch in ("edvr", "edvr-stf"):
        torch.manual_seed(0)
        model = build_model(named_config("tiny", arch))
        with torch.no_grad():  # an output that differs visibly from the bilinear base
            for p in model.parameters():
                p.mul_(2)
        paths[arch] = folder / f"{arch}.pt"
        save_checkpoint(paths[arch], model, provenance={"purpose": "test"})
    return paths


def _sequence(n: int = 9, h: int = 7, w: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    hr = rng.random((n, 4 * h, 4 * w), dtype=np.float32)
    lr = hr.reshape(n, h, 4, w, 4).mean((2, 4))
    return lr, hr


def _windows(lr, hr, s=1, key_step=4):
    keys = win.key_indices(len(lr), key_step)
    for w in win.plan(range(len(lr)), len(lr), s, keys):
        yield WindowInputs(
            window=w,
            lr=lr[list(w.lr_indices)],
            hr_keys=hr[list(w.keys)],
            lr_at_keys=lr[list(w.keys)],
        )


@pytest.mark.parametrize("name", ["edvr", "edvr-stf"])
def test_reconstruct(checkpoints, name):
    method = get_reconstructor(name, weights=checkpoints[name], device="cpu")
    assert method.uses_hr_keys == (name == "edvr-stf")
    lr, hr = _sequence()
    item = next(iter(_windows(lr, hr)))
    rec = method.reconstruct(item)
    assert rec.frame.shape == (28, 40) and rec.frame.dtype == np.float32
    assert rec.attention.shape == ((5,) if name == "edvr-stf" else (3,))
    assert rec.attention.dtype == np.float64

    info = method.describe()
    assert info["method"] == name
    assert info["sha256"] == sha256_file(checkpoints[name])
    assert info["config"]["arch"] == name and info["provenance"] == {"purpose": "test"}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_stream_equals_frame_by_frame(checkpoints, batch_size):
    method = get_reconstructor(
        "edvr-stf", weights=checkpoints["edvr-stf"], device="cpu", batch_size=batch_size
    )
    lr, hr = _sequence()
    items = list(_windows(lr, hr, s=2))
    streamed = list(method.reconstruct_stream(iter(items)))
    assert len(streamed) == len(items)
    assert method.cache.misses == len(lr) + 3  # every frame and each of keys 0, 4, 8 once
    for item, rec in zip(items, streamed, strict=True):
        ref = method.reconstruct(item)
        np.testing.assert_allclose(rec.frame, ref.frame, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rec.attention, ref.attention, rtol=1e-5, atol=1e-6)
    method.reset()
    assert len(method.cache) == 0


def test_tiled_method(checkpoints):
    lr, hr = _sequence(h=12, w=9)
    item = next(iter(_windows(lr, hr)))
    whole = get_reconstructor("edvr", weights=checkpoints["edvr"], device="cpu").reconstruct(item)
    tiled = get_reconstructor("edvr", weights=checkpoints["edvr"], device="cpu", tile=6, overlap=8)
    rec = tiled.reconstruct(item)
    assert rec.frame.shape == whole.frame.shape
    assert np.abs(rec.frame - whole.frame).max() < 0.05 * np.abs(whole.frame).max()
    assert tiled.describe()["tile"] == 6


def test_bfloat16_autocast(checkpoints):
    lr, hr = _sequence()
    item = next(iter(_windows(lr, hr)))
    ref = get_reconstructor("edvr-stf", weights=checkpoints["edvr-stf"], device="cpu")
    bf16 = get_reconstructor(
        "edvr-stf", weights=checkpoints["edvr-stf"], device="cpu", precision="bfloat16"
    )
    a, b = ref.reconstruct(item), bf16.reconstruct(item)
    assert b.frame.dtype == np.float32 and b.attention.dtype == np.float64
    scale = np.abs(a.frame).max()
    assert 0 < np.abs(a.frame - b.frame).max() < 0.02 * scale  # bfloat16 has 8 mantissa bits
    np.testing.assert_allclose(b.attention, a.attention, rtol=0.05, atol=1e-3)


def test_wrong_or_missing_weights(checkpoints, tmp_path, monkeypatch):
    with pytest.raises(
        ValueError, match="arch: 'edvr' in the checkpoint edvr.pt, expected 'edvr-stf'"
    ):
        get_reconstructor("edvr-stf", weights=checkpoints["edvr"])
    monkeypatch.setattr(network, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="no shipped weights for 'edvr-stf'.*pass weights="):
        get_reconstructor("edvr-stf")
    with pytest.raises(ValueError, match="batch_size"):
        get_reconstructor("edvr", weights=checkpoints["edvr"], batch_size=0)


def test_shipped_weights_are_checked_against_their_sha256(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(network, "WEIGHTS_DIR", tmp_path)
    shipped = network.shipped_weights("edvr")
    shipped.write_bytes(checkpoints["edvr"].read_bytes())
    sidecar = shipped.with_name(shipped.name + ".sha256")
    sidecar.write_text(f"{sha256_file(shipped)}  {shipped.name}\n")
    assert get_reconstructor("edvr").describe()["sha256"] == sha256_file(shipped)
    sidecar.write_text(f"{'0' * 64}  {shipped.name}\n")
    with pytest.raises(ValueError, match="edvr-small.pt have sha256 .* record 0{64}"):
        get_reconstructor("edvr")


def test_resolve_device():
    assert network.resolve_device("cpu") == torch.device("cpu")
    assert network.resolve_device("auto").type in {"cpu", "cuda", "mps"}


@pytest.mark.skipif(
    not network.shipped_weights("edvr-stf").is_file(), reason="no shipped edvr-stf weights"
)
def test_shipped_edvr_stf_attends_to_the_nearer_key():
    # At a key's own time the key before t *is* the HR frame at t: a trained EDVR-STF must score
    # it above the key 10 frames away, and across the gap the backward score must fall and the
    # forward one rise (the paper's attention curves).
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.sample import simulate_sequence

    hr = simulate_sequence(12, (64, 128), seed=3, noise=False)
    lr = bin_frames(hr)
    method = get_reconstructor("edvr-stf", device="cpu")
    att = {
        it.window.target: method.reconstruct(it).attention
        for it in _windows(lr, hr, key_step=10)
        if it.window.target in (0, 1, 9)
    }
    assert att[0][3] > att[0][4] and att[1][3] > att[1][4], att
    assert att[0][3] > att[9][3] and att[9][4] > att[0][4], att


def test_engine_drives_the_batched_stream(checkpoints):
    # The engine pulls one result at a time while feeding windows lazily: a batch of 3 must
    # read ahead in the feed without losing or reordering frames.
    from napari_xfusion.engine import KeyFrames, run

    lr, hr = _sequence()
    keys = KeyFrames.from_full_rate(hr, key_step=4)
    options = {"edvr-stf": {"weights": checkpoints["edvr-stf"], "batch_size": 3}}
    results = list(run("edvr-stf", lr, keys, method_options=options, device="cpu"))
    assert [r.index for r in results] == list(range(len(lr)))
    single = get_reconstructor("edvr-stf", weights=checkpoints["edvr-stf"], device="cpu")
    for r, item in zip(results, _windows(lr, hr), strict=True):
        ref = single.reconstruct(item)
        np.testing.assert_allclose(r.frame, ref.frame, rtol=1e-5, atol=1e-5)
        assert r.backward == pytest.approx(ref.attention[3], rel=1e-5, abs=1e-6)
        assert r.forward == pytest.approx(ref.attention[4], rel=1e-5, abs=1e-6)


# -- issue 13, item 8: devices, sidecars and outputs --------------------------------------------


@pytest.mark.parametrize("content", ["", "\n", "not-a-hash  edvr-small.pt\n", "abc123\n"])
def test_empty_or_garbled_sha256_sidecar_is_a_clear_error(checkpoints, tmp_path, monkeypatch,
                                                          content):  # fmt: skip
    monkeypatch.setattr(network, "WEIGHTS_DIR", tmp_path)
    shipped = network.shipped_weights("edvr")
    shipped.write_bytes(checkpoints["edvr"].read_bytes())
    shipped.with_name(shipped.name + ".sha256").write_text(content)
    with pytest.raises(ValueError, match=r"edvr-small\.pt\.sha256: expected the weights' sha256 "
                       r"\(64 hex digits"):  # fmt: skip
        get_reconstructor("edvr")


def test_non_finite_network_output_names_method_and_frame(checkpoints):
    method = get_reconstructor("edvr", weights=checkpoints["edvr"], device="cpu")
    with torch.no_grad():  # weights that pass the checkpoint's checks, output that does not
        method.model.conv_last.bias.fill_(float("nan"))
    lr, hr = _sequence()
    inputs = list(_windows(lr, hr))
    with pytest.raises(network.NonFiniteOutputError, match=r"edvr: the network's output for "
                       r"frame 0 has \d+ NaN or infinite pixel"):  # fmt: skip
        method.reconstruct(inputs[0])
    with pytest.raises(network.NonFiniteOutputError, match="frame 0"):
        list(method.reconstruct_stream(inputs))


def test_cuda_on_a_cpu_only_torch_is_one_clear_sentence(monkeypatch):
    from napari_xfusion import engine
    from napari_xfusion.nn.device import DeviceError, check_device

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    want = (r"CUDA was requested but this PyTorch build has no CUDA support \(torch "
            rf"{torch.__version__.replace('+', '[+]')}\); use --device cpu or auto")  # fmt: skip
    with pytest.raises(DeviceError, match=want):
        check_device("cuda")
    with pytest.raises(engine.InputError, match=want):
        engine.build_methods("bicubic", device="cuda")
    with pytest.raises(DeviceError, match="no CUDA support"):
        network.resolve_device("cuda:0")


def test_missing_gpu_index_and_mps_and_bad_names(monkeypatch):
    from napari_xfusion import engine
    from napari_xfusion.nn.device import DeviceError, check_device

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"cuda:7 was requested but this machine has 2 CUDA "
                       r"GPU\(s\) \(cuda:0 \.\. cuda:1\)"):  # fmt: skip
        check_device("cuda:7")
    assert check_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(DeviceError, match="no CUDA GPU is usable"):
        check_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)
    with pytest.raises(DeviceError, match="MPS .* has no MPS support"):
        check_device("mps")
    for bad in ("gpu", "cuda:x", "cpu:1", "cuda:-1"):
        with pytest.raises(engine.InputError, match="unknown device"):
            engine.build_methods("bicubic", device=bad)
    assert engine.build_methods("bicubic", device="CPU")[0].name == "bicubic"
