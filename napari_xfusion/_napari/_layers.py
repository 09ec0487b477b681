"""Result layers: fused stacks filled frame by frame, change views, side-by-side grid.

Every function here runs on the GUI thread. Our layers carry a JSON-able dict under
``layer.metadata["xfusion"]`` (:data:`META`) with at least a ``role`` (``"lr"``,
``"hr_keys"``, ``"truth"``, ``"fused"``, ``"uncertainty"``, ``"change"``); the writer stores
it in the TIFF and the reader restores it, so an exported fused stack reopens as what it was.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Layer

__all__ = [
    "META",
    "CHANGE_MODES",
    "FrameChange",
    "role",
    "meta",
    "fused_name",
    "fused_layers",
    "ensure_fused_layer",
    "reuses_fused_layer",
    "ensure_uncertainty_layer",
    "ensure_output_layer",
    "key_hold_translate",
    "physical_labels",
    "write_frame",
    "display_settings",
    "add_change_view",
    "refresh_change_views",
    "side_by_side",
    "lr_overlay_transform",
]

META = "xfusion"
"""Key of our entry in ``layer.metadata``."""

CHANGE_MODES = {
    "ratio": "ratio I[t] / I[t-1]",
    "difference": "difference I[t] - I[t-1]",
}
"""Change-from-previous-frame views: mode -> label."""

_EPS = 1e-6


def meta(layer: Layer) -> dict[str, Any]:
    """Our metadata entry of ``layer`` (created empty if missing)."""
    return layer.metadata.setdefault(META, {})


def role(layer: Layer) -> str | None:
    """The role recorded in ``layer``'s metadata, or None for a layer we did not make."""
    entry = layer.metadata.get(META)
    return entry.get("role") if isinstance(entry, dict) else None


def fused_name(method: str) -> str:
    """Layer name of a method's result: ``fused [edvr-stf]``."""
    return f"fused [{method}]"


def fused_layers(viewer: napari.Viewer) -> list[Image]:
    """The fused layers of ``viewer``, in layer-list order."""
    return [layer for layer in viewer.layers if role(layer) == "fused"]


def lr_overlay_transform(
    hr_scale: Sequence[float], hr_translate: Sequence[float], factor: int = 4
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(scale, translate) that overlay an LR ``(T, h, w)`` layer on HR ``(T, H, W)`` layers.

    An LR pixel covers ``factor x factor`` HR pixels; napari puts pixel *centres* at
    ``translate + scale * index``, so the LR centre sits ``(factor - 1) / 2`` HR pixels in.
    """
    t_scale, *yx_scale = hr_scale
    t_shift, *yx_shift = hr_translate
    scale = (t_scale, *(factor * s for s in yx_scale))
    centre = (factor - 1) / 2
    translate = (t_shift, *(o + centre * s for o, s in zip(yx_shift, yx_scale, strict=True)))
    return scale, translate


def ensure_fused_layer(
    viewer: napari.Viewer,
    method: str,
    shape: tuple[int, int, int],
    signature: dict[str, Any],
    *,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0, 0.0),
    units: Sequence[str] | None = None,
    axis_labels: Sequence[str] | None = None,
    stack: np.ndarray | None = None,
) -> Image:
    """The layer ``fused [method]`` of ``shape``, ready to be filled (``units`` and
    ``axis_labels``: napari's, per axis, e.g. ``("ms", "um", "um")``).

    An existing layer is reused, keeping its frames, when its shape and the run's input
    ``signature`` (layers, separation, keys) are unchanged, so runs on successive time windows
    add up; otherwise its frames are cleared. A new layer holds ``stack`` when given (a zeroed
    float32 array of ``shape``, made by the worker), else a new zeroed array.
    """
    entry = {"role": "fused", "method": method, "inputs": signature, "frames_done": []}
    return _ensure_result_layer(
        viewer,
        fused_name(method),
        entry,
        shape,
        (scale, translate, units, axis_labels),
        "gray",
        (0.0, 1.0),
        stack,
    )


def _fillable(data: Any, shape: tuple[int, ...]) -> bool:
    # Only an in-memory float32 stack can be filled in place: a reopened export is a
    # read-only memmap (or detector units), and is replaced rather than written into.
    return (
        isinstance(data, np.ndarray)
        and not isinstance(data, np.memmap)
        and data.flags.writeable
        and data.dtype == np.float32
        and data.shape == tuple(shape)
    )


def reuses_fused_layer(
    viewer: napari.Viewer, method: str, shape: tuple[int, int, int], signature: dict[str, Any]
) -> bool:
    """Whether :func:`ensure_fused_layer` would keep the existing layer's array (so a run
    needs no new stack for ``method``)."""
    name = fused_name(method)
    if name not in viewer.layers:
        return False
    layer = viewer.layers[name]
    return _fillable(layer.data, shape) and meta(layer).get("inputs") == signature


def ensure_uncertainty_layer(
    viewer: napari.Viewer,
    method: str,
    shape: tuple[int, int, int],
    signature: dict[str, Any],
    *,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0, 0.0),
) -> Image:
    """The layer ``uncertainty [method]``: the posterior standard deviation per pixel (same
    units as the fused frames), filled like the fused layer."""
    return ensure_output_layer(
        viewer,
        method,
        "variance",
        f"uncertainty [{method}]",
        shape,
        signature,
        scale=scale,
        translate=translate,
    )


def ensure_output_layer(
    viewer: napari.Viewer,
    method: str,
    output: str,
    name: str,
    shape: tuple[int, int, int],
    signature: dict[str, Any],
    *,
    scale: Sequence[float] = (1.0, 1.0, 1.0),
    translate: Sequence[float] = (0.0, 0.0, 0.0),
    units: Sequence[str] | None = None,
    axis_labels: Sequence[str] | None = None,
) -> Image:
    """The layer ``name`` for a method's extra per-pixel ``output``, filled like the fused
    layer: ``variance`` (shown as the standard deviation, role ``uncertainty``) or any other
    (role ``extra``, e.g. a ``confidence`` map in [0, 1])."""
    kind = "uncertainty" if output == "variance" else "extra"
    entry = {
        "role": kind,
        "method": method,
        "output": output,
        "inputs": signature,
        "frames_done": [],
    }
    colormap, limits = ("magma", (0.0, 0.1)) if kind == "uncertainty" else ("viridis", (0.0, 1.0))
    place = (scale, translate, units, axis_labels)
    return _ensure_result_layer(viewer, name, entry, shape, place, colormap, limits)


def physical_labels(clock: Layer, hr: Layer) -> tuple[str, ...]:
    """Axis labels of the result layers: the clock layer's time label and the HR layer's
    spatial ones; napari's placeholders ("-3", "-2", "-1") become ``frame`` (or ``time``
    when the time axis has a unit), ``y``, ``x``."""
    labels = [str(clock.axis_labels[0]), *(str(a) for a in hr.axis_labels[1:])]
    timed = str(clock.units[0]) not in ("pixel", "")
    defaults = ("time" if timed else "frame", "y", "x")
    return tuple(
        default if label.lstrip("-").isdigit() else label
        for label, default in zip(labels, defaults, strict=True)
    )


def key_hold_translate(key_step: float, time_scale: float = 1.0) -> float:
    """Time offset that makes a key layer of scale ``key_step * time_scale`` show, at each
    frame t, the key in force (the last key <= t) rather than the nearest one.

    napari shows the frame ``round((t - translate) / scale)``; with keys at 0, k, 2k, ...
    and ``translate = (k - 1) / 2`` frames that is ``floor(t / k)`` for every integer t.
    """
    return (float(key_step) - 1.0) / 2.0 * float(time_scale)


def _ensure_result_layer(
    viewer: napari.Viewer,
    name: str,
    entry: dict[str, Any],
    shape: tuple[int, int, int],
    place: tuple[Any, Any, Any, Any],
    colormap: str,
    contrast_limits: tuple[float, float],
    stack: np.ndarray | None = None,
) -> Image:
    scale, translate, units, axis_labels = place
    physical = {}
    if units is not None:
        physical["units"] = tuple(units)
    if axis_labels is not None:
        physical["axis_labels"] = tuple(axis_labels)
    if name in viewer.layers:
        layer = viewer.layers[name]
        data = layer.data
        fillable = _fillable(data, shape)
        for key, value in physical.items():
            setattr(layer, key, value)
        if fillable and meta(layer).get("inputs") == entry["inputs"]:
            return layer
        if fillable:
            data[:] = 0
            layer.metadata[META] = entry
            layer.refresh()
            return layer
        # Replaced (other shape, a reopened export): the new layer looks as the user left
        # the old one and takes its place in the layer list.
        display = display_settings(layer)
        position = viewer.layers.index(layer)
        viewer.layers.remove(layer)
    else:
        display, position = {}, None
    if stack is None or not _fillable(stack, shape):
        stack = np.zeros(shape, dtype=np.float32)
    new = viewer.add_image(
        stack,
        name=name,
        contrast_limits=contrast_limits,
        colormap=colormap,
        scale=tuple(scale),
        translate=tuple(translate),
        metadata={META: entry},
        **physical,
    )
    for key, value in display.items():
        setattr(new, key, value)
    if position is not None and position < len(viewer.layers) - 1:
        viewer.layers.move(len(viewer.layers) - 1, position)
    return new


_DISPLAY = ("opacity", "blending", "colormap", "gamma", "interpolation2d", "visible")


def display_settings(layer: Layer) -> dict[str, Any]:
    """How the user shows ``layer``: opacity, blending, colormap, gamma, interpolation,
    visibility, and the contrast limits when its data are on the [0, 1] float scale of a
    result (not a reopened export in detector units)."""
    out = {key: getattr(layer, key) for key in _DISPLAY if hasattr(layer, key)}
    dtype = getattr(getattr(layer, "data", None), "dtype", None)
    if dtype is not None and np.dtype(dtype).kind == "f" and hasattr(layer, "contrast_limits"):
        out["contrast_limits"] = tuple(layer.contrast_limits)
    return out


def write_frame(layer: Image, index: int, frame: np.ndarray, refresh: bool = True) -> None:
    """Put one reconstructed frame into a result layer (and refresh it unless ``refresh`` is
    False: the caller refreshes once for a batch of frames)."""
    layer.data[index] = frame
    entry = meta(layer)
    done = set(entry.get("frames_done", []))
    done.add(int(index))
    entry["frames_done"] = sorted(done)
    if refresh:
        layer.refresh()


class FrameChange:
    """Lazy ``(T, H, W)`` view of a layer's change from the previous frame.

    Computed on access from the source layer's current data, so it follows a fused layer as
    it fills; frames whose pair is not complete yet (and frame 0) show "no change" (ratio 1,
    difference 0). napari reads it like an array: ``shape``, ``dtype``, ``ndim``, indexing.
    """

    def __init__(self, source: Layer, mode: str = "ratio") -> None:
        if mode not in CHANGE_MODES:
            raise ValueError(f"unknown change view {mode!r}; choose from {', '.join(CHANGE_MODES)}")
        self._source = weakref.ref(source)
        self.mode = mode
        self.shape = tuple(source.data.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def neutral(self) -> float:
        """Value shown where there is no change (1 for a ratio, 0 for a difference)."""
        return 1.0 if self.mode == "ratio" else 0.0

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        t_key, rest = (key[0], key[1:]) if key else (slice(None), ())
        t = np.arange(self.shape[0])[t_key]
        source = self._source()
        if source is None or tuple(source.data.shape) != self.shape:
            probe = np.zeros(self.shape[1:], np.float32)[rest] if rest else np.zeros(self.shape[1:])
            return np.full(np.shape(t) + np.shape(probe), self.neutral, np.float32)
        prev_t = np.maximum(t - 1, 0)
        cur = np.asarray(source.data[(t, *rest)], dtype=np.float32)
        prev = np.asarray(source.data[(prev_t, *rest)], dtype=np.float32)
        if self.mode == "ratio":
            out = np.divide(cur, prev, out=np.ones_like(cur), where=np.abs(prev) > _EPS)
        else:
            out = cur - prev
        valid = (t > 0) & self._done(t) & self._done(prev_t)
        if np.ndim(valid) == 0:
            if not valid:
                out[...] = self.neutral
        else:
            out[~valid] = self.neutral
        return out

    def _done(self, t: np.ndarray) -> np.ndarray:
        source = self._source()
        entry = source.metadata.get(META, {}) if source is not None else {}
        if not isinstance(entry, dict) or entry.get("role") != "fused":
            return np.ones(np.shape(t), bool)
        return np.isin(t, np.asarray(entry.get("frames_done", []), dtype=np.int64))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def change_name(source: Layer, mode: str) -> str:
    """Layer name of a change view: ``ratio [fused [edvr-stf]]``."""
    return f"{mode} [{source.name}]"


def add_change_view(viewer: napari.Viewer, source: Layer, mode: str = "ratio") -> Image:
    """Add (or replace) the change-from-previous-frame view of ``source``.

    Raises ``ValueError`` with what to fix when ``source`` is not a greyscale time series.
    """
    from napari.layers import Image

    if not isinstance(source, Image) or source.rgb or source.multiscale or source.ndim != 3:
        raise ValueError(
            f"a change view needs a greyscale (T, H, W) image layer; {source.name!r} is not "
            "one (pick a fused, LR or ground-truth layer)"
        )
    name = change_name(source, mode)
    if name in viewer.layers:
        viewer.layers.remove(name)
    view = FrameChange(source, mode)
    limits = (0.5, 1.5) if mode == "ratio" else (-0.25, 0.25)
    return viewer.add_image(
        view,
        name=name,
        contrast_limits=limits,
        colormap="gray" if mode == "ratio" else "PiYG",
        scale=source.scale,
        translate=source.translate,
        metadata={META: {"role": "change", "mode": mode, "source": source.name}},
    )


def refresh_change_views(viewer: napari.Viewer, source: Layer) -> None:
    """Redraw the change views that read ``source`` (after its data changed in place)."""
    for layer in viewer.layers:
        entry = layer.metadata.get(META)
        if isinstance(entry, dict) and entry.get("role") == "change":
            if entry.get("source") == source.name:
                layer.refresh()


def _grid(viewer: napari.Viewer) -> Any:
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.9 moved the grid to viewer.canvas
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def side_by_side(viewer: napari.Viewer, layers: Iterable[Layer], enable: bool = True) -> None:
    """Show ``layers`` in napari's grid view, in the given order, others hidden.

    Time is shared by construction (one dims slider); the contrast limits of the intensity
    layers (not of uncertainty, extra outputs or change views) are linked so one adjustment
    applies to all. ``enable=False`` unlinks them and leaves the grid.
    """
    from napari.experimental import link_layers, unlink_layers

    layers = [layer for layer in layers if layer in viewer.layers]
    grid = _grid(viewer)
    if not enable:
        if len(_intensity_layers(layers)) > 1:
            unlink_layers(_intensity_layers(layers), ("contrast_limits",))
        _show_names(layers, False)
        grid.enabled = False
        return
    if not layers:
        raise ValueError("nothing to compare yet: run a method first")
    for layer in viewer.layers:
        layer.visible = layer in layers
    # The grid fills its cells in layer-list order (lowest index top-left): move each layer to
    # the top in turn, so they end up in the given order above all others.
    for layer in layers:
        viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
    # Intensities share one contrast; uncertainty, confidence and change views keep theirs.
    linked = _intensity_layers(layers)
    limits = linked[0].contrast_limits if linked else None
    for layer in linked[1:]:
        layer.contrast_limits = limits
    if len(linked) > 1:
        link_layers(linked, ("contrast_limits",))
    _show_names(layers, True)
    grid.stride = 1
    grid.enabled = True


def _intensity_layers(layers: Iterable[Layer]) -> list[Layer]:
    return [layer for layer in layers if role(layer) not in ("uncertainty", "extra", "change")]


def _show_names(layers: Iterable[Layer], visible: bool) -> None:
    """Label each grid cell with its layer's name (napari >= 0.6 has a name overlay)."""
    for layer in layers:
        overlay = getattr(layer, "name_overlay", None)
        if overlay is not None:
            overlay.visible = visible
