"""The docked plugin renders after a run (shown viewer under Xvfb: hidden ones render black)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui


def test_docked_plugin_after_a_run_is_not_blank(
    make_napari_viewer, tiny_sample, qtbot, isolated_settings
):
    from qtpy.QtCore import QThreadPool

    from napari_xfusion._napari._attention import AttentionWidget
    from napari_xfusion._napari._metrics import MetricsWidget
    from napari_xfusion._napari._widget import FusionWidget

    viewer = make_napari_viewer(show=True)
    for data, kwargs, _ in tiny_sample:
        viewer.add_image(data, **kwargs)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fusion (napari-xfusion)")
    viewer.window.add_dock_widget(AttentionWidget(viewer), name="Attention", area="bottom")
    viewer.window.add_dock_widget(MetricsWidget(viewer), name="Metrics", area="bottom")
    for name, box in widget.method_boxes.items():
        box.setChecked(name == "bicubic")
    assert widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60000)
    assert QThreadPool.globalInstance().waitForDone(10000)

    # Only the fused layer on the canvas: what is drawn must be the reconstruction.
    for layer in viewer.layers:
        layer.visible = layer.name == "fused [bicubic]"
    viewer.dims.set_point(0, 3)
    viewer.reset_view()
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    grey = canvas[..., :3].mean(axis=-1)
    assert grey.std() > 10, "the canvas is blank"
    frame = viewer.layers["fused [bicubic]"].data[3]
    # The brightest and darkest rendered pixels span most of the frame's contrast range.
    assert np.ptp(grey) > 0.5 * 255 * float(np.ptp(np.clip(frame, 0, 1)))

    window = viewer.screenshot(canvas_only=False, flash=False)
    assert window.shape[0] > canvas.shape[0] and window.shape[1] > canvas.shape[1]
    assert window[..., :3].std() > 10
    assert len(np.unique(window[..., :3].reshape(-1, 3), axis=0)) > 100  # docks drawn, not flat
    assert widget.status.text().startswith("Done")
