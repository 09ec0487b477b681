"""The study (app.study): sweeps through the shared pipeline, resumable CSV, figures, summary."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from napari_xfusion.app import job as job_module
from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.study import (
    COLUMNS,
    FIRST_LAST,
    StudyConfig,
    StudyError,
    read_rows,
    run_study,
    study_settings,
    study_targets,
)
from napari_xfusion.app.study_plots import write_figures

TINY = dict(
    sample_frames=21,
    sample_shape=(64, 128),
    noise_levels=(20.0, None),
    noise_key_step=10,
    key_steps=(2, 10),
    separations=(1,),
    methods=("bicubic", "bayesian"),
    targets_per_setting=3,
)
N_SETTINGS = 3  # k10-s1-psnr20, k10-s1-clean (both sweeps), k2-s1-clean
N_ROWS = 2 * N_SETTINGS * 3
_RUN_JOB = job_module.run_job  # the real one (tests wrap it, sometimes twice in one test)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted tiny study, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("study")
    result = run_study(StudyConfig.quick(**TINY), out, progress=False)
    return out, result


def _counting(monkeypatch: pytest.MonkeyPatch, stop_after: int | None = None) -> Counter:
    """Wrap app.job.run_job: count calls and frames; raise KeyboardInterrupt after
    ``stop_after`` frame events (a Ctrl-C in the middle of a setting)."""
    real = _RUN_JOB
    calls: Counter = Counter()

    def wrapped(*args, **kwargs):
        calls["calls"] += 1
        for event in real(*args, **kwargs):
            if isinstance(event, job_module.FrameEvent):
                if stop_after is not None and calls["frames"] >= stop_after:
                    raise KeyboardInterrupt
                calls["frames"] += 1
            yield event

    monkeypatch.setattr(job_module, "run_job", wrapped)
    return calls


def test_tiny_study_outputs(done) -> None:
    out, result = done
    assert result.complete and result.computed == N_ROWS and result.reused == 0
    for name in ("frames.csv", "summary.md", "study.json", "fig5_noise.png", "fig5_noise.svg",
                 "fig6_keys_s1.png", "fig6_keys_s1.svg"):  # fmt: skip
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for svg in out.glob("*.svg"):
        assert "<svg" in svg.read_text(encoding="utf-8")[:2000], svg
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == N_SETTINGS
    rc = RunConfig.load(out / "runs" / "k2-s1-clean.json")
    assert rc.simulate and rc.keys.step == 2 and rc.separation == 1 and rc.lr_psnr is None
    assert RunConfig.load(out / "runs" / "k10-s1-psnr20.json").lr_psnr == 20.0


def test_csv_one_finite_row_per_method_setting_frame(done) -> None:
    out, _ = done
    header = (out / "frames.csv").read_text(encoding="utf-8").splitlines()[0]
    assert tuple(header.split(",")) == COLUMNS
    rows = read_rows(out / "frames.csv")
    assert len(rows) == N_ROWS
    keys = Counter((r["method"], r["setting"], r["frame"]) for r in rows)
    assert max(keys.values()) == 1 and len(keys) == N_ROWS
    frames = {r["frame"] for r in rows}
    assert len(frames) == 3  # the same targets in every setting and method
    for r in rows:
        assert not r["is_key"]
        for metric in ("psnr", "aad", "ssim", "seconds"):
            assert math.isfinite(r[metric]), (r["setting"], r["method"], metric)
        assert r["offset"] >= 1
    noisy = [r for r in rows if r["setting"] == "k10-s1-psnr20"]
    assert all(abs(r["lr_psnr_achieved"] - 20.0) < 0.5 for r in noisy)


def test_bicubic_flat_across_key_steps(done) -> None:
    out, _ = done
    rows = read_rows(out / "frames.csv")

    def psnr(setting: str, method: str) -> list[float]:
        return [r["psnr"] for r in rows if r["setting"] == setting and r["method"] == method]

    assert np.median(psnr("k10-s1-clean", "bicubic")) == pytest.approx(
        np.median(psnr("k2-s1-clean", "bicubic")), abs=1e-6
    )
    # Bayesian uses the keys: denser keys change its frames (the comparison is not vacuous).
    assert psnr("k10-s1-clean", "bayesian") != psnr("k2-s1-clean", "bayesian")
    # Noise does change bicubic.
    assert np.median(psnr("k10-s1-psnr20", "bicubic")) < np.median(psnr("k10-s1-clean", "bicubic"))


def test_summary_tables(done) -> None:
    out, _ = done
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert "PSNR median (IQR)" in text and "SSIM median (IQR)" in text
    for sid in ("k10-s1-psnr20", "k10-s1-clean", "k2-s1-clean"):
        assert f"### {sid}" in text
    assert "Ordering: " in text and "## Compared with the paper" in text
    assert "Bicubic across key steps (s = 1): median PSNR spread 0 dB - flat" in text
    assert "[fig5_noise.png](fig5_noise.png)" in text


def test_rerun_resumes_without_recomputing(done, monkeypatch: pytest.MonkeyPatch) -> None:
    out, first = done
    before = (out / "frames.csv").read_text(encoding="utf-8")
    calls = _counting(monkeypatch)
    again = run_study(StudyConfig.quick(**TINY), out, progress=False)
    assert calls["calls"] == 0 and calls["frames"] == 0
    assert again.complete and again.computed == 0 and again.reused == N_ROWS
    assert (out / "frames.csv").read_text(encoding="utf-8") == before


def test_interrupt_keeps_rows_and_resume_completes(
    done, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = {(r["setting"], r["method"], r["frame"]): r for r in read_rows(done[0] / "frames.csv")}
    config = StudyConfig.quick(**TINY)
    _counting(monkeypatch, stop_after=8)  # mid second setting (6 rows per setting)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, tmp_path, progress=False)
    kept = read_rows(tmp_path / "frames.csv")
    assert len(kept) == 8
    assert not (tmp_path / "summary.md").exists()  # not complete: no report yet
    calls = _counting(monkeypatch)
    result = run_study(config, tmp_path, progress=False)
    assert result.complete and result.reused == 8 and result.computed == N_ROWS - 8
    assert calls["frames"] >= N_ROWS - 8
    rows = read_rows(tmp_path / "frames.csv")
    assert len(rows) == N_ROWS
    for r in rows:  # same numbers as the uninterrupted run (same inputs, seeded noise)
        ref = full[(r["setting"], r["method"], r["frame"])]
        assert r["psnr"] == pytest.approx(ref["psnr"], abs=1e-9)


def test_cancel_callable_stops_and_keeps_rows(tmp_path: Path) -> None:
    seen = []

    def cancel() -> bool:
        return len(seen) >= 3

    result = run_study(
        StudyConfig.quick(**TINY), tmp_path, progress=False, cancel=cancel,
        on_event=lambda e: seen.append(e) if e.kind == "frame" else None,
    )  # fmt: skip
    assert not result.complete
    assert len(read_rows(tmp_path / "frames.csv")) == 3


def test_changed_config_refuses_to_mix(done) -> None:
    out, _ = done
    with pytest.raises(StudyError, match="targets_per_setting"):
        run_study(StudyConfig.quick(**{**TINY, "targets_per_setting": 2}), out, progress=False)
    # the device may change between runs
    run_study(StudyConfig.quick(**{**TINY, "device": "cpu"}), out, progress=False)


def test_frames_csv_without_study_json_refused(tmp_path: Path) -> None:
    (tmp_path / "frames.csv").write_text(",".join(COLUMNS) + "\n", encoding="utf-8")
    with pytest.raises(StudyError, match="study.json"):
        run_study(StudyConfig.quick(**TINY), tmp_path, progress=False)


def test_config_round_trip_and_errors(tmp_path: Path) -> None:
    config = StudyConfig(key_steps=(2, "fl"), noise_levels=("clean", 30), methods=("bicubic",))
    assert config.key_steps == (2, FIRST_LAST) and config.noise_levels == (None, 30.0)
    assert StudyConfig.from_dict(config.to_dict()) == config
    config.save(tmp_path / "s.json")
    assert StudyConfig.load(tmp_path / "s.json") == config
    with pytest.raises(StudyError, match="20..60"):
        StudyConfig(noise_levels=(70,))
    with pytest.raises(StudyError, match="key_steps"):
        StudyConfig(key_steps=(1,))
    with pytest.raises(StudyError, match="methods"):
        StudyConfig(methods=("no-such-method",))
    with pytest.raises(StudyError, match="unknown key 'bogus'"):
        StudyConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_settings_and_targets_of_the_paper_preset() -> None:
    config = StudyConfig(methods=("bicubic",), targets_per_setting=None)
    ids = [s.id for s in study_settings(config)]
    # 6 noise levels + 4 key steps x 3 separations, k20-s1-clean shared by both sweeps
    assert len(ids) == 6 + 12 - 1 and len(set(ids)) == len(ids)
    shared = next(s for s in study_settings(config) if s.id == "k20-s1-clean")
    assert shared.sweeps == ("noise", "keys")
    targets = study_targets(config, 101)
    assert targets.tolist() == list(range(1, 100, 2))
    few = study_targets(config.replace(targets_per_setting=5), 101)
    assert len(few) == 5 and few[0] == 1 and few[-1] == 99 and set(few) <= set(targets)
    with pytest.raises(StudyError, match="key step 20 needs at least 21"):
        study_targets(config, 15)


def test_attention_figures_from_rows(tmp_path: Path) -> None:
    """Fig. 7 / S5 files from rows with attention scores (a network run is too slow here)."""
    config = StudyConfig.quick(**{**TINY, "methods": ("bicubic", "edvr-stf")})
    rows = []
    rng = np.random.default_rng(0)
    for setting in study_settings(config):
        for method in config.methods:
            for t in (1, 3, 5, 7, 9):
                att = method == "edvr-stf"
                off = t % int(setting.key_step) if setting.key_step != FIRST_LAST else t
                rows.append({c: math.nan for c in COLUMNS} | dict(
                    setting=setting.id, sweeps="+".join(setting.sweeps), method=method,
                    key_step=str(setting.key_step), separation=setting.separation,
                    lr_psnr=setting.lr_psnr, frame=t, offset=off, is_key=False,
                    psnr=25 + rng.normal(), aad=0.03, ssim=0.7, seconds=0.1,
                    backward=2.0 - 0.1 * off if att else math.nan,
                    forward=1.0 + 0.1 * off if att else math.nan,
                    backward_norm=1 - 0.05 * off if att else math.nan,
                    forward_norm=1 + 0.05 * off if att else math.nan))  # fmt: skip
    files = {p.name for p in write_figures(tmp_path, config, rows, n_frames=21)}
    assert {"fig7_attention_edvr-stf.png", "figS5_attention_hist_edvr-stf.svg"} <= files
    assert not any("bicubic" in f for f in files if "attention" in f)


CLI_TINY = ["study", "--quick", "--sample-frames", "21", "--sample-size", "64x128",
            "--noise", "20,clean",
            "--key-steps", "2,20", "--separations", "1", "--methods", "bicubic,bayesian",
            "--targets-per-setting", "3", "--no-progress"]  # fmt: skip


def test_cli_study_quick_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from napari_xfusion.cli import main

    out = tmp_path / "cli"
    assert main([*CLI_TINY, "-o", str(out)]) == 0
    assert "18 rows (18 computed now, 0 reused)" in capsys.readouterr().out
    config = StudyConfig.load(out / "study.json")
    assert config.sample_shape == (64, 128) and config.key_steps == (2, 20)
    assert config.methods == ("bicubic", "bayesian") and config.targets_per_setting == 3
    assert {"fig5_noise.png", "fig6_keys_s1.svg", "summary.md"} <= {p.name for p in out.iterdir()}
    assert main([*CLI_TINY, "-o", str(out)]) == 0
    assert "(0 computed now, 18 reused)" in capsys.readouterr().out
    (out / "summary.md").unlink()
    assert main(["study", "--report", "-o", str(out)]) == 0
    assert (out / "summary.md").is_file()


def test_cli_study_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from napari_xfusion.cli import main

    assert main(["study", "--noise", "70", "-o", str(tmp_path)]) == 2
    assert "20..60 dB" in capsys.readouterr().err
    assert main(["study", "--truth", str(tmp_path / "missing.tif"), "--methods", "bicubic",
                 "-o", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "missing.tif" in capsys.readouterr().err
    assert not (tmp_path / "o" / "study.json").exists()  # the corrected command may use "o"


def test_study_of_a_detector_stack(tmp_path: Path) -> None:
    """A user's uint16 stack: normalised once, so bicubic stays flat across key steps."""
    from napari_xfusion.core.io import write_stack
    from napari_xfusion.core.sample import simulate_sequence

    truth = (simulate_sequence(21, (64, 128), seed=3) * 3000 + 500).astype(np.uint16)
    write_stack(tmp_path / "truth.tif", truth)
    config = StudyConfig(truth=str(tmp_path / "truth.tif"), noise_levels=(), key_steps=(2, 10),
                         separations=(1,), methods=("bicubic",), targets_per_setting=4)  # fmt: skip
    result = run_study(config, tmp_path / "out", progress=False)
    assert result.complete and len(result.rows) == 2 * 4
    by = {(r["setting"], r["frame"]): r["psnr"] for r in result.rows}
    for (_setting, frame), value in by.items():
        assert math.isfinite(value)
        assert value == by[("k2-s1-clean", frame)]
    assert str(tmp_path / "truth.tif") in (tmp_path / "out" / "summary.md").read_text()


def test_rows_match_an_independent_computation(done) -> None:
    """bicubic's row of a frame = core.metrics of the up-sampled binned truth (clean LR): the
    study maps the pipeline's frames to the right (method, setting, frame) rows."""
    from napari_xfusion.app.study import load_truth
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.metrics import frame_metrics
    from napari_xfusion.core.resample import upscale_bicubic

    out, _ = done
    truth, _ = load_truth(StudyConfig.quick(**TINY))
    lr = bin_frames(truth)
    rows = [r for r in read_rows(out / "frames.csv") if r["method"] == "bicubic"]
    for r in (r for r in rows if r["setting"] == "k2-s1-clean"):
        expected = frame_metrics(upscale_bicubic(lr[r["frame"]]), truth[r["frame"]])
        assert r["psnr"] == pytest.approx(expected["psnr"], abs=1e-9)
        assert r["ssim"] == pytest.approx(expected["ssim"], abs=1e-9)
