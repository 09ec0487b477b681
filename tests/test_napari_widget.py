"""The fusion dock in a real napari viewer (Xvfb): runs, cancel, comparison, docks, export."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtCore import Qt  # noqa: E402

from napari_xfusion._napari._attention import AttentionWidget  # noqa: E402
from napari_xfusion._napari._metrics import MetricsWidget  # noqa: E402
from napari_xfusion.app.results import FrameRow  # noqa: E402
from napari_xfusion.core.io import read_metadata, read_stack  # noqa: E402
from napari_xfusion.methods.bicubic import Bicubic  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 60000


def run_and_wait(widget, qtbot, timeout=TIMEOUT_MS):
    """Press Run and wait for the worker to finish; returns the run's summary."""
    assert widget.run(), widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    return widget.last_summary


def choose(widget, *methods):
    for name, box in widget.method_boxes.items():
        box.setChecked(name in methods)


def test_pickers_follow_layer_roles(fusion_viewer):
    viewer, widget = fusion_viewer
    assert widget.lr_combo.currentText() == "LR"
    assert widget.hr_combo.currentText() == "HR keys"
    assert widget.truth_combo.currentText() == "ground truth"
    assert widget.keys_note.text().startswith("Keys from the HR layer: 0, 4")
    assert (widget.start.value(), widget.end.value()) == (0, 7)
    viewer.layers["LR"].name = "fast camera"
    assert widget.lr_combo.currentText() == "fast camera"


@pytest.mark.parametrize("methods", [("bicubic",), ("bicubic", "bayesian")])
def test_run_fills_fused_layers_and_metrics(fusion_viewer, qtbot, methods):
    viewer, widget = fusion_viewer
    choose(widget, *methods)
    summary = run_and_wait(widget, qtbot)
    assert summary.error is None and not summary.cancelled
    assert summary.frames_done == 8 * len(methods)
    truth = viewer.layers["ground truth"].data
    for method in methods:
        layer = viewer.layers[f"fused [{method}]"]
        assert layer.data.shape == truth.shape
        assert layer.metadata["xfusion"]["frames_done"] == list(range(8))
        assert layer.metadata["xfusion"]["parameters"]["key_indices"] == [0, 4]
        # Every frame was written, and is closer to the truth than a blank frame.
        err = np.abs(layer.data - truth).mean(axis=(1, 2))
        assert np.all(err < np.abs(truth).mean(axis=(1, 2)))
    # Progress counts frames (each done by every method), not frames x methods.
    assert widget.progress.value() == widget.progress.maximum() == 8
    assert "ETA" not in widget.progress.format() and "estimating" not in widget.progress.format()
    assert "Done" in widget.status.text()
    summary_rows = widget.session.table.summary()  # the app layer's table, as the CLI's
    assert [row["method"] for row in summary_rows] == list(methods)
    assert all(row["frames"] == 8 and row["psnr_mean"] > 15 for row in summary_rows)
    assert all(row["frames_between_keys"] == 6 for row in summary_rows)  # keys 0, 4 apart
    # The metrics dock was opened because there is a ground truth, and shows every frame.
    metrics = [w for w in viewer.window.dock_widgets.values() if isinstance(w, MetricsWidget)]
    assert len(metrics) == 1
    assert metrics[0].frames.rowCount() == 8 * len(methods)
    assert metrics[0].summary.rowCount() == len(methods)


def test_bicubic_layer_equals_upscaled_lr(fusion_viewer, qtbot):
    from napari_xfusion.core.resample import upscale_bicubic

    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    run_and_wait(widget, qtbot)
    lr = viewer.layers["LR"].data
    np.testing.assert_allclose(
        viewer.layers["fused [bicubic]"].data, upscale_bicubic(lr, 4), atol=1e-6
    )


def test_lr_is_shown_upscaled_over_the_fused_layer(fusion_viewer):
    viewer, _ = fusion_viewer
    lr = viewer.layers["LR"]
    # LR pixel (0, 0) covers HR pixels 0..3: its centre sits at HR coordinate 1.5.
    np.testing.assert_allclose(lr.data_to_world((0, 0, 0)), (0, 1.5, 1.5))
    np.testing.assert_allclose(lr.data_to_world((0, 1, 1)), (0, 5.5, 5.5))


def test_window_and_around_current_frame(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    widget.key_step.setValue(2)
    viewer.dims.set_point(0, 5)
    widget.window_around_current()
    assert (widget.start.value(), widget.end.value()) == (3, 7)
    run_and_wait(widget, qtbot)
    layer = viewer.layers["fused [bicubic]"]
    assert layer.metadata["xfusion"]["frames_done"] == [3, 4, 5, 6, 7]
    assert not layer.data[:3].any()
    # A second run on another window adds to the same layer (same inputs).
    widget.window_all()
    widget.start.setValue(0)
    widget.end.setValue(1)
    run_and_wait(widget, qtbot)
    assert layer.metadata["xfusion"]["frames_done"] == [0, 1, 3, 4, 5, 6, 7]


class GatedBicubic(Bicubic):
    """Bicubic that waits for the test to let each frame through (deterministic cancel)."""

    gate = threading.Semaphore(0)

    def reconstruct(self, inputs):
        # A bounded wait: a broken test must not hang the suite.
        if not self.gate.acquire(timeout=30):
            raise RuntimeError("test gate never opened")
        return super().reconstruct(inputs)


def test_cancel_keeps_the_frames_done(fusion_viewer, qtbot, monkeypatch, notifications):
    from napari_xfusion import methods

    monkeypatch.setitem(methods.METHODS, "bicubic", f"{__name__}:GatedBicubic")
    GatedBicubic.gate = threading.Semaphore(0)
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    assert widget.run()
    assert widget.cancel_button.isEnabled() and not widget.run_button.isEnabled()
    GatedBicubic.gate.release()
    qtbot.waitUntil(lambda: widget.session.methods() == ["bicubic"], timeout=TIMEOUT_MS)
    # The worker now waits inside frame 1: a second Run is refused, then cancel.
    assert not widget.run()
    assert any("already going" in n for n in notifications)
    widget.cancel()
    GatedBicubic.gate.release()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    summary = widget.last_summary
    assert summary.cancelled and summary.error is None
    assert summary.frames_done == 2
    layer = viewer.layers["fused [bicubic]"]
    assert layer.metadata["xfusion"]["frames_done"] == [0, 1]
    assert layer.data[:2].any() and not layer.data[2:].any()
    assert "Cancelled" in widget.status.text()
    assert widget.run_button.isEnabled()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda v, w: choose(w), "tick at least one method"),
        (
            lambda v, w: (
                v.add_image(np.zeros((64, 128), np.float32), name="one frame"),
                w.hr_combo.setCurrentText("one frame"),
            ),
            "time series",
        ),
        (
            lambda v, w: (
                v.add_image(np.zeros((8, 60, 128), np.float32), name="wrong size"),
                w.hr_combo.setCurrentText("wrong size"),
            ),
            "4x the LR",
        ),
        (
            lambda v, w: (
                v.add_image(np.zeros((3, 64, 128), np.float32), name="three keys"),
                w.hr_combo.setCurrentText("three keys"),
                w.key_step.setValue(5),
            ),
            "key step",
        ),
        (lambda v, w: w.weights["edvr"].setText("/no/such/file.pt"), None),
        (lambda v, w: (w.start.setValue(5), w.end.setValue(2)), "after its end"),
    ],
    ids=["no-method", "2d-layer", "hr-shape", "keys-past-end", "missing-weights", "window"],
)
def test_bad_inputs_are_reported_not_raised(fusion_viewer, qtbot, notifications, setup, expected):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    setup(viewer, widget)
    if expected is None:
        choose(widget, "edvr")
        expected = "does not exist"
    started = widget.run()
    if started:  # some problems are found by the worker: wait for its report
        qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
        assert widget.last_summary.error is not None
    assert any(expected.lower() in n.lower() for n in notifications), notifications
    assert not any("Traceback" in n for n in notifications)
    assert not widget.running and widget.run_button.isEnabled()


def test_missing_shipped_weights_say_what_to_do(fusion_viewer, qtbot, notifications):
    pytest.importorskip("napari_xfusion.methods.network")
    from napari_xfusion.methods import get_reconstructor

    try:
        get_reconstructor("edvr-stf", device="cpu")
    except Exception:
        pass
    else:
        pytest.skip("shipped edvr-stf weights exist here")
    viewer, widget = fusion_viewer
    choose(widget, "edvr-stf")
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_summary.error
    assert any("Fusion failed" in n and "weights" in n for n in notifications), notifications


def test_simulate_from_hr_stack(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    widget.simulate.setChecked(True)
    assert widget.hr_combo.currentText() == "ground truth"
    assert not widget.lr_combo.isVisibleTo(widget)
    widget.key_step.setValue(3)
    widget.noise_psnr.setValue(30.0)
    choose(widget, "bicubic")
    summary = run_and_wait(widget, qtbot)
    assert summary.error is None, summary.error
    lr = viewer.layers["LR (simulated)"]
    assert lr.data.shape == (8, 16, 32)
    assert lr.metadata["xfusion"]["b0"] > 0
    assert "b0 = " in widget.b0_label.text() and "30.0 dB" in widget.b0_label.text()
    keys = viewer.layers["HR keys (simulated)"]
    assert keys.metadata["xfusion"]["key_indices"] == [0, 3, 6]
    np.testing.assert_array_equal(keys.data, viewer.layers["ground truth"].data[[0, 3, 6]])
    assert any(r.has_metrics for r in widget.session.table.rows())  # HR stack = the truth


def test_side_by_side_grid_with_linked_contrast(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    run_and_wait(widget, qtbot)
    widget.side_by_side_button.setChecked(True)
    grid = viewer.canvas.grid
    assert grid.enabled
    shown = [layer.name for layer in viewer.layers if layer.visible]
    assert set(shown) == {"LR", "fused [bicubic]", "fused [bayesian]", "ground truth"}
    layers = list(viewer.layers)
    cells = {layer.name: grid.position(i, layers) for i, layer in enumerate(layers)}
    assert cells["LR"] == (0, 0) and cells["ground truth"] == (1, 1)
    assert {cells["fused [bicubic]"], cells["fused [bayesian]"]} == {(0, 1), (1, 0)}
    viewer.layers["fused [bicubic]"].contrast_limits = (0.1, 0.7)
    for name in shown:
        assert tuple(viewer.layers[name].contrast_limits) == pytest.approx((0.1, 0.7))
    assert all(viewer.layers[name].name_overlay.visible for name in shown)
    widget.side_by_side_button.setChecked(False)
    assert not grid.enabled
    assert not any(layer.name_overlay.visible for layer in viewer.layers)
    assert viewer.layers["HR keys"].visible
    viewer.layers["fused [bicubic]"].contrast_limits = (0.0, 1.0)
    assert tuple(viewer.layers["LR"].contrast_limits) == pytest.approx((0.1, 0.7))


@pytest.mark.parametrize("mode", ["ratio", "difference"])
def test_change_views_follow_the_fused_layer(fusion_viewer, qtbot, mode):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    widget.change_mode.setCurrentIndex(widget.change_mode.findData(mode))
    widget.start.setValue(2)
    widget.end.setValue(4)
    run_and_wait(widget, qtbot)
    (view,) = widget.add_change_views()
    assert view.name == f"{mode} [fused [bicubic]]"
    fused = viewer.layers["fused [bicubic]"].data
    neutral = 1.0 if mode == "ratio" else 0.0
    expected = fused[3] / fused[2] if mode == "ratio" else fused[3] - fused[2]
    np.testing.assert_allclose(view.data[3], expected, rtol=1e-5, atol=1e-6)
    # Frame 2's previous frame is not done yet: no change shown.
    assert np.all(view.data[2] == neutral)
    # Filling frame 1 later makes frame 2's change appear.
    widget.start.setValue(0)
    widget.end.setValue(1)
    run_and_wait(widget, qtbot)
    assert not np.all(view.data[2] == neutral)
    assert np.asarray(view.data[1:3]).shape == (2, 64, 128)


def test_attention_plot_receives_points_and_moves_the_viewer(fusion_viewer):
    from matplotlib.backend_bases import MouseEvent

    viewer, widget = fusion_viewer
    plot = AttentionWidget(viewer)
    viewer.window.add_dock_widget(plot, area="bottom")
    session = widget.session
    session.begin(8, [0, 4], ["edvr-stf"], has_truth=False, fresh=["edvr-stf"])
    rows = []
    for t in range(8):
        key = 0 if t < 4 else 4
        rows.append(
            FrameRow(
                method="edvr-stf",
                index=t,
                seconds=0.1,
                backward=2.0 - 0.2 * (t - key),
                forward=1.0 + 0.2 * (t - key),
            )
        )
    session.add_many(rows)
    series = plot.series()["edvr-stf"]
    np.testing.assert_array_equal(series["index"], np.arange(8))
    # Normalised by the key's own score: 1 at the keys, falling / rising across the gap.
    np.testing.assert_allclose(series["backward_norm"][[0, 3, 4]], [1.0, 0.7, 1.0])
    np.testing.assert_allclose(series["forward_norm"][[0, 3]], [1.0, 1.6])
    lines = {name: plot._lines[("edvr-stf", name)] for name in ("backward", "forward")}
    assert len(lines["backward"].get_xdata()) == 8
    plot.canvas.draw()
    x, y = plot.axes.transData.transform((5.2, 1.0))
    MouseEvent("button_press_event", plot.canvas, x, y, button=1)._process()
    assert viewer.dims.point[0] == 5
    # The plot follows napari's theme.
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    viewer.theme = "light"
    assert to_hex(plot.figure.get_facecolor()) == get_theme("light").background.as_hex()


def test_export_writes_tiffs_and_csvs_that_reopen(fusion_viewer, qtbot, tmp_path):
    from napari_xfusion._napari._reader import get_reader

    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    run_and_wait(widget, qtbot)
    assert widget.export_methods() == ["bicubic", "bayesian"]
    widget.export_list.item(1).setCheckState(Qt.CheckState.Unchecked)  # untick bayesian
    files = widget.export(tmp_path)
    names = sorted(p.name for p in files)
    # The CLI's export: one method -> fused.tif (as `xfusion fuse -o FOLDER/`), + sidecars.
    assert names == ["fused.config.json", "fused.csv", "fused.tif"]
    stack = read_stack(tmp_path / "fused.tif")
    np.testing.assert_array_equal(stack, viewer.layers["fused [bicubic]"].data)
    meta = read_metadata(tmp_path / "fused.tif")
    assert meta["method"] == "bicubic" and meta["schema"] == 1
    # "auto" in the config (as the CLI writes it); the separation used beside it
    assert meta["config"]["separation"] is None and meta["separation"] == 1
    assert meta["frame_indices"] == list(range(8))
    lines = (tmp_path / "fused.csv").read_text().splitlines()
    assert lines[0].startswith("method,frame,is_key,seconds,psnr,aad,ssim") and len(lines) == 9
    # The exported stack reopens as a fused layer with its parameters.
    data, kwargs, kind = get_reader(str(tmp_path / "fused.tif"))(str(tmp_path / "fused.tif"))[0]
    assert kind == "image" and kwargs["name"] == "fused [bicubic]"
    assert kwargs["metadata"]["xfusion"]["parameters"]["key_indices"] == [0, 4]


def test_values_are_remembered_between_sessions(fusion_viewer, qtbot):
    from napari_xfusion._napari._widget import FusionWidget

    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    widget.separation.setValue(2)
    widget.noise_psnr.setValue(42.0)
    run_and_wait(widget, qtbot)
    again = FusionWidget(viewer)
    viewer.window.add_dock_widget(again, name="second")
    assert again.selected_methods() == ["bicubic", "bayesian"]
    assert again.separation.value() == 2
    assert again.noise_psnr.value() == 42.0


def test_metrics_copy_and_save_csv(fusion_viewer, qtbot, tmp_path):
    from qtpy.QtWidgets import QApplication

    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    run_and_wait(widget, qtbot)
    metrics = MetricsWidget(viewer)
    viewer.window.add_dock_widget(metrics, name="more metrics", area="bottom")
    assert metrics.frames.rowCount() == 8 and not metrics.note.isVisible()
    metrics.copy_to_clipboard()
    copied = QApplication.clipboard().text().splitlines()
    assert copied[0].split("\t")[:7] == [
        "method", "frame", "is_key", "seconds", "psnr", "aad", "ssim"
    ]  # fmt: skip
    assert len(copied) == 9
    path = metrics.save_csv(tmp_path / "m.csv")
    assert path.read_text().splitlines()[1].startswith("bicubic,0,")
    summary = (tmp_path / "m_summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,frames,frames_between_keys,")
    assert summary[1].startswith("bicubic,8,6,")
    # Double-clicking a row moves the viewer to that frame.
    metrics.frames.itemDoubleClicked.emit(metrics.frames.item(5, 1))
    assert viewer.dims.point[0] == 5


def test_attention_points_are_blitted_and_a_hidden_dock_draws_nothing(make_napari_viewer, qtbot):
    from napari_xfusion._napari._dock import dock_of
    from napari_xfusion._napari._session import session_for

    viewer = make_napari_viewer(show=True)
    plot = AttentionWidget(viewer)
    viewer.window.add_dock_widget(plot, area="bottom")
    session = session_for(viewer)
    session.begin(20, [0, 10], ["edvr-stf"], has_truth=False, fresh=["edvr-stf"])

    def rows(frames, backward=1.0):
        return [FrameRow("edvr-stf", t, t in (0, 10), 0.1, backward=backward if t else 1.0,
                         forward=0.5) for t in frames]  # fmt: skip

    session.add_many(rows(range(3)))
    qtbot.waitUntil(lambda: plot.full_draws >= 1 and plot._background is not None, timeout=5000)
    draws = plot.full_draws
    before = np.asarray(plot.canvas.buffer_rgba()).copy()
    # More points of the same curves inside the y range: blitted, no full draw.
    session.add_many(rows(range(3, 8), backward=0.8))
    qtbot.wait(100)
    assert plot.full_draws == draws
    assert len(plot._lines[("edvr-stf", "backward")].get_xdata()) == 8
    assert not np.array_equal(np.asarray(plot.canvas.buffer_rgba()), before)  # drawn
    # A score past the y limits: the axes change, one full draw.
    session.add_many(rows([8], backward=3.0))
    qtbot.waitUntil(lambda: plot.full_draws == draws + 1, timeout=5000)
    assert plot.axes.get_ylim()[1] >= 3.0
    # A hidden dock (e.g. a tab behind another) draws nothing until it is shown again.
    dock = dock_of(plot)
    dock.hide()
    session.add_many(rows([9], backward=6.0))
    qtbot.wait(100)
    assert plot.full_draws == draws + 1
    dock.show()
    qtbot.waitUntil(lambda: plot.full_draws == draws + 2, timeout=5000)
    assert plot.axes.get_ylim()[1] >= 6.0


def test_closed_docks_stop_listening(fusion_viewer, qtbot):
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    from napari_xfusion._napari._widget import FusionWidget

    viewer, widget = fusion_viewer
    extra = FusionWidget(viewer)
    plot = AttentionWidget(viewer)
    for i, dock in enumerate((extra, plot)):
        viewer.window.add_dock_widget(dock, name=f"closing {i}")
    before = len(viewer.layers.events.inserted.callbacks)
    listeners = len(widget.session.frames_added)
    for dock in (extra, plot):
        viewer.window.remove_dock_widget(dock)
        dock.deleteLater()  # what closing napari does to every dock
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert len(viewer.layers.events.inserted.callbacks) == before - 3  # pickers, names, export
    assert len(widget.session.frames_added) == listeners - 1
    # Events after the docks are gone reach only the live widget.
    viewer.add_image(np.zeros((8, 16, 32), np.float32), name="new LR")
    assert widget.lr_combo.findText("new LR") >= 0
    choose(widget, "bicubic")
    run_and_wait(widget, qtbot)
    assert widget.last_summary.error is None


def test_demo_launch_docks_everything_and_runs(make_napari_viewer, qtbot, isolated_settings):
    from napari_xfusion._napari.demo import launch

    viewer = make_napari_viewer()
    launch("small", ["bicubic"], run=True, block=False, viewer=viewer)
    docks = viewer.window.dock_widgets
    assert {
        "Fusion (napari-xfusion)",
        "Attention (napari-xfusion)",
        "Metrics (napari-xfusion)",
    } <= set(docks)
    widget = docks["Fusion (napari-xfusion)"]
    assert widget.running
    widget.cancel()  # the test needs the wiring, not 50 frames
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_summary.error is None
    assert {"LR", "HR keys", "ground truth", "fused [bicubic]"} <= {l.name for l in viewer.layers}


def test_closing_the_dock_mid_run_stops_the_worker(fusion_viewer, qtbot, monkeypatch):
    from qtpy.QtCore import QEvent, QThreadPool
    from qtpy.QtWidgets import QApplication

    from napari_xfusion import methods
    from napari_xfusion._napari._widget import FusionWidget

    monkeypatch.setitem(methods.METHODS, "bicubic", f"{__name__}:GatedBicubic")
    GatedBicubic.gate = threading.Semaphore(0)
    viewer, _ = fusion_viewer
    doomed = FusionWidget(viewer)
    viewer.window.add_dock_widget(doomed, name="doomed")
    choose(doomed, "bicubic")
    assert doomed.run()
    job = doomed._job
    GatedBicubic.gate.release()
    qtbot.waitUntil(lambda: job.done == 1, timeout=TIMEOUT_MS)
    viewer.window.remove_dock_widget(doomed)
    doomed.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    assert job.cancel.is_set()
    GatedBicubic.gate.release()  # the frame in progress ends, then the worker stops
    assert QThreadPool.globalInstance().waitForDone(TIMEOUT_MS)
    assert viewer.layers["fused [bicubic]"].metadata["xfusion"]["frames_done"] == [0]


def _tiny_checkpoint(tmp_path_factory, arch):
    """An untrained ``tiny`` network saved with its config (the widget only needs a valid file)."""
    pytest.importorskip("napari_xfusion.methods.network")
    import torch

    from napari_xfusion.nn.checkpoint import save_checkpoint
    from napari_xfusion.nn.edvr import build_model, named_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / f"{arch}-tiny.pt"
    save_checkpoint(path, build_model(named_config("tiny", arch)), provenance={"test": 1})
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory, "edvr-stf")


def test_edvr_with_a_checkpoint_file(fusion_viewer, qtbot, tmp_path_factory):
    path = _tiny_checkpoint(tmp_path_factory, "edvr")
    viewer, widget = fusion_viewer
    choose(widget, "edvr")
    widget.weights["edvr"].setText(str(path))
    widget.end.setValue(3)
    summary = run_and_wait(widget, qtbot, timeout=120000)
    assert summary.error is None, summary.error
    layer = viewer.layers["fused [edvr]"]
    assert layer.metadata["xfusion"]["frames_done"] == [0, 1, 2, 3]
    assert np.isfinite(layer.data[:4]).all() and layer.data[:4].std() > 0
    # EDVR has no HR keys, hence no key attention: no attention dock is opened for it.
    assert not any(isinstance(w, AttentionWidget) for w in viewer.window.dock_widgets.values())
    assert len([r for r in widget.session.table.rows() if r.has_metrics]) == 4


def test_a_checkpoint_of_the_wrong_network_is_refused(
    fusion_viewer, qtbot, notifications, tmp_path_factory
):
    path = _tiny_checkpoint(tmp_path_factory, "edvr")
    viewer, widget = fusion_viewer
    choose(widget, "edvr-stf")
    widget.weights["edvr-stf"].setText(str(path))
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert widget.last_summary.error
    assert "fused [edvr-stf]" not in viewer.layers  # nothing created for a run that never began
    assert any("Fusion failed" in n and "'…' button" in n for n in notifications), notifications


def test_edvr_stf_with_a_checkpoint_file_plots_attention(fusion_viewer, qtbot, tiny_checkpoint):
    viewer, widget = fusion_viewer
    choose(widget, "edvr-stf")
    widget.weights["edvr-stf"].setText(str(tiny_checkpoint))
    widget.device.setCurrentText("cpu")
    summary = run_and_wait(widget, qtbot, timeout=120000)
    assert summary.error is None, summary.error
    layer = viewer.layers["fused [edvr-stf]"]
    assert layer.metadata["xfusion"]["frames_done"] == list(range(8))
    assert np.isfinite(layer.data).all() and layer.data.std() > 0
    parameters = layer.metadata["xfusion"]["parameters"]
    assert parameters["options"]["weights"] == str(tiny_checkpoint)
    assert parameters["describe"]  # the method's own description (weights, config)
    # The attention dock opened itself and plots both curves over every frame; at the first
    # key the normalised score is 1 by definition (the last key belongs to the group before).
    (plot,) = [w for w in viewer.window.dock_widgets.values() if isinstance(w, AttentionWidget)]
    series = plot.series()["edvr-stf"]
    np.testing.assert_array_equal(series["index"], np.arange(8))
    assert series["backward_norm"][0] == pytest.approx(1.0)
    assert np.isfinite(series["backward_norm"]).all() and np.isfinite(series["forward_norm"]).all()
    assert len(plot._lines[("edvr-stf", "forward")].get_xdata()) == 8
    assert not plot.hint.isVisible()
    # The loaded network is kept for the next run (no second load from disk).
    assert len(widget._methods) == 1
    cached = next(iter(widget._methods.values()))
    widget.end.setValue(2)
    run_and_wait(widget, qtbot, timeout=120000)
    assert next(iter(widget._methods.values())) is cached
    # Other settings replace it rather than keeping both networks in memory.
    widget.methods_panel.option_widget("edvr-stf", "batch_size").setValue(2)
    run_and_wait(widget, qtbot, timeout=120000)
    assert len(widget._methods) == 1 and next(iter(widget._methods.values())) is not cached


def test_own_uint16_tiffs_fuse_and_export_in_detector_units(
    fusion_viewer, qtbot, tmp_path, tiny_sample, notifications
):
    import tifffile

    from napari_xfusion._napari._reader import get_reader

    viewer, widget = fusion_viewer
    truth = tiny_sample[0][0]
    counts = lambda x: (200 + 3000 * x).astype(np.uint16)  # noqa: E731 (detector values)
    tifffile.imwrite(tmp_path / "fast.tif", counts(tiny_sample[2][0]), photometric="minisblack")
    tifffile.imwrite(tmp_path / "slow.tif", counts(truth[[0, 4]]), photometric="minisblack")
    for name in ("fast", "slow"):
        path = str(tmp_path / f"{name}.tif")
        for data, kwargs, _ in get_reader(path)(path):
            viewer.add_image(data, **kwargs)
    widget.lr_combo.setCurrentText("fast")
    widget.hr_combo.setCurrentText("slow")
    widget.truth_combo.setCurrentText("(none)")
    assert widget.key_step.isEnabled()  # no key metadata: the key rule applies
    widget.key_step.setValue(4)
    choose(widget, "bicubic")
    summary = run_and_wait(widget, qtbot)
    assert summary.error is None, summary.error
    assert any("LR normalised" in n for n in notifications)
    # The LR layer now overlays the HR-sized result (shown x4).
    assert tuple(viewer.layers["fast"].scale[1:]) == (4.0, 4.0)
    fused = viewer.layers["fused [bicubic]"].data
    assert 0.0 <= fused.mean() <= 1.0
    widget.detector_units.setChecked(True)
    (path,) = [p for p in widget.export(tmp_path) if p.suffix == ".tif"]
    exported = read_stack(path)
    assert exported.dtype == np.uint16
    assert 150 < exported.mean() < 3300
    assert read_metadata(path)["units"] == "detector"


def test_contributions_work_through_napari(make_napari_viewer, isolated_settings, tmp_path):
    from napari_xfusion._napari._widget import FusionWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xfusion", "keyhole_small")
    assert [layer.name for layer in viewer.layers] == ["ground truth", "HR keys", "LR"]
    for name, cls in (
        ("Fusion", FusionWidget),
        ("Attention", AttentionWidget),
        ("Metrics", MetricsWidget),
    ):
        _, widget = viewer.window.add_plugin_dock_widget("napari-xfusion", name)
        assert isinstance(widget, cls)
    fusion = viewer.window.dock_widgets["Fusion (napari-xfusion)"]
    assert fusion.lr_combo.currentText() == "LR"
    # Save through napari's writer choice and reopen through our reader.
    path = tmp_path / "keys.tif"
    written = viewer.layers["HR keys"].save(str(path), plugin="napari-xfusion")
    assert written == [str(path)]
    (layer,) = viewer.open(str(path), plugin="napari-xfusion")
    assert layer.name.startswith("HR keys")  # napari makes the name unique
    assert layer.metadata["xfusion"]["key_indices"] == [0, 10, 20, 30, 40]
    assert tuple(layer.scale) == (10.0, 1.0, 1.0)
    # A folder of TIFF frames, as some cameras save, opens as one stack.
    import tifffile

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"img_{i:03d}.tif", np.full((8, 12), i, np.uint16))
    (stack,) = viewer.open(str(folder), plugin="napari-xfusion")
    assert stack.data.shape == (3, 8, 12) and stack.name == "frames"


def test_weights_field_says_whether_shipped_weights_exist(fusion_viewer, monkeypatch, tmp_path):
    from dataclasses import replace

    _, widget = fusion_viewer
    panel = widget.methods_panel  # the hint follows the spec's default_weights
    spec = replace(panel.specs["edvr-stf"], default_weights=str(tmp_path / "edvr-stf-small.pt"))
    monkeypatch.setitem(panel.specs, "edvr-stf", spec)
    choose(widget, "edvr-stf")
    assert "none shipped" in widget.weights["edvr-stf"].placeholderText()
    (tmp_path / "edvr-stf-small.pt").write_bytes(b"")
    choose(widget, "bicubic")
    choose(widget, "edvr-stf")
    assert widget.weights["edvr-stf"].placeholderText() == "shipped weights"


def test_rerun_over_a_reopened_export_replaces_the_read_only_layer(fusion_viewer, qtbot, tmp_path):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    widget.end.setValue(1)
    run_and_wait(widget, qtbot)
    (path,) = [p for p in widget.export(tmp_path) if p.suffix == ".tif"]
    viewer.layers.remove("fused [bicubic]")
    (reopened,) = viewer.open(str(path), plugin="napari-xfusion")
    assert reopened.name == "fused [bicubic]" and not reopened.data.flags.writeable
    widget.end.setValue(3)
    summary = run_and_wait(widget, qtbot)
    assert summary.error is None, summary.error
    layer = viewer.layers["fused [bicubic]"]
    assert layer is not reopened and layer.data.flags.writeable
    assert layer.metadata["xfusion"]["frames_done"] == [0, 1, 2, 3]


def test_metrics_table_stays_sorted_and_updates_rerun_frames(fusion_viewer, qtbot):
    from qtpy.QtCore import Qt

    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    metrics = MetricsWidget(viewer)
    viewer.window.add_dock_widget(metrics, name="metrics", area="bottom")
    for start, end in ((4, 7), (0, 3), (2, 3)):
        widget.start.setValue(start)
        widget.end.setValue(end)
        run_and_wait(widget, qtbot)
    table = metrics.frames
    frames = [table.item(i, 0).data(Qt.ItemDataRole.UserRole) for i in range(table.rowCount())]
    assert frames == list(range(8))  # frame 10 would sort after 9, reruns replace their row
    assert metrics.summary.item(0, 1).text() == "6"  # the frames between the keys 0 and 4


def test_simulate_first_and_last_keys_without_noise(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    widget.simulate.setChecked(True)
    widget.first_last.setChecked(True)
    widget.noise.setChecked(False)
    choose(widget, "bayesian")
    summary = run_and_wait(widget, qtbot)
    assert summary.error is None, summary.error
    assert viewer.layers["HR keys (simulated)"].metadata["xfusion"]["key_indices"] == [0, 7]
    truth = viewer.layers["ground truth"].data
    lr = viewer.layers["LR (simulated)"].data
    np.testing.assert_allclose(lr, truth.reshape(8, 16, 4, 32, 4).mean(axis=(2, 4)), atol=1e-6)
    assert widget.b0_label.text() == "b0: no noise"
    fused = viewer.layers["fused [bayesian]"].data
    np.testing.assert_allclose(fused[[0, 7]], truth[[0, 7]], atol=1e-5)  # keys are observed


def test_bayesian_uncertainty_layer(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    widget.show_extras.setChecked(True)
    run_and_wait(widget, qtbot)
    sd = viewer.layers["uncertainty [bayesian]"]
    assert sd.metadata["xfusion"]["role"] == "uncertainty"
    assert sd.metadata["xfusion"]["frames_done"] == list(range(8))
    assert "uncertainty [bicubic]" not in viewer.layers  # bicubic has no posterior
    assert np.all(sd.data >= 0)
    assert not sd.data[[0, 4]].any()  # the HR keys are observed exactly
    assert sd.data[2].mean() > 0
    assert widget.lr_combo.findText("uncertainty [bayesian]") < 0  # not offered as an input


def test_metrics_of_earlier_methods_stay_when_another_method_runs(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    run_and_wait(widget, qtbot)
    choose(widget, "bayesian")
    run_and_wait(widget, qtbot)
    assert [row["method"] for row in widget.session.table.summary()] == ["bicubic", "bayesian"]
    # New inputs clear the frames (and numbers) of the methods run on them only.
    widget.separation.setValue(2)
    choose(widget, "bicubic")
    widget.end.setValue(2)
    run_and_wait(widget, qtbot)
    summary = {row["method"]: row["frames"] for row in widget.session.table.summary()}
    assert summary == {"bicubic": 3, "bayesian": 8}
    assert viewer.layers["fused [bicubic]"].metadata["xfusion"]["frames_done"] == [0, 1, 2]
    viewer.layers.remove("fused [bayesian]")
    assert [row["method"] for row in widget.session.table.summary()] == ["bicubic"]


def test_results_follow_a_physical_time_axis(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    # 0.5 ms per LR frame; the keys (every 4 frames) every 2 ms.
    viewer.layers["LR"].scale = (0.5, 4.0, 4.0)
    viewer.layers["HR keys"].scale = (2.0, 1.0, 1.0)
    viewer.layers["ground truth"].scale = (0.5, 1.0, 1.0)
    viewer.dims.set_point(0, 2.5)  # 2.5 ms: frame 5
    widget.start.setValue(0)
    widget.end.setValue(2)  # a window 2 frames wide...
    widget.window_around_current()  # ...centred on frame 5
    assert (widget.start.value(), widget.end.value()) == (4, 6)
    choose(widget, "bicubic")
    run_and_wait(widget, qtbot)
    fused = viewer.layers["fused [bicubic]"]
    assert fused.scale[0] == 0.5
    np.testing.assert_allclose(fused.data_to_world((5, 0, 0))[0], 2.5)
    metrics = [w for w in viewer.window.dock_widgets.values() if isinstance(w, MetricsWidget)][0]
    row = next(
        i for i in range(metrics.frames.rowCount()) if metrics.frames.item(i, 0).text() == "6"
    )
    metrics.frames.itemDoubleClicked.emit(metrics.frames.item(row, 1))
    assert viewer.dims.point[0] == pytest.approx(3.0)
