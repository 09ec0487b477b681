"""``torchrun`` batch fusion: 2 CPU ranks (gloo) give the single-process result bit for bit."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_xfusion import cli
from napari_xfusion.core.io import read_metadata, read_stack

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed")
def test_two_ranks_equal_single_process(tmp_path):
    data = cli.make_sample(
        tmp_path / "data", n_frames=11, shape=(32, 64), key_step=4, separation=2, lr_psnr=35.0
    )
    args = ["fuse", "--lr", str(data["lr"]), "--hr", str(data["keys"]),
            "--method", "bicubic,bayesian", "--frames", "1:11",
            "--truth", str(data["truth"]), "--no-progress"]  # fmt: skip
    assert cli.main([*args, "-o", str(tmp_path / "single" / "f.tif")]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "napari_xfusion.cli", *args,
         "-o", str(tmp_path / "multi" / "f.tif")],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for method in ("bicubic", "bayesian"):
        single = tmp_path / "single" / f"f_{method}.tif"
        multi = tmp_path / "multi" / f"f_{method}.tif"
        a, b = read_stack(single), read_stack(multi)
        assert a.shape == b.shape == (10, 32, 64)
        assert a.tobytes() == b.tobytes()  # bit for bit
        meta = read_metadata(multi)
        assert meta["frame_indices"] == list(range(1, 11)) and meta["complete"] is True
        assert meta["distributed"] == {"world_size": 2, "frames_per_rank": [5, 5]}
        assert _rows(single.with_suffix(".csv")) == _rows(multi.with_suffix(".csv"))
    # rank part files are removed; each export has its CSV and its run configuration
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == [
        "f_bayesian.config.json", "f_bayesian.csv", "f_bayesian.tif",
        "f_bicubic.config.json", "f_bicubic.csv", "f_bicubic.tif", "f_comparison.csv"
    ]  # fmt: skip
    assert np.isfinite(read_stack(tmp_path / "multi" / "f_bayesian.tif")).all()
