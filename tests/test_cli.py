"""Tests of the ``xfusion`` CLI, run in-process through ``main([...])`` on a tiny sample."""

from __future__ import annotations

import csv
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest

from napari_xfusion import cli, engine
from napari_xfusion.core.io import read_metadata, read_stack, write_stack
from napari_xfusion.core.resample import upscale_bicubic

N_FRAMES = 12


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    rc = cli.main(
        ["sample", "-o", str(out), "--frames", str(N_FRAMES), "--size", "32x64",
         "--key-step", "4", "--lr-psnr", "35", "--separation", "2"]
    )  # fmt: skip
    assert rc == 0
    return out


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sample_files(sample):
    truth, lr, keys = (read_stack(sample / n) for n in ("truth.tif", "lr.tif", "hr_keys.tif"))
    assert truth.shape == (N_FRAMES, 32, 64) and lr.shape == (N_FRAMES, 8, 16)
    assert keys.shape == (3, 32, 64) and keys.dtype == np.float32
    np.testing.assert_array_equal(keys, truth[[0, 4, 8]])
    meta = read_metadata(sample / "hr_keys.tif")
    assert meta["key_indices"] == [0, 4, 8] and meta["key_rule"] == {"key_step": 4}
    noise = read_metadata(sample / "lr.tif")["noise"]
    assert noise["model"] == "poisson" and abs(noise["lr_psnr_db"] - 35) < 0.5


def test_fuse_bicubic_matches_engine_and_records_metadata(sample, tmp_path, capsys):
    out = tmp_path / "fused.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--method", "bicubic", "--truth", str(sample / "truth.tif"), "--no-progress",
         "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    fused = read_stack(out)
    lr = read_stack(sample / "lr.tif")
    assert fused.shape == (N_FRAMES, 32, 64) and fused.dtype == np.float32
    for t in (0, 5, N_FRAMES - 1):
        np.testing.assert_array_equal(fused[t], upscale_bicubic(lr[t], 4))
    meta = read_metadata(out)
    assert meta["method"] == "bicubic" and meta["separation"] == 2  # from the LR metadata
    assert meta["method_description"] == {"method": "bicubic"}
    assert meta["key_rule"]["key_indices"] == [0, 4, 8] and meta["key_indices"] == [0, 4, 8]
    assert meta["frame_indices"] == list(range(N_FRAMES)) and meta["complete"] is True
    assert meta["software"].startswith("napari-xfusion ") and meta["units"] == "float"
    assert meta["noise"]["model"] == "poisson"
    assert meta["window"] == {"frames": [0, N_FRAMES], "n_frames": N_FRAMES}
    rows = _csv(out.with_suffix(".csv"))
    assert [int(r["frame"]) for r in rows] == list(range(N_FRAMES))
    assert {"psnr", "aad", "ssim", "seconds"} <= set(rows[0])
    assert "PSNR mean" in capsys.readouterr().out


def test_fuse_window_then_evaluate(sample, tmp_path, capsys):
    out = tmp_path / "win.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--frames", "3:7", "--truth", str(sample / "truth.tif"), "--no-progress", "-o", str(out)]
    )  # fmt: skip
    assert rc == 0 and read_stack(out).shape[0] == 4
    assert read_metadata(out)["frame_indices"] == [3, 4, 5, 6]
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--truth", str(sample / "truth.tif")]) == 0
    printed = capsys.readouterr().out
    assert "PSNR mean" in printed and "SSIM median" in printed
    rows = _csv(tmp_path / "win_metrics.csv")
    fuse_rows = _csv(tmp_path / "win.csv")
    assert [int(r["frame"]) for r in rows] == [3, 4, 5, 6]
    for a, b in zip(rows, fuse_rows, strict=True):
        assert float(a["psnr"]) == pytest.approx(float(b["psnr"]))
        assert float(a["ssim"]) == pytest.approx(float(b["ssim"]))


def test_fuse_several_methods_writes_one_file_each_and_comparison(sample, tmp_path):
    out = tmp_path / "cmp.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--method", "bicubic,bayesian", "--frames", "2:5", "--truth", str(sample / "truth.tif"),
         "--no-progress", "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    assert read_metadata(tmp_path / "cmp_bicubic.tif")["method"] == "bicubic"
    assert read_metadata(tmp_path / "cmp_bayesian.tif")["method"] == "bayesian"
    table = _csv(tmp_path / "cmp_comparison.csv")
    assert [r["method"] for r in table] == ["bicubic", "bayesian"]
    assert all(int(r["frames"]) == 3 and float(r["psnr_mean"]) > 10 for r in table)


def _interrupt_after(n: int, exc: BaseException):
    real_run = engine.run

    def run(*args, **kwargs):
        gen = real_run(*args, **kwargs)

        def wrapped():
            for i, result in enumerate(gen):
                if i == n:
                    gen.close()
                    raise exc
                yield result

        return _Closable(wrapped())

    return run


class _Closable:
    """Generator wrapper with ``close`` (what the CLI calls on the engine's generator)."""

    def __init__(self, gen):
        self.gen = gen

    def __iter__(self):
        return self.gen

    def __next__(self):
        return next(self.gen)

    def close(self):
        self.gen.close()


def test_ctrl_c_keeps_done_frames(sample, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(engine, "run", _interrupt_after(3, KeyboardInterrupt()))
    out = tmp_path / "part.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--no-progress", "-o", str(out)]
    )  # fmt: skip
    assert rc == 130
    partial = tmp_path / "part.partial.tif"
    assert f"kept 3 of {N_FRAMES} frames in {partial}" in capsys.readouterr().err
    kept = read_stack(partial)
    assert kept.shape == (3, 32, 64)
    lr = read_stack(sample / "lr.tif")
    np.testing.assert_array_equal(kept[2], upscale_bicubic(lr[2], 4))
    meta = read_metadata(partial)
    assert meta["complete"] is False and meta["frame_indices"] == [0, 1, 2]
    assert len(_csv(tmp_path / "part.partial.csv")) == 3
    # an incomplete export never takes the final name; its sidecars match it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "part.partial.config.json",
        "part.partial.csv",
        "part.partial.tif",
    ]


def test_real_sigint_while_storing_a_frame_keeps_frame_and_row(sample, tmp_path, monkeypatch):
    import signal

    from napari_xfusion.core import metrics

    real, calls = metrics.frame_metrics, []

    def frame_metrics(pred, truth):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C while frame 2 is being stored: it is finished first
            signal.raise_signal(signal.SIGINT)
        return real(pred, truth)

    monkeypatch.setattr(metrics, "frame_metrics", frame_metrics)
    out = tmp_path / "sig.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--truth", str(sample / "truth.tif"), "--no-progress", "-o", str(out)]
    )  # fmt: skip
    assert rc == 130
    assert read_stack(tmp_path / "sig.partial.tif").shape[0] == 3
    assert [int(r["frame"]) for r in _csv(tmp_path / "sig.partial.csv")] == [0, 1, 2]
    assert not out.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_error_mid_run_keeps_done_frames(sample, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(engine, "run", _interrupt_after(2, RuntimeError("device lost")))
    out = tmp_path / "err.tif"
    with pytest.raises(RuntimeError, match="device lost"):
        cli.main(
            ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
             "--no-progress", "-o", str(out)]
        )  # fmt: skip
    assert f"kept 2 of {N_FRAMES} frames in {tmp_path / 'err.partial.tif'}" in (
        capsys.readouterr().err
    )
    assert not out.exists()
    assert read_stack(tmp_path / "err.partial.tif").shape == (2, 32, 64)


def test_fuse_bad_inputs_exit_2_with_message(sample, tmp_path, capsys):
    base = [
        "fuse",
        "--hr",
        str(sample / "hr_keys.tif"),
        "--no-progress",
        "-o",
        str(tmp_path / "x.tif"),
    ]
    assert cli.main([*base, "--lr", str(tmp_path / "missing.tif")]) == 2
    assert "missing.tif: no such file" in capsys.readouterr().err
    write_stack(tmp_path / "lr_odd.tif", np.zeros((N_FRAMES, 8, 15), np.float32))
    assert cli.main([*base, "--lr", str(tmp_path / "lr_odd.tif")]) == 2
    assert "HR keys are 32x64 but LR frames are 8x15" in capsys.readouterr().err
    lr = str(sample / "lr.tif")
    assert cli.main([*base, "--lr", lr, "--frames", "10:20"]) == 2
    assert f"frame {N_FRAMES} is outside the LR sequence" in capsys.readouterr().err
    # a sparse key stack with a key step: key i at i*step, which must agree with its metadata
    assert cli.main([*base, "--lr", lr, "--key-step", "5"]) == 2
    assert "disagree with the key rule" in capsys.readouterr().err
    assert cli.main([*base, "--lr", lr, "--frames", "a:b"]) == 2
    assert "--frames must look like A:B" in capsys.readouterr().err
    write_stack(tmp_path / "nokeys.tif", read_stack(sample / "hr_keys.tif"))
    assert (
        cli.main(
            [
                "fuse",
                "--lr",
                lr,
                "--hr",
                str(tmp_path / "nokeys.tif"),
                "-o",
                str(tmp_path / "x.tif"),
            ]
        )
        == 2
    )
    assert "no key_indices in its metadata" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_simulate_from_detector_stack_and_export_detector_units(sample, tmp_path):
    truth = read_stack(sample / "truth.tif")
    raw = (200 + truth * 3000).astype(np.uint16)  # a camera's uint16 counts
    write_stack(tmp_path / "hr_raw.tif", raw)
    sim = tmp_path / "sim"
    rc = cli.main(["simulate", str(tmp_path / "hr_raw.tif"), "--first-last", "-o", str(sim)])
    assert rc == 0
    norm = read_metadata(sim / "lr.tif")["normalisation"]["hr"]
    assert norm["dtype"] == "uint16" and 200 <= norm["low"] < norm["high"] <= 3200
    assert read_metadata(sim / "hr_keys.tif")["key_indices"] == [0, N_FRAMES - 1]
    out = tmp_path / "det.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sim / "lr.tif"), "--hr", str(tmp_path / "hr_raw.tif"),
         "--first-last", "--units", "detector", "--no-progress", "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    fused = read_stack(out)
    assert fused.dtype == np.uint16 and read_metadata(out)["units"] == "detector"
    # evaluate maps detector units back with the normalisation stored in the metadata
    csv_path, metrics = cli.evaluate(out, tmp_path / "hr_raw.tif")
    assert len(metrics["psnr"]) == N_FRAMES and min(metrics["psnr"]) > 15
    # float keys with a raw uint16 truth: the truth is normalised on its own for the metrics
    rc = cli.main(
        ["fuse", "--lr", str(sim / "lr.tif"), "--hr", str(sim / "hr_keys.tif"), "--truth",
         str(tmp_path / "hr_raw.tif"), "--no-progress", "-o", str(tmp_path / "f.tif")]
    )  # fmt: skip
    assert rc == 0 and min(float(r["psnr"]) for r in _csv(tmp_path / "f.csv")) > 15


def test_fuse_full_rate_hr_with_key_step_and_key_indices(sample, tmp_path):
    lr, truth = str(sample / "lr.tif"), str(sample / "truth.tif")
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    common = ["--method", "bayesian", "--frames", "5:7", "--no-progress"]
    assert (
        cli.main(["fuse", "--lr", lr, "--hr", truth, "--key-step", "4", *common, "-o", str(a)]) == 0
    )
    assert (
        cli.main(
            ["fuse", "--lr", lr, "--hr", truth, "--key-indices", "0,4,8", *common, "-o", str(b)]
        )
        == 0
    )
    np.testing.assert_array_equal(read_stack(a), read_stack(b))
    assert read_metadata(a)["key_rule"] == {"key_step": 4}


def test_demo_headless_small(tmp_path, monkeypatch, capsys):
    small = dict(n_frames=6, shape=(32, 64), key_step=3, lr_psnr=35.0, separation=1)
    monkeypatch.setattr(cli.demo, "DEMO_SIZE", small)
    assert cli.main(["demo", "-o", str(tmp_path / "demo"), "--headless"]) == 0
    printed = capsys.readouterr().out
    assert "bicubic" in printed and "bayesian" in printed and "PSNR mean" in printed
    assert read_stack(tmp_path / "demo" / "fused_bayesian.tif").shape == (6, 32, 64)
    assert (tmp_path / "demo" / "fused_comparison.csv").exists()
    montage = plt.imread(tmp_path / "demo" / "montage.png")
    assert montage.ndim == 3 and montage[..., :3].std() > 0.05  # an image, not a blank page
    assert "montage.png" in printed


@pytest.mark.parametrize("gui_opens", [True, False])
def test_demo_opens_napari_with_a_display_else_runs_headless(tmp_path, monkeypatch, gui_opens):
    monkeypatch.setattr(cli.demo, "_display_available", lambda: True)
    opened = []
    monkeypatch.setattr(cli.demo, "_open_gui", lambda out: opened.append(out) or gui_opens)
    headless_runs = []
    monkeypatch.setattr(cli.demo, "run_demo", lambda out: headless_runs.append(out))
    assert cli.main(["demo", "-o", str(tmp_path / "demo")]) == 0
    assert headless_runs == ([] if gui_opens else [tmp_path / "demo"])
    assert opened == [tmp_path / "demo"]  # -o goes to the GUI's export too
    assert cli.main(["demo", "-o", str(tmp_path / "demo"), "--headless"]) == 0
    assert len(headless_runs) == (1 if gui_opens else 2)


def test_train_is_forwarded(monkeypatch):
    import napari_xfusion.train as train

    seen = []
    monkeypatch.setattr(train, "main", lambda argv: seen.append(argv) or 0, raising=False)
    assert cli.main(["train", "--config", "tiny", "--iters", "3"]) == 0
    assert seen == [["--config", "tiny", "--iters", "3"]]


@pytest.mark.parametrize("command", ["sample", "simulate", "fuse", "evaluate", "demo"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:\n  xfusion " in capsys.readouterr().out


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "napari_xfusion.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("napari-xfusion ")


def test_sample_and_simulate_refuse_bad_options_before_writing(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sample", "-o", str(out), "--frames", "24", "--size", "30x64"]) == 2
    assert "HR frames are 30x64: both sides must be multiples of 4" in capsys.readouterr().err
    assert cli.main(["sample", "-o", str(out), "--frames", "8", "--key-step", "3",
                     "--size", "32x64", "--lr-psnr", "80"]) == 2  # fmt: skip
    assert "--lr-psnr must be between 20 and 60 dB" in capsys.readouterr().err
    assert cli.main(["sample", "-o", str(out), "--frames", "8", "--size", "32x64"]) == 2
    assert "key_step=10 leaves fewer than 2 HR keys in 8 frames" in capsys.readouterr().err
    assert not out.exists()
    write_stack(tmp_path / "odd.tif", np.random.default_rng(0).random((6, 18, 21), np.float32))
    args = ["simulate", str(tmp_path / "odd.tif"), "--key-step", "2", "-o", str(out)]
    assert cli.main(args) == 2
    assert "18x21" in capsys.readouterr().err and not out.exists()
    assert cli.main([*args, "--crop"]) == 0
    assert read_stack(out / "lr.tif").shape == (6, 4, 5)
    assert read_stack(out / "hr_keys.tif").shape == (3, 16, 20)


def test_attention_scores_exported_per_frame(sample, tmp_path, monkeypatch):
    from napari_xfusion import methods

    # KeyBlend (tests/test_engine.py) reports fake attention scores like edvr-stf does.
    monkeypatch.setitem(methods.METHODS, "blend", "test_engine:KeyBlend")
    out = tmp_path / "att.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--method", "blend", "--frames", "5:10", "--no-progress", "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    frames = read_metadata(out)["frames"]
    assert frames["index"] == [5, 6, 7, 8, 9]
    # keys at 0, 4, 8: frame 5's group key is 4 (not requested, computed for normalising)
    assert frames["backward_norm"][0] == pytest.approx((2.0 - 1 / 4) / 2.0)
    assert frames["forward_norm"][0] == pytest.approx((1.0 + 5) / (1.0 + 4))
    # frame 8 is the last key: its window uses keys (4, 8), so it stays in key 4's group
    assert frames["backward_norm"][3] == pytest.approx((2.0 - 4 / 4) / 2.0)
    rows = _csv(tmp_path / "att.csv")
    assert float(rows[0]["backward"]) == pytest.approx(2.0 - 1 / 4)
    assert float(rows[4]["forward_norm"]) == pytest.approx((1.0 + 9) / (1.0 + 4))


def test_weights_for_a_method_without_weights_refused(sample, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not used")
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--weights", str(weights), "-o", str(tmp_path / "x.tif")]
    )  # fmt: skip
    assert rc == 2 and "none of ['bicubic'] uses network weights" in capsys.readouterr().err
    assert cli.config._weights_options(["edvr-stf"], [f"edvr-stf={weights}"], "cpu") == (
        {"edvr-stf": {"weights": str(weights)}},
        {"edvr-stf": "91e5fc2337da7b5c71431121a4e2ad00df8b935b91d1ff668051a1410288ba52"},
    )


def test_fuse_edvr_stf_uses_the_shipped_weights_by_default(sample, tmp_path):
    from napari_xfusion.methods.network import shipped_weights
    from napari_xfusion.nn.checkpoint import sha256_file

    weights = shipped_weights("edvr-stf")
    if not weights.is_file():
        pytest.skip("no shipped edvr-stf weights")
    out = tmp_path / "fused.tif"
    rc = cli.main(
        ["fuse", "--lr", str(sample / "lr.tif"), "--hr", str(sample / "hr_keys.tif"),
         "--method", "edvr-stf", "--frames", "3:7", "--device", "cpu", "--no-progress",
         "-o", str(out)]
    )  # fmt: skip
    assert rc == 0
    assert read_stack(out).shape == (4, 32, 64)
    meta = read_metadata(out)
    assert meta["method_description"]["sha256"] == sha256_file(weights)
    rows = _csv(out.with_suffix(".csv"))
    assert [int(r["frame"]) for r in rows] == [3, 4, 5, 6]
    assert all(np.isfinite(float(r["backward"])) for r in rows)
