"""Checkpoints: round trip, hash, config mismatch, BasicSR-style state dicts."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest
import torch

from napari_xfusion.nn.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    ConfigMismatchError,
    infer_config,
    load_model,
    read_checkpoint,
    save_checkpoint,
    sha256_file,
)
from napari_xfusion.nn.edvr import NetConfig, build_model, named_config


def _lr_hr(h: int = 6, w: int = 5, stf: bool = True):
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, 1, h, w, generator=g)
    return lr, (torch.rand(1, 2, 1, 4 * h, 4 * w, generator=g) if stf else None)


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    config = named_config("tiny", "edvr-stf")
    model = build_model(config).eval()
    path = tmp_path / "sub" / "m.pt"
    digest = save_checkpoint(path, model, provenance={"iterations": 3, "data": ["toy"]})
    assert digest == sha256_file(path) and len(digest) == 64
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves nothing behind

    loaded = load_model(path, expect=config)
    assert not loaded.training
    assert loaded.config == config
    info = loaded.checkpoint_info
    assert info["sha256"] == digest and info["provenance"] == {"iterations": 3, "data": ["toy"]}
    assert info["config"] == config.to_dict()
    lr, hr = _lr_hr()
    with torch.inference_mode():
        torch.testing.assert_close(loaded(lr, hr), model(lr, hr), rtol=0, atol=0)


def test_mismatch_is_refused_with_the_differences(tmp_path):
    config = named_config("tiny", "edvr-stf")
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model(config))
    with pytest.raises(
        ConfigMismatchError,
        match=r"arch: 'edvr-stf' in the checkpoint m\.pt, "
        r"expected 'edvr'",
    ):
        load_model(path, expect="edvr")
    with pytest.raises(ConfigMismatchError, match="num_feat: 8 .* expected 16"):
        load_model(path, expect=replace(config, num_feat=16))
    with pytest.raises(ConfigMismatchError, match="num_reconstruct_block: 1 .* expected 5"):
        load_model(path, expect={"arch": "edvr-stf", "num_reconstruct_block": 5})
    with pytest.raises(ValueError, match="unknown NetConfig field"):
        load_model(path, expect={"channels": 8})


def test_save_rejects_bad_inputs(tmp_path):
    model = build_model(named_config("tiny", "edvr"))
    with pytest.raises(ConfigMismatchError):
        save_checkpoint(tmp_path / "a.pt", model, config=named_config("tiny", "edvr-stf"))
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "b.pt", model, provenance={"when": object()})
    assert not list(tmp_path.iterdir())


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: is not a PyTorch file .*expected a"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"params": {"foo": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an EDVR state dict"):
        read_checkpoint(tmp_path / "other.pt")


@pytest.mark.parametrize("arch", ["edvr", "edvr-stf"])
def test_basicsr_state_dict_loads(tmp_path, arch):
    # A BasicSR-trained model as BasicSR saves it: RGB, wrapped in DDP ("module."), with EMA.
    torch.manual_seed(1)
    rgb = build_model(replace(named_config("tiny", arch), num_in_ch=3)).eval()
    ema = {f"module.{k}": v for k, v in rgb.state_dict().items()}
    junk = {k: torch.zeros_like(v) for k, v in ema.items()}
    torch.save({"params": junk, "params_ema": ema}, tmp_path / "net_g_1000.pth")

    assert infer_config(rgb.state_dict()) == rgb.config
    as_rgb = load_model(tmp_path / "net_g_1000.pth", expect=rgb.config)
    assert as_rgb.checkpoint_info["source"] == "basicsr:params_ema"

    # Grey: equal to the RGB model's channel mean on a grey frame copied to R, G and B.
    grey = load_model(tmp_path / "net_g_1000.pth", expect={"arch": arch, "num_in_ch": 1})
    assert grey.config == named_config("tiny", arch)
    lr, hr = _lr_hr(stf=arch == "edvr-stf")
    with torch.inference_mode():
        want = rgb(
            lr.expand(-1, -1, 3, -1, -1), None if hr is None else hr.expand(-1, -1, 3, -1, -1)
        )
        torch.testing.assert_close(grey(lr, hr), want.mean(1, keepdim=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["edvr", "edvr-stf"])
def test_infer_paper_config_from_shapes(arch):
    # Shapes only (meta tensors): the XFusion paper model's state dict has these shapes.
    with torch.device("meta"):
        state = build_model(named_config("paper", arch)).state_dict()
    assert infer_config(state) == named_config("paper", arch)


def test_basicsr_five_frame_model_is_refused_for_a_three_frame_window(tmp_path):
    five = build_model(
        NetConfig(
            arch="edvr",
            num_feat=8,
            deformable_groups=2,
            num_frame=5,
            num_extract_block=1,
            num_reconstruct_block=1,
            num_feat_hr=8,
        )
    )
    torch.save(five.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ConfigMismatchError, match="num_frame: 5 .* expected 3"):
        read_checkpoint(tmp_path / "bare.pth", expect={"arch": "edvr", "num_frame": 3})
    assert read_checkpoint(tmp_path / "bare.pth").source == "basicsr:-"


# -- damaged and hostile checkpoints (issue 13, item 8) -------------------------------------------


def _tiny(tmp_path, name="m.pt"):
    torch.manual_seed(0)
    model = build_model(named_config("tiny", "edvr"))
    path = tmp_path / name
    save_checkpoint(path, model)
    return path, torch.load(path, weights_only=True)


def test_checkpoint_without_config_names_the_file_and_what_is_expected(tmp_path):
    path, payload = _tiny(tmp_path)
    del payload["config"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: a napari-xfusion checkpoint without "
                       r"'config'; expected the network configuration"):  # fmt: skip
        load_model(path)
    payload["config"] = {"arch": "edvr", "num_feat": "many"}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: invalid network configuration"):
        load_model(path)


def test_wrong_tensor_shapes_are_named(tmp_path):
    path, payload = _tiny(tmp_path)
    payload["params"]["conv_last.weight"] = torch.zeros(1, 3, 5, 5)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: 1 tensor\(s\) do not have the shapes.*"
                       r"conv_last\.weight \(1, 3, 5, 5\) \(expected"):  # fmt: skip
        load_model(path)


@pytest.mark.parametrize(("value", "what"), [(float("nan"), "NaN"), (float("inf"), "NaN/inf"),
                                             (3e7, "reaches")])  # fmt: skip
def test_non_finite_or_absurd_weights_are_refused(tmp_path, value, what):
    path, payload = _tiny(tmp_path)
    payload["params"]["conv_first.weight"][0, 0, 0, 0] = value
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=rf"m\.pt: weight conv_first\.weight .*{what}"):
        load_model(path)


def test_non_checkpoint_files_get_a_short_message(tmp_path):
    obj = argparse.Namespace(a=1)  # any object beyond tensors and containers
    torch.save({"format": FORMAT, "version": VERSION, "obj": obj}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "obj.pt")
    message = str(info.value)
    assert "obj.pt: a PyTorch file holding Python objects besides tensors" in message
    assert "would run code" in message
    assert "weights_only" not in message and len(message) < 400  # not PyTorch's essay
    for name, data, what in [
        ("lfs.pt", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "a Git LFS"),
        ("img.pt", b"II*\x00" + bytes(60), "a TIFF image"),
        ("empty.pt", b"", "an empty file"),
        ("page.pt", b"<!DOCTYPE html><html>", "an HTML"),
    ]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{name}: is {what}.*expected a PyTorch"):
            read_checkpoint(tmp_path / name)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt: holds a list, expected a dict"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(CheckpointError, match=r"dict\.pt: neither a napari-xfusion checkpoint"):
        read_checkpoint(tmp_path / "dict.pt")
