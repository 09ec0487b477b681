"""The "Register cameras" dock: a real camera pair -> aligned LR and HR key layers for Fusion.

Choose the LR and HR stacks (layers, or files) and their frame times (metadata files, else
rates); Estimate runs :func:`~napari_xfusion.app.dualcam.prepare_pair` and
:func:`~napari_xfusion.app.dualcam.align_prepared` in a napari worker thread; the estimate
(flip, scale, rotation, shift, time offset, residual) fills the adjust controls and an overlay
check layer (checkerboard or blend of the resampled HR key over the up-sampled LR frame) that
follows every edit; Accept aligns with the (adjusted) transform in the worker and adds the
aligned layers with the ``lr`` / ``hr_keys`` role metadata the Fusion dock's pickers take.
The science is all in :mod:`napari_xfusion.app.dualcam`; this module only maps widgets to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from napari_xfusion._napari._layers import META, key_hold_translate, lr_overlay_transform
from napari_xfusion._napari._register_controls import FILE, _Camera, _RegisterControls
from napari_xfusion._napari._register_worker import _accept, _call, _estimate, _quit
from napari_xfusion._napari._util import VerticalScroll, connect_while_alive

if TYPE_CHECKING:
    import napari

__all__ = ["FILE", "OVERLAY_LAYER", "RegisterWidget", "ALIGNED_LR", "ALIGNED_HR"]

OVERLAY_LAYER = "register: overlay"
ALIGNED_LR = "LR (aligned)"
ALIGNED_HR = "HR keys (aligned)"


class RegisterWidget(_RegisterControls):
    """Dock widget "Register cameras" (see the module docstring)."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker: Any = None
        self.running = False
        self.prepared: Any = None
        self.pair: Any = None  # the last estimate or accepted alignment
        self.accepted: Any = None
        self.last_error: str = ""
        self.edited = False  # an adjust control was changed since the estimate
        self.lr_box, self.hr_box = _Camera("LR camera", "lr"), _Camera("HR camera", "hr")
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.lr_box)
        layout.addWidget(self.hr_box)
        layout.addWidget(self._settings_box())
        self.estimate_button = QPushButton("Estimate")
        self.estimate_button.setToolTip(
            "Match the frame times, estimate the transform and refine the time offset (in the "
            "background)"
        )
        self.estimate_button.clicked.connect(self.estimate)
        layout.addWidget(self.estimate_button)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result.setToolTip("The estimate: time match and offset, transform, residual")
        layout.addWidget(self.result)
        layout.addWidget(self._adjust_box())
        layout.addLayout(self._accept_row())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the dock is doing, or why it stopped")
        layout.addWidget(self.status)
        layout.addStretch(1)
        scroll = VerticalScroll()  # the dock stays usable on a small screen
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)  # an edit burst (spin box held down) redraws once
        self._timer.timeout.connect(self.update_overlay)
        self.refresh_layers()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            connect_while_alive(self, event, self.refresh_layers)
        self._set_adjust_enabled(False)

    # ------------------------------------------------------------------ state
    def refresh_layers(self, *_: Any) -> None:
        """List the 3-D greyscale image layers (not our overlay) in both pickers."""
        from napari.layers import Image

        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image)
            and layer.ndim == 3
            and not layer.rgb
            and layer.name not in (OVERLAY_LAYER, ALIGNED_LR, ALIGNED_HR)
        ]
        self.lr_box.set_layers(names)
        self.hr_box.set_layers(names)

    def _set_adjust_enabled(self, on: bool) -> None:
        for w in (
            self.rotation,
            self.scale,
            self.shift_x,
            self.shift_y,
            self.flip_x,
            self.flip_y,
            self.key,
            self.mode,
            self.accept_button,
        ):
            w.setEnabled(on and not self.running)

    def config(self) -> tuple[Any, Any, Any]:
        """(DualCameraConfig, LR array or None, HR array or None) from the controls."""
        from napari_xfusion.app.dualcam import DualCameraConfig

        lr, lr_path, lr_name = self.lr_box.source(self.viewer)
        hr, hr_path, hr_name = self.hr_box.source(self.viewer)
        text = self.transform_file.text().strip()
        config = DualCameraConfig(
            lr=lr_path,
            hr=hr_path,
            lr_times=self.lr_box.times.text().strip() or None,
            hr_times=self.hr_box.times.text().strip() or None,
            lr_rate_hz=self.lr_box.rate.value() or None,
            hr_rate_hz=self.hr_box.rate.value() or None,
            trigger_delay_s=self.delay.value() * 1e-6,
            transform=text or None,
            model=self.model.currentText(),
            max_residual_lr_px=self.max_residual.value(),
            lr_pixel_um=self.lr_pixel.value() or None,
            hr_pixel_um=self.hr_pixel.value() or None,
            drop_outside=self.drop_outside.isChecked(),
        )
        self._names = (lr_name, hr_name)
        return config, lr, hr

    def params(self) -> dict[str, Any]:
        """The adjust controls as transform parameters."""
        return {
            "scale": self.scale.value(),
            "rotation_deg": self.rotation.value(),
            "shift_xy": (self.shift_x.value(), self.shift_y.value()),
            "flip_x": self.flip_x.isChecked(),
            "flip_y": self.flip_y.isChecked(),
        }

    def transform(self) -> Any:
        """The transform of the adjust controls: the estimate itself until one is edited (the
        spin boxes round it)."""
        from napari_xfusion.core.registration import CameraTransform

        if not self.edited and self.pair is not None:
            return self.pair.transform
        shape = tuple(int(v) for v in self.prepared.hr.shape[1:])
        estimate = self.pair.report.transform if self.pair is not None else {}
        extras = {k: float(estimate[k]) for k in ("shear", "aspect") if k in estimate}
        return CameraTransform.from_params(**self.params(), hr_shape=shape, **extras)

    def _show_params(self, params: dict[str, Any]) -> None:
        spins = (self.rotation, self.scale, self.shift_x, self.shift_y, self.flip_x, self.flip_y)
        for w in spins:
            w.blockSignals(True)
        self.rotation.setValue(float(params["rotation_deg"]))
        self.scale.setValue(float(params["scale"]))
        self.shift_x.setValue(float(params["shift_xy"][0]))
        self.shift_y.setValue(float(params["shift_xy"][1]))
        self.flip_x.setChecked(bool(params.get("flip_x")))
        self.flip_y.setChecked(bool(params.get("flip_y")))
        for w in spins:
            w.blockSignals(False)

    # ------------------------------------------------------------------ work
    def _start(self, function: Any, *args: Any, done: Any, what: str) -> bool:
        from napari.qt.threading import create_worker

        if self.running:
            return False
        worker = create_worker(_call, function, *args, _start_thread=False)
        worker.returned.connect(done)
        worker.finished.connect(self._on_finished)
        self.destroyed.connect(lambda *_, w=worker: _quit(w))
        self.worker, self.running = worker, True
        self.estimate_button.setEnabled(False)
        self._set_adjust_enabled(False)
        self.status.setText(what)
        worker.start()
        return True

    def estimate(self) -> bool:
        """Start the estimate in a worker thread; False when it did not start."""
        try:
            config, lr, hr = self.config()
        except (ValueError, KeyError) as exc:
            self.status.setText(f"Not started: {exc}")
            return False
        self.last_error = ""
        names = self._names
        return self._start(
            _estimate, config, lr, hr, names, done=self._on_estimate, what="Estimating…"
        )

    def accept(self) -> bool:
        """Align with the adjusted transform in a worker and add the aligned layers."""
        if self.prepared is None:
            self.status.setText("Estimate first")
            return False
        try:
            transform = self.transform()
        except ValueError as exc:
            self.status.setText(f"Not accepted: {exc}")
            return False
        self.last_error = ""
        return self._start(
            _accept, self.prepared, transform, done=self._on_accept, what="Aligning…"
        )

    def _report_problem(self, kind: str, result: Any, caught: list[str], what: str) -> bool:
        from napari.utils.notifications import show_warning

        for message in caught:
            show_warning(message)
        if kind == "ok":
            return False
        self.last_error = f"{what} failed: {result}"
        self.status.setText(self.last_error)
        return True

    def _on_estimate(self, value: tuple[str, Any, list[str]]) -> None:
        kind, result, caught = value
        if self._report_problem(kind, result, caught, "Estimate"):
            return
        self.prepared, self.pair = result
        self.edited = False
        report = self.pair.report
        notes = "".join(f"\nnote: {n}" for n in report.notes)
        self.result.setText(report.time_text() + "\n" + report.space_text() + notes)
        self._show_params(report.transform)
        self.key.blockSignals(True)
        self.key.setRange(0, int(self.prepared.hr.shape[0]) - 1)
        self.key.blockSignals(False)
        self.status.setText("Estimated: check the overlay, adjust if needed, then Accept")
        self.update_overlay()

    def _on_accept(self, value: tuple[str, Any, list[str]]) -> None:
        kind, result, caught = value
        if self._report_problem(kind, result, caught, "Accept"):
            return
        self.accepted = self.pair = result
        self.add_aligned_layers(result)
        path = self.save_transform.text().strip()
        if path:
            try:
                result.transform.save(Path(path).expanduser())
            except (OSError, ValueError) as exc:
                self.status.setText(f"Aligned, but the transform was not saved: {exc}")
                return
        saved = f"; transform saved to {path}" if path else ""
        self.status.setText(
            f"Aligned ({result.report.residual_lr_px:.3f} LR px residual): layers "
            f"{ALIGNED_LR!r} and {ALIGNED_HR!r} added{saved}"
        )

    def _on_finished(self) -> None:
        self.running = False
        self.worker = None
        self.estimate_button.setEnabled(True)
        self._set_adjust_enabled(self.prepared is not None)

    # ------------------------------------------------------------------ layers
    def _edit(self, *_: Any) -> None:
        self.edited = True
        self._schedule()

    def _schedule(self, *_: Any) -> None:
        if self.prepared is not None:
            self._timer.start()

    def update_overlay(self) -> Any:
        """Redraw the overlay check layer from the adjust controls (GUI thread; one key)."""
        from napari_xfusion.app.dualcam import overlay_preview

        if self.prepared is None:
            return None
        try:
            key = self.key.value()
            times = self.pair.report.key_times_frames if self.pair is not None else []
            when = float(times[key]) if key < len(times) else None
            preview = overlay_preview(
                self.prepared, self.transform(), key, time_frames=when, mode=self.mode.currentText()
            )
        except ValueError as exc:
            self.key_residual.setText(f"? ({exc})")
            return None
        where = f"LR time {when:.2f}" if when is not None else f"LR frame {preview.lr_index}"
        self.key_residual.setText(f"{preview.residual_lr_px:.3f} LR px ({where})")
        y0, _, x0, _ = preview.lr_crop
        # On the 4x grid of the LR crop; placed over a full-field LR layer shown x4.
        translate = (4.0 * y0, 4.0 * x0)
        if OVERLAY_LAYER in self.viewer.layers:
            layer = self.viewer.layers[OVERLAY_LAYER]
            layer.data = preview.image
            layer.translate = translate
        else:
            layer = self.viewer.add_image(
                preview.image,
                name=OVERLAY_LAYER,
                translate=translate,
                contrast_limits=(0.0, 1.0),
                metadata={META: {"role": "extra", "what": "registration overlay check"}},
            )
        return layer

    def add_aligned_layers(self, pair: Any) -> None:
        """Add (or replace) the aligned LR and HR key layers, roles set for the Fusion dock."""
        keys = [int(k) for k in pair.key_indices]
        for name in (ALIGNED_LR, ALIGNED_HR):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        scale, translate = lr_overlay_transform((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        report = pair.report.to_dict()
        self.viewer.add_image(
            pair.lr,
            name=ALIGNED_LR,
            scale=scale,
            translate=translate,
            contrast_limits=(0.0, 1.0),
            metadata={META: {"role": "lr", "binning": 4, "aligned": report}},
        )
        kwargs: dict[str, Any] = {}
        steps = np.diff(keys)
        if steps.size and np.all(steps == steps[0]):
            step = float(steps[0])
            kwargs = {
                "scale": (step, 1.0, 1.0),
                "translate": (keys[0] + key_hold_translate(step), 0.0, 0.0),
            }
        self.viewer.add_image(
            pair.hr_keys,
            name=ALIGNED_HR,
            contrast_limits=(0.0, 1.0),
            metadata={META: {"role": "hr_keys", "key_indices": keys}},
            **kwargs,
        )
