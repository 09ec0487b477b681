"""The inputs part of the fusion dock: LR / HR / truth pickers, key rule, noise, frame window.

The pickers follow the layers as they arrive (:func:`assign_roles`): a layer's role metadata
first (what the sample and the readers record), then shapes (an LR stream and an HR stack 4x
its frame size; the full-rate stack of the LR's frame count is the truth), never one layer
for two roles. A choice the user made stays while its layer exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_xfusion._napari._job import describe_keys
from napari_xfusion._napari._layers import META, meta, role
from napari_xfusion.app.config import KeyRule, RunConfig
from napari_xfusion.core.degrade import SCALE

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = ["InputsPanel", "assign_roles", "input_layers", "NONE"]

NONE = "(none)"
_RESULT_ROLES = ("fused", "uncertainty", "change", "extra")


def input_layers(viewer: napari.Viewer) -> list[Layer]:
    """Greyscale image layers that can be inputs (not our results)."""
    from napari.layers import Image

    return [
        layer
        for layer in viewer.layers
        if isinstance(layer, Image) and not layer.rgb and role(layer) not in _RESULT_ROLES
    ]


def assign_roles(layers: Sequence[Layer], simulate: bool = False) -> dict[str, str | None]:
    """Layer names for the ``lr``, ``hr`` and ``truth`` pickers (None where none fits).

    Role metadata first (the last layer of a role wins), then shapes: an ``(T, h, w)`` LR and
    an HR stack of ``(K, 4h, 4w)`` frames (fewest frames: the keys), the truth a
    ``(T, 4h, 4w)`` stack. In ``simulate`` mode ``hr`` is the full-rate stack to simulate from
    (the truth role, else the stack with most frames). No name is given to two roles.
    """
    stacks = [layer for layer in layers if layer.ndim == 3]
    out: dict[str, str | None] = {"lr": None, "hr": None, "truth": None}
    used: set[str] = set()

    def take(slot: str, layer: Layer | None) -> None:
        if layer is not None and out[slot] is None and layer.name not in used:
            out[slot] = layer.name
            used.add(layer.name)

    def by_role(wanted: str) -> Layer | None:
        return next((layer for layer in reversed(stacks) if role(layer) == wanted), None)

    if simulate:
        take("hr", by_role("truth"))
        if out["hr"] is None and stacks:
            take("hr", max(stacks, key=lambda layer: layer.data.shape[0]))
        return out
    take("lr", by_role("lr"))
    take("hr", by_role("hr_keys"))
    take("truth", by_role("truth"))
    # By shape: LR is a stack with some other stack exactly 4x its frame size.
    free = [layer for layer in stacks if layer.name not in used]
    lr = next((s for s in stacks if s.name == out["lr"]), None)
    if lr is None:
        for cand in free:
            h, w = cand.data.shape[1:]
            big = [
                s for s in stacks if s is not cand and s.data.shape[1:] == (SCALE * h, SCALE * w)
            ]
            if big:
                take("lr", cand)
                lr = cand
                break
    if lr is not None:
        n, h, w = lr.data.shape
        big = [
            s for s in stacks if s.name not in used and s.data.shape[1:] == (SCALE * h, SCALE * w)
        ]
        full = [s for s in big if s.data.shape[0] == n]
        keys = sorted((s for s in big if s.data.shape[0] < n), key=lambda s: s.data.shape[0])
        take("hr", keys[0] if keys else None)
        take("truth", full[0] if full else None)
        if out["hr"] is None:  # only a full-rate HR stack: its keys come from the key rule
            out["hr"], out["truth"] = out["truth"], None
    return out


class InputsPanel(QGroupBox):
    """Input mode, layer pickers, key rule, simulated noise and the time window."""

    def __init__(self, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__("Inputs", parent)
        self.viewer = viewer
        self._auto: dict[str, str | None] = {}  # what the panel picked itself, per picker
        form = QFormLayout(self)
        self.use_layers = QRadioButton("LR + HR layers")
        self.use_layers.setToolTip("Fuse an LR layer with an HR layer (key frames or full rate)")
        self.simulate = QRadioButton("simulate from an HR stack")
        self.simulate.setToolTip(
            "Make the LR stream (4x4 binning + shot noise) and the HR keys from one full-rate "
            "HR stack, which is then the ground truth"
        )
        self.use_layers.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.use_layers)
        group.addButton(self.simulate)
        modes = QVBoxLayout()
        modes.addWidget(self.use_layers)
        modes.addWidget(self.simulate)
        form.addRow(modes)

        self.lr_combo = QComboBox()
        self.lr_combo.setToolTip("The LR (fast) stream: (T, h, w)")
        self.hr_combo = QComboBox()
        self.hr_combo.setToolTip(
            "HR key frames (K, 4h, 4w), or a full-rate HR stack (T, 4h, 4w) whose key frames "
            "are picked by the key rule"
        )
        self.truth_combo = QComboBox()
        self.truth_combo.setToolTip("Optional ground truth (T, 4h, 4w) for the metrics")
        self.lr_label, self.hr_label = QLabel("LR"), QLabel("HR")
        self.truth_label = QLabel("Ground truth")
        form.addRow(self.lr_label, self.lr_combo)
        form.addRow(self.hr_label, self.hr_combo)
        form.addRow(self.truth_label, self.truth_combo)

        self.key_step = QSpinBox()
        self.key_step.setRange(2, 10000)
        self.key_step.setValue(10)
        self.key_step.setToolTip("An HR key frame every k LR frames (0, k, 2k, ...)")
        self.first_last = QCheckBox("first and last only")
        self.first_last.setToolTip("Only the first and the last frame are HR keys")
        self.first_last.toggled.connect(lambda on: self.key_step.setEnabled(not on))
        # Key times given as a list by a loaded configuration (KeyRule.indices): they stay
        # the run's keys until the user sets a step or "first and last" here.
        self.explicit_keys: tuple[int, ...] | None = None
        self.key_step.valueChanged.connect(self._drop_explicit_keys)
        self.first_last.toggled.connect(self._drop_explicit_keys)
        keys = QHBoxLayout()
        keys.addWidget(self.key_step)
        keys.addWidget(self.first_last)
        self.keys_note = QLabel()
        self.keys_note.setWordWrap(True)
        form.addRow("HR key step", keys)
        form.addRow(self.keys_note)
        self.key_in_force = QLabel()
        self.key_in_force.setWordWrap(True)
        self.key_in_force.setToolTip(
            "The HR key layer shows, between two keys, the key in force: the last key at or "
            "before the current frame"
        )
        form.addRow(self.key_in_force)

        self.noise = QCheckBox("shot noise, LR PSNR")
        self.noise.setToolTip("Add photon shot noise to the simulated LR stream")
        self.noise.setChecked(True)
        self.noise_psnr = QDoubleSpinBox()
        self.noise_psnr.setRange(20.0, 60.0)
        self.noise_psnr.setSingleStep(1.0)
        self.noise_psnr.setValue(35.0)
        self.noise_psnr.setSuffix(" dB")
        self.noise_psnr.setToolTip("Target PSNR of the noisy LR stream against the clean one")
        self.noise.toggled.connect(self.noise_psnr.setEnabled)
        self.b0_label = QLabel("b0: solved at Run")
        self.b0_label.setToolTip("Blank-scan factor b0 (photons at full transmission) of the noise")
        noise = QHBoxLayout()
        noise.addWidget(self.noise)
        noise.addWidget(self.noise_psnr)
        self.noise_row = QWidget()
        noise_box = QVBoxLayout(self.noise_row)
        noise_box.setContentsMargins(0, 0, 0, 0)
        noise_box.addLayout(noise)
        noise_box.addWidget(self.b0_label)
        form.addRow(self.noise_row)

        self.start, self.end = QSpinBox(), QSpinBox()
        self.start.setToolTip("First LR frame to reconstruct")
        self.end.setToolTip("Last LR frame to reconstruct (inclusive)")
        for spin in (self.start, self.end):
            spin.setRange(0, 0)
        around = QPushButton("around current")
        around.setToolTip("Centre the window on the viewer's current frame")
        around.clicked.connect(self.window_around_current)
        whole = QPushButton("all")
        whole.setToolTip("Reconstruct every frame")
        whole.clicked.connect(self.window_all)
        window = QHBoxLayout()
        window.addWidget(self.start)
        window.addWidget(QLabel("to"))
        window.addWidget(self.end)
        window.addWidget(around)
        window.addWidget(whole)
        form.addRow("Frames", window)

        self.simulate.toggled.connect(self.refresh)
        self.hr_combo.currentTextChanged.connect(self._update_keys_note)
        for combo in (self.lr_combo, self.hr_combo):
            combo.currentTextChanged.connect(self._update_frame_range)

    # --- pickers ------------------------------------------------------------------------

    def _combos(self) -> dict[str, QComboBox]:
        return {"lr": self.lr_combo, "hr": self.hr_combo, "truth": self.truth_combo}

    def refresh(self, *_: Any) -> None:
        """Refill the pickers: keep the user's choices that still exist, guess the others."""
        simulate = self.simulate.isChecked()
        for widget in (self.lr_label, self.lr_combo, self.truth_label, self.truth_combo):
            widget.setVisible(not simulate)
        self.noise_row.setVisible(simulate)
        self.hr_label.setText("HR stack" if simulate else "HR")
        layers = input_layers(self.viewer)
        names = [layer.name for layer in layers]
        guesses = assign_roles(layers, simulate)
        taken: set[str] = set()
        for slot, combo in self._combos().items():
            current = combo.currentText()
            chosen_by_user = current and current != self._auto.get(slot) and current != NONE
            kept = chosen_by_user and current in names and current not in taken
            if kept:
                guess = current
            else:
                guess = guesses[slot] if guesses[slot] not in taken else None
            combo.blockSignals(True)
            combo.clear()
            if slot == "truth":
                combo.addItem(NONE)
            combo.addItems(names)
            if guess is not None:
                combo.setCurrentText(guess)
                taken.add(guess)
            else:
                combo.setCurrentIndex(0 if slot == "truth" else -1)
            # A kept user choice is not recorded as the panel's: it stays at every refresh.
            self._auto[slot] = None if kept else guess
            combo.blockSignals(False)
        self._update_keys_note()
        self._update_frame_range()
        self.update_key_in_force()

    def layer(self, slot: str) -> Layer | None:
        """The layer chosen for ``slot`` (``"lr"``, ``"hr"``, ``"truth"``), or None."""
        name = self._combos()[slot].currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def clock_layer(self) -> Layer | None:
        """The layer whose frames are the LR times (the HR stack when simulating)."""
        return self.layer("hr" if self.simulate.isChecked() else "lr")

    def layer_key_indices(self, layer: Layer | None) -> list[int] | None:
        """Key times recorded in ``layer``'s metadata (one per frame), else None."""
        if layer is None or self.simulate.isChecked():
            return None
        keys = meta(layer).get("key_indices") if META in layer.metadata else None
        if isinstance(keys, list) and len(keys) == layer.data.shape[0]:
            return [int(k) for k in keys]
        return None

    def layer_separation(self, layer: Layer | None) -> dict[str, Any] | None:
        """``{"separation": s}`` when ``layer``'s metadata records one (a file read by our
        reader), else None: what ``prepare_inputs`` reads as the LR file's metadata."""
        if layer is None or self.simulate.isChecked() or META not in layer.metadata:
            return None
        separation = meta(layer).get("separation")
        return None if separation is None else {"separation": separation}

    def key_rule(self) -> KeyRule:
        """The run's key rule: the loaded configuration's key list, else the HR layer's own
        key times (its metadata, as for a file with ``key_indices``), else first and last,
        else the step."""
        if self.explicit_keys is not None:
            return KeyRule(indices=self.explicit_keys)
        if self.layer_key_indices(self.layer("hr")) is not None:
            return KeyRule()
        if self.first_last.isChecked():
            return KeyRule(first_last=True)
        return KeyRule(step=self.key_step.value())

    def _drop_explicit_keys(self, *_: Any) -> None:
        if self.explicit_keys is not None:
            self.explicit_keys = None
            self._update_keys_note()

    def _update_keys_note(self, *_: Any) -> None:
        keys = self.layer_key_indices(self.layer("hr"))
        rule = keys is None
        self.key_step.setEnabled(rule and not self.first_last.isChecked())
        self.first_last.setEnabled(rule)
        if self.explicit_keys is not None:
            text = (
                f"Keys from the loaded settings: {describe_keys(self.explicit_keys)} (set a "
                "step or 'first and last' to use a rule instead)"
            )
        else:
            text = "" if rule else f"Keys from the HR layer: {describe_keys(keys)}"
        self.keys_note.setText(text)
        self.keys_note.setVisible(bool(text))

    def update_key_in_force(self, *_: Any) -> None:
        """Say which HR key the key layer shows at the current frame (the last one <= t)."""
        hr = self.layer("hr")
        keys = self.layer_key_indices(hr)
        clock = self.clock_layer()
        if not keys or clock is None or not self.viewer.dims.ndim:
            self.key_in_force.setVisible(False)
            return
        t = self.current_frame(clock)
        before = [k for k in keys if k <= t]
        after = [k for k in keys if k > t]
        if before and before[-1] == t:
            text = f"Frame {t} is an HR key."
        elif before:
            nxt = f"; next key {after[0]}" if after else ""
            text = f"Frame {t}: '{hr.name}' shows the key in force, frame {before[-1]}{nxt}."
        else:
            text = f"Frame {t}: no HR key yet (the first is at {keys[0]})."
        self.key_in_force.setText(text)
        self.key_in_force.setVisible(True)

    def current_frame(self, clock: Layer | None = None) -> int:
        """The viewer's current time as a frame index of ``clock`` (default the LR stream)."""
        clock = clock if clock is not None else self.clock_layer()
        if clock is None or not self.viewer.dims.ndim:
            return 0
        return int(round((self.viewer.dims.point[0] - clock.translate[0]) / clock.scale[0]))

    # --- time window --------------------------------------------------------------------

    def n_frames(self) -> int:
        """Frames of the LR stream (of the HR stack when simulating); 0 without one."""
        source = self.clock_layer()
        if source is None or source.ndim < 3:
            return 0
        return int(source.data.shape[0])

    def _update_frame_range(self, *_: Any) -> None:
        last = max(self.n_frames() - 1, 0)
        was_full = self.end.value() == self.end.maximum()
        self.start.setRange(0, last)
        self.end.setRange(0, last)
        if was_full:
            self.end.setValue(last)

    def window(self) -> tuple[int, int]:
        """The chosen (first, last) frames, inclusive."""
        return self.start.value(), self.end.value()

    def window_all(self) -> None:
        """Reconstruct every frame."""
        self.start.setValue(0)
        self.end.setValue(self.end.maximum())

    def window_around_current(self) -> None:
        """Centre the window on the viewer's current frame, keeping its width (a full window
        shrinks to two key gaps)."""
        last = self.end.maximum()
        width = self.end.value() - self.start.value()
        if width >= last:
            width = min(2 * self.key_step.value(), last)
        t = self.current_frame()
        start = min(max(t - width // 2, 0), max(last - width, 0))
        self.start.setValue(start)
        self.end.setValue(min(start + width, last))

    # --- remembered values --------------------------------------------------------------

    def view_state(self) -> dict[str, Any]:
        """Values to remember that a run may not use (the noise level while not simulating)."""
        return {"noise_psnr": self.noise_psnr.value(), "noise": self.noise.isChecked()}

    def restore_view(self, view: dict[str, Any]) -> None:
        """Set the widgets from :meth:`view_state`'s dict."""
        try:
            self.noise_psnr.setValue(float(view.get("noise_psnr", self.noise_psnr.value())))
        except (TypeError, ValueError):
            pass
        self.noise.setChecked(bool(view.get("noise", self.noise.isChecked())))

    def apply(self, config: RunConfig) -> None:
        """Set simulate, key rule, noise and window from ``config`` (layers are not chosen:
        the pickers follow the layers in the viewer)."""
        self.simulate.setChecked(config.simulate)
        if config.keys.step is not None:
            self.key_step.setValue(int(config.keys.step))
        self.first_last.setChecked(config.keys.first_last)
        if config.simulate:
            self.noise.setChecked(config.lr_psnr is not None)
        if config.lr_psnr is not None:
            self.noise_psnr.setValue(float(config.lr_psnr))
        if config.frames is None:
            self.window_all()
        else:
            start, stop = config.frames
            self.end.setValue(stop - 1)
            self.start.setValue(start)
        # Last: setting the step and "first and last" above drops a key list.
        self.explicit_keys = config.keys.indices
        self._update_keys_note()


def connect_layer_events(panel: InputsPanel, connect: Callable[[Any, Any], None]) -> None:
    """Refresh ``panel`` when layers arrive, leave, move or are renamed (``connect(emitter,
    callback)`` ties each connection to the dock's lifetime)."""
    events = panel.viewer.layers.events
    for event in (events.inserted, events.removed, events.moved):
        connect(event, panel.refresh)
    for layer in panel.viewer.layers:
        connect(layer.events.name, panel.refresh)
    connect(events.inserted, lambda event: connect(event.value.events.name, panel.refresh))
    connect(panel.viewer.dims.events.current_step, panel.update_key_in_force)
