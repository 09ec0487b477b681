"""Attention dock: normalised backward / forward attention scores against frame index.

A matplotlib ``FigureCanvasQTAgg`` drawn in napari's theme colours (as napari-matplotlib does),
redrawn as frames arrive; key frames are marked; clicking near a point moves the viewer's time
slider to that frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_xfusion._napari._dock import SessionDock
from napari_xfusion._napari._session import FrameRecord

if TYPE_CHECKING:
    import napari

__all__ = ["AttentionWidget", "theme_colours"]

# Backward (key before t) and forward (key after t) curves; line style tells methods apart.
_COLOURS = {"backward": "#4fa3ff", "forward": "#ff8c42"}
_STYLES = ["-", "--", ":", "-."]


def theme_colours(viewer: napari.Viewer) -> dict[str, str]:
    """Background, foreground (axes) and text colours of the viewer's napari theme."""
    from napari.utils.theme import get_theme

    try:
        theme = get_theme(viewer.theme)
    except (ValueError, KeyError):  # e.g. a theme removed since the settings were saved
        theme = get_theme("dark")
    return {
        "background": theme.background.as_hex(),
        "foreground": theme.secondary.as_hex(),
        "text": theme.text.as_hex(),
        "highlight": theme.current.as_hex(),
    }


class AttentionWidget(SessionDock):
    """Dock plotting the normalised attention of each method with attention scores."""

    def __init__(self, napari_viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(napari_viewer, parent)
        self.figure = Figure(figsize=(6, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.axes = self.figure.add_subplot()
        self.hint = QLabel(
            "Attention scores appear here while a method with temporal attention (edvr-stf) "
            "runs. Click a point to go to that frame."
        )
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.canvas)
        layout.addWidget(self.hint)

        self._lines: dict[tuple[str, str], Any] = {}
        self._key_artists: list[Any] = []
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.connect_session()
        self.on_theme()

    # --- drawing -----------------------------------------------------------------------

    def on_theme(self, *_: Any) -> None:
        colours = theme_colours(self.viewer)
        self._colours = colours
        self.figure.set_facecolor(colours["background"])
        ax = self.axes
        ax.set_facecolor(colours["background"])
        for spine in ax.spines.values():
            spine.set_color(colours["text"])
        ax.tick_params(colors=colours["text"], which="both")
        ax.xaxis.label.set_color(colours["text"])
        ax.yaxis.label.set_color(colours["text"])
        ax.title.set_color(colours["text"])
        self.redraw()

    def on_started(self, *_: Any) -> None:
        # A matplotlib draw costs the GUI thread ~0.1-0.2 s: skip it when a new run changes
        # nothing that is plotted (no attention before or now, same keys and frame count).
        drawn = (tuple(self.session.run.keys.tolist()), self.session.run.n_frames)
        if self._lines or self.series() or drawn != getattr(self, "_drawn", None):
            self.redraw()

    def on_frames(self, records: list[FrameRecord]) -> None:
        if not any(record.has_attention for record in records):
            return
        series = self.series()
        wanted = {(m, n) for m in series for n in ("backward", "forward")}
        drawn = (tuple(self.session.run.keys.tolist()), self.session.run.n_frames)
        if not self._lines or set(self._lines) != wanted or drawn != getattr(self, "_drawn", None):
            self.redraw()
            return
        # Same curves, more points: move the data only. A full redraw (axes, legend, layout)
        # costs the GUI thread ~0.1-0.2 s per frame during a network run.
        for (method, name), line in self._lines.items():
            line.set_data(series[method]["index"], series[method][f"{name}_norm"])
        self._fit_y(series)
        # The layout was fixed by the last full redraw: not solved again for new points.
        self.figure.set_layout_engine("none")
        self.canvas.draw_idle()

    def series(self) -> dict[str, dict[str, np.ndarray]]:
        """Per method with attention: frame indices and normalised scores (what is plotted)."""
        out = {}
        for method in self.session.methods():
            data = self.session.attention_series(method)
            if data["index"].size:
                out[method] = data
        return out

    def redraw(self) -> None:
        """Draw everything recorded so far (cheap: a few hundred points at most)."""
        ax = self.axes
        colours = getattr(self, "_colours", None) or theme_colours(self.viewer)
        for line in ax.lines[:]:
            line.remove()
        if ax.legend_ is not None:
            ax.legend_.remove()
        self._lines.clear()
        self.figure.set_layout_engine("constrained")
        series = self.series()
        keys = self.session.run.keys
        n_frames = self.session.run.n_frames
        for key in keys:
            ax.axvline(key, color=colours["foreground"], linewidth=1.0, zorder=0)
        for i, (method, data) in enumerate(series.items()):
            style = _STYLES[i % len(_STYLES)]
            for name in ("backward", "forward"):
                values = data[f"{name}_norm"]
                (line,) = ax.plot(
                    data["index"],
                    values,
                    style,
                    marker="o",
                    markersize=3,
                    color=_COLOURS[name],
                    label=f"{name} [{method}]" if len(series) > 1 else name,
                )
                self._lines[(method, name)] = line
        ax.set_xlabel("frame")
        self._draw_time_axis(colours)
        ax.set_ylabel("normalised attention")
        if n_frames:
            ax.set_xlim(-0.5, n_frames - 0.5)
        if series:
            self._fit_y(series)
            legend = ax.legend(loc="upper right", fontsize="small", frameon=False)
            for text in legend.get_texts():
                text.set_color(colours["text"])
        self.hint.setVisible(not series)
        self._drawn = (tuple(keys.tolist()), n_frames)
        self.canvas.draw_idle()

    def _fit_y(self, series: dict[str, dict[str, np.ndarray]]) -> None:
        finite = np.concatenate(
            [d[f"{n}_norm"] for d in series.values() for n in ("backward", "forward")]
        )
        finite = finite[np.isfinite(finite)]
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
            pad = 0.05 * max(high - low, 0.1)
            self.axes.set_ylim(min(low, 0.0) - pad, max(high, 1.0) + pad)

    def _draw_time_axis(self, colours: dict[str, str]) -> None:
        """A second x axis in the time units of the results when frames have a duration."""
        run = self.session.run
        old = getattr(self, "_time_axis", None)
        if old is not None:
            old.remove()
            self._time_axis = None
        if run.time_scale == 1.0 and run.time_shift == 0.0 and run.time_unit in ("pixel", ""):
            return
        scale, shift = run.time_scale, run.time_shift
        axis = self.axes.secondary_xaxis(
            "top", functions=(lambda f: shift + scale * f, lambda t: (t - shift) / scale)
        )
        unit = "" if run.time_unit in ("pixel", "") else f" ({run.time_unit})"
        axis.set_xlabel(f"time{unit}", color=colours["text"])
        axis.tick_params(colors=colours["text"])
        self._time_axis = axis

    # --- interaction ---------------------------------------------------------------------

    def frame_near(self, x: float) -> int | None:
        """The plotted frame index closest to ``x`` (data coordinates), or None."""
        indices = [d["index"] for d in self.series().values()]
        if not indices:
            return None
        all_indices = np.unique(np.concatenate(indices))
        return int(all_indices[np.argmin(np.abs(all_indices - x))])

    def go_to_frame(self, index: int) -> None:
        """Move the viewer's time slider (axis 0) to ``index``."""
        self.viewer.dims.set_point(0, self.session.world_time(index))

    def _on_click(self, event: Any) -> None:
        if event.inaxes is not self.axes or event.xdata is None:
            return
        index = self.frame_near(event.xdata)
        if index is not None:
            self.go_to_frame(index)
