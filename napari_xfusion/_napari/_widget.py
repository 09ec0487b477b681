"""The fusion dock: inputs, methods, run, results; the run itself goes to a worker thread.

The dock owns no science. It is four panels (:mod:`._inputs_panel`, :mod:`._methods_panel`,
:mod:`._run_panel`, :mod:`._results_panel`) and two seams, kept narrow for the application
layer's run configuration:

- :meth:`FusionWidget.config` maps the widgets to one
  :class:`~napari_xfusion.app.config.RunConfig` (the CLI's run description) and
  :meth:`FusionWidget.build_request` adds the chosen layers' arrays - the only place that
  reads the panels for a run; the remembered settings and "Save/Load settings..." are that
  RunConfig's JSON (plus a small dict of view state);
- :class:`~napari_xfusion._napari._render.ResultRenderer` renders what
  :func:`~napari_xfusion._napari._job.fusion_job` yields (layers, session, progress),
  throttled to at most 4 updates a second.

Cancel ends the run after the frame in progress; frames done stay, and the next Run can do
only the frames still missing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_xfusion._napari._dock import open_result_dock
from napari_xfusion._napari._inputs_panel import InputsPanel, connect_layer_events
from napari_xfusion._napari._job import (
    Finished,
    FrameDone,
    Prepared,
    describe_keys,
    fusion_job,
)
from napari_xfusion._napari._layers import (
    lr_overlay_transform,
    meta,
    physical_labels,
    role,
)
from napari_xfusion._napari._messages import explain_error
from napari_xfusion._napari._methods_panel import MethodsPanel
from napari_xfusion._napari._render import ResultRenderer, RunState, show_simulated_inputs
from napari_xfusion._napari._request import Job, build_job, missing_frames, panel_config
from napari_xfusion._napari._results_panel import ResultsPanel, comparison_layers
from napari_xfusion._napari._run_panel import RunPanel, format_seconds
from napari_xfusion._napari._session import session_for
from napari_xfusion._napari._settings import SettingsMixin
from napari_xfusion._napari._util import VerticalScroll, connect_while_alive
from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.export import run_metadata

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


class FusionWidget(SettingsMixin, QWidget):
    """Dock widget: inputs, methods, Run/Cancel with progress, results and export."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.worker: Any = None
        self._job: Job | None = None
        self.last_summary: Finished | None = None
        self._methods: dict[str, Any] = {}  # built methods (loaded networks) reused across runs
        self.base_config = RunConfig()  # what no panel shows (normalise, seed) comes from here

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

        # The panels are taller than a laptop's dock area (or one shared with the result
        # docks): they scroll rather than squeeze, while Run, Cancel, the progress and the
        # status stay in view below them.
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(6, 6, 6, 6)
        for panel in (self.inputs, self.methods_panel, self.results):
            layout.addWidget(panel)
        layout.addLayout(self._settings_buttons())
        layout.addStretch()
        scroll = VerticalScroll()
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll, 1)
        self.run_panel.setContentsMargins(6, 0, 6, 6)
        outer.addWidget(self.run_panel)

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

    def config(self) -> RunConfig:
        """The :class:`RunConfig` of the current values; ``ValueError`` says what to fix."""
        config = panel_config(self.inputs, self.methods_panel, self.base_config)
        return config.replace(units=self.results.units())

    def build_request(self, targets: dict[str, list[int]] | None = None) -> Job:
        """The job of the current values (``targets``: per method, only these frames of the
        window); ``ValueError`` says what to fix. See :func:`~._request.build_job`."""
        return build_job(
            self.inputs,
            self.methods_panel,
            self._methods,
            targets,
            base=self.base_config,
            units=self.results.units(),
        )

    def missing_frames(self) -> dict[str, list[int]]:
        """Per ticked method: frames of the window its fused layer lacks for these inputs."""
        return missing_frames(self.viewer, self.build_request())

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
                # Each method resumes its own missing frames (not their union).
                targets = {m: t for m, t in self.missing_frames().items() if t}
                if not targets:
                    show_info("Every frame of the window is done: nothing to resume.")
                    self.run_panel.status.setText("Nothing missing in the window.")
                    return False
            job = self.build_request(targets)
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

    def _on_prepared(self, job: Job, prep: Prepared) -> None:
        from napari.utils.notifications import show_info

        job.prepared = prep
        hr = job.hr_layer
        spatial_scale, spatial_shift = tuple(hr.scale[1:]), tuple(hr.translate[1:])
        # Results share the LR stream's clock (the HR stack's when simulating from it).
        clock = hr if job.lr_layer is None else job.lr_layer
        t_scale, t_shift = float(clock.scale[0]), float(clock.translate[0])
        config = job.request.config
        if config.simulate:
            if prep.b0 is not None:
                self.inputs.b0_label.setText(f"b0 = {prep.b0:.3g} (LR PSNR {prep.lr_psnr:.1f} dB)")
            else:
                self.inputs.b0_label.setText("b0: no noise")
            show_simulated_inputs(self.viewer, job.hr_layer, prep)
        elif job.lr_layer is not None and job.lr_layer.scale[1] == hr.scale[1]:
            # Same pixel size as HR: show LR up-scaled x4 so the layers overlay.
            scale, translate = lr_overlay_transform(
                (job.lr_layer.scale[0], *spatial_scale), (job.lr_layer.translate[0], *spatial_shift)
            )
            job.lr_layer.scale, job.lr_layer.translate = scale, translate
        first, last = prep.frames
        targets = job.request.targets
        expected: dict[int, int] = {}
        for methods, frames in job.request.groups():
            for t in frames if frames is not None else range(first, last + 1):
                if first <= t <= last:
                    expected[t] = expected.get(t, 0) + len(methods)
        total = len(expected)
        targets = sorted(expected) if targets is not None else None
        job.state = RunState(
            methods=job.request.methods,
            shape=(prep.n_frames, *prep.hr_shape),
            scale=(t_scale, *spatial_scale),
            translate=(t_shift, *spatial_shift),
            signature=job.signature,
            extras=self.results.show_extras.isChecked(),
            total=total,
            expected=expected,
            units=(str(clock.units[0]), *(str(u) for u in hr.units[1:])),
            axis_labels=physical_labels(clock, hr),
        )
        fresh = self.renderer.prepare(job.state, prep)
        for method, layer in job.state.layers.items():
            meta(layer)["parameters"] = {
                **job.signature,
                "method": method,
                "key_indices": prep.key_indices.tolist(),
                "device": config.device,
                "options": job.request.config.method(method).constructor_options(),
                "config": config.to_dict(),
                "describe": prep.descriptions.get(method, {}),
                "b0": prep.b0,
                "normalisation": prep.normalisation,
                "run": run_metadata(config, prep.inputs),  # what an export of it records
            }
        self.session.begin(
            prep.n_frames,
            prep.key_indices,
            job.request.methods,
            has_truth=prep.has_truth,
            fresh=fresh,
            time=(t_scale, t_shift),
            time_unit=str(clock.units[0]),
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

    def _on_progress(self, state: RunState) -> None:
        """After each flush (<= 4 a second): progress, status, the attention dock."""
        elapsed = time.perf_counter() - state.started
        # The bar only: a status line that changes its text re-lays the dock out each time.
        self.run_panel.show_progress(state.done, state.total, elapsed)
        job = self._job
        if job is not None and not job.attention_shown and state.attention:
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
        open_result_dock(self.viewer, title)

    def comparison_layers(self) -> list[Layer]:
        """LR, each fused layer followed by its extra outputs and change views, the truth."""
        job = self._job
        lr = truth = None
        if job is not None:
            lr = job.lr_layer
            if job.request.config.simulate and "LR (simulated)" in self.viewer.layers:
                lr = self.viewer.layers["LR (simulated)"]
            truth = job.truth_layer or (job.hr_layer if job.request.config.simulate else None)
        latest = {role(layer): layer for layer in self.viewer.layers}
        return comparison_layers(self.viewer, lr or latest.get("lr"), truth or latest.get("truth"))
