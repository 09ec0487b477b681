"""Smoke test of benchmarks/evaluate_models.py at a tiny size: every network method, several
held-out sequences and the attention summary over them (no quality asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_xfusion.nn.checkpoint import save_checkpoint
from napari_xfusion.nn.edvr import build_model, named_config


@pytest.fixture(scope="module")
def evaluate_models(load_benchmark):
    return load_benchmark("evaluate_models")


def _tiny(path: Path, arch: str) -> Path:
    torch.manual_seed(0)
    save_checkpoint(path, build_model(named_config("tiny", arch)))
    return path


def test_two_sequences_report_attention_of_both_key_networks(
    evaluate_models, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stf = _tiny(tmp_path / "stf.pt", "edvr-stf")
    stf_flow = _tiny(tmp_path / "stf-flow.pt", "edvr-stf-flow")
    out = tmp_path / "all.json"
    argv = ["--weights", f"edvr-stf={stf}", "--weights", f"edvr-stf-flow={stf_flow}",
            "--scenario", "clean", "--no-bayesian", "--shape", "32", "64", "--frames", "21",
            "--seed", "20260", "20261", "--json", str(out)]  # fmt: skip
    assert evaluate_models.main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("held-out sequence:") == 2
    for method in ("edvr-stf", "edvr-stf-flow"):
        line = next(x for x in text.splitlines() if x.startswith(f"- **clean**, {method}, median"))
        assert "over 2 sequences (seeds 20260, 20261)" in line
    results = json.loads(out.read_text())
    assert [r["seed"] for r in results] == [20260, 20261]
    for r in results:
        for method in ("edvr-stf", "edvr-stf-flow"):
            a = r["methods"][method]["attention"]
            assert len(a["backward_norm"]) == 21  # every frame, keys included
            assert -1.0 <= a["spearman_backward"] <= 1.0
        assert "attention" not in r["methods"]["bicubic"]


def test_unknown_network_is_refused(evaluate_models, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_models.main(["--weights", "flow=x.pt"]) == 2
    assert "edvr-stf-flow" in capsys.readouterr().err
