"""Turning a run's results into layers and dock updates, throttled, on the GUI thread.

:class:`ResultRenderer` is where the fusion dock renders: :meth:`~ResultRenderer.prepare`
makes the result layers when the worker's inputs are ready, :meth:`~ResultRenderer.push`
queues each finished frame, and a timer flushes the queue: frames are written into their
layers' arrays, each touched layer is refreshed once, the session (and so the attention and
metrics docks) receives one batch, and the progress line is updated once. A frame that
arrives alone is shown within :data:`FLUSH_MS`; frames that stream in are shown at most
every :data:`MIN_INTERVAL_MS`, so a run of 100 bicubic frames costs about a dozen GUI
updates, not 100. Nothing here calls ``repaint()`` or processes events.

Per-method extra outputs become layers generically: ``FrameResult.variance`` as
``uncertainty [method]`` (posterior standard deviation) and every per-pixel array in
``FrameResult.extras`` as ``<name> [method]`` (e.g. a flow method's ``confidence``), placed
just under their fused layer. A result layer is transparent at frames not computed yet, so
the empty layer never hides the data under it: its opacity reads 0 there and comes back
when it shows a computed frame. The opacity given back is the user's: one set while the
layer is veiled (it then shows at once, as set) replaces the remembered value, and a new
run, a rerun or a replaced layer keep it, with its colormap, blending and contrast.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from napari_xfusion._napari._layers import META, ensure_fused_layer, meta, role, write_frame

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from napari_xfusion._napari._job import FrameDone, Prepared
    from napari_xfusion._napari._session import FusionSession

__all__ = ["ResultRenderer", "RunState", "FLUSH_MS", "MIN_INTERVAL_MS", "result_roles"]

FLUSH_MS = 100
"""Longest time a frame that arrives alone (a network method's) waits before it is shown."""

MIN_INTERVAL_MS = 250
"""Shortest time between two GUI updates while frames stream in (at most 4 a second).

Each update costs a window composition (~15-20 ms of the GUI thread under Xvfb with Mesa's
llvmpipe, plus as much CPU in its threads) whatever it changed; at 10 a second that was a
third of the CPU a bicubic run needs (issue 15, benchmarks/bench_gui.py)."""

_RESULT_ROLES = ("fused", "uncertainty", "extra")


def result_roles() -> tuple[str, ...]:
    """Roles of the layers a run fills frame by frame."""
    return _RESULT_ROLES


@dataclass
class RunState:
    """What the renderer knows of the run in progress."""

    methods: tuple[str, ...]
    shape: tuple[int, int, int]
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    signature: dict[str, Any]
    extras: bool  # fill layers for the methods' extra outputs
    total: int = 0  # frames in the run
    expected: dict[int, int] = field(default_factory=dict)  # frame -> methods computing it
    units: tuple[str, ...] | None = None  # napari units per axis (time, y, x)
    axis_labels: tuple[str, ...] | None = None
    layers: dict[str, Image] = field(default_factory=dict)  # method -> fused layer
    outputs: dict[tuple[str, str], Image] = field(default_factory=dict)  # (method, output)
    counts: dict[int, int] = field(default_factory=dict)  # frame -> methods done
    done: int = 0  # frames every method has
    results: int = 0  # frames x methods received
    dropped: set[str] = field(default_factory=set)
    attention: bool = False  # a frame with attention scores arrived
    started: float = field(default_factory=time.perf_counter)


def _output_name(method: str, output: str) -> str:
    return f"uncertainty [{method}]" if output == "variance" else f"{output} [{method}]"


class ResultRenderer(QObject):
    """Writes queued results into layers and the session at most every :data:`FLUSH_MS`."""

    def __init__(
        self,
        viewer: napari.Viewer,
        session: FusionSession,
        on_progress: Callable[[RunState], None],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self.state: RunState | None = None
        self._on_progress = on_progress
        self._pending: list[FrameDone] = []
        self._last_flush = -1.0  # perf_counter() of the last flush that showed frames
        # layer -> the user's opacity, while it is veiled (its current frame not computed)
        self._hidden: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        # layer -> frame at which the user set its opacity while veiled: left as set there
        self._held: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._veiling = False  # our own opacity changes, not the user's
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(FLUSH_MS)
        self.timer.timeout.connect(self.flush)

    # --- start --------------------------------------------------------------------------

    def prepare(self, state: RunState, prep: Prepared) -> list[str]:
        """Make (or reuse) the fused layer of each method; returns the methods whose layers
        start empty (new inputs)."""
        self.state = state
        self._pending.clear()
        # A layer may be replaced (other shape): it carries over the user's opacity, not 0.
        self.unveil()
        fresh = []
        for method in state.methods:
            layer = ensure_fused_layer(
                self.viewer,
                method,
                state.shape,
                state.signature,
                scale=state.scale,
                translate=state.translate,
                units=state.units,
                axis_labels=state.axis_labels,
                stack=prep.stacks.get(method),
            )
            if not meta(layer).get("frames_done"):
                fresh.append(method)
            state.layers[method] = layer
            if layer.data is not prep.stacks.get(method):
                _commit_pages(layer, state.expected)  # a reused (or unforeseen new) layer
        prep.stacks.clear()  # the layers hold them now
        state.started = time.perf_counter()
        self.update_visibility()
        return fresh

    # --- frames -------------------------------------------------------------------------

    def push(self, item: FrameDone) -> None:
        """Queue one finished frame; it is shown at the next flush (within
        :data:`FLUSH_MS`, or :data:`MIN_INTERVAL_MS` after the previous flush)."""
        self._pending.append(item)
        if not self.timer.isActive():
            since = 1000.0 * (time.perf_counter() - self._last_flush)
            self.timer.start(int(max(FLUSH_MS, MIN_INTERVAL_MS - since)))

    def flush(self) -> None:
        """Show every queued frame now (also called when the run ends)."""
        self.timer.stop()
        state, items = self.state, self._pending
        self._pending = []
        if state is None or not items:
            return
        self._last_flush = time.perf_counter()
        touched: dict[str, tuple[Image, set[int]]] = {}
        for item in items:
            result = item.result
            if item.row is not None and item.row.has_attention:
                state.attention = True
            index = int(result.index)
            layer = state.layers.get(result.method)
            if layer is not None and self._alive(layer, result.method, index):
                self._write(layer, index, result.frame, touched)
                self._write_outputs(result, index, touched)
            state.results += 1
            count = state.counts[index] = state.counts.get(index, 0) + 1
            if count == state.expected.get(index, len(state.methods)):
                state.done += 1
        # Only a layer whose shown frame changed needs a redraw: the others are sliced from
        # their (updated) arrays when the slider moves there.
        shown = self._shown_frames()
        for name, (layer, indices) in touched.items():
            if shown.get(name) in indices:
                layer.refresh()
        self._refresh_change_views(touched)
        self.session.add_many([item.row for item in items])
        self.update_visibility()
        self._on_progress(state)

    def _alive(self, layer: Image, method: str, index: int) -> bool:
        if layer in self.viewer.layers:
            return True
        if method not in self.state.dropped:
            from napari.utils.notifications import show_warning

            self.state.dropped.add(method)
            show_warning(
                f"'{layer.name}' was deleted during the run: its frames from {index} on are "
                "dropped (the other methods go on; Cancel stops the run)."
            )
        return False

    @staticmethod
    def _write(layer: Image, index: int, frame: np.ndarray, touched: dict[str, Any]) -> None:
        write_frame(layer, index, frame, refresh=False)
        touched.setdefault(layer.name, (layer, set()))[1].add(index)

    def _shown_frames(self) -> dict[str, int]:
        """Frame index each layer shows at the current slider position."""
        if not self.viewer.dims.ndim:
            return {}
        t = self.viewer.dims.point[0]
        return {
            layer.name: int(round((t - layer.translate[0]) / layer.scale[0]))
            for layer in self.viewer.layers
            if layer.ndim == 3
        }

    def _write_outputs(self, result: Any, index: int, touched: dict[str, Any]) -> None:
        state = self.state
        if not state.extras:
            return
        outputs: dict[str, Any] = {}
        if getattr(result, "variance", None) is not None:
            outputs["variance"] = result.variance
        for name, value in (getattr(result, "extras", None) or {}).items():
            if isinstance(value, np.ndarray) and value.shape == state.shape[1:]:
                outputs[name] = value
        for name, value in outputs.items():
            layer = self._output_layer(result.method, name)
            if name == "variance":  # shown as a standard deviation, in the frames' units
                value = np.sqrt(np.clip(np.asarray(value, np.float32), 0, None))
            self._write(layer, index, np.asarray(value, np.float32), touched)

    def _output_layer(self, method: str, output: str) -> Image:
        from napari_xfusion._napari._layers import ensure_output_layer

        state = self.state
        key = (method, output)
        layer = state.outputs.get(key)
        if layer is None or layer not in self.viewer.layers:
            layer = ensure_output_layer(
                self.viewer,
                method,
                output,
                _output_name(method, output),
                state.shape,
                state.signature,
                scale=state.scale,
                translate=state.translate,
                units=state.units,
                axis_labels=state.axis_labels,
            )
            fused = state.layers.get(method)
            if fused is not None and fused in self.viewer.layers:
                # Just under its fused layer: it never covers the image it belongs to.
                self.viewer.layers.move(
                    self.viewer.layers.index(layer), self.viewer.layers.index(fused)
                )
            state.outputs[key] = layer
        return layer

    def _refresh_change_views(self, touched: dict[str, Any]) -> None:
        shown = self._shown_frames()
        for layer in self.viewer.layers:
            entry = layer.metadata.get(META)
            if isinstance(entry, dict) and entry.get("role") == "change":
                source = touched.get(entry.get("source"))
                # Frame t of a change view reads frames t and t - 1 of its source.
                t = shown.get(layer.name)
                if source is not None and {t, None if t is None else t - 1} & source[1]:
                    layer.refresh()

    # --- no black canvas ----------------------------------------------------------------

    def update_visibility(self, *_: Any) -> None:
        """Veil each result layer (opacity 0) where its current frame is not computed.

        The user's opacity is kept and given back as soon as the frame is done (or the slider
        moves to a computed frame), so the layers under it show in the meantime.
        """
        if not self.viewer.dims.ndim:
            return
        point = self.viewer.dims.point
        for layer in list(self.viewer.layers):
            if role(layer) not in _RESULT_ROLES or layer.ndim != 3:
                continue
            self._watch(layer)
            t = int(round((point[0] - layer.translate[0]) / layer.scale[0]))
            done = t in set(meta(layer).get("frames_done", []))
            held = self._held.get(layer)
            if held is not None:
                if held == t and not done:
                    continue  # the user set its opacity at this empty frame: left as set
                del self._held[layer]
            if not done and layer not in self._hidden:
                self._hidden[layer] = float(layer.opacity)
                self._set_opacity(layer, 0.0)
            elif done and layer in self._hidden:
                self._set_opacity(layer, self._hidden.pop(layer))

    def unveil(self) -> None:
        """Give every veiled layer its user's opacity back (until the next update)."""
        for layer, opacity in list(self._hidden.items()):
            self._set_opacity(layer, opacity)
        self._hidden.clear()

    def hidden_opacity(self, layer: Image) -> float | None:
        """The opacity ``layer`` gets back once its current frame is done (None: shown)."""
        return self._hidden.get(layer)

    def user_opacity(self, layer: Image) -> float:
        """The opacity the user gave ``layer`` (its own unless it is veiled)."""
        return self._hidden.get(layer, float(layer.opacity))

    def _set_opacity(self, layer: Image, value: float) -> None:
        self._veiling = True
        try:
            layer.opacity = value
        finally:
            self._veiling = False

    def _watch(self, layer: Image) -> None:
        if layer not in self._watched:
            self._watched.add(layer)
            layer.events.opacity.connect(self._on_opacity)

    def _on_opacity(self, event: Any) -> None:
        """The user changed a result layer's opacity: while veiled, that is the value to give
        back, and the layer shows with it at once (it stays so until its frame changes)."""
        layer = getattr(event, "source", None)
        if self._veiling or layer is None or layer not in self._hidden:
            return
        del self._hidden[layer]
        point = self.viewer.dims.point
        self._held[layer] = int(round((point[0] - layer.translate[0]) / layer.scale[0]))


def _commit_pages(layer: Image, frames: Any) -> None:
    """Write zeros into the frames a run will fill that are not done yet (a layer the worker
    did not allocate: see :func:`~napari_xfusion._napari._job.result_stack`), so the flushes
    that copy results in do not fault pages in one frame at a time."""
    data = layer.data
    if not isinstance(data, np.ndarray) or not data.flags.writeable:
        return
    done = set(meta(layer).get("frames_done", []))
    for t in sorted(frames):
        if 0 <= t < data.shape[0] and t not in done:
            data[t].fill(0)


def show_simulated_inputs(viewer: napari.Viewer, hr: Image, prep: Prepared) -> None:
    """Add the simulated LR stream and (regular keys) the HR key layer made from ``hr``."""
    from napari_xfusion._napari._layers import key_hold_translate, lr_overlay_transform

    scale, translate = lr_overlay_transform(tuple(hr.scale), tuple(hr.translate))
    entry = {"role": "lr", "binning": 4, "b0": prep.b0, "lr_psnr": prep.lr_psnr, "source": hr.name}
    for name in ("LR (simulated)", "HR keys (simulated)"):
        if name in viewer.layers:
            viewer.layers.remove(name)
    physical = {"units": tuple(hr.units), "axis_labels": tuple(hr.axis_labels)}
    viewer.add_image(
        prep.lr,
        name="LR (simulated)",
        scale=scale,
        translate=translate,
        **physical,
        contrast_limits=(0.0, 1.0),
        metadata={META: entry},
    )
    keys = prep.key_indices
    step = float(keys[1] - keys[0]) if keys.size > 1 else 1.0
    if np.all(np.diff(keys) == keys[1] - keys[0]):
        t_scale, t_shift = float(hr.scale[0]), float(hr.translate[0])
        viewer.add_image(
            prep.key_frames,
            name="HR keys (simulated)",
            scale=(step * t_scale, *hr.scale[1:]),
            # Between two keys the layer shows the key in force, not the next one.
            translate=(t_shift + key_hold_translate(step, t_scale), *hr.translate[1:]),
            contrast_limits=(0.0, 1.0),
            metadata={META: {"role": "hr_keys", "key_indices": keys.tolist(), "source": hr.name}},
            **physical,
        )
    if META not in hr.metadata:
        hr.metadata[META] = {"role": "truth"}
