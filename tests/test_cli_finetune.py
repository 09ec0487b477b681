"""``xfusion finetune``: runs, reports, Ctrl-C keeps the better model, one-line errors."""

from __future__ import annotations

import signal

import pytest
import torch

from napari_xfusion import cli
from napari_xfusion.nn.checkpoint import load_model, save_checkpoint
from napari_xfusion.nn.edvr import build_model, named_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 25-frame 64x128 sample with keys every 4 frames (7 keys) and a tiny loud network."""
    out = tmp_path_factory.mktemp("sample")
    rc = cli.main(
        ["sample", "-o", str(out), "--frames", "25", "--size", "64x128", "--key-step", "4"]
    )
    assert rc == 0
    torch.manual_seed(0)
    model = build_model(named_config("tiny", "edvr-stf"))
    with torch.no_grad():
        model.conv_last.weight.mul_(20.0)
    save_checkpoint(out / "tiny.pt", model, provenance={"purpose": "test"})
    return out


def _args(data, out, *extra):
    return [
        "finetune",
        "--lr",
        str(data / "lr.tif"),
        "--hr",
        str(data / "hr_keys.tif"),
        "--init",
        str(data / "tiny.pt"),
        "--device",
        "cpu",
        "--crop",
        "32",
        "--batch-size",
        "1",
        "--no-progress",
        "-o",
        str(out),
        *extra,
    ]


def test_finetune_reports_and_writes_a_checkpoint_fuse_loads(data, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert cli.main(_args(data, out, "--max-steps", "3", "--learning-rate", "1e-3")) == 0
    text = capsys.readouterr().out
    assert "held-out keys [8, 16]; trained on [4, 12, 20]" in text
    assert "before" in text and "after" in text and "after 3 steps" in text
    assert ("kept the fine-tuned weights" in text) or ("kept the original weights" in text)
    info = load_model(out, expect="edvr-stf").checkpoint_info["provenance"]
    assert info["kind"] == "finetune" and info["steps"] == 3
    assert info["data"]["lr"]["sha256"] and info["data"]["hr"]["sha256"]
    fused = tmp_path / "fused.tif"
    rc = cli.main(
        [
            "fuse",
            "--lr",
            str(data / "lr.tif"),
            "--hr",
            str(data / "hr_keys.tif"),
            "--method",
            "edvr-stf",
            "--option",
            f"edvr-stf.weights={out}",
            "--frames",
            "5:7",
            "--device",
            "cpu",
            "--no-progress",
            "-o",
            str(fused),
        ]
    )
    assert rc == 0 and fused.is_file()


def _interrupt_at(monkeypatch, steps, phases=()):
    """Send SIGINT from the progress callback at each training step in ``steps`` and at the
    start of each of ``phases``."""
    from napari_xfusion.cli import finetune as command

    original = command._Bar.__call__

    def call(self, event):
        original(self, event)
        if (event.phase == "train" and event.step in steps) or event.phase in phases:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(command._Bar, "__call__", call)


def test_ctrl_c_keeps_the_better_model_so_far(data, tmp_path, capsys, monkeypatch):
    _interrupt_at(monkeypatch, {2})
    out = tmp_path / "model.pt"
    assert cli.main(_args(data, out, "--minutes", "5")) == 130
    captured = capsys.readouterr()
    assert "after 2 steps" in captured.out and "(cancelled)" in captured.out
    assert "interrupted; kept the better model so far" in captured.err
    assert load_model(out).checkpoint_info["provenance"]["stopped"] == "cancelled"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once_and_writes_nothing(data, tmp_path, capsys, monkeypatch):
    # The first stops training after step 1; the second comes while it is being scored.
    _interrupt_at(monkeypatch, {1}, phases=("validate-after",))
    out = tmp_path / "model.pt"
    assert cli.main(_args(data, out, "--minutes", "5")) == 130
    assert "nothing written" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "bicubic"], "--method bicubic is no network: nothing to fine-tune"),
        (["--key-indices", "0,4,8"], None),
        (["--minutes", "-1"], "--minutes must be >= 0"),
        (["--crop", "30"], "crop must be a multiple of 4"),
    ],
)
def test_errors_are_one_line(data, tmp_path, capsys, extra, message):
    out = tmp_path / "model.pt"
    args = _args(data, out, *extra)
    if extra[0] == "--key-indices":  # three keys: nothing left to validate on
        few = tmp_path / "few.tif"
        from napari_xfusion.core.io import read_stack, write_stack

        write_stack(few, read_stack(data / "hr_keys.tif")[:3], {"key_indices": [0, 4, 8]})
        args[args.index("--hr") + 1] = str(few)
        message = "too few HR keys to fine-tune and validate: 3 key(s)"
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("xfusion finetune: error: ")
    assert message in err[0]
    assert not out.exists()


def test_missing_init_and_method_without_weights(data, tmp_path, capsys):
    out = tmp_path / "m.pt"
    args = _args(data, out)
    args[args.index("--init") + 1] = str(tmp_path / "nope.pt")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "nope.pt: no such file" in err
    base = [
        "finetune",
        "--lr",
        str(data / "lr.tif"),
        "--hr",
        str(data / "hr_keys.tif"),
        "--method",
        "flow",
        "-o",
        str(out),
    ]
    assert cli.main(base) == 2
    assert "flow uses no network weights" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["finetune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:\n  xfusion finetune" in text and "--weights edvr-stf=model.pt" in text


def test_validation_keys_choose_the_held_out_keys(data, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert cli.main(_args(data, out, "--max-steps", "1", "--validation-keys", "12")) == 0
    keys = load_model(out).checkpoint_info["provenance"]["keys"]
    assert keys["validation"] == [12] and keys["train_targets"] == [4, 8, 16, 20]
    assert "held-out keys [12]" in capsys.readouterr().out
    assert cli.main(_args(data, out, "--validation-keys", "0")) == 2
    assert "validation keys [0] are not interior HR keys" in capsys.readouterr().err
