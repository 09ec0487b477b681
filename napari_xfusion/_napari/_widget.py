"""The fusion dock: inputs, methods, run, results; the run itself goes to a worker thread.

The dock owns no science. It is four panels (:mod:`._inputs_panel`, :mod:`._methods_panel`,
:mod:`._run_panel`, :mod:`._results_panel`) and two seams, kept narrow for the application
layer's run configuration:

- :meth:`FusionWidget.build_request` maps the widgets to one
  :class:`~napari_xfusion._napari._job.FusionRequest` (arrays taken from the layers chosen at
  that moment) - the only place that reads the panels for a run;
- :class:`~napari_xfusion._napari._render.ResultRenderer` renders what
  :func:`~napari_xfusion._napari._job.fusion_job` yields (layers, session, progress),
  throttled to ~10 updates a second.

Cancel ends the run after the frame in progress; frames done stay, and the next Run can do
only the frames still missing.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSettings
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_xfusion._napari._inputs_panel import InputsPanel, connect_layer_events
from napari_xfusion._napari._job import (
    SCALE,
    Finished,
    FrameDone,
    FusionRequest,
    Prepared,
    describe_keys,
    fusion_job,
)
from napari_xfusion._napari._layers import (
    META,
    fused_layers,
    key_hold_translate,
    lr_overlay_transform,
    meta,
    role,
)
from napari_xfusion._napari._messages import explain_error
from napari_xfusion._napari._methods_panel import MethodsPanel
from napari_xfusion._napari._render import ResultRenderer, RunState
from napari_xfusion._napari._results_panel import ResultsPanel
from napari_xfusion._napari._run_panel import RunPanel, format_seconds
from napari_xfusion._napari._session import session_for
from napari_xfusion._napari._util import VerticalScroll, connect_while_alive

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["FusionWidget"]

# Controls reached as attributes of the dock (tests, scripts, the demo): panel -> names.
_ALIASES = {
    "inputs": (
        "use_layers simulate lr_combo hr_combo truth_combo key_step first_last keys_note "
        "key_in_force noise noise_psnr b0_label start end window_all window_around_current"
    ),
    "methods_panel": "separation method_boxes weights device selected_methods update_weights_hint",
    "run_panel": "run_button cancel_button resume progress status",
    "results": (
        "side_by_side_button change_mode show_extras export_list detector_units "
        "show_side_by_side add_change_views export export_methods"
    ),
}


@dataclass
class _Job:
    """What a running job reads and writes, recorded at Run (the user may change layers)."""

    request: FusionRequest
    cancel: threading.Event
    hr_layer: Layer
    lr_layer: Layer | None
    truth_layer: Layer | None
    signature: dict[str, Any]
    prepared: Prepared | None = None
    state: RunState | None = None
    attention_shown: bool = False

    def stop_on_close(self, *_: Any) -> None:
        """Connected to the widget's ``destroyed``: no method of the dying widget is called."""
        self.cancel.set()

    @property
    def done(self) -> int:
        """Frames shown so far (every method of the run has them)."""
        return self.state.done if self.state is not None else 0


class FusionWidget(QWidget):
    """Dock widget: inputs, methods, Run/Cancel with progress, results and export."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker: Any = None
        self._job: _Job | None = None
        self.last_summary: Finished | None = None
        self._methods: dict[str, Any] = {}  # built methods (loaded networks) reused across runs

        self.inputs = InputsPanel(napari_viewer)
        self.methods_panel = MethodsPanel()
        self.run_panel = RunPanel()
        self.results = ResultsPanel(napari_viewer, self.comparison_layers)
        self.renderer = ResultRenderer(napari_viewer, self.session, self._on_progress, self)
        for panel, names in _ALIASES.items():
            for name in names.split():
                setattr(self, name, getattr(getattr(self, panel), name))
        self.run_panel.run_button.clicked.connect(lambda: self.run())
        self.run_panel.cancel_button.clicked.connect(self.cancel)

        # The panel is taller than a laptop's dock area: it scrolls rather than squeezes.
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        for panel in (self.inputs, self.methods_panel, self.run_panel, self.results):
            layout.addWidget(panel)
        layout.addStretch()
        scroll = VerticalScroll()
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self._restore_settings()
        self.inputs.refresh()
        self.results.refresh_export_list()
        connect_layer_events(self.inputs, lambda e, cb: connect_while_alive(self, e, cb))
        events = self.viewer.layers.events
        connect_while_alive(self, events.removed, self._forget_removed)
        connect_while_alive(self, events.inserted, self._layers_changed)
        connect_while_alive(self, events.removed, self._layers_changed)
        connect_while_alive(self, self.viewer.dims.events.current_step, self._slider_moved)

    # --- layer events ---------------------------------------------------------------------

    def _forget_removed(self, event: Any) -> None:
        # A deleted fused layer takes its metrics and attention with it (unless a run is
        # about to replace it with a fresh layer of the same method).
        layer = event.value
        if role(layer) == "fused" and not self.running:
            self.session.forget(meta(layer).get("method", ""))

    def refresh_layers(self, *_: Any) -> None:
        """Refill the layer pickers and the export list (layers changed)."""
        self.inputs.refresh()
        self.results.refresh_export_list()

    def _layers_changed(self, *_: Any) -> None:
        self.results.refresh_export_list()

    def _slider_moved(self, *_: Any) -> None:
        self.renderer.update_visibility()

    # --- the request (the seam for the application layer's run configuration) ---------------

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self.worker is not None

    def _check_layer(self, layer: Layer | None, what: str) -> Layer:
        from napari.layers import Image

        if layer is None:
            raise ValueError(f"choose the {what} layer (Inputs)")
        if not isinstance(layer, Image) or layer.rgb or layer.multiscale:
            raise ValueError(
                f"the {what} layer {layer.name!r} must be a greyscale image stack, not "
                f"{'RGB' if getattr(layer, 'rgb', False) else type(layer).__name__}"
            )
        if layer.ndim != 3:
            raise ValueError(
                f"the {what} layer {layer.name!r} is {layer.ndim}-D {tuple(layer.data.shape)}; "
                "fusion needs a time series (T, H, W): open the whole stack, not one frame"
            )
        return layer

    def _pick_layers(self, simulate: bool) -> tuple[Layer, Layer | None, Layer | None]:
        """(hr, lr, truth) layers, checked; napari layer names are unique, so roles are
        compared by name (the layer list may hand out different wrapper objects)."""
        hr = self._check_layer(self.inputs.layer("hr"), "HR stack" if simulate else "HR")
        if simulate:
            return hr, None, None
        lr = self._check_layer(self.inputs.layer("lr"), "LR")
        if lr.name == hr.name:
            raise ValueError(
                f"LR and HR are the same layer ({lr.name!r}): choose the HR key layer for HR"
            )
        truth = self.inputs.layer("truth")
        if truth is not None:
            truth = self._check_layer(truth, "ground truth")
            if truth.name == lr.name:
                raise ValueError(f"the ground truth and LR are the same layer ({lr.name!r})")
            if truth.name == hr.name:
                truth = None  # a full-rate HR stack is its own ground truth
        lr_shape, hr_shape = lr.data.shape[1:], hr.data.shape[1:]
        if tuple(hr_shape) != (SCALE * lr_shape[0], SCALE * lr_shape[1]):
            raise ValueError(
                f"HR frames must be {SCALE}x the LR frames: LR {lr.name!r} is "
                f"{lr_shape[0]}x{lr_shape[1]}, so HR needs {SCALE * lr_shape[0]}x"
                f"{SCALE * lr_shape[1]}, but {hr.name!r} is {hr_shape[0]}x{hr_shape[1]}"
            )
        return hr, lr, truth

    def build_request(self, targets: list[int] | None = None) -> _Job:
        """The job of the current widget values (``targets``: only these frames of the window);
        ``ValueError`` says what to fix."""
        methods = self.methods_panel.selected_methods()
        if not methods:
            raise ValueError("tick at least one method")
        simulate = self.inputs.simulate.isChecked()
        hr, lr, truth = self._pick_layers(simulate)
        first, last = self.inputs.window()
        if first > last:
            raise ValueError(
                f"the time window starts at frame {first}, after its end {last}: set Frames "
                "'from' <= 'to'"
            )
        options = {}
        for name in methods:
            chosen = self.methods_panel.options_for(name)
            if chosen:
                options[name] = chosen
        key_frames = self.inputs.layer_key_indices(hr)
        first_last = self.inputs.first_last.isChecked()
        noise = self.inputs.noise.isChecked()
        request = FusionRequest(
            methods=tuple(methods),
            hr=hr.data,
            lr=None if lr is None else lr.data,
            key_frames=None if key_frames is None else tuple(key_frames),
            key_step=None if first_last else self.inputs.key_step.value(),
            first_last=first_last,
            truth=None if truth is None else truth.data,
            simulate=simulate,
            noise_psnr=self.inputs.noise_psnr.value() if simulate and noise else None,
            separation=self.methods_panel.separation.value(),
            frames=(first, last),
            method_options=options,
            device=self.methods_panel.device.currentText(),
            targets=None if targets is None else tuple(targets),
            method_cache=self._methods,
        )
        signature = {
            "lr": f"simulated from {hr.name}" if simulate else lr.name,
            "hr": hr.name,
            "separation": request.separation,
            "key_frames": list(key_frames) if key_frames else None,
            "key_step": request.key_step,
            "first_last": request.first_last,
            "noise_psnr": request.noise_psnr,
        }
        return _Job(request, threading.Event(), hr, lr, truth, signature)

    def missing_frames(self) -> dict[str, list[int]]:
        """Per ticked method: frames of the window its fused layer lacks for these inputs
        (all of them when the layer is missing or holds other inputs)."""
        job = self.build_request()
        first, last = job.request.frames
        window = range(first, last + 1)
        out = {}
        for method in job.request.methods:
            name = f"fused [{method}]"
            entry = meta(self.viewer.layers[name]) if name in self.viewer.layers else {}
            same = entry.get("inputs") == job.signature
            done = set(entry.get("frames_done", [])) if same else set()
            out[method] = [t for t in window if t not in done]
        return out

    # --- running --------------------------------------------------------------------------

    def run(self, resume: bool | None = None) -> bool:
        """Start a run with the current values; returns False (and says why) if it cannot.

        ``resume``: compute only the frames of the window still missing (default: the
        "only missing frames" box, ticked after a cancelled run).
        """
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error, show_info, show_warning

        if self.running:
            show_warning(
                "A fusion run is already going: wait for it to finish or press Cancel first."
            )
            return False
        if resume is None:
            resume = self.run_panel.resume.isEnabled() and self.run_panel.resume.isChecked()
        try:
            targets = None
            if resume:
                missing = self.missing_frames()
                targets = sorted({t for frames in missing.values() for t in frames})
                if not targets:
                    show_info("Every frame of the window is done: nothing to resume.")
                    self.run_panel.status.setText("Nothing missing in the window.")
                    return False
            job = self.build_request(targets)
            if resume:  # only the methods that miss frames
                methods = tuple(m for m in job.request.methods if missing[m])
                job.request = replace(job.request, methods=methods)
        except ValueError as exc:
            message = str(exc)
            show_error(message[0].upper() + message[1:])
            self.run_panel.status.setText(f"Not started: {message}")
            return False
        self._save_settings()
        self.results.show_side_by_side(False)
        self._job = job
        self.last_summary = None
        self.worker = create_worker(fusion_job, job.request, job.cancel, _start_thread=False)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.aborted.connect(self._on_aborted)
        self.worker.finished.connect(self._on_finished)
        self.run_panel.run_button.setEnabled(False)
        self.run_panel.cancel_button.setEnabled(True)
        # Closing the dock (or napari) mid-run stops the worker after its current frame.
        self.destroyed.connect(job.stop_on_close)
        self.run_panel.busy("Preparing inputs…")
        self.worker.start()
        return True

    def cancel(self) -> None:
        """Stop after the frame in progress; the frames done stay in their layers."""
        if self._job is not None and self.worker is not None:
            self._job.cancel.set()
            self.run_panel.cancel_button.setEnabled(False)
            self.run_panel.status.setText("Cancelling after the current frame…")

    def _on_yielded(self, message: Prepared | FrameDone) -> None:
        job = self._job
        if job is None:
            return
        if isinstance(message, FrameDone):
            self.renderer.push(message)  # shown at the next flush (<= 100 ms)
        elif isinstance(message, Prepared):
            self._on_prepared(job, message)

    def _on_prepared(self, job: _Job, prep: Prepared) -> None:
        from napari.utils.notifications import show_info

        job.prepared = prep
        hr = job.hr_layer
        spatial_scale, spatial_shift = tuple(hr.scale[1:]), tuple(hr.translate[1:])
        # Results share the LR stream's clock (the HR stack's when simulating from it).
        clock = hr if job.lr_layer is None else job.lr_layer
        t_scale, t_shift = float(clock.scale[0]), float(clock.translate[0])
        if job.request.simulate:
            if prep.b0 is not None:
                self.inputs.b0_label.setText(f"b0 = {prep.b0:.3g} (LR PSNR {prep.lr_psnr:.1f} dB)")
            else:
                self.inputs.b0_label.setText("b0: no noise")
            self._show_simulated_inputs(job, prep)
        elif job.lr_layer is not None and job.lr_layer.scale[1] == hr.scale[1]:
            # Same pixel size as HR: show LR up-scaled x4 so the layers overlay.
            scale, translate = lr_overlay_transform(
                (job.lr_layer.scale[0], *spatial_scale), (job.lr_layer.translate[0], *spatial_shift)
            )
            job.lr_layer.scale, job.lr_layer.translate = scale, translate
        first, last = prep.frames
        targets = job.request.targets
        total = len(targets) if targets is not None else last - first + 1
        job.state = RunState(
            methods=job.request.methods,
            shape=(prep.n_frames, *prep.hr_shape),
            scale=(t_scale, *spatial_scale),
            translate=(t_shift, *spatial_shift),
            signature=job.signature,
            extras=self.results.show_extras.isChecked(),
            total=total,
        )
        fresh = self.renderer.prepare(job.state, prep)
        for method, layer in job.state.layers.items():
            meta(layer)["parameters"] = {
                **job.signature,
                "method": method,
                "key_indices": prep.key_indices.tolist(),
                "device": job.request.device,
                "options": job.request.method_options.get(method, {}),
                "describe": prep.descriptions.get(method, {}),
                "b0": prep.b0,
                "normalisation": prep.normalisation,
            }
        self.session.begin(
            prep.n_frames,
            prep.key_indices,
            job.request.methods,
            has_truth=prep.has_truth,
            fresh=fresh,
            time=(t_scale, t_shift),
        )
        # Show the window: the slider moves to its first frame unless it is already inside.
        start = targets[0] if targets else first
        if not first <= self.inputs.current_frame(clock) <= last:
            self.viewer.dims.set_point(0, t_shift + t_scale * start)
        self.run_panel.started(total)
        what = f"{len(targets)} missing frames of" if targets is not None else "frames"
        self.run_panel.status.setText(
            f"Running {', '.join(job.request.methods)} on {what} {first}..{last}; "
            f"keys {describe_keys(prep.key_indices)}"
        )
        for note in prep.notes:
            show_info(note)
        self.results.refresh_export_list()
        if prep.has_truth:
            self._open_dock("Metrics")

    def _show_simulated_inputs(self, job: _Job, prep: Prepared) -> None:
        hr = job.hr_layer
        scale, translate = lr_overlay_transform(tuple(hr.scale), tuple(hr.translate))
        entry = {
            "role": "lr",
            "binning": SCALE,
            "b0": prep.b0,
            "lr_psnr": prep.lr_psnr,
            "source": hr.name,
        }
        for name in ("LR (simulated)", "HR keys (simulated)"):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self.viewer.add_image(
            prep.lr,
            name="LR (simulated)",
            scale=scale,
            translate=translate,
            contrast_limits=(0.0, 1.0),
            metadata={META: entry},
        )
        keys = prep.key_indices
        step = float(keys[1] - keys[0]) if keys.size > 1 else 1.0
        if np.all(np.diff(keys) == keys[1] - keys[0]):
            t_scale, t_shift = float(hr.scale[0]), float(hr.translate[0])
            self.viewer.add_image(
                prep.key_frames,
                name="HR keys (simulated)",
                scale=(step * t_scale, *hr.scale[1:]),
                # Between two keys the layer shows the key in force, not the next one.
                translate=(t_shift + key_hold_translate(step, t_scale), *hr.translate[1:]),
                contrast_limits=(0.0, 1.0),
                metadata={
                    META: {"role": "hr_keys", "key_indices": keys.tolist(), "source": hr.name}
                },
            )
        if META not in hr.metadata:
            hr.metadata[META] = {"role": "truth"}

    def _on_progress(self, state: RunState) -> None:
        """After each flush (<= 10 a second): progress, status, the attention dock."""
        elapsed = time.perf_counter() - state.started
        self.run_panel.show_progress(state.done, state.total, elapsed)
        self.run_panel.status.setText(f"{state.done} / {state.total} frames done")
        job = self._job
        if job is not None and not job.attention_shown:
            if any(r.backward is not None for m in state.methods for r in self.session.ordered(m)):
                job.attention_shown = True
                self._open_dock("Attention")

    def _on_returned(self, summary: Finished) -> None:
        from napari.utils.notifications import show_error, show_info

        self.renderer.flush()  # every frame the worker finished is shown before the summary
        self.last_summary = summary
        job = self._job
        methods = ", ".join(job.request.methods) if job else ""
        done = job.done if job else 0
        frames = f"{done} frame{'' if done == 1 else 's'}"
        if summary.error:
            message = explain_error(summary.error, job.request if job else None)
            show_error(f"Fusion failed: {message}")
            text = f"Failed after {frames}: {message}"
        elif summary.cancelled:
            show_info(f"Fusion cancelled; the {frames} done {'is' if done == 1 else 'are'} kept.")
            text = f"Cancelled: {frames} done kept; Run again to do only the missing ones."
        else:
            text = f"Done: {methods}, {frames} in {format_seconds(summary.seconds)}."
        self.run_panel.ended(text, resumable=bool(summary.cancelled and done))

    def _on_errored(self, exc: Exception) -> None:
        # Only a bug in this plugin gets here (fusion_job returns errors as a summary).
        self.renderer.flush()
        self.run_panel.ended(f"Failed: {exc}", resumable=False)

    def _on_aborted(self) -> None:
        # napari's activity dock can quit the worker directly.
        self.renderer.flush()
        done = self._job.done if self._job else 0
        self.last_summary = Finished(cancelled=True, frames_done=done)
        self.run_panel.ended("Cancelled.", resumable=bool(done))

    def _on_finished(self) -> None:
        if self._job is not None:
            self.destroyed.disconnect(self._job.stop_on_close)
        self.worker = None
        self.run_panel.run_button.setEnabled(True)
        self.run_panel.cancel_button.setEnabled(False)

    # --- docks and comparison ---------------------------------------------------------------

    def _open_dock(self, title: str) -> None:
        """Dock our ``Attention`` or ``Metrics`` widget at the bottom unless one is open."""
        from napari_xfusion._napari._attention import AttentionWidget
        from napari_xfusion._napari._metrics import MetricsWidget

        cls = {"Attention": AttentionWidget, "Metrics": MetricsWidget}[title]
        window = getattr(self.viewer, "window", None)
        if window is None or not hasattr(window, "add_dock_widget"):
            return
        docked = window.dock_widgets
        name = f"{title} (napari-xfusion)"  # napari's name for our plugin widget
        if name in docked or any(isinstance(w, cls) for w in docked.values()):
            return
        window.add_dock_widget(cls(self.viewer), name=name, area="bottom")

    def comparison_layers(self) -> list[Layer]:
        """LR, each fused layer followed by its extra outputs and change views, the truth."""
        job = self._job
        names = [layer.name for layer in self.viewer.layers]
        lr = job.lr_layer if job is not None else None
        if job is not None and job.request.simulate and "LR (simulated)" in names:
            lr = self.viewer.layers["LR (simulated)"]
        if lr is None:
            lr = next((lyr for lyr in reversed(self.viewer.layers) if role(lyr) == "lr"), None)
        truth = None
        if job is not None:
            truth = job.truth_layer or (job.hr_layer if job.request.simulate else None)
        if truth is None:
            truth = next((x for x in reversed(self.viewer.layers) if role(x) == "truth"), None)
        layers = [lr] if lr is not None and lr.name in names else []
        for fused in fused_layers(self.viewer):
            layers.append(fused)
            for layer in self.viewer.layers:
                entry = layer.metadata.get(META, {})
                if not isinstance(entry, dict):
                    continue
                mine = entry.get("role") in ("uncertainty", "extra")
                mine = mine and entry.get("method") == meta(fused).get("method")
                if mine or (entry.get("role") == "change" and entry.get("source") == fused.name):
                    layers.append(layer)
        if truth is not None and truth.name in names:
            layers.append(truth)
        return layers

    # --- settings (the application layer's saved configuration will replace this) ----------

    @staticmethod
    def settings() -> QSettings:
        """Where the widget remembers its values (an INI file in the user's config folder)."""
        return QSettings(
            QSettings.Format.IniFormat, QSettings.Scope.UserScope, "napari-xfusion", "fusion"
        )

    def state(self) -> dict[str, Any]:
        """Every remembered value, JSON-able: ``{"inputs", "methods", "results"}`` dicts."""
        return {
            "inputs": self.inputs.state(),
            "methods": self.methods_panel.state(),
            "results": self.results.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Set the widgets from a :meth:`state` dict."""
        self.inputs.restore(state.get("inputs", {}))
        self.methods_panel.restore(state.get("methods", {}))
        self.results.restore(state.get("results", {}))

    def _save_settings(self) -> None:
        s = self.settings()
        s.setValue("state", json.dumps(self.state()))
        s.sync()

    def _restore_settings(self) -> None:
        try:
            state = json.loads(str(self.settings().value("state", "{}")))
        except (TypeError, ValueError):
            state = {}
        if isinstance(state, dict):
            self.restore(state)
