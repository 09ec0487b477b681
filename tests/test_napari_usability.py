"""The plugin as a scientist uses it (issue 15): pickers, throttled updates, no black canvas,
dock placement, counts and resume, help, messages, Qt-binding-neutral code. Real viewer, Xvfb."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("napari")


from napari_xfusion.methods.base import Reconstruction  # noqa: E402
from napari_xfusion.methods.bicubic import Bicubic  # noqa: E402

pytestmark = pytest.mark.gui

TIMEOUT_MS = 60000
PLUGIN = Path(__file__).resolve().parents[1] / "napari_xfusion" / "_napari"


def choose(widget, *methods):
    for name, box in widget.method_boxes.items():
        box.setChecked(name in methods)


def run_and_wait(widget, qtbot, **kwargs):
    assert widget.run(**kwargs), widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    return widget.last_summary


class GatedBicubic(Bicubic):
    """Bicubic that waits for the test to let each frame through, and records what it ran."""

    gate = threading.Semaphore(0)
    computed: list[int] = []

    def reconstruct(self, inputs):
        if not self.gate.acquire(timeout=30):
            raise RuntimeError("test gate never opened")
        GatedBicubic.computed.append(int(inputs.window.target))
        return super().reconstruct(inputs)


class ConfidentBicubic(Bicubic):
    """A method with a per-pixel extra output, as a flow method's confidence map."""

    name = "confident"

    def reconstruct(self, inputs):
        out = super().reconstruct(inputs)
        return Reconstruction(out.frame, extras={"confidence": np.full_like(out.frame, 0.25)})


@pytest.fixture
def gated(monkeypatch):
    from napari_xfusion import methods

    monkeypatch.setitem(methods.METHODS, "bicubic", f"{__name__}:GatedBicubic")
    GatedBicubic.gate = threading.Semaphore(0)
    GatedBicubic.computed = []
    return GatedBicubic


# --- (1) pickers ----------------------------------------------------------------------------


def _picks(widget):
    return (
        widget.lr_combo.currentText(),
        widget.hr_combo.currentText(),
        widget.truth_combo.currentText(),
    )


def test_widget_opened_before_the_sample_ends_with_the_right_layers(
    make_napari_viewer, tiny_sample, isolated_settings
):
    from napari_xfusion._napari._widget import FusionWidget

    viewer = make_napari_viewer()
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fusion (napari-xfusion)")
    assert _picks(widget) == ("", "", "(none)")
    truth, keys, lr = tiny_sample
    viewer.add_image(truth[0].copy(), **truth[1])
    # Only the truth so far: it is not offered as LR or HR as well.
    assert _picks(widget) == ("", "", "ground truth")
    viewer.add_image(keys[0].copy(), **keys[1])
    viewer.add_image(lr[0].copy(), **lr[1])
    assert _picks(widget) == ("LR", "HR keys", "ground truth")


def test_pickers_use_shapes_without_metadata(make_napari_viewer, tiny_sample, isolated_settings):
    from napari_xfusion._napari._widget import FusionWidget

    viewer = make_napari_viewer()
    widget = FusionWidget(viewer)
    truth, keys, lr = (item[0] for item in tiny_sample)
    viewer.add_image(truth.copy(), name="full rate")
    viewer.add_image(lr.copy(), name="fast")
    viewer.add_image(keys.copy(), name="slow")
    assert _picks(widget) == ("fast", "slow", "full rate")
    # A choice the user made stays when more layers arrive.
    widget.truth_combo.setCurrentText("(none)")
    widget.hr_combo.setCurrentText("full rate")
    viewer.add_image(np.zeros((3, 5, 5), np.float32), name="other")
    assert widget.hr_combo.currentText() == "full rate"
    viewer.add_image(np.zeros((3, 5, 5), np.float32), name="another")  # at every refresh
    assert _picks(widget) == ("fast", "full rate", "(none)")


def test_the_same_layer_for_lr_and_hr_is_refused(fusion_viewer, notifications):
    viewer, widget = fusion_viewer
    # napari names are unique: the check compares names, not the wrapper objects.
    widget.lr_combo.setCurrentText("ground truth")
    widget.hr_combo.setCurrentText("ground truth")
    assert not widget.run()
    assert any("same layer" in n for n in notifications), notifications


# --- (2) throttled GUI updates --------------------------------------------------------------


def test_frames_that_arrive_together_are_shown_in_one_update(fusion_viewer, qtbot, tiny_sample):
    from napari_xfusion._napari._job import FrameDone, Prepared
    from napari_xfusion._napari._render import RunState
    from napari_xfusion.app.results import FrameRow

    viewer, widget = fusion_viewer
    renderer = widget.renderer
    state = RunState(("bicubic",), (8, 64, 128), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), {}, False, 8)
    prep = Prepared(8, (64, 128), np.array([0, 4]), None, (0, 7))
    renderer.prepare(state, prep)
    batches = []
    widget.session.frames_added.connect(batches.append)
    frames = np.random.default_rng(0).random((8, 64, 128), dtype=np.float32)
    for t in range(8):
        result = SimpleNamespace(method="bicubic", index=t, frame=frames[t], variance=None)
        renderer.push(FrameDone(result, FrameRow("bicubic", t)))
    layer = viewer.layers["fused [bicubic]"]
    assert not layer.data.any() and renderer.timer.isActive()  # nothing drawn per frame
    qtbot.waitUntil(lambda: bool(batches), timeout=5000)
    assert len(batches) == 1 and len(batches[0]) == 8
    np.testing.assert_array_equal(layer.data, frames)
    assert state.done == 8


def test_the_worker_makes_the_stacks_of_new_result_layers(fusion_viewer, qtbot):
    from napari_xfusion._napari._job import result_stack

    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    assert widget.build_request().request.new_stacks == ("bicubic", "bayesian")
    run_and_wait(widget, qtbot)
    stack = viewer.layers["fused [bicubic]"].data
    assert stack.shape == (8, 64, 128) and stack.dtype == np.float32 and stack.any()
    # Same inputs: the layers are reused (their frames add up), no new stacks are made.
    assert widget.build_request().request.new_stacks == ()
    run_and_wait(widget, qtbot, resume=False)
    assert viewer.layers["fused [bicubic]"].data is stack
    empty = result_stack((4, 2, 3), [1, 2, 9])
    assert empty.shape == (4, 2, 3) and empty.dtype == np.float32 and not empty.any()


def test_the_frame_path_never_forces_a_repaint():
    for path in PLUGIN.glob("*.py"):
        code = "\n".join(
            line.split("#")[0] for line in path.read_text().splitlines() if '"""' not in line
        )
        assert not re.search(r"\.repaint\(|processEvents\(", code), path.name


# --- (3) no black canvas --------------------------------------------------------------------


def test_run_moves_the_slider_into_the_window_and_empty_frames_are_transparent(
    fusion_viewer, qtbot
):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    viewer.dims.set_point(0, 0)
    widget.start.setValue(4)
    widget.end.setValue(6)
    run_and_wait(widget, qtbot)
    assert viewer.dims.point[0] == 4
    fused = viewer.layers["fused [bicubic]"]
    assert fused.opacity == 1.0
    viewer.dims.set_point(0, 1)  # not computed: the layers below show through
    assert fused.opacity == 0.0
    viewer.dims.set_point(0, 5)
    assert fused.opacity == 1.0


def test_a_users_look_of_a_result_layer_survives_updates_reruns_and_a_replaced_layer(
    fusion_viewer, qtbot
):
    from napari_xfusion._napari._layers import ensure_fused_layer, meta

    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    viewer.dims.set_point(0, 0)
    widget.start.setValue(4)
    widget.end.setValue(6)
    run_and_wait(widget, qtbot)
    fused = viewer.layers["fused [bicubic]"]
    # The user sets how the layer shows, at a computed frame ...
    fused.opacity, fused.blending, fused.gamma = 0.6, "additive", 0.8
    fused.colormap = "viridis"
    fused.contrast_limits = (0.1, 0.7)
    viewer.dims.set_point(0, 1)  # not computed: veiled
    assert fused.opacity == 0.0
    # ... and at an empty frame: it shows as set at once, and is the value given back.
    fused.opacity = 0.3
    assert fused.opacity == 0.3
    viewer.dims.set_point(0, 2)
    assert fused.opacity == 0.0
    viewer.dims.set_point(0, 5)
    assert fused.opacity == 0.3

    def look(layer):
        return (layer.blending, layer.colormap.name, tuple(layer.contrast_limits), layer.gamma)

    expected = ("additive", "viridis", (0.1, 0.7), 0.8)
    assert look(fused) == expected
    # A rerun on other frames, started while the slider stands on an empty frame.
    viewer.dims.set_point(0, 1)
    widget.start.setValue(0)
    widget.end.setValue(2)
    run_and_wait(widget, qtbot, resume=False)
    assert viewer.layers["fused [bicubic]"] is fused
    for t in (0, 1, 2, 5):
        viewer.dims.set_point(0, t)
        assert fused.opacity == 0.3, t
    viewer.dims.set_point(0, 3)
    assert fused.opacity == 0.0 and widget.renderer.user_opacity(fused) == 0.3
    assert look(fused) == expected
    # Inputs of another shape replace the layer: the new one looks the same, in its place.
    viewer.dims.set_point(0, 5)
    position = viewer.layers.index(fused)
    new = ensure_fused_layer(viewer, "bicubic", (5, 64, 128), {"lr": "other"})
    assert new is not fused and viewer.layers.index(new) == position
    assert (new.opacity, *look(new)) == (0.3, *expected)
    assert meta(new)["frames_done"] == []


# --- (4) docks ------------------------------------------------------------------------------


def test_result_docks_from_the_plugins_menu_do_not_squash_the_fusion_dock(
    make_napari_viewer, qtbot, isolated_settings
):
    from qtpy.QtCore import Qt

    from napari_xfusion._napari._dock import dock_of

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.open_sample("napari-xfusion", "keyhole_small")
    _, fusion = viewer.window.add_plugin_dock_widget("napari-xfusion", "Fusion")
    _, attention = viewer.window.add_plugin_dock_widget("napari-xfusion", "Attention")
    _, metrics = viewer.window.add_plugin_dock_widget("napari-xfusion", "Metrics")
    main = viewer.window._qt_window
    bottom = Qt.DockWidgetArea.BottomDockWidgetArea
    for dock in (attention, metrics):
        qtbot.waitUntil(lambda d=dock: main.dockWidgetArea(dock_of(d)) == bottom, timeout=5000)
    assert main.dockWidgetArea(dock_of(fusion)) != bottom
    qtbot.waitUntil(lambda: dock_of(fusion).height() > 400, timeout=5000)
    # Run, Cancel and the progress are on screen without scrolling, however tall the
    # panels above them are.
    for control in (fusion.run_button, fusion.cancel_button, fusion.progress, fusion.status):
        assert control.isVisible() and not control.visibleRegion().isEmpty()


# --- (6) counts, ETA, resume ----------------------------------------------------------------


def test_eta_waits_for_a_few_frames():
    from napari_xfusion._napari._run_panel import eta_text

    assert eta_text(1, 100, 0.3) == "estimating…"
    assert eta_text(2, 100, 5.0) == "estimating…"
    assert eta_text(10, 100, 5.0) == "ETA 45 s"
    assert eta_text(100, 100, 50.0) == ""


def test_cancel_counts_frames_and_resume_runs_only_the_missing_ones(
    fusion_viewer, qtbot, gated, notifications
):
    viewer, widget = fusion_viewer
    assert widget.progress.format() == "no run yet" and "0 / 1" not in widget.progress.text()
    choose(widget, "bicubic")
    assert widget.run()
    gated.gate.release()
    qtbot.waitUntil(lambda: widget.session.methods() == ["bicubic"], timeout=TIMEOUT_MS)
    widget.cancel()
    gated.gate.release()  # the frame in progress ends, then the run stops
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    layer = viewer.layers["fused [bicubic]"]
    assert layer.metadata["xfusion"]["frames_done"] == [0, 1]
    assert "Cancelled: 2 frames done kept" in widget.status.text()
    assert any("the 2 frames done are kept" in n for n in notifications), notifications
    assert "ETA" not in widget.progress.format() and "estimating" not in widget.progress.format()
    assert widget.resume.isEnabled() and widget.resume.isChecked()
    assert widget.missing_frames() == {"bicubic": [2, 3, 4, 5, 6, 7]}

    gated.computed = []
    gated.gate = threading.Semaphore(100)
    summary = run_and_wait(widget, qtbot)  # the box is ticked: only the missing frames
    assert summary.error is None and not summary.cancelled
    # Only the missing frames come out; frame 0 (a key) may be reconstructed again, unshown,
    # because the engine normalises attention by the preceding key's own score.
    assert [t for t in gated.computed if t != 0] == [2, 3, 4, 5, 6, 7]
    assert layer.metadata["xfusion"]["frames_done"] == list(range(8))
    assert widget.progress.value() == widget.progress.maximum() == 6
    assert not widget.resume.isEnabled()


# --- (8) help -------------------------------------------------------------------------------


def _input_controls(root):
    from qtpy.QtWidgets import (
        QAbstractButton,
        QAbstractSpinBox,
        QComboBox,
        QLineEdit,
        QListWidget,
        QTableWidget,
    )

    kinds = (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit, QListWidget, QTableWidget)
    for child in root.findChildren(kinds):
        parent = child.parent()
        if isinstance(child, QLineEdit) and isinstance(parent, (QAbstractSpinBox, QComboBox)):
            continue  # the editor inside a spin box or combo box
        if isinstance(parent, QTableWidget) or child.objectName().startswith("qt_"):
            continue  # the table's corner button
        yield child


def test_every_control_has_a_tooltip_and_there_is_a_help_link(fusion_viewer):
    from napari_xfusion._napari._attention import AttentionWidget
    from napari_xfusion._napari._metrics import MetricsWidget
    from napari_xfusion._napari._study import StudyWidget

    viewer, widget = fusion_viewer
    docks = [widget, AttentionWidget(viewer), MetricsWidget(viewer), StudyWidget(viewer)]
    for i, dock in enumerate(docks[1:]):
        viewer.window.add_dock_widget(dock, name=f"dock {i}", area="bottom")
    controls = [c for dock in docks for c in _input_controls(dock)]
    assert len(controls) > 40
    missing = [
        f"{type(c).__name__} {getattr(c, 'text', lambda: '')()!r}"
        for c in controls
        if not c.toolTip().strip()
    ]
    assert not missing, missing
    assert "href=" in widget.run_panel.help.text() and widget.run_panel.help.openExternalLinks()


def test_hr_keys_layer_shows_the_key_in_force_and_says_which(fusion_viewer):
    viewer, widget = fusion_viewer
    keys = viewer.layers["HR keys"]  # keys at frames 0 and 4
    for t, key in ((0, 0), (3, 0), (4, 1), (7, 1)):
        viewer.dims.set_point(0, t)
        assert int(np.round(keys.world_to_data((t, 0, 0))[0])) == key
    viewer.dims.set_point(0, 3)
    assert "key in force, frame 0" in widget.key_in_force.text()
    assert "next key 4" in widget.key_in_force.text()
    viewer.dims.set_point(0, 4)
    assert widget.key_in_force.text() == "Frame 4 is an HR key."


# --- (9) messages ---------------------------------------------------------------------------


def test_a_corrupt_weights_file_gets_a_short_message(fusion_viewer, qtbot, notifications, tmp_path):
    pytest.importorskip("napari_xfusion.methods.network")
    path = tmp_path / "broken.pt"
    path.write_bytes(b"\x80\x02 this is not a checkpoint" * 10)
    viewer, widget = fusion_viewer
    choose(widget, "edvr")
    widget.weights["edvr"].setText(str(path))
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    (message,) = [n for n in notifications if n.startswith("Fusion failed")]
    assert str(path) in message and "checkpoint" in message  # the loader says what it expected
    assert "weights_only" not in message and "file an issue" not in message
    assert len(message) < 400


def test_deleting_a_fused_layer_mid_run_says_its_frames_are_dropped(
    fusion_viewer, qtbot, gated, notifications
):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic")
    assert widget.run()
    gated.gate.release()
    qtbot.waitUntil(lambda: widget.session.methods() == ["bicubic"], timeout=TIMEOUT_MS)
    viewer.layers.remove("fused [bicubic]")
    gated.gate.release(7)
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    assert any("was deleted during the run" in n and "dropped" in n for n in notifications)
    assert "fused [bicubic]" not in viewer.layers


# --- extra outputs, from the method registry ------------------------------------------------


def test_a_registered_method_and_its_extra_output_appear_without_editing_the_dock(
    make_napari_viewer, tiny_sample, isolated_settings, qtbot, monkeypatch
):
    from napari_xfusion import methods
    from napari_xfusion._napari._widget import FusionWidget
    from napari_xfusion.methods import registry

    spec = registry.MethodSpec(
        "confident",
        f"{__name__}:ConfidentBicubic",
        "bicubic and a flat map",
        outputs=("confidence",),
    )
    # Registered at run time (as a notebook would); the registry is as it was after the test.
    monkeypatch.setattr(registry, "_extra", {})
    monkeypatch.setattr(registry, "_registry", None)
    monkeypatch.setitem(methods.METHODS, "confident", spec.target)
    registry.register(spec)
    viewer = make_napari_viewer()
    for data, kwargs, _ in tiny_sample:
        viewer.add_image(data.copy(), **kwargs)
    widget = FusionWidget(viewer)
    assert "confident" in widget.method_boxes
    assert "confidence" in widget.method_boxes["confident"].toolTip()  # from spec.outputs
    choose(widget, "confident")
    widget.show_extras.setChecked(True)
    run_and_wait(widget, qtbot)
    extra = viewer.layers["confidence [confident]"]
    assert extra.metadata["xfusion"]["role"] == "extra"
    assert extra.metadata["xfusion"]["frames_done"] == list(range(8))
    np.testing.assert_allclose(extra.data, 0.25)
    names = [layer.name for layer in viewer.layers]
    assert names.index("confidence [confident]") < names.index("fused [confident]")  # under it
    assert widget.lr_combo.findText("confidence [confident]") < 0  # not offered as an input


# --- (11) Qt bindings -----------------------------------------------------------------------

# A Qt enum value reached through its class alone (the PyQt5 shortcut): PyQt6 only has the
# scoped form, ``Qt.AlignmentFlag.AlignLeft``.
_SHORT_ENUM = re.compile(r"\b(Q[A-Za-z]+)\.([A-Z][A-Za-z0-9]+)\b(?!\s*[.(])")
_ENUM_CLASSES = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z]+)*$")


@pytest.mark.parametrize(
    "path",
    sorted(PLUGIN.glob("*.py")) + sorted(Path(__file__).parent.glob("test_napari_*.py")),
    ids=lambda p: p.name,
)
def test_no_pyqt5_only_api(path):
    text = path.read_text()
    old_exec = ".exec" + "_("
    assert old_exec not in text, f"{path.name}: exec_() is gone in PyQt6, use exec()"
    short = []
    for cls, name in _SHORT_ENUM.findall(text):
        if cls in ("QtCore", "QtWidgets", "QtGui"):
            continue
        short.append(f"{cls}.{name}")
    assert not short, f"{path.name}: use the scoped enum (e.g. Qt.AlignmentFlag.AlignLeft): {short}"


# --- (5) side by side -----------------------------------------------------------------------


def test_side_by_side_fits_the_cells_and_takes_extras_and_change_views(fusion_viewer, qtbot):
    viewer, widget = fusion_viewer
    choose(widget, "bicubic", "bayesian")
    widget.show_extras.setChecked(True)
    run_and_wait(widget, qtbot)
    names = [layer.name for layer in viewer.layers]
    # The uncertainty layer sits under the image it belongs to, never over it.
    assert names.index("uncertainty [bayesian]") < names.index("fused [bayesian]")
    viewer.camera.zoom = 40.0  # zoomed into a corner
    widget.side_by_side_button.setChecked(True)
    assert viewer.camera.zoom < 40.0  # each cell shows its whole image
    widget.change_mode.setCurrentIndex(widget.change_mode.findData("ratio"))
    widget.add_change_views()
    shown = [layer.name for layer in viewer.layers if layer.visible]
    assert shown[0] == "LR" and shown[-1] == "ground truth"
    at = shown.index("fused [bayesian]")
    # bayesian's extras (variance; confidence of its motion prior) and its change view follow it
    assert set(shown[at + 1 : at + 4]) == {
        "uncertainty [bayesian]",
        "confidence [bayesian]",
        "ratio [fused [bayesian]]",
    }
    assert "ratio [fused [bicubic]]" in shown
    # Intensities share one contrast; the uncertainty and the ratio keep their own.
    viewer.layers["fused [bicubic]"].contrast_limits = (0.1, 0.7)
    assert tuple(viewer.layers["ground truth"].contrast_limits) == pytest.approx((0.1, 0.7))
    assert tuple(viewer.layers["uncertainty [bayesian]"].contrast_limits) != pytest.approx(
        (0.1, 0.7)
    )
    widget.side_by_side_button.setChecked(False)
    assert not viewer.canvas.grid.enabled


# --- (7) units ------------------------------------------------------------------------------


def test_results_carry_units_and_axis_labels_into_layers_export_and_plot(
    fusion_viewer, qtbot, tmp_path
):
    from napari_xfusion._napari._attention import AttentionWidget
    from napari_xfusion.core.io import read_metadata

    viewer, widget = fusion_viewer
    assert viewer.dims.axis_labels == ("frame", "y", "x")  # the sample's, not "-3"
    for name, xy in (("LR", 8.0), ("HR keys", 2.0), ("ground truth", 2.0)):
        layer = viewer.layers[name]
        layer.units = ("ms", "um", "um")
        layer.scale = (layer.scale[0] * 0.5, xy, xy)
    choose(widget, "bicubic")
    run_and_wait(widget, qtbot)
    fused = viewer.layers["fused [bicubic]"]
    assert [str(u) for u in fused.units] == ["millisecond", "micrometer", "micrometer"]
    assert tuple(fused.scale) == (0.5, 2.0, 2.0)
    assert fused.axis_labels == ("frame", "y", "x")  # the LR layer's time label
    (path,) = [p for p in widget.export(tmp_path) if p.suffix == ".tif"]
    layer_meta = read_metadata(path)["layer"]
    assert layer_meta["units"] == ["millisecond", "micrometer", "micrometer"]
    assert layer_meta["axis_labels"] == ["frame", "y", "x"]
    plot = AttentionWidget(viewer)
    viewer.window.add_dock_widget(plot, name="attention", area="bottom")
    assert plot._time_axis is not None
    assert plot._time_axis.get_xlabel() == "time (millisecond)"


def test_napari_placeholder_axis_labels_become_frame_or_time():
    from napari_xfusion._napari._layers import physical_labels

    plain = SimpleNamespace(axis_labels=("-3", "-2", "-1"), units=("pixel",) * 3)
    timed = SimpleNamespace(axis_labels=("-3", "-2", "-1"), units=("ms", "um", "um"))
    assert physical_labels(plain, plain) == ("frame", "y", "x")
    assert physical_labels(timed, plain) == ("time", "y", "x")


# --- (10) demo ------------------------------------------------------------------------------


def test_demo_runs_the_available_methods_and_exports_like_the_headless_one(
    make_napari_viewer, qtbot, isolated_settings, tmp_path, monkeypatch
):
    from napari_xfusion._napari import demo

    monkeypatch.setattr(demo, "available_methods", lambda: ["bicubic"])
    viewer = make_napari_viewer()
    out = tmp_path / "demo-out"
    demo.launch("small", run=True, block=False, viewer=viewer, export_to=out)
    widget = viewer.window.dock_widgets["Fusion (napari-xfusion)"]
    assert widget.selected_methods() == ["bicubic"]
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT_MS)
    # The CLI's names for one method in a folder: fused.tif and its sidecars.
    qtbot.waitUntil(lambda: (out / "fused.tif").is_file(), timeout=10000)
    assert (out / "fused.csv").is_file() and (out / "fused.config.json").is_file()
