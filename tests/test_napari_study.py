"""The Study dock: a run to completion, cancel and resume, a layer as truth, the Fusion dock's
"Study..." button. Real viewer (Xvfb), a 16-frame 64x128 study of a few seconds."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from napari_xfusion.app.study import StudyConfig, read_rows

TINY = dict(
    sample_frames=16,
    sample_shape=(64, 128),
    noise_levels=(20.0, None),
    noise_key_step=5,
    key_steps=(5,),
    separations=(1,),
    targets_per_setting=3,
)
N_ROWS = 2 * 2 * 3  # methods x settings (k5-s1-psnr20, k5-s1-clean) x targets


@pytest.fixture
def study(make_napari_viewer, qtbot, tmp_path):
    """``(viewer, widget)``: a docked study widget set to the tiny study (bicubic, bayesian)
    into ``tmp_path/out``; at teardown any run is quit and no worker thread may be left."""
    from qtpy.QtCore import QThreadPool

    from napari_xfusion._napari._study import StudyWidget

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Study (napari-xfusion)")
    widget.config_factory = lambda quick: StudyConfig.quick(**TINY)
    for name, box in widget.method_boxes.items():
        box.setChecked(name in ("bicubic", "bayesian"))
    widget.out_dir.setText(str(tmp_path / "out"))
    yield viewer, widget
    if widget.running:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=30000)
    assert QThreadPool.globalInstance().waitForDone(10000), "a worker thread is still running"
    assert QThreadPool.globalInstance().activeThreadCount() == 0


def _rows(out: Path) -> list[dict]:
    rows = read_rows(out / "frames.csv")
    keys = [(r["setting"], r["method"], r["frame"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows in frames.csv"
    return rows


def test_run_to_completion_writes_rows_summary_and_shows_fig5(study, qtbot, tmp_path):
    viewer, widget = study
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    out = tmp_path / "out"
    assert widget.finished, widget.status.text()
    assert (out / "summary.md").is_file()
    rows = _rows(out)
    assert len(rows) == N_ROWS
    assert {r["method"] for r in rows} == {"bicubic", "bayesian"}
    assert str(out / "summary.md") in widget.status.text()
    assert "setting 2/2" in widget.progress.format()
    assert f"{N_ROWS}/{N_ROWS} rows" in widget.progress.format()
    assert widget.show_figure.isEnabled()
    layer = widget.show_fig5()
    assert layer.rgb and layer.data.ndim == 3 and layer.name in viewer.layers


def test_cancel_keeps_the_rows_done_and_run_resumes(study, qtbot, tmp_path, monkeypatch):
    import napari_xfusion._napari._study as study_module

    _, widget = study
    real = study_module.iter_study
    gate = threading.Event()

    def gated(config, out_dir):
        # Hold the worker after its first row until the test has pressed Cancel: the tiny
        # study would otherwise finish before the GUI thread sees the first event.
        for event in real(config, out_dir):
            yield event
            if event.kind == "frame" and not gate.is_set():
                gate.wait(30)

    monkeypatch.setattr(study_module, "iter_study", gated)
    assert widget.run()

    def on_event(event):
        if event.kind == "frame" and not gate.is_set():
            widget.cancel()
            gate.set()

    widget.worker.yielded.connect(on_event)
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    out = tmp_path / "out"
    assert not widget.finished
    assert "Run resumes" in widget.status.text()
    assert not (out / "summary.md").exists()
    first = _rows(out)
    assert 1 <= len(first) < N_ROWS
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    assert widget.run()  # the gate is open: this run goes to the end
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert widget.finished, widget.status.text()
    assert widget.last_event is not None and widget.last_event.total == N_ROWS - len(first)
    second = _rows(out)
    assert len(second) == N_ROWS
    assert {(r["setting"], r["method"], r["frame"]) for r in first} <= {
        (r["setting"], r["method"], r["frame"]) for r in second
    }


def test_an_image_layer_as_truth_is_saved_in_the_output_folder(study, qtbot, tmp_path):
    from napari_xfusion.core.sample import simulate_sequence

    viewer, widget = study
    stack = simulate_sequence(16, (64, 128), seed=3, noise=False).astype("float32")
    viewer.add_image(stack, name="my truth")
    viewer.add_image(stack[0], name="one frame")  # 2-D: not offered
    items = [widget.truth.itemText(i) for i in range(widget.truth.count())]
    assert items == ["built-in sample", "my truth"]
    widget.truth.setCurrentText("my truth")
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    out = tmp_path / "out"
    assert widget.finished, widget.status.text()
    assert (out / "truth.tif").is_file()
    assert StudyConfig.load(out / "study.json").truth == str(out / "truth.tif")
    assert len(_rows(out)) == N_ROWS
    # Another stack into the same folder would mix rows: refused with the reason.
    viewer.layers["my truth"].data = stack[::-1].copy()
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert not widget.finished
    assert "another truth stack" in widget.status.text()


def test_nothing_ticked_or_no_folder_does_not_start(study):
    _, widget = study
    for box in widget.method_boxes.values():
        box.setChecked(False)
    assert not widget.run()
    assert "tick at least one method" in widget.status.text()
    widget.method_boxes["bicubic"].setChecked(True)
    widget.out_dir.setText("  ")
    assert not widget.run()
    assert "output folder" in widget.status.text()


def test_the_fusion_docks_study_button_opens_one_study_dock(fusion_viewer, qtbot):
    from napari_xfusion._napari._study import StudyWidget

    viewer, widget = fusion_viewer
    widget.results.study_button.click()
    docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, StudyWidget)]
    assert len(docked) == 1
    assert "Study (napari-xfusion)" in viewer.window.dock_widgets
    widget.results.study_button.click()  # the same dock again, not a second one
    docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, StudyWidget)]
    assert len(docked) == 1


def test_the_manifest_offers_the_study_dock(make_napari_viewer):
    from napari_xfusion._napari._study import StudyWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-xfusion", "Study")
    assert isinstance(widget, StudyWidget)
