"""Attention dock: normalised backward / forward attention scores against frame index.

A matplotlib ``FigureCanvasQTAgg`` drawn in napari's theme colours (as napari-matplotlib does),
updated as frames arrive; key frames are marked; clicking near a point moves the viewer's time
slider to that frame.

The GUI thread pays little for it during a run: a full Agg draw (axes, ticks, legend, layout)
costs it 50-100 ms, so it happens only when what is drawn around the curves changes (a new
run, other methods, the y range growing past its rounded limits, the theme); new points of
the same curves are blitted: the cached background is restored and only the curves are drawn
on it (a few ms), shown by an ordinary coalesced widget update. A dock that is not visible (a
hidden tab) draws nothing until it is shown.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_xfusion._napari._dock import SessionDock
from napari_xfusion._napari._session import FrameRecord
from napari_xfusion._napari._util import hold_updates

if TYPE_CHECKING:
    import napari

__all__ = ["AttentionWidget", "theme_colours"]

# Backward (key before t) and forward (key after t) curves; line style tells methods apart.
_COLOURS = {"backward": "#4fa3ff", "forward": "#ff8c42"}
_STYLES = ["-", "--", ":", "-."]
_Y_STEP = 0.25  # y limits are rounded out to this, so new points rarely change them


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
        self._background: Any = None  # the figure without its curves, after a full draw
        self._stale = False  # something changed while the dock was not visible
        self.full_draws = 0  # Agg draws of the whole figure (what the blits save)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.canvas.mpl_connect("draw_event", self._on_draw)
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
        # A full matplotlib draw costs the GUI thread 50-100 ms: skip it when a new run changes
        # nothing that is plotted (no attention before or now, same keys and frame count).
        drawn = (tuple(self.session.run.keys.tolist()), self.session.run.n_frames)
        expected = self.expected_methods()
        if self._lines or expected or self.series() or drawn != getattr(self, "_drawn", None):
            self.redraw()

    def expected_methods(self) -> list[str]:
        """Methods of the current run that give attention scores to the HR keys (their
        curves are laid out at the start, so the first points need no full draw)."""
        from napari_xfusion.methods.registry import get_spec

        out = []
        for name in self.session.run.methods:
            try:
                spec = get_spec(name)
            except (KeyError, ValueError):
                continue
            if spec.attention and spec.uses_hr_keys:
                out.append(name)
        return out

    def on_frames(self, records: list[FrameRecord]) -> None:
        if not any(record.has_attention for record in records):
            return
        series = self.series()
        wanted = {(m, n) for m in series for n in ("backward", "forward")}
        drawn = (tuple(self.session.run.keys.tolist()), self.session.run.n_frames)
        if not self._lines or set(self._lines) != wanted or drawn != getattr(self, "_drawn", None):
            self.redraw()
            return
        # Same curves, more points: move the data only, and blit them unless the y range
        # had to grow (then the axes change: a full draw).
        for (method, name), line in self._lines.items():
            line.set_data(series[method]["index"], series[method][f"{name}_norm"])
        if self._fit_y(series) or not self.blit_curves():
            self._request_draw()

    def _request_draw(self) -> None:
        """A full draw at the next event-loop turn, or when the dock is shown again."""
        if self.canvas.isVisible():
            self._stale = False
            self.canvas.draw_idle()
        else:
            self._stale = True

    def showEvent(self, event: Any) -> None:  # Qt's name
        super().showEvent(event)
        if self._stale:
            self._request_draw()

    def _on_draw(self, _event: Any) -> None:
        """After a full draw: keep the background, then draw the curves (animated artists,
        left out of the full draw) on it."""
        self.full_draws += 1
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._background_size = (self.canvas.width(), self.canvas.height())
        self._draw_curves()

    def _draw_curves(self) -> None:
        for line in self._lines.values():
            self.axes.draw_artist(line)

    def blit_curves(self) -> bool:
        """Show the current curves on the cached background (no full draw); returns False
        when there is none to draw on (then a full draw is needed)."""
        if not self.canvas.isVisible():
            self._stale = True
            return True
        background = self._background
        size = (self.canvas.width(), self.canvas.height())
        if background is None or getattr(self, "_background_size", None) != size:
            return False
        hold_updates(self.canvas)  # shown with the rest of the batch (one window update)
        self.canvas.restore_region(background)
        self._draw_curves()
        self.canvas.update()  # a coalesced paint of the Agg buffer, never a forced repaint
        return True

    def series(self) -> dict[str, dict[str, np.ndarray]]:
        """Per method with attention: frame indices and normalised scores (what is plotted)."""
        out = {}
        for method in self.session.methods():
            data = self.session.attention_series(method)
            if data["index"].size:
                out[method] = data
        return out

    def redraw(self) -> None:
        """Rebuild the plot from everything recorded so far; drawn in full at the next
        event-loop turn (or when the dock is next shown)."""
        ax = self.axes
        colours = getattr(self, "_colours", None) or theme_colours(self.viewer)
        for line in ax.lines[:]:
            line.remove()
        if ax.legend_ is not None:
            ax.legend_.remove()
        self._lines.clear()
        self.figure.set_layout_engine("constrained")
        series = self.series()
        # The hint goes when scores are due: hiding it later would resize the plot (a full
        # draw) at the first points.
        shown = bool(series) or bool(self.expected_methods())
        empty = np.zeros(0)
        for method in self.expected_methods():  # empty curves, filled in by blits
            series.setdefault(
                method, {"index": empty, "backward_norm": empty, "forward_norm": empty}
            )
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
                    animated=True,  # drawn on the cached background (blit), see _on_draw
                )
                self._lines[(method, name)] = line
        ax.set_xlabel("frame")
        self._draw_time_axis(colours)
        ax.set_ylabel("normalised attention")
        if n_frames:
            ax.set_xlim(-0.5, n_frames - 0.5)
        ax.set_ylim(-_Y_STEP, 1.0 + _Y_STEP)  # normalised scores: 1 at the keys
        if series:
            self._fit_y(series, fresh=True)
            legend = ax.legend(loc="upper right", fontsize="small", frameon=False)
            for text in legend.get_texts():
                text.set_color(colours["text"])
        self.hint.setVisible(not shown)
        self._drawn = (tuple(keys.tolist()), n_frames)
        self._background = None
        self._request_draw()

    def _fit_y(self, series: dict[str, dict[str, np.ndarray]], fresh: bool = False) -> bool:
        """Fit the y limits to the scores (at least [0, 1], rounded out to ``_Y_STEP``);
        between full redraws they only grow. Returns whether they changed."""
        finite = np.concatenate(
            [d[f"{n}_norm"] for d in series.values() for n in ("backward", "forward")]
        )
        finite = finite[np.isfinite(finite)]
        if not finite.size:
            return False
        low = math.floor(min(float(finite.min()), 0.0) / _Y_STEP - 0.2) * _Y_STEP
        high = math.ceil(max(float(finite.max()), 1.0) / _Y_STEP + 0.2) * _Y_STEP
        if not fresh:
            current = self.axes.get_ylim()
            if current[0] <= low and high <= current[1]:
                return False
            low, high = min(low, current[0]), max(high, current[1])
        self.axes.set_ylim(low, high)
        return True

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
