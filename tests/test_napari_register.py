"""The "Register cameras" dock with a real viewer (Xvfb): estimate in a worker, the overlay
check follows the adjust controls, Accept adds layers the Fusion dock's pickers take, errors
stay in the dock. The tiny simulated pair (24 frames, LR 32x64)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_xfusion.app.dualcam import simulate_dual_camera


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gui_pair")
    simulate_dual_camera(out, seed=6)
    return out


@pytest.fixture
def dock(make_napari_viewer, qtbot, pair):
    from qtpy.QtCore import QThreadPool

    from napari_xfusion._napari._register import RegisterWidget
    from napari_xfusion.core.io import read_stack

    viewer = make_napari_viewer()
    viewer.add_image(np.asarray(read_stack(pair / "lr.tif")), name="lr camera")
    viewer.add_image(np.asarray(read_stack(pair / "hr.tif")), name="hr camera")
    widget = RegisterWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Register cameras (napari-xfusion)")
    widget.lr_box.layer.setCurrentText("lr camera")
    widget.hr_box.layer.setCurrentText("hr camera")
    widget.lr_box.times.setText(str(pair / "lr.ini"))
    widget.hr_box.times.setText(str(pair / "hr.xml"))
    yield viewer, widget
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert QThreadPool.globalInstance().waitForDone(10000), "a worker thread is still running"


def _estimate(widget, qtbot):
    assert widget.estimate()
    assert widget.running  # in a worker: the GUI thread is free meanwhile
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert widget.pair is not None, widget.status.text()


def test_estimate_shows_the_transform_and_an_overlay(dock, qtbot, pair):
    import json

    from napari_xfusion._napari._register import OVERLAY_LAYER

    viewer, widget = dock
    _estimate(widget, qtbot)
    text = widget.result.text()
    for needle in ("flip x", "scale", "rotation", "shift", "residual", "ns"):
        assert needle in text, needle
    truth = json.loads((pair / "truth.json").read_text())
    assert widget.rotation.value() == pytest.approx(truth["params"]["rotation_deg"], abs=0.2)
    assert widget.flip_x.isChecked() == bool(truth["params"]["flip_x"])
    layer = viewer.layers[OVERLAY_LAYER]
    t, h, w = widget.pair.lr.shape
    assert layer.data.shape == (4 * h, 4 * w)
    before = np.array(layer.data)
    residual = float(widget.key_residual.text().split()[0])
    widget.rotation.setValue(widget.rotation.value() + 2.0)
    qtbot.waitUntil(lambda: not np.array_equal(viewer.layers[OVERLAY_LAYER].data, before))
    assert float(widget.key_residual.text().split()[0]) > residual  # worse by hand
    checker = np.array(viewer.layers[OVERLAY_LAYER].data)
    widget.mode.setCurrentText("blend")
    qtbot.waitUntil(lambda: not np.array_equal(viewer.layers[OVERLAY_LAYER].data, checker))


def test_accept_adds_layers_the_fusion_pickers_take(dock, qtbot, tmp_path):
    from napari_xfusion._napari._inputs_panel import assign_roles, input_layers
    from napari_xfusion._napari._register import ALIGNED_HR, ALIGNED_LR

    viewer, widget = dock
    _estimate(widget, qtbot)
    estimated = widget.pair
    widget.save_transform.setText(str(tmp_path / "transform.json"))
    assert widget.accept()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert widget.accepted is not None, widget.status.text()
    lr, hr = viewer.layers[ALIGNED_LR], viewer.layers[ALIGNED_HR]
    assert hr.metadata["xfusion"]["key_indices"] == estimated.key_indices.tolist()
    assert hr.data.shape[1:] == tuple(4 * n for n in lr.data.shape[1:])
    roles = assign_roles(input_layers(viewer))
    assert roles["lr"] == ALIGNED_LR and roles["hr"] == ALIGNED_HR
    assert (tmp_path / "transform.json").is_file()
    np.testing.assert_allclose(
        widget.accepted.transform.matrix, estimated.transform.matrix, atol=1e-6
    )


def test_errors_stay_in_the_dock(dock, qtbot):
    viewer, widget = dock
    widget.lr_box.times.setText("")  # a layer has no file beside it, and no rate is set
    assert widget.estimate()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert widget.pair is None
    assert "failed" in widget.status.text() and "--lr-rate" in widget.status.text()
    assert not widget.accept()  # nothing estimated


def test_every_control_has_a_tooltip(dock):
    from qtpy.QtWidgets import (
        QCheckBox,
        QComboBox,
        QDoubleSpinBox,
        QLineEdit,
        QPushButton,
        QSpinBox,
    )

    _, widget = dock
    kinds = (QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QPushButton, QSpinBox)
    controls = [w for kind in kinds for w in widget.findChildren(kind)]
    controls = [
        w for w in controls if not isinstance(w.parent(), (QSpinBox, QDoubleSpinBox, QComboBox))
    ]
    missing = [type(w).__name__ for w in controls if not w.toolTip()]
    assert not missing, missing


def test_the_dock_opens_from_the_plugins_menu(make_napari_viewer):
    from napari_xfusion._napari._register import RegisterWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-xfusion", "Register cameras")
    assert isinstance(widget, RegisterWidget)


def test_dock_is_in_the_plugin_manifest():
    import importlib

    import yaml

    manifest = yaml.safe_load(
        (Path(__file__).parents[1] / "napari_xfusion" / "napari.yaml").read_text()
    )
    commands = {c["id"]: c for c in manifest["contributions"]["commands"]}
    widget = next(
        w for w in manifest["contributions"]["widgets"] if w["display_name"] == "Register cameras"
    )
    module, name = commands[widget["command"]]["python_name"].split(":")
    assert getattr(importlib.import_module(module), name).__name__ == "RegisterWidget"


def test_files_and_opened_layers_find_their_metadata(make_napari_viewer, qtbot, pair):
    from qtpy.QtCore import QThreadPool

    from napari_xfusion._napari._register import FILE, RegisterWidget

    viewer = make_napari_viewer()
    viewer.open(str(pair / "lr.tif"), plugin="napari-xfusion")  # layer.source.path is set
    widget = RegisterWidget(viewer)
    widget.lr_box.layer.setCurrentText("lr")
    widget.hr_box.layer.setCurrentText(FILE)
    widget.hr_box.path.setText(str(pair / "hr.tif"))
    widget.lr_pixel.setValue(3.82)
    widget.hr_pixel.setValue(3.82 / 2.9)
    _estimate(widget, qtbot)  # lr.ini and hr.xml found beside the files

    assert "lr.ini" in widget.result.text() and "hr.xml" in widget.result.text()
    assert QThreadPool.globalInstance().waitForDone(10000)


def test_a_bad_hand_adjustment_is_refused_on_accept(dock, qtbot):
    viewer, widget = dock
    _estimate(widget, qtbot)
    widget.shift_x.setValue(widget.shift_x.value() + 2.0)  # 2 LR px off
    assert widget.edited
    assert widget.accept()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert widget.accepted is None
    assert "too poor" in widget.status.text()
    assert "LR (aligned)" not in viewer.layers


def test_written_aligned_pair_opens_as_fusion_inputs(make_napari_viewer, pair, tmp_path):
    from napari_xfusion._napari._inputs_panel import assign_roles, input_layers
    from napari_xfusion.app.dualcam import DualCameraConfig, align_pair, write_aligned

    config = DualCameraConfig(
        lr=pair / "lr.tif", hr=pair / "hr.tif", lr_pixel_um=3.82, hr_pixel_um=3.82 / 2.9
    )
    paths = write_aligned(align_pair(config), tmp_path / "aligned")
    viewer = make_napari_viewer()
    for role in ("lr", "hr"):
        viewer.open(str(paths[role]), plugin="napari-xfusion")
    roles = assign_roles(input_layers(viewer))
    assert (roles["lr"], roles["hr"]) == ("lr", "hr")
    assert viewer.layers["hr"].metadata["xfusion"]["role"] == "hr_keys"
