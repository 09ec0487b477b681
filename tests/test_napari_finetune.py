"""The fine-tune dock in a real viewer: background run, progress, cancel, "Use this model"."""

from __future__ import annotations

import pytest
import torch

from napari_xfusion.app.finetune import FinetuneSettings
from napari_xfusion.nn.checkpoint import load_model, save_checkpoint
from napari_xfusion.nn.edvr import build_model, named_config


@pytest.fixture
def docks(make_napari_viewer, isolated_settings, qtbot, tmp_path):
    """``(viewer, fusion, dock)``: a 25-frame 64x128 sample (7 keys), the fusion dock with a
    tiny loud edvr-stf checkpoint in its weights field, and the fine-tune dock."""
    from qtpy.QtCore import QThreadPool

    from napari_xfusion._napari._finetune import FinetuneWidget
    from napari_xfusion._napari._sample import make_sample
    from napari_xfusion._napari._widget import FusionWidget

    viewer = make_napari_viewer()
    for data, kwargs, _ in make_sample(25, (64, 128), key_step=4, noise_psnr=None, seed=2):
        viewer.add_image(data, **kwargs)
    fusion = FusionWidget(viewer)
    viewer.window.add_dock_widget(fusion, name="Fusion (napari-xfusion)")
    torch.manual_seed(0)
    model = build_model(named_config("tiny", "edvr-stf"))
    with torch.no_grad():
        model.conv_last.weight.mul_(20.0)
    init = tmp_path / "tiny.pt"
    save_checkpoint(init, model, provenance={"purpose": "test"})
    fusion.methods_panel.weights["edvr-stf"].setText(str(init))
    dock = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(dock, name="Fine-tune (napari-xfusion)")
    dock.out.setText(str(tmp_path / "tuned.pt"))
    dock.settings = FinetuneSettings(lr=1e-3, batch_size=1, crop=32, warmup=1, focus=1)
    yield viewer, fusion, dock
    if dock.running:
        dock.cancel()
        qtbot.waitUntil(lambda: not dock.running, timeout=60000)
    assert QThreadPool.globalInstance().waitForDone(10000), "a worker thread is still running"


def test_finetune_runs_in_the_background_and_the_model_can_be_used(docks, qtbot, tmp_path):
    viewer, fusion, dock = docks
    dock.settings = FinetuneSettings(lr=1e-3, batch_size=1, crop=32, warmup=1, max_steps=8)
    formats = []
    assert dock.run()
    dock.worker.yielded.connect(lambda _: formats.append(dock.progress.format()))
    assert not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not dock.running, timeout=60000)
    result = dock.result
    assert result is not None and result.steps == 8
    assert any(f.startswith("step ") and "loss" in f for f in formats)
    assert "before" in dock.status.text() and "after" in dock.status.text()
    assert result.kept == "finetuned"  # 8 steps at 1e-3 beat the loud residual
    assert dock.progress.value() == dock.progress.maximum()
    assert dock.use_button.isEnabled() and dock.run_button.isEnabled()
    assert load_model(tmp_path / "tuned.pt", expect="edvr-stf").checkpoint_info
    fusion.methods_panel.method_boxes["edvr-stf"].setChecked(False)
    assert dock.use_model()
    assert fusion.methods_panel.weights["edvr-stf"].text() == str(tmp_path / "tuned.pt")
    assert fusion.methods_panel.method_boxes["edvr-stf"].isChecked()
    assert fusion.config().method("edvr-stf").weights == str(tmp_path / "tuned.pt")


def test_cancel_keeps_the_better_model_so_far(docks, qtbot, tmp_path):
    viewer, fusion, dock = docks
    dock.minutes.setValue(10.0)
    assert dock.run()

    def stop(event):
        if event.phase == "train" and event.step >= 3:
            dock.cancel()

    dock.worker.yielded.connect(stop)
    qtbot.waitUntil(lambda: not dock.running, timeout=60000)
    result = dock.result
    assert result is not None and result.stopped == "cancelled" and result.steps >= 3
    assert (tmp_path / "tuned.pt").is_file()
    assert result.kept in ("finetuned", "original") and "after" in dock.status.text()


def test_errors_are_shown_not_raised(docks, qtbot, make_napari_viewer):
    from napari_xfusion._napari._finetune import FinetuneWidget

    viewer, fusion, dock = docks
    # Without the sparse key layer the fusion dock falls back to the truth with a key every
    # 10 frames: 3 keys, too few; the worker reports it instead of raising across the thread.
    del viewer.layers["HR keys"]
    fusion.refresh_layers()
    assert dock.run()
    qtbot.waitUntil(lambda: not dock.running, timeout=60000)
    assert dock.result is None and not dock.use_button.isEnabled()
    assert dock.status.text().startswith("Fine-tuning failed: too few HR keys")
    for box in fusion.methods_panel.method_boxes.values():
        box.setChecked(False)
    assert not dock.run()
    assert dock.status.text() == "Not started: Fusion dock: tick at least one method"
    dock.out.setText("")
    assert not dock.run() and "output checkpoint" in dock.status.text()
    alone = FinetuneWidget(make_napari_viewer())
    assert not alone.run() and "open the Fusion dock" in alone.status.text()


def test_the_dock_opens_from_the_plugin_menu(make_napari_viewer, isolated_settings):
    from napari_xfusion._napari._finetune import FinetuneWidget

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-xfusion", "Fine-tune")
    assert isinstance(widget, FinetuneWidget)
    assert widget.method.currentText() == "edvr-stf"
    assert {"edvr", "edvr-stf", "edvr-stf-flow"} <= {
        widget.method.itemText(i) for i in range(widget.method.count())
    }
