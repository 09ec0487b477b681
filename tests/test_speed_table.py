"""Smoke test of benchmarks/speed_table.py at a tiny size (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def speed_table(load_benchmark):
    return load_benchmark("speed_table")


def test_tiny_table(speed_table, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "speed.json"
    argv = ["--methods", "bicubic,bayesian", "--frames", "1", "--repeats", "1",
            "--shape", "64", "128", "--json", str(out)]  # fmt: skip
    assert speed_table.main(argv) == 0
    text = capsys.readouterr().out
    assert "load average" in text and "| method |" in text
    bicubic_line = next(line for line in text.splitlines() if line.startswith("| bicubic |"))
    assert "| 1.0 |" in bicubic_line and "0.0006" in bicubic_line  # own ratio, paper figure
    assert any(line.startswith("| bayesian |") and "77.40" in line for line in text.splitlines())
    data = json.loads(out.read_text())
    records = {r["method"]: r for r in data["records"]}
    assert set(records) == {"bicubic", "bayesian"}
    for r in records.values():
        assert r["seconds"] > 0 and r["fps"] > 0 and r["peak_rss_mib"] > 0
        assert r["frames"] == 1 and r["frame_shape"] == [64, 128] and len(r["seconds_all"]) == 1


def test_cuda_skips_cleanly_without_cuda(speed_table, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU path runs for real")
    assert speed_table.main(["--device", "cuda", "--methods", "edvr"]) == 0
    assert "CUDA is not available" in capsys.readouterr().out


def test_bad_arguments(speed_table) -> None:
    with pytest.raises(SystemExit):
        speed_table.main(["--shape", "63", "128"])
