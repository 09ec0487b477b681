"""Nothing lost, no traceback (issue 13): inputs are never written, a complete export is never
replaced by a partial one, SIGTERM is Ctrl-C, OS errors and start-up interrupts are one line."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_cli import _interrupt_after

from napari_xfusion import cli, engine
from napari_xfusion.core.io import StackWriter, read_metadata, read_stack

N = 8


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    cli.make_sample(out, n_frames=N, shape=(32, 64), key_step=4, lr_psnr=35.0)
    return out


@pytest.fixture
def data(sample, tmp_path):
    """A private copy of the sample (tests may try to damage it)."""
    for name in ("lr.tif", "hr_keys.tif", "truth.tif"):
        shutil.copy(sample / name, tmp_path / name)
    return tmp_path


def _fuse(d, *extra, out=None):
    args = ["fuse", "--lr", str(d / "lr.tif"), "--hr", str(d / "hr_keys.tif"), "--no-progress"]
    return [*args, *extra, *([] if out is None else ["-o", str(out)])]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_error_line(err: str, *names: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("target", ["lr.tif", "hr_keys.tif", "truth.tif"])
def test_fuse_refuses_to_write_onto_an_input(data, capsys, target):
    before = _snapshot(data)
    rc = cli.main(_fuse(data, "--truth", str(data / "truth.tif"), out=data / target))
    assert rc == 2
    _one_error_line(capsys.readouterr().err, target, "would destroy that input")
    assert _snapshot(data) == before


def test_symlinks_multi_method_names_and_sidecars_are_checked_too(data, capsys):
    before = _snapshot(data)
    (data / "link.tif").symlink_to(data / "lr.tif")  # the same file under another name
    assert cli.main(_fuse(data, out=data / "link.tif")) == 2
    _one_error_line(capsys.readouterr().err, "--lr input")
    # -o x.tif with two methods writes x_bicubic.tif: here that is the LR input
    os.link(data / "lr.tif", data / "x_bicubic.tif")
    lr, hr = str(data / "x_bicubic.tif"), str(data / "hr_keys.tif")
    rc = cli.main(["fuse", "--lr", lr, "--hr", hr, "--method", "bicubic,bayesian",
                   "--no-progress", "-o", str(data / "x.tif")])  # fmt: skip
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "x_bicubic.tif", "--lr input")
    # a sidecar (<stem>.csv) that is the truth input
    os.link(data / "truth.tif", data / "y.csv")
    assert cli.main(_fuse(data, "--truth", str(data / "y.csv"), out=data / "y.tif")) == 2
    _one_error_line(capsys.readouterr().err, "y.csv", "--truth input")
    assert cli.main(_fuse(data, "--save-config", str(data / "hr_keys.tif"))) == 2
    _one_error_line(capsys.readouterr().err, "hr_keys.tif")
    after = _snapshot(data)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"link.tif", "x_bicubic.tif", "y.csv"}


def test_evaluate_csv_and_simulate_outputs_never_replace_inputs(data, tmp_path, capsys):
    fused = tmp_path / "f.tif"
    assert cli.main(_fuse(data, out=fused)) == 0
    before = _snapshot(data)
    for target in (fused, data / "truth.tif"):
        assert cli.main(["evaluate", str(fused), "--truth", str(data / "truth.tif"),
                         "--csv", str(target)]) == 2  # fmt: skip
        _one_error_line(capsys.readouterr().err, target.name)
    # simulate truth.tif -o <its folder> would write truth.tif over itself
    assert cli.main(["simulate", str(data / "truth.tif"), "--key-step", "4", "-o", str(data)]) == 2
    _one_error_line(capsys.readouterr().err, "truth.tif", "HR input")
    # a folder of frames as input: writing into it would add frames to it
    frames = tmp_path / "frames"
    frames.mkdir()
    truth = read_stack(data / "truth.tif")
    for t in range(N):
        _write_frame(frames / f"f{t}.tif", truth[t])
    assert cli.main(["simulate", str(frames), "--key-step", "4", "-o", str(frames)]) == 2
    _one_error_line(capsys.readouterr().err, "inside the HR input folder")
    assert len(list(frames.iterdir())) == N
    assert _snapshot(data) == before


def _write_frame(path: Path, frame: np.ndarray) -> None:
    from napari_xfusion.core.io import write_stack

    write_stack(path, frame[np.newaxis])


# ----------------------------------------------------------------------------- item 2


def test_an_interrupted_rerun_keeps_the_complete_export(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out" / "x.tif"
    assert cli.main(_fuse(data, "--truth", str(data / "truth.tif"), out=out)) == 0
    complete = _snapshot(out.parent)
    assert sorted(complete) == ["x.config.json", "x.csv", "x.tif"]
    capsys.readouterr()
    monkeypatch.setattr(engine, "run", _interrupt_after(3, KeyboardInterrupt()))
    assert cli.main(_fuse(data, "--truth", str(data / "truth.tif"), out=out)) == 130
    err = capsys.readouterr().err
    assert "kept 3 of 8 frames in" in err and "x.partial.tif" in err and "untouched" in err
    after = _snapshot(out.parent)
    for name, content in complete.items():  # byte for byte
        assert after[name] == content
    assert sorted(set(after) - set(complete)) == [
        "x.partial.config.json", "x.partial.csv", "x.partial.tif"
    ]  # fmt: skip
    meta = read_metadata(out.parent / "x.partial.tif")
    assert meta["complete"] is False and meta["frame_indices"] == [0, 1, 2]
    rc = cli.main(
        ["evaluate", str(out.parent / "x.partial.tif"), "--truth", str(data / "truth.tif")]
    )
    assert rc == 0 and "incomplete export" in capsys.readouterr().err
    rows = (out.parent / "x.partial.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and [r.split(",")[1] for r in rows[1:]] == ["0", "1", "2"]


# ----------------------------------------------------------------------------- item 3

SLOW = """
import sys, time
import numpy as np
from napari_xfusion.methods.base import Reconstruction, Reconstructor


class Slow(Reconstructor):
    name = "slow"
    uses_hr_keys = False

    def reconstruct(self, inputs):
        time.sleep(0.25)
        h, w = inputs.lr.shape[1:]
        print(f"slow: frame {inputs.window.target}", file=sys.stderr, flush=True)
        return Reconstruction(frame=np.full((4 * h, 4 * w), 0.5, np.float32))
"""


def test_sigterm_keeps_the_frames_done_like_ctrl_c(data, tmp_path):
    (tmp_path / "xf_slow.py").write_text(SLOW)
    out = tmp_path / "run" / "s.tif"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from napari_xfusion.methods.registry import MethodSpec, register
        register(MethodSpec("slow", "xf_slow:Slow", "sleeps"))
        from napari_xfusion.cli import main
        sys.exit(main({_fuse(data, "--method", "slow", out=out)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("slow: frame 2"):
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    err = "".join(lines) + rest
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM)" in err
    kept = read_stack(tmp_path / "run" / "s.partial.tif")
    assert 3 <= kept.shape[0] < N  # frame 2 was finished, the run was not
    assert read_metadata(tmp_path / "run" / "s.partial.tif")["complete"] is False
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["s.partial.config.json", "s.partial.csv", "s.partial.tif"]  # no .part


def test_an_interrupted_simulate_writes_nothing(data, tmp_path, monkeypatch, capsys):
    from napari_xfusion.cli import sample as sample_cmd

    out = tmp_path / "sim"
    args = ["simulate", str(data / "truth.tif"), "--key-step", "4", "-o", str(out)]
    assert cli.main(args) == 0
    complete = _snapshot(out)
    real = sample_cmd._add_lr_noise

    def noise(*a, **k):  # SIGTERM after truth.tif and hr_keys.tif are streamed
        signal.raise_signal(signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(sample_cmd, "_add_lr_noise", noise)
    capsys.readouterr()
    assert cli.main([*args, "--lr-psnr", "30"]) == 143
    assert "xfusion simulate: terminated (SIGTERM)" in capsys.readouterr().err
    assert _snapshot(out) == complete  # the earlier set, whole; no temp file
    _no_temp_files(out)


# ----------------------------------------------------------------------------- item 4


def test_output_paths_under_a_file_or_naming_a_folder(data, tmp_path, capsys):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("not a folder")
    assert cli.main(_fuse(data, out=blocker / "x.tif")) == 2
    _one_error_line(capsys.readouterr().err, "plain.txt is a file, not a folder")
    assert cli.main(["simulate", str(data / "truth.tif"), "--key-step", "4",
                     "-o", str(blocker / "sim")]) == 2  # fmt: skip
    _one_error_line(capsys.readouterr().err, "plain.txt is a file")
    fused = tmp_path / "f.tif"
    assert cli.main(_fuse(data, out=fused)) == 0
    assert cli.main(["evaluate", str(fused), "--truth", str(data / "truth.tif"),
                     "--csv", str(blocker / "m.csv")]) == 2  # fmt: skip
    _one_error_line(capsys.readouterr().err, "plain.txt is a file")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert cli.main(_fuse(data, out=folder)) == 0  # -o DIR: DIR/fused.tif
    assert "writing" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == [
        "fused.config.json", "fused.csv", "fused.tif"
    ]  # fmt: skip
    assert cli.main(_fuse(data, out=f"{tmp_path / 'new'}/")) == 0  # a new folder
    assert read_stack(tmp_path / "new" / "fused.tif").shape == (N, 32, 64)


def _no_temp_files(folder: Path) -> None:
    hidden = [p.name for p in folder.rglob(".*")]
    assert not hidden, hidden


def test_disk_full_while_writing_frames(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "x.tif"
    assert cli.main(_fuse(data, out=out)) == 0
    complete = _snapshot(tmp_path)
    real, calls = StackWriter.write, []

    def write(self, frame, index=None):
        calls.append(index)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, frame, index)

    monkeypatch.setattr(StackWriter, "write", write)
    assert cli.main(_fuse(data, out=out)) == 1
    err = capsys.readouterr().err
    _one_error_line(err, "x.tif", "cannot write: No space left on device")
    assert "kept 2 of 8 frames in" in err
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in complete} == complete  # the complete export untouched
    assert read_stack(tmp_path / "x.partial.tif").shape[0] == 2
    assert len((tmp_path / "x.partial.csv").read_text().splitlines()) == 3
    _no_temp_files(tmp_path)


def test_disk_full_while_writing_the_csv_leaves_nothing_half_written(
    data, tmp_path, monkeypatch, capsys
):
    from napari_xfusion.app.export import writer as export  # where ExportWriter looks it up

    def stage(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "stage_text", stage)
    out = tmp_path / "o" / "x.tif"
    assert cli.main(_fuse(data, out=out)) == 1
    _one_error_line(capsys.readouterr().err, "x.tif", "No space left on device")
    assert list(out.parent.iterdir()) == []  # no TIFF without its CSV, no 0-byte CSV, no temp


def test_disk_full_and_permission_denied_in_evaluate_and_fuse(data, tmp_path, monkeypatch, capsys):
    import tempfile

    fused = tmp_path / "f.tif"
    assert cli.main(_fuse(data, out=fused)) == 0
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    csv = tmp_path / "m.csv"
    assert cli.main(["evaluate", str(fused), "--truth", str(data / "truth.tif"),
                     "--csv", str(csv)]) == 1  # fmt: skip
    _one_error_line(capsys.readouterr().err, "m.csv", "No space left on device")
    assert not csv.exists()
    monkeypatch.undo()

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    out = tmp_path / "ro" / "x.tif"
    assert cli.main(_fuse(data, out=out)) == 1
    _one_error_line(capsys.readouterr().err, "x.tif", "cannot write: Permission denied")
    assert list(out.parent.iterdir()) == []
    _no_temp_files(tmp_path)


# ----------------------------------------------------------------------------- item 12


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_is_one_line(data, tmp_path, monkeypatch, capsys, sig, status):
    from napari_xfusion.app import inputs

    def prepare(*args, **kwargs):  # e.g. while torch imports or the inputs are read
        signal.raise_signal(sig)
        raise AssertionError("the signal did not stop the command")

    monkeypatch.setattr(inputs, "prepare_inputs", prepare)
    handler = signal.getsignal(signal.SIGTERM)
    assert cli.main(_fuse(data, out=tmp_path / "x.tif")) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("xfusion fuse: ") and "stopped" in err
    assert not (tmp_path / "x.tif").exists()
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


def test_a_bad_weights_file_is_one_short_line(data, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(2048))
    rc = cli.main(_fuse(data, "--method", "edvr-stf", "--weights", str(junk), "--device", "cpu",
                        out=tmp_path / "x.tif"))  # fmt: skip
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err, "junk.pt")
    assert len(line) < 400 and "weights_only" not in line
    assert not (tmp_path / "x.tif").exists()
