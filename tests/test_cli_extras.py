"""``xfusion fuse`` writes each method's extra per-frame maps (its declared ``outputs``) as
stacks beside its export: ``flow``'s confidence, ``bayesian``'s variance (and confidence)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_xfusion import cli, engine
from napari_xfusion.core.io import read_metadata, read_stack

N_FRAMES = 12


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    rc = cli.main(
        ["sample", "-o", str(out), "--frames", str(N_FRAMES), "--size", "32x64",
         "--key-step", "4", "--separation", "1"]
    )  # fmt: skip
    assert rc == 0
    return out


def _fuse(sample, out, *extra):
    return cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--no-progress", "-o", str(out), *extra]
    )  # fmt: skip


def test_flow_confidence_stack_beside_the_export(sample, tmp_path, capsys):
    out = tmp_path / "fused.tif"
    assert _fuse(sample, out, "--method", "flow", "--frames", "2:9") == 0
    conf_path = tmp_path / "fused_confidence.tif"
    conf = read_stack(conf_path)
    fused = read_stack(out)
    assert conf.shape == fused.shape == (7, 32, 64)
    assert conf.dtype == np.float32 and 0.0 <= conf.min() and conf.max() <= 1.0
    meta = read_metadata(conf_path)
    assert meta["output"] == "confidence" and meta["method"] == "flow"
    assert meta["frame_indices"] == read_metadata(out)["frame_indices"] == list(range(2, 9))
    assert not (tmp_path / "fused_confidence.csv").exists()  # the rows live in fused.csv
    assert f"flow confidence: {conf_path}" in capsys.readouterr().out


def test_several_methods_name_their_maps_and_no_extras_skips_them(sample, tmp_path):
    out = tmp_path / "x.tif"
    assert _fuse(sample, out, "--method", "bicubic,bayesian", "--frames", "0:3") == 0
    names = sorted(p.name for p in tmp_path.glob("*.tif"))
    assert names == [
        "x_bayesian.tif",
        "x_bayesian_confidence.tif",
        "x_bayesian_variance.tif",
        "x_bicubic.tif",
    ]
    variance = read_stack(tmp_path / "x_bayesian_variance.tif")
    assert variance.shape == (3, 32, 64) and np.all(variance >= 0)

    bare = tmp_path / "bare"
    bare.mkdir()
    assert _fuse(sample, bare / "y.tif", "--method", "flow", "--no-extras") == 0
    assert sorted(p.name for p in bare.glob("*.tif")) == ["y.tif"]


def test_a_map_the_method_does_not_produce_leaves_no_file(sample, tmp_path):
    out = tmp_path / "s.tif"
    args = ["--method", "bayesian", "--option", "prior=static", "--frames", "0:2"]
    assert _fuse(sample, out, *args) == 0
    assert sorted(p.name for p in tmp_path.glob("*.tif")) == ["s.tif", "s_variance.tif"]


def test_interrupted_run_keeps_its_maps_under_the_partial_name(sample, tmp_path, monkeypatch):
    real_run = engine.run

    def run(*args, **kwargs):
        gen = real_run(*args, **kwargs)
        for i, result in enumerate(gen):
            if i == 3:
                gen.close()
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(engine, "run", run)
    out = tmp_path / "cut.tif"
    assert _fuse(sample, out, "--method", "flow") == 130
    assert not out.exists() and not (tmp_path / "cut_confidence.tif").exists()
    partial = read_stack(tmp_path / "cut_confidence.partial.tif")
    assert partial.shape[0] == read_stack(tmp_path / "cut.partial.tif").shape[0] == 3


def test_an_extra_map_may_not_replace_an_input(sample, tmp_path, capsys):
    import shutil

    lr = tmp_path / "lr.tif"
    shutil.copy(sample / "lr.tif", lr)
    victim = tmp_path / "run_confidence.tif"
    shutil.copy(sample / "truth.tif", victim)  # an input named like the run's map
    before = victim.read_bytes()
    rc = cli.main(
        ["fuse", "--lr", str(lr), "--hr", str(sample / "hr_keys.tif"), "--truth", str(victim),
         "--method", "flow", "--no-progress", "-o", str(tmp_path / "run.tif")]
    )  # fmt: skip
    assert rc == 2
    assert victim.read_bytes() == before
    assert "run_confidence.tif" in capsys.readouterr().err
