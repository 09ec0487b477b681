"""The metrics dock's leave-one-key-out panel: a real viewer (Xvfb), the Fusion dock's inputs and
ticked methods, a worker thread with progress and cancel, the app layer's numbers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui

TIMEOUT_MS = 60000


@pytest.fixture(scope="module")
def three_key_sample():
    """13 frames, HR 64x128, keys 0, 4, 8, 12 (two interior keys), LR at 35 dB."""
    from napari_xfusion._napari._sample import make_sample

    return make_sample(13, (64, 128), key_step=4, noise_psnr=35.0, seed=1)


def _docks(make_napari_viewer, sample, methods=("bicubic", "flow")):
    from napari_xfusion._napari._metrics import MetricsWidget
    from napari_xfusion._napari._widget import FusionWidget

    viewer = make_napari_viewer()
    for data, kwargs, _ in sample:
        viewer.add_image(data.copy(), **kwargs)
    fusion = FusionWidget(viewer)
    viewer.window.add_dock_widget(fusion, name="Fusion (napari-xfusion)")
    metrics = MetricsWidget(viewer)
    viewer.window.add_dock_widget(metrics, name="Metrics (napari-xfusion)", area="bottom")
    for name, box in fusion.method_boxes.items():
        box.setChecked(name in methods)
    return viewer, fusion, metrics


@pytest.fixture
def docks(make_napari_viewer, three_key_sample, isolated_settings, qtbot):
    from qtpy.QtCore import QThreadPool

    viewer, fusion, metrics = _docks(make_napari_viewer, three_key_sample)
    yield viewer, fusion, metrics
    panel = metrics.validation
    if panel.running:
        panel.cancel()
        qtbot.waitUntil(lambda: not panel.running, timeout=30000)
    if fusion.running:
        fusion.cancel()
        qtbot.waitUntil(lambda: not fusion.running, timeout=30000)
    assert QThreadPool.globalInstance().waitForDone(10000), "a worker thread is still running"


def _validate(panel, qtbot):
    assert panel.validate(), panel.status.text()
    qtbot.waitUntil(lambda: not panel.running, timeout=TIMEOUT_MS)
    assert panel.last_outcome is not None and panel.last_outcome.error is None, panel.status.text()


def _cells(table):
    return [
        [table.item(i, j).text() for j in range(table.columnCount())]
        for i in range(table.rowCount())
    ]


def test_validate_shows_the_app_layers_leave_one_key_out_per_method(docks, qtbot):
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.validation import leave_one_key_out

    viewer, fusion, metrics = docks
    panel = metrics.validation
    assert panel.toolTip() and panel.validate_button.toolTip() and panel.cancel_button.toolTip()
    _validate(panel, qtbot)
    assert panel.status.text().startswith("Done"), panel.status.text()
    assert panel.progress.value() == 4 and panel.progress.format() == "4/4"  # 2 keys x 2
    cells = _cells(panel.table)
    assert [row[0] for row in cells] == ["bicubic", "flow"]
    assert all(row[1] == "2" for row in cells)  # keys 4 and 8 withheld
    # The same numbers as the app layer on the Fusion dock's configuration.
    request = fusion.build_request().request
    prepared = prepare_inputs(
        request.config, lr=request.lr, hr=request.hr, hr_metadata=request.hr_metadata
    )
    expected = leave_one_key_out(request.config, prepared).summary()
    for row, want in zip(cells, expected, strict=True):
        assert row[2] == f"{want['psnr_median']:.2f}"
        assert row[4] == f"{want['aad_median']:.4f}"
    assert [r.key_index for r in panel.result.rows] == [4, 4, 8, 8]
    # No truth needed: nothing was scored against the ground-truth layer.
    assert panel.result.complete
    assert panel.flagged.text() == ""  # no fused layers yet: nothing to check


def test_after_a_run_the_fused_layers_are_checked_against_the_lr(docks, qtbot, tmp_path):
    viewer, fusion, metrics = docks
    assert fusion.run()
    qtbot.waitUntil(lambda: not fusion.running, timeout=TIMEOUT_MS)
    assert fusion.last_summary.error is None
    panel = metrics.validation
    _validate(panel, qtbot)
    table = panel.consistency
    assert table is not None and table.methods == ["bicubic", "flow"]
    assert len(table.rows) == 2 * 13  # every fused frame of both methods
    text = panel.flagged.text()
    assert "bicubic:" in text and "of 13 frames flagged" in text
    # flow keeps its frames consistent with the LR (its back-projection): none flagged.
    assert "flow: 0 of 13 frames flagged" in text
    assert panel.save_button.isEnabled()
    paths = panel.save(tmp_path / "val")
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == [
        "loo.csv", "loo.png", "loo_summary.csv", "lr_consistency.csv",
    ]  # fmt: skip
    assert paths["consistency"].read_text() == table.to_csv_text()


def test_cancel_keeps_the_rows_done(docks, qtbot, monkeypatch):
    import napari_xfusion.app.validation as validation

    _, _, metrics = docks
    panel = metrics.validation
    real = validation.iter_leave_one_key_out
    gate = threading.Event()

    def gated(*args, **kwargs):
        for event in real(*args, **kwargs):
            yield event
            if event.row is not None:
                gate.wait(30)

    monkeypatch.setattr(validation, "iter_leave_one_key_out", gated)
    assert panel.validate()
    qtbot.waitUntil(lambda: panel.progress.value() == 1, timeout=TIMEOUT_MS)
    panel.cancel()
    assert not panel.cancel_button.isEnabled()
    gate.set()
    qtbot.waitUntil(lambda: not panel.running, timeout=TIMEOUT_MS)
    assert panel.last_outcome.cancelled
    assert panel.status.text().startswith("Cancelled")
    assert 1 <= len(panel.result.rows) < 4 and not panel.result.complete
    assert panel.validate_button.isEnabled()


def test_two_keys_and_no_fusion_dock_say_what_to_do(
    make_napari_viewer, tiny_sample, isolated_settings, qtbot
):
    from qtpy.QtCore import QThreadPool

    from napari_xfusion._napari._metrics import MetricsWidget

    viewer, fusion, metrics = _docks(make_napari_viewer, tiny_sample)  # keys 0 and 4 only
    panel = metrics.validation
    assert panel.validate()
    qtbot.waitUntil(lambda: not panel.running, timeout=TIMEOUT_MS)
    assert "needs at least 3 HR keys" in panel.status.text(), panel.status.text()
    assert panel.table.rowCount() == 0 and panel.progress.format() == "idle"

    alone = MetricsWidget(make_napari_viewer())  # a viewer without the Fusion dock
    assert not alone.validation.validate()
    assert "open the Fusion dock" in alone.validation.status.text()
    assert QThreadPool.globalInstance().waitForDone(10000)


def test_validation_uses_its_own_method_cache(docks, qtbot):
    """Networks are built once per panel, not per validation (the second run reuses them)."""
    _, _, metrics = docks
    panel = metrics.validation
    _validate(panel, qtbot)
    built = dict(panel._methods)
    assert {name.split('"')[1] for name in built} == {"bicubic", "flow"}
    _validate(panel, qtbot)
    assert all(panel._methods[k] is v for k, v in built.items())
    assert np.isfinite([r.psnr for r in panel.result.rows]).all()
