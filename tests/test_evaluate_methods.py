"""The evaluation inputs (core.evaluation) and a smoke run of benchmarks/evaluate_methods.py."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.evaluation import (
    ablated_keys,
    between_keys,
    centred_interval,
    make_eval_inputs,
)
from napari_xfusion.core.metrics import psnr
from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.methods import METHODS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluate_methods.py"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("evaluate_methods")


def test_targets_lie_strictly_between_centred_keys():
    assert centred_interval(21, 20) == (0, 20)
    assert centred_interval(21, 10) == (5, 15)
    assert between_keys(0, 20, 3).tolist() == [5, 10, 15]
    assert between_keys(5, 15, 3).tolist() == [8, 10, 12]
    assert between_keys(0, 4, None).tolist() == [1, 2, 3]
    assert between_keys(0, 4, 10).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="at least 21 frames"):
        centred_interval(20, 20)


def test_eval_inputs_bin_the_truth_and_add_seeded_noise():
    rng = np.random.default_rng(0)
    hr = rng.uniform(0.2, 0.8, (11, 32, 48)).astype(np.float32)
    clean = make_eval_inputs(hr, 10, targets_per_gap=3)
    np.testing.assert_array_equal(clean.lr, bin_frames(hr))
    assert clean.key_indices.tolist() == [0, 10] and clean.targets.tolist() == [2, 5, 8]
    np.testing.assert_array_equal(clean.hr_keys, hr[[0, 10]])
    assert clean.b0 is None and clean.lr_psnr_db is None

    noisy = make_eval_inputs(hr, 10, lr_psnr_db=30.0, noise_seed=5)
    assert psnr(noisy.lr, clean.lr) == pytest.approx(30.0, abs=0.3)
    again = make_eval_inputs(hr, 10, lr_psnr_db=30.0, noise_seed=5)
    np.testing.assert_array_equal(noisy.lr, again.lr)
    other = make_eval_inputs(hr, 10, lr_psnr_db=30.0, noise_seed=6)
    assert not np.array_equal(noisy.lr, other.lr)


def test_ablated_keys_carry_no_hr_detail():
    rng = np.random.default_rng(1)
    hr = rng.uniform(0.0, 1.0, (5, 16, 24)).astype(np.float32)
    inputs = make_eval_inputs(hr, 4)
    keys = ablated_keys(inputs)
    assert keys.shape == (2, 16, 24) and keys.min() >= 0.0 and keys.max() <= 1.0
    np.testing.assert_allclose(keys, np.clip(upscale_bicubic(inputs.lr[[0, 4]]), 0, 1))
    assert not np.allclose(keys, inputs.hr_keys, atol=0.05)


def test_default_methods_are_every_importable_registered_method(bench):
    names = bench.available_methods()
    assert {"bicubic", "bayesian"} <= set(names)
    assert names == [m for m in METHODS if m in names]


def test_training_seeds_and_bad_options_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--sim-seeds", "1000001"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--noise", "70"])
    args = bench.parse_args(["--quick", "--option", "bayesian:n_classes=4"])
    assert args.size == (200, 512) and args.targets_per_gap == 1
    assert args.options == {"bayesian": {"n_classes": 4}}


def test_smoke_run_writes_the_tables_and_the_ablation(bench, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = [
        "--methods", "bicubic,bayesian", "--size", "64", "128", "--targets-per-gap", "1",
        "--sequences", "pan-slow", "layers", "--sim-seeds", "20260", "--noise", "clean", "20",
        "--out", str(out),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    table = capsys.readouterr().out
    header = "| method | k=10 clean | k=10 20 dB | k=20 clean | k=20 20 dB |"
    for part in ("### real-motion (2 sequences)", "### simulator (1 sequences)", "**PSNR (dB)**"):
        assert part in table
    assert table.count(header) == 2 * 5  # 2 sets x (PSNR, gain, SSIM, AAD, ablation)
    assert table.count("**Key ablation") == 2
    ablation_rows = [
        line for line in table.splitlines() if line.startswith("| bayesian | +") or
        line.startswith("| bayesian | -")
    ]  # fmt: skip
    assert len(ablation_rows) >= 2  # gain and ablation rows, per set
    assert "| bicubic | " in table

    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget"]["targets_per_gap"] == 1 and summary["budget"]["size"] == [64, 128]
    entries = summary["summary"]
    # 2 sets x 2 k x 2 noise x (bicubic, bayesian with HR keys, bayesian with LR keys)
    assert len(entries) == 2 * 2 * 2 * 3
    for e in entries:
        for m in ("psnr", "aad", "ssim"):
            assert math.isfinite(e[m]["median"]) and e[m]["iqr"] >= 0
        if e["method"] == "bayesian" and e["keys"] == "hr":
            assert math.isfinite(e["ablation_loss_db"]["median"])
    assert not any(e["method"] == "bicubic" and e["keys"] == "lr-up" for e in entries)

    with open(out / "frames.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 2 * 3  # sequences x k x noise x (runs of methods)
    assert {r["method"] for r in rows} == {"bicubic", "bayesian"}
    assert all(0 < int(r["offset"]) < int(r["key_step"]) for r in rows)
    written = (out / "summary.md").read_text()
    assert "Benchmark" in written and "| real-motion | layers |" in written  # per sequence
    # The tables can be rebuilt from frames.csv alone, identically.
    bench.resummarise(out)
    assert (out / "summary.md").read_text() == written


def test_runs_with_one_budget_combine_and_a_changed_method_is_refused(bench, tmp_path, capsys):
    common = [
        "--size", "64", "128", "--targets-per-gap", "1", "--sequences", "pan-slow",
        "--sim-seeds", "20260", "--noise", "clean", "--key-steps", "10", "--no-ablation",
    ]  # fmt: skip
    a, b, both = tmp_path / "a", tmp_path / "b", tmp_path / "both"
    assert bench.main([*common, "--methods", "bicubic,flow", "--out", str(a)]) == 0
    assert bench.main([*common, "--methods", "bicubic,bayesian", "--out", str(b)]) == 0
    capsys.readouterr()
    bench.combine(both, [a, b])
    merged = json.loads((both / "summary.json").read_text())
    assert merged["budget"]["methods"] == ["bicubic", "flow", "bayesian"]
    assert len(merged["commands"]) == 2 and "in 2 runs" in merged["budget"]["summary"]
    assert merged["budget"]["summary"].count("frame results") == 1
    rows = bench.read_frames(both / "frames.csv")
    assert sorted({r["method"] for r in rows}) == ["bayesian", "bicubic", "flow"]
    assert sum(r["method"] == "bicubic" for r in rows) == 2  # once, not once per run
    gains = {e["method"] for e in merged["summary"] if "gain_over_bicubic_db" in e}
    assert gains == {"bicubic", "flow", "bayesian"}

    # A method whose frames differ between the runs cannot be merged silently.
    frames = (b / "frames.csv").read_text().splitlines()
    head, first = frames[0], frames[1].split(",")
    first[head.split(",").index("psnr")] = "99.0"
    (b / "frames.csv").write_text("\n".join([head, ",".join(first), *frames[2:]]) + "\n")
    with pytest.raises(SystemExit, match="changed between the runs"):
        bench.combine(tmp_path / "bad", [a, b])
    # Another budget is refused, naming the field.
    assert bench.main([*common[:-1], "--methods", "bicubic", "--out", str(tmp_path / "c")]) == 0
    with pytest.raises(SystemExit, match="budget ablation"):
        bench.combine(tmp_path / "bad", [a, tmp_path / "c"])


def test_network_targets_mark_what_is_met_and_by_how_much_a_target_is_missed(
    bench, monkeypatch, load_benchmark
):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports evaluate_methods
    targets = load_benchmark("network_targets")
    psnr_of = {"bicubic": 20.0, "bayesian": 30.0, "flow": 30.0, "edvr": 24.0, "edvr-stf": 25.5,
               "edvr-stf-flow": 30.4}  # fmt: skip
    rows = [
        {"set": "real-motion", "sequence": "pan-slow", "key_step": 10, "noise": "clean",
         "keys": keys, "method": m, "index": i, "offset": 1, "psnr": p - (keys == "lr-up") * 2,
         "aad": 0.0, "ssim": 0.9 if m == "bayesian" else 0.95, "seconds": 0.0}
        for m, p in psnr_of.items() for i in (4, 5) for keys in ("hr", "lr-up")
    ]  # fmt: skip
    text = targets.targets_tables(rows)
    line = next(s for s in text.splitlines() if s.startswith("| real-motion | 10 | clean | +0.40"))
    assert "+0.40 (0.60 short)" in line and "+0.0500 ok" in line
    paper = [s for s in text.splitlines() if s.startswith("| real-motion")][-1]
    assert "+1.50 ok" in paper and "+4.00 ok" in paper and "+2.00 ok" in paper
    with pytest.raises(SystemExit, match="lacks"):
        targets.targets_tables([r for r in rows if r["method"] != "edvr"])


def test_a_retrained_network_supersedes_its_earlier_rows_in_a_combine(bench, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from napari_xfusion.nn.checkpoint import save_checkpoint
    from napari_xfusion.nn.edvr import build_model, named_config

    common = [
        "--size", "64", "128", "--targets-per-gap", "1", "--sequences", "pan-slow",
        "--sim-seeds", "--noise", "clean", "--key-steps", "10", "--no-ablation",
        "--methods", "bicubic,edvr-stf",
    ]  # fmt: skip
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        weights = tmp_path / f"stf-{seed}.pt"
        save_checkpoint(weights, build_model(named_config("tiny", "edvr-stf")))
        out = tmp_path / f"run-{seed}"
        assert bench.main([*common, "--weights", f"edvr-stf={weights}", "--out", str(out)]) == 0
        runs.append(out)
    capsys.readouterr()
    new, old = runs[1], runs[0]
    bench.combine(tmp_path / "both", [new, old])
    rows = [
        r for r in bench.read_frames(tmp_path / "both" / "frames.csv") if r["method"] == "edvr-stf"
    ]
    expected = [r for r in bench.read_frames(new / "frames.csv") if r["method"] == "edvr-stf"]
    assert [r["psnr"] for r in rows] == [r["psnr"] for r in expected]
    merged = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert f"retrained: edvr-stf from {new}" in merged["budget"]["summary"]
    assert f"superseding {old}'s" in merged["budget"]["summary"]
    (stf,) = [d for d in merged["methods"] if d["method"] == "edvr-stf"]
    assert stf["weights"].endswith("stf-1.pt")


def test_compare_runs_pairs_one_method_frame_by_frame(monkeypatch, load_benchmark):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports evaluate_methods
    compare_runs = load_benchmark("compare_runs")

    def rows(psnr_offset: float, ssim: float) -> list[dict]:
        return [
            {"set": "real-motion", "sequence": s, "key_step": k, "noise": "clean", "keys": "hr",
             "method": m, "index": i, "psnr": 30.0 + i + psnr_offset * (m == "net"),
             "ssim": ssim if m == "net" else 0.5}
            for s in ("a", "b") for k in (10, 20) for m in ("net", "flow") for i in (4, 5)
        ]  # fmt: skip

    table = compare_runs.compare(rows(0.0, 0.90), rows(0.25, 0.93), "net")
    assert "| real-motion | 10 | clean | 4 | +0.25 | +0.0300 |" in table
    assert "| real-motion | 20 | clean | 4 | +0.25 | +0.0300 |" in table
    assert "+0.00" not in table  # the other method's (unchanged) rows are not compared
    with pytest.raises(SystemExit, match="no frames in both runs"):
        compare_runs.compare(rows(0.0, 0.9), rows(0.0, 0.9), "edvr")
