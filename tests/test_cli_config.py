"""``xfusion fuse --config / --save-config / --dry-run / --option``, ``xfusion methods`` and a
method plugin through the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from napari_xfusion import cli
from napari_xfusion.app.config import RunConfig
from napari_xfusion.core.io import read_metadata, read_stack
from napari_xfusion.methods.registry import available_methods

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    cli.make_sample(out, n_frames=8, shape=(32, 64), key_step=4, lr_psnr=35.0)
    return out


def _fuse(sample, *extra):
    return ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
            "--no-progress", *extra]  # fmt: skip


def test_an_exports_config_sidecar_repeats_the_run_bit_for_bit(sample, tmp_path):
    first = tmp_path / "a.tif"
    truth = str(sample / "truth.tif")
    args = _fuse(sample, "--method", "bayesian", "--option", "bayesian.n_classes=3",
                 "--frames", "1:6", "--truth", truth, "-o", str(first))  # fmt: skip
    assert cli.main(args) == 0
    sidecar = tmp_path / "a.config.json"
    config = RunConfig.load(sidecar)
    assert config.method("bayesian").options == {"n_classes": 3} and config.frames == (1, 6)
    again = tmp_path / "again" / "b.tif"
    assert cli.main(["fuse", "--config", str(sidecar), "--no-progress", "-o", str(again)]) == 0
    assert read_stack(first).tobytes() == read_stack(again).tobytes()
    assert RunConfig.load(tmp_path / "again" / "b.config.json") == config
    assert read_metadata(again)["method_options"] == {"n_classes": 3}


def test_command_line_options_override_the_config_file(sample, tmp_path, capsys):
    saved = tmp_path / "run.json"
    rc = cli.main(_fuse(sample, "--method", "bicubic,bayesian", "--option", "bayesian.seed=5",
                        "--frames", "0:4", "--save-config", str(saved)))  # fmt: skip
    assert rc == 0 and saved.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # nothing ran
    out = tmp_path / "o.tif"
    rc = cli.main(["fuse", "--config", str(saved), "--frames", "2:5", "--method", "bayesian",
                   "--option", "bayesian.prior_weight=2", "--no-progress",
                   "-o", str(out)])  # fmt: skip
    assert rc == 0
    meta = read_metadata(out)
    assert meta["frame_indices"] == [2, 3, 4]
    # bayesian keeps the file's option and gets the new one; bicubic is dropped
    assert meta["method_options"] == {"prior_weight": 2.0, "seed": 5}
    assert RunConfig.load(tmp_path / "o.config.json").method_names == ("bayesian",)


def test_relative_paths_in_a_config_file_are_taken_from_its_folder(sample, tmp_path):
    (tmp_path / "data").symlink_to(sample)
    text = cli.config_example()
    (tmp_path / "run.json").write_text(text)
    out = tmp_path / "x.tif"
    elsewhere = ["fuse", "--config", str(tmp_path / "run.json"), "--frames", "0:3",
                 "--no-progress", "-o", str(out)]  # fmt: skip
    assert cli.main(elsewhere) == 0
    assert read_stack(tmp_path / "x_bayesian.tif").shape == (3, 32, 64)


def test_dry_run_checks_inputs_and_writes_nothing(sample, tmp_path, capsys):
    assert cli.main(_fuse(sample, "--frames", "0:3", "--dry-run")) == 0
    printed = capsys.readouterr()
    assert RunConfig.from_dict(json.loads(printed.out)).frames == (0, 3)
    assert "would fuse 3 frames with bicubic" in printed.err
    assert cli.main(_fuse(sample, "--frames", "0:30", "--dry-run")) == 2
    assert "xfusion fuse: error:" in capsys.readouterr().err
    # with -o it also checks the outputs
    assert cli.main(_fuse(sample, "--dry-run", "-o", str(sample / "lr.tif"))) == 2
    assert "would destroy that input" in capsys.readouterr().err


def test_fuse_needs_an_output_or_a_config_target(sample, capsys):
    assert cli.main(_fuse(sample)) == 2
    assert "-o/--out is required" in capsys.readouterr().err
    assert cli.main(["fuse", "--no-progress", "-o", "x.tif"]) == 2
    assert "--lr and --hr required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("nope.x=1", "--option nope.x=1: unknown method 'nope'; methods: bicubic, bayesian"),
        ("bayesian.n_classes=1", "bayesian is not in this run's methods (bicubic)"),
        ("bicubic.level=1", "bicubic has no option 'level'"),
        ("seed=1", "bicubic has no option 'seed'"),
    ],
)
def test_option_errors_name_what_is_wrong(sample, tmp_path, capsys, option, message):
    assert cli.main(_fuse(sample, "--option", option, "-o", str(tmp_path / "x.tif"))) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_option_errors_list_the_valid_options_and_check_types(sample, tmp_path, capsys):
    base = _fuse(sample, "--method", "bayesian", "-o", str(tmp_path / "x.tif"))
    assert cli.main([*base, "--option", "bayesian.clusters=4"]) == 2
    err = capsys.readouterr().err
    assert "bayesian has no option 'clusters'; its options:" in err
    assert "  n_classes=none (int): K-means classes (default: from the data)" in err
    assert "  block_prior=correlated (str: correlated|independent)" in err
    assert cli.main([*base, "--option", "bayesian.n_classes=many"]) == 2
    assert "--option bayesian.n_classes=many: expected an integer" in capsys.readouterr().err
    assert cli.main([*base, "--option", "bayesian.block_prior=x"]) == 2
    assert "expected one of correlated, independent" in capsys.readouterr().err
    assert cli.main([*base, "--option", "n_classes"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    two = _fuse(sample, "--method", "bicubic,bayesian", "-o", str(tmp_path / "x.tif"))
    assert cli.main([*two, "--option", "seed=1"]) == 2
    assert "say which method, as METHOD.seed=1" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_readme_and_help_show_the_generated_config_example(capsys):
    example = cli.config_example()
    config = RunConfig.from_dict(json.loads(example))  # a valid configuration file
    assert config.method("bayesian").options == {"n_classes": 4}
    readme = README.read_text()
    block = re.search(r"```json\n(.*?)```", readme, re.S)
    assert block is not None and block.group(1) == example, "README's example is stale"
    assert "--option METHOD.key=value" in readme and "--config" in readme
    with pytest.raises(SystemExit):
        cli.main(["fuse", "--help"])
    text = capsys.readouterr().out
    assert '"methods": [' in text and "override the file's values" in text


def test_methods_command_and_fuse_help_list_the_registry(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, spec in available_methods().items():
        assert f"  {name}: {spec.summary}" in out
    assert "--option bayesian.prior_weight=8.0 (float): weight of the prior" in out
    assert "uses: torch, weights" in out and "variance map" in out


def test_a_plugin_method_appears_in_help_and_methods_and_runs(plugin, sample, tmp_path, capsys):
    with pytest.warns(RuntimeWarning, match="oops"):
        available_methods(refresh=True)
    with pytest.raises(SystemExit):
        cli.main(["fuse", "--help"])
    help_text = capsys.readouterr().out
    assert "  flat: constant frame (test plugin)" in help_text
    assert "--option flat.level=0.5 (float): grey level" in help_text
    assert cli.main(["methods"]) == 0
    assert "  flat: constant frame (test plugin)" in capsys.readouterr().out
    out = tmp_path / "flat.tif"
    rc = cli.main(_fuse(sample, "--method", "flat", "--option", "level=0.25", "-o", str(out)))
    assert rc == 0
    stack = read_stack(out)
    assert stack.shape == (8, 32, 64) and np.all(stack == 0.25)
    assert read_metadata(out)["method_options"] == {"level": 0.25}


def test_demo_runs_every_registered_method_that_can_run(plugin, monkeypatch):
    from napari_xfusion.cli import demo

    with pytest.warns(RuntimeWarning):
        available_methods(refresh=True)
    run, skipped = demo.demo_methods()
    assert run[:2] == ["bicubic", "bayesian"] and "flat" in run
    for name in ("edvr", "edvr-stf"):
        weights = Path(available_methods()[name].default_weights)
        assert (name in run) == weights.is_file() or name in skipped
    monkeypatch.setattr(demo, "find_spec", lambda name: None)  # as if torch were missing
    run, skipped = demo.demo_methods()
    assert "edvr" not in run and "needs torch" in skipped["edvr"]
