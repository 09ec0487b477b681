"""From the dock's panels to one run request: the seam the application layer's RunConfig fills.

:func:`build_job` is the only code that reads the panels for a run. It checks what only the
GUI can check (which layers, that they are image stacks, that LR and HR are different
layers, compared by name since napari names are unique) and maps the values to a
:class:`~napari_xfusion._napari._job.FusionRequest`; everything else (keys, normalisation,
shapes against the keys) is :func:`~napari_xfusion._napari._job.prepare`'s. When the
application layer lands, this module becomes "panels -> RunConfig", nothing more.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_xfusion._napari._job import SCALE, FusionRequest, Prepared
from napari_xfusion._napari._layers import fused_name, meta

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from napari_xfusion._napari._inputs_panel import InputsPanel
    from napari_xfusion._napari._methods_panel import MethodsPanel
    from napari_xfusion._napari._render import RunState

__all__ = ["Job", "build_job", "missing_frames"]


@dataclass
class Job:
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


def _check_layer(layer: Layer | None, what: str) -> Layer:
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


def _pick_layers(inputs: InputsPanel) -> tuple[Layer, Layer | None, Layer | None]:
    """(hr, lr, truth), checked. Roles are compared by name: napari names are unique, and the
    layer list may hand out different wrapper objects for one layer."""
    simulate = inputs.simulate.isChecked()
    hr = _check_layer(inputs.layer("hr"), "HR stack" if simulate else "HR")
    if simulate:
        return hr, None, None
    lr = _check_layer(inputs.layer("lr"), "LR")
    if lr.name == hr.name:
        raise ValueError(
            f"LR and HR are the same layer ({lr.name!r}): choose the HR key layer for HR"
        )
    truth = inputs.layer("truth")
    if truth is not None:
        truth = _check_layer(truth, "ground truth")
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


def build_job(
    inputs: InputsPanel,
    methods_panel: MethodsPanel,
    method_cache: dict[str, Any],
    targets: list[int] | None = None,
) -> Job:
    """The job of the panels' current values (``targets``: only these frames of the window);
    ``ValueError`` says what to fix."""
    methods = methods_panel.selected_methods()
    if not methods:
        raise ValueError("tick at least one method")
    simulate = inputs.simulate.isChecked()
    hr, lr, truth = _pick_layers(inputs)
    first, last = inputs.window()
    if first > last:
        raise ValueError(
            f"the time window starts at frame {first}, after its end {last}: set Frames "
            "'from' <= 'to'"
        )
    options = {}
    for name in methods:
        chosen = methods_panel.options_for(name)
        if chosen:
            options[name] = chosen
    key_frames = inputs.layer_key_indices(hr)
    first_last = inputs.first_last.isChecked()
    noise = inputs.noise.isChecked()
    request = FusionRequest(
        methods=tuple(methods),
        hr=hr.data,
        lr=None if lr is None else lr.data,
        key_frames=None if key_frames is None else tuple(key_frames),
        key_step=None if first_last else inputs.key_step.value(),
        first_last=first_last,
        truth=None if truth is None else truth.data,
        simulate=simulate,
        noise_psnr=inputs.noise_psnr.value() if simulate and noise else None,
        separation=methods_panel.separation.value(),
        frames=(first, last),
        method_options=options,
        device=methods_panel.device.currentText(),
        targets=None if targets is None else tuple(targets),
        method_cache=method_cache,
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
    return Job(request, threading.Event(), hr, lr, truth, signature)


def missing_frames(viewer: napari.Viewer, job: Job) -> dict[str, list[int]]:
    """Per method of ``job``: frames of its window that its fused layer lacks for the same
    inputs (all of them when the layer is missing or holds other inputs)."""
    first, last = job.request.frames
    out = {}
    for method in job.request.methods:
        name = fused_name(method)
        entry = meta(viewer.layers[name]) if name in viewer.layers else {}
        done = set(entry.get("frames_done", [])) if entry.get("inputs") == job.signature else set()
        out[method] = [t for t in range(first, last + 1) if t not in done]
    return out
