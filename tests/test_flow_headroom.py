"""benchmarks/flow_headroom.py: the block choices it reports and a tiny run (no quality asserts)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_xfusion.core.degrade import bin_frames


@pytest.fixture(scope="module")
def headroom(load_benchmark):
    yield load_benchmark("flow_headroom")
    sys.modules.pop("evaluate_methods", None)


def test_oracle_takes_each_block_from_the_candidate_closest_to_the_truth(headroom) -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((16, 16)).astype(np.float32)
    good_left = truth.copy()
    good_left[:, 8:] += 0.5  # right half wrong
    good_right = truth.copy()
    good_right[:, :8] -= 0.5  # left half wrong
    cands = np.stack([good_left, good_right])
    np.testing.assert_array_equal(headroom.oracle_selection(cands, truth, 8), truth)
    # Blocks straddling both halves cannot be right in every pixel: one candidate per block.
    mixed = headroom.oracle_selection(cands, truth, 16)
    assert np.array_equal(mixed, good_left) or np.array_equal(mixed, good_right)


def test_lr_choice_sees_only_the_binning(headroom) -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((16, 16)).astype(np.float32)
    lr = bin_frames(truth[None])[0]
    # Same block means as the truth, other detail: the LR cannot tell it from the truth.
    detail = truth - np.kron(lr, np.ones((4, 4), np.float32))
    twin = truth - 2.0 * detail
    darker = truth - 0.1
    cands = np.stack([darker, twin])
    np.testing.assert_allclose(headroom.lr_selection(cands, lr, 8), twin, atol=1e-6)
    assert np.array_equal(headroom.oracle_selection(cands, truth, 8), darker)


def test_tiny_run_writes_rows_and_summary(headroom, tmp_path: Path) -> None:
    argv = ["--size", "64", "128", "--sequences", "drift", "--sim-seeds", "20260",
            "--key-steps", "4", "--noise", "clean", "20", "--targets-per-gap", "1",
            "--blocks", "16", "8", "--out", str(tmp_path)]  # fmt: skip
    assert headroom.main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "rows.csv", encoding="utf-8")))
    assert len(rows) == 2 * 2  # (drift, simulator) x (clean, 20 dB), one target each
    for r in rows:
        flow, oracle = float(r["flow_psnr"]), float(r["oracle_16_psnr"])
        assert oracle >= flow - 1e-9  # the flow frame is one of the candidates
        assert float(r["oracle_8_psnr"]) >= oracle - 1e-9  # finer blocks choose at least as well
        assert "lr_choice_8_psnr" in r and float(r["warped_bp_psnr"]) > 0
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| real-motion | 4 | clean | 1 |" in text and "| simulator | 4 | 20 dB | 1 |" in text
    assert "| real-motion | drift | " in text  # the per-sequence table (clean LR)
