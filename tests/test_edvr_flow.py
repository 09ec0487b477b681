"""edvr-stf-flow: the network starts as `flow`, its inputs, offsets bound, checkpoints, method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.flow import FlowFuser, warp
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.nn.checkpoint import ConfigMismatchError, load_model, save_checkpoint
from napari_xfusion.nn.dcn import DCNv2Pack, modulated_deform_conv2d
from napari_xfusion.nn.edvr import NetConfig, build_model, named_config
from napari_xfusion.nn.edvr_flow import (
    EDVRSTFFlow,
    RecordingFlowFuser,
    flow_key_inputs,
    pack_key_inputs,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sequence():
    hr = simulate_sequence(11, (64, 128), seed=3, noise=False)
    return hr, bin_frames(hr)


def _tiny(seed: int = 0, **changes) -> EDVRSTFFlow:
    torch.manual_seed(seed)
    cfg = NetConfig.from_dict({**named_config("tiny", "edvr-stf-flow").to_dict(), **changes})
    return build_model(cfg).eval()


def test_flow_key_inputs_are_the_flow_frame_and_keys_warped_along_its_motion(sequence):
    hr, lr = sequence
    read = lambda i: lr[i]  # noqa: E731
    keys, lr_keys = hr[[0, 10]], lr[[0, 10]]
    inputs = flow_key_inputs(RecordingFlowFuser(), 4, (0, 10), lr[4], keys, lr_keys, read)
    frame, conf = FlowFuser().fuse(4, (0, 10), lr[4], hr[[0, 10]], lr[[0, 10]], read_lr=read)
    np.testing.assert_array_equal(inputs.frame, frame)  # exactly the flow method's frame
    np.testing.assert_array_equal(inputs.confidence, conf)
    motion = FlowFuser().motion(4, (0, 10), hr[[0, 10]], lr[[0, 10]], read, lr_t=lr[4])
    np.testing.assert_allclose(inputs.warped[1], warp(hr[10], motion[1].flow), atol=1e-6)
    assert inputs.key_confidence.shape == (2, 64, 128)
    assert 0 <= inputs.key_confidence.min() and inputs.key_confidence.max() <= 1
    packed = inputs.packed()
    assert packed.shape == (2, 3, 64, 128) and packed.dtype == np.float32
    np.testing.assert_array_equal(packed[0, 2], packed[1, 2])
    # At a key time the frame is the key, and the motion is still computed for the network.
    at_key = flow_key_inputs(RecordingFlowFuser(), 0, (0, 10), lr[0], hr[[0, 10]], lr[[0, 10]])
    np.testing.assert_array_equal(at_key.frame, hr[0])
    assert at_key.warped.shape == (2, 64, 128)


def test_untrained_network_is_exactly_flow_and_reports_five_scores(sequence):
    hr, lr = sequence
    inputs = flow_key_inputs(
        RecordingFlowFuser(), 3, (0, 10), lr[3], hr[[0, 10]], lr[[0, 10]], lambda i: lr[i]
    )
    model = _tiny()
    x = torch.from_numpy(lr[[2, 3, 4]])[None, :, None]
    keys = torch.from_numpy(inputs.packed())[None]
    with torch.no_grad():
        out, scores = model(x, keys, return_attention=True)
    np.testing.assert_array_equal(out[0, 0].numpy(), inputs.frame)
    assert scores.shape == (1, 5) and torch.isfinite(scores).all()
    # A trained residual changes it (the zero init is the only reason it matched).
    with torch.no_grad():
        model.conv_last.bias.fill_(0.01)
        assert not torch.equal(model(x, keys), out)


def test_key_inputs_are_checked_by_shape(sequence):
    model = _tiny()
    x = torch.zeros(1, 3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"needs the 2 warped key inputs"):
        model(x, None)
    with pytest.raises(ValueError, match=r"\(B, 2, 3 = warped key, confidence, flow frame"):
        model(x, torch.zeros(1, 2, 1, 32, 32))  # raw keys, as edvr-stf takes them
    with pytest.raises(ValueError, match="grey"):
        _tiny(num_in_ch=3)
    packed = pack_key_inputs(np.zeros((2, 32, 32)), np.ones((2, 32, 32)), np.full((32, 32), 0.5))
    assert packed.shape == (2, 3, 32, 32) and packed[1, 2, 0, 0] == 0.5


def test_max_offset_clamps_the_dcn_offsets_and_the_stats_are_recorded():
    torch.manual_seed(0)
    x, feat = torch.rand(1, 8, 12, 12), torch.rand(1, 8, 12, 12)
    bounded = DCNv2Pack(8, 8, deformable_groups=2, max_offset=1.5)
    with torch.no_grad():
        bounded.conv_offset.bias.uniform_(-6, 6)  # offsets of several pixels
    out = bounded(x, feat)
    mean, peak = bounded.offset_stats
    assert float(peak) > 1.5 and 0 < float(mean) <= float(peak)  # stats before the clamp
    o1, o2, logits = torch.chunk(bounded.conv_offset(feat), 3, dim=1)
    offset = torch.cat((o1, o2), 1).clamp(-1.5, 1.5)
    want = modulated_deform_conv2d(x, offset, torch.sigmoid(logits), bounded.weight,
                                   bounded.bias, padding=1, deform_groups=2)  # fmt: skip
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="max_offset"):
        DCNv2Pack(8, 8, deformable_groups=2, max_offset=0)
    with pytest.raises(ValueError, match="max_offset"):
        NetConfig(max_offset=-1.0)
    # The model passes it to every PCD level; unbounded is not written into configs.
    model = _tiny(max_offset=4.0)
    assert {p.max_offset for p in model.pcd_align.dcn_packs().values()} == {4.0}
    assert "max_offset" not in named_config("small").to_dict()
    assert NetConfig.from_dict(model.config.to_dict()) == model.config


def test_checkpoint_records_the_arch_and_refuses_mismatches(tmp_path):
    model = _tiny(seed=1, max_offset=8.0)
    path = tmp_path / "flow.pt"
    save_checkpoint(path, model, model.config, {"note": "test"})
    loaded = load_model(path, expect="edvr-stf-flow")
    assert isinstance(loaded, EDVRSTFFlow) and loaded.config == model.config
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigMismatchError, match="arch: 'edvr-stf-flow'.*expected 'edvr-stf'"):
        load_model(path, expect="edvr-stf")


# -- the method -------------------------------------------------------------------------------


@pytest.fixture
def tiny_weights(tmp_path):
    model = _tiny(seed=2)
    path = tmp_path / "tiny-flow.pt"
    save_checkpoint(path, model, model.config, {"note": "random weights, zero residual"})
    return path


def test_method_runs_through_the_engine_equal_to_flow_with_attention_and_confidence(
    sequence, tiny_weights
):
    from napari_xfusion.engine import KeyFrames, run

    hr, lr = sequence
    keys = KeyFrames.from_full_rate(hr, key_step=5)
    options = {"edvr-stf-flow": {"weights": str(tiny_weights), "device": "cpu"}}
    results: dict[str, dict] = {}
    for r in run(["flow", "edvr-stf-flow"], lr, keys, method_options=options):
        results.setdefault(r.method, {})[r.index] = r
    assert sorted(results["edvr-stf-flow"]) == list(range(11))
    for t, r in results["edvr-stf-flow"].items():
        flow = results["flow"][t]
        np.testing.assert_array_equal(r.frame, flow.frame)  # zero residual: flow exactly
        np.testing.assert_array_equal(r.extras["confidence"], flow.extras["confidence"])
        assert r.attention is not None and r.attention.shape == (5,)
        assert np.isfinite(r.backward) and np.isfinite(r.forward)


def test_method_says_clearly_when_no_weights_are_shipped(tmp_path, monkeypatch, tiny_weights):
    from napari_xfusion.methods import get_reconstructor, network

    monkeypatch.setattr(network, "WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match=r"no shipped weights for 'edvr-stf-flow'.*weights"):
        get_reconstructor("edvr-stf-flow", device="cpu")
    method = get_reconstructor("edvr-stf-flow", weights=str(tiny_weights), device="cpu")
    info = method.describe()
    assert info["method"] == "edvr-stf-flow" and info["config"]["arch"] == "edvr-stf-flow"
    assert info["flow"]["preset"] == "fast"


def test_method_refuses_edvr_stf_weights(tmp_path):
    from napari_xfusion.methods import get_reconstructor

    torch.manual_seed(0)
    stf = build_model(named_config("tiny", "edvr-stf"))
    path = tmp_path / "stf.pt"
    save_checkpoint(path, stf, stf.config, {})
    with pytest.raises(ConfigMismatchError, match="expected 'edvr-stf-flow'"):
        get_reconstructor("edvr-stf-flow", weights=str(path), device="cpu")


def test_registry_declares_it_like_the_other_networks():
    from napari_xfusion.methods import METHODS, get_spec

    spec = get_spec("edvr-stf-flow")
    assert spec.needs_torch and spec.needs_weights and spec.uses_hr_keys and spec.attention
    assert spec.outputs == ("confidence",)
    assert spec.default_weights.endswith("resources/weights/edvr-stf-flow-small.pt")
    assert {o.name for o in spec.options} == {o.name for o in get_spec("edvr-stf").options}
    assert METHODS["edvr-stf-flow"] == spec.target
    # The paper's models are unchanged: raw keys for edvr-stf, LR only for edvr.
    assert get_spec("edvr-stf").load_class().arch == "edvr-stf"
    assert get_spec("edvr").load_class().arch == "edvr"


def test_shipped_weights_match_their_model_card():
    from pathlib import Path

    from napari_xfusion.nn.checkpoint import sha256_file

    weights = Path(__file__).resolve().parents[1] / "resources/weights/edvr-stf-flow-small.pt"
    if not weights.exists():
        pytest.skip("edvr-stf-flow-small.pt not shipped")
    digest = sha256_file(weights)
    assert (weights.parent / f"{weights.name}.sha256").read_text().split()[0] == digest
    assert f"sha256 `{digest}`" in weights.with_suffix(".md").read_text()
    model = load_model(weights, expect="edvr-stf-flow")
    assert model.config.num_feat == 32 and model.config.max_offset == 16.0
    assert weights.stat().st_size < 4e6
