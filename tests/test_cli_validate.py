"""``xfusion validate``: the files it writes, their numbers against the app layer, --config,
--fused, --withhold, and one-line errors (exit 2) naming the file."""

from __future__ import annotations

import csv
import math

import pytest

from napari_xfusion.cli import main, make_sample

N, SHAPE, STEP = 41, (64, 128), 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The sample as ``xfusion sample`` writes it: lr.tif, hr_keys.tif (key_indices), truth."""
    return make_sample(tmp_path_factory.mktemp("data"), n_frames=N, shape=SHAPE, key_step=STEP)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _validate(data, out, *extra):
    return main(["validate", "--lr", str(data["lr"]), "--hr", str(data["keys"]), *extra,
                 "-o", str(out)])  # fmt: skip


def test_round_trip_on_the_sample(data, tmp_path, capsys):
    from napari_xfusion.app.config import MethodChoice, RunConfig
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.validation import leave_one_key_out

    out = tmp_path / "val"
    assert _validate(data, out, "--method", "bicubic", "flow", "--no-progress") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["loo.csv", "loo_summary.csv", "loo.png", "lr_consistency.csv"]
    )
    printed = capsys.readouterr().out
    assert "leave-one-key-out" in printed and "LR consistency" in printed
    assert "PSNR median" in printed and "flow" in printed
    loo = _rows(out / "loo.csv")
    assert [(r["method"], int(r["key_index"])) for r in loo] == [
        (m, t) for t in (10, 20, 30) for m in ("bicubic", "flow")
    ]
    # The same numbers as the app layer on the same files.
    config = RunConfig(lr=str(data["lr"]), hr=str(data["keys"]),
                       methods=(MethodChoice("bicubic"), MethodChoice("flow")))  # fmt: skip
    expected = leave_one_key_out(config, prepare_inputs(config), checker=False)
    for line, row in zip(loo, expected.rows, strict=True):
        assert float(line["psnr"]) == pytest.approx(row.psnr, abs=1e-9)
        assert int(line["gap_frames"]) == 2 * STEP
    summary = {r["method"]: r for r in _rows(out / "loo_summary.csv")}
    assert int(summary["flow"]["keys_scored"]) == 3
    assert float(summary["flow"]["psnr_median"]) > float(summary["bicubic"]["psnr_median"])
    consistency = _rows(out / "lr_consistency.csv")
    assert len(consistency) == 2 * N  # every frame of a normal run, per method
    assert {r["method"] for r in consistency} == {"bicubic", "flow"}
    assert not any(int(r["flagged"]) for r in consistency if r["method"] == "flow")
    assert (out / "loo.png").read_bytes()[:4] == b"\x89PNG"


def test_config_withhold_and_fused_exports(data, tmp_path, capsys):
    fused = tmp_path / "run" / "fused.tif"
    assert main(["fuse", "--lr", str(data["lr"]), "--hr", str(data["keys"]), "--method", "flow",
                 "--frames", "0:12", "--no-progress", "-o", str(fused)]) == 0  # fmt: skip
    config = tmp_path / "run" / "fused.config.json"
    assert config.is_file()
    out = tmp_path / "val"
    assert main(["validate", "--config", str(config), "--withhold", "20", "--fused", str(fused),
                 "--no-progress", "-o", str(out)]) == 0  # fmt: skip
    loo = _rows(out / "loo.csv")
    assert [(r["method"], r["key_index"]) for r in loo] == [("flow", "20")]  # the config's
    assert math.isfinite(float(loo[0]["psnr"]))
    consistency = _rows(out / "lr_consistency.csv")
    assert [int(r["frame"]) for r in consistency] == list(range(12))  # the export's frames
    assert {r["method"] for r in consistency} == {"flow"}
    capsys.readouterr()
    # --no-consistency: no normal run, no lr_consistency.csv.
    out2 = tmp_path / "val2"
    assert _validate(data, out2, "--withhold", "10", "--no-consistency", "--no-progress") == 0
    assert not (out2 / "lr_consistency.csv").exists() and (out2 / "loo.csv").is_file()
    assert "lr_consistency.csv" not in capsys.readouterr().out


def test_errors_are_one_line_naming_the_file(data, tmp_path, capsys):
    two = make_sample(tmp_path / "two", n_frames=12, shape=SHAPE, first_last=True)
    out = tmp_path / "val"
    code = main(["validate", "--lr", str(two["lr"]), "--hr", str(two["keys"]), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--hr {two['keys']}" in err and "at least 3 HR keys" in err and "(0, 11)" in err
    assert not out.exists()  # refused before anything was written

    assert _validate(data, out, "--withhold", "15") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xfusion validate: error: --withhold:") and "frame 15" in err
    assert "keys are at 0, 10, 20, 30, 40" in err

    assert _validate(data, out, "--method", "nope") == 2
    assert "unknown method 'nope'" in capsys.readouterr().err

    code = main(["validate", "--lr", str(data["lr"]), "--hr", str(tmp_path / "missing.tif"),
                 "-o", str(out)])  # fmt: skip
    assert code == 2 and "missing.tif" in capsys.readouterr().err

    bad = tmp_path / "not-a-stack.tif"
    bad.write_text("not a TIFF")
    assert _validate(data, out, "--fused", str(bad)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xfusion validate: error: --fused ") and "not-a-stack.tif" in err
    assert len(err.splitlines()) == 1, err  # refused before the leave-one-key-out


def test_help_has_examples_and_lists_the_outputs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:\n  xfusion sample" in text and "xfusion validate --lr" in text
    assert "loo.csv" in text and "lr_consistency.csv" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "validate" in capsys.readouterr().out
