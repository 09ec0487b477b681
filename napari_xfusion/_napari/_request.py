"""From the dock's panels to one :class:`~napari_xfusion.app.config.RunConfig`.

:func:`panel_config` is the only code that reads the panels for a run: panels -> RunConfig.
:func:`build_job` adds what only the GUI has (the chosen layers' arrays, checked for what
only the GUI can check: which layers, that they are image stacks, that LR and HR are
different layers, compared by name since napari names are unique) into a
:class:`~napari_xfusion._napari._job.FusionRequest`; everything else (keys, normalisation,
shapes against the keys) is the application layer's, as for the CLI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_xfusion._napari._job import FusionRequest, Prepared
from napari_xfusion._napari._layers import fused_name, meta, reuses_fused_layer
from napari_xfusion.app.config import RunConfig
from napari_xfusion.core.degrade import SCALE

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from napari_xfusion._napari._inputs_panel import InputsPanel
    from napari_xfusion._napari._methods_panel import MethodsPanel
    from napari_xfusion._napari._render import RunState

__all__ = ["Job", "build_job", "missing_frames", "panel_config", "source_path", "window"]


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


def source_path(layer: Layer | None) -> str | None:
    """The file ``layer`` was read from, or None (made in the session, or no such record)."""
    path = getattr(getattr(layer, "source", None), "path", None) if layer is not None else None
    return str(path) if path else None


def panel_config(
    inputs: InputsPanel, methods_panel: MethodsPanel, base: RunConfig | None = None
) -> RunConfig:
    """The :class:`RunConfig` of the panels' values over ``base`` (fields no panel shows, such
    as ``normalise`` and ``seed``, come from ``base``: a loaded or remembered config).

    The key rule (:meth:`InputsPanel.key_rule`): a loaded configuration's key list, else the
    HR layer's own key times (metadata), else first and last, else the step. Raises
    ``ValueError`` (a ``ConfigError``) saying what to fix.
    """
    base = base or RunConfig()
    choices = methods_panel.choices()
    if not choices:
        raise ValueError("tick at least one method")
    first, last = inputs.window()
    if first > last:
        raise ValueError(
            f"the time window starts at frame {first}, after its end {last}: set Frames "
            "'from' <= 'to'"
        )
    simulate = inputs.simulate.isChecked()
    hr = inputs.layer("hr")
    keys = inputs.key_rule()
    noise = simulate and inputs.noise.isChecked()
    lr = inputs.layer("lr")
    truth = inputs.layer("truth")
    return base.replace(
        lr=None if simulate else source_path(lr),
        hr=source_path(hr),
        truth=None if simulate else source_path(truth),
        simulate=simulate,
        keys=keys,
        separation=methods_panel.separation.value() or None,
        frames=(first, last + 1),  # the spin boxes are inclusive; the config is half-open
        device=methods_panel.device.currentText(),
        lr_psnr=inputs.noise_psnr.value() if noise else None,
        methods=choices,
    )


def build_job(
    inputs: InputsPanel,
    methods_panel: MethodsPanel,
    method_cache: dict[str, Any],
    targets: dict[str, list[int]] | None = None,
    base: RunConfig | None = None,
    units: str | None = None,
) -> Job:
    """The job of the panels' current values (``targets``: per method, only these frames of
    the window); ``ValueError`` says what to fix."""
    config = panel_config(inputs, methods_panel, base)
    if units is not None:
        config = config.replace(units=units)
    hr, lr, truth = _pick_layers(inputs)
    keys = inputs.layer_key_indices(hr)
    signature = {
        "lr": f"simulated from {hr.name}" if config.simulate else lr.name,
        "hr": hr.name,
        "separation": config.separation,
        # Key times from the HR layer's metadata or a loaded key list: other keys, other frames.
        "key_frames": list(keys or config.keys.indices or ()) or None,
        "key_step": config.keys.step,
        "first_last": config.keys.first_last,
        "noise_psnr": config.lr_psnr,
    }
    # The result shape as the app layer will find it: the clock's frames, HR frame size.
    clock = hr if config.simulate else lr
    shape = (int(clock.data.shape[0]), *(int(n) for n in hr.data.shape[1:]))
    new_stacks = tuple(
        m for m in config.method_names if not reuses_fused_layer(inputs.viewer, m, shape, signature)
    )
    request = FusionRequest(
        config=config,
        hr=hr.data,
        lr=None if lr is None else lr.data,
        truth=None if truth is None else truth.data,
        hr_metadata=None if keys is None else {"key_indices": list(keys)},
        lr_metadata=inputs.layer_separation(lr),
        targets=None if targets is None else {m: tuple(t) for m, t in targets.items()},
        method_cache=method_cache,
        new_stacks=new_stacks,
    )
    return Job(request, threading.Event(), hr, lr, truth, signature)


def window(job: Job) -> tuple[int, int]:
    """The job's first and last frame (inclusive, as the spin boxes show them)."""
    start, stop = job.request.config.frames
    return start, stop - 1


def missing_frames(viewer: napari.Viewer, job: Job) -> dict[str, list[int]]:
    """Per method of ``job``: frames of its window that its fused layer lacks for the same
    inputs (all of them when the layer is missing or holds other inputs)."""
    first, last = window(job)
    out = {}
    for method in job.request.methods:
        name = fused_name(method)
        entry = meta(viewer.layers[name]) if name in viewer.layers else {}
        done = set(entry.get("frames_done", [])) if entry.get("inputs") == job.signature else set()
        out[method] = [t for t in range(first, last + 1) if t not in done]
    return out
