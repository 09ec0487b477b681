"""The fusion dock's settings: one :class:`~napari_xfusion.app.config.RunConfig` (JSON) plus a
small dict of view state.

The remembered settings (QSettings, between sessions) and "Save settings..." / "Load
settings..." are the same run configuration the CLI reads with ``--config`` and writes as
``<stem>.config.json`` beside every export, so a run saved by either face loads into the other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qtpy.QtCore import QSettings
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton

from napari_xfusion.app.config import RunConfig

__all__ = ["SettingsMixin"]


class SettingsMixin:
    """Settings of :class:`~napari_xfusion._napari._widget.FusionWidget` (which provides
    ``inputs``, ``methods_panel``, ``results``, ``base_config`` and ``config()``)."""

    def _settings_buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        save, load = QPushButton("Save settings..."), QPushButton("Load settings...")
        save.setToolTip("Save the run's settings as a configuration file (JSON), as the CLI's")
        load.setToolTip(
            "Load a configuration file: one saved here, or the <name>.config.json the CLI and "
            "every export write"
        )
        save.clicked.connect(self._save_dialog)
        load.clicked.connect(self._load_dialog)
        row.addWidget(save)
        row.addWidget(load)
        return row

    @staticmethod
    def settings() -> QSettings:
        """Where the widget remembers its values (an INI file in the user's config folder)."""
        return QSettings(
            QSettings.Format.IniFormat, QSettings.Scope.UserScope, "napari-xfusion", "fusion"
        )

    def state(self) -> dict[str, Any]:
        """Every remembered value, JSON-able: ``{"config": RunConfig.to_dict(), "view": {..}}``
        (the view dict: what is not part of a run, e.g. whether extra outputs are shown)."""
        try:
            config = self.config()
        except ValueError:  # e.g. no method ticked: remember the rest
            config = self.base_config
        view = {**self.results.state(), **self.inputs.view_state()}
        return {"config": config.to_dict(), "view": view}

    def restore(self, state: dict[str, Any]) -> None:
        """Set the widgets from a :meth:`state` dict (a bad config is ignored)."""
        try:
            config = RunConfig.from_dict(state["config"])
        except (KeyError, TypeError, ValueError):
            config = None
        view = state.get("view", {}) if isinstance(state.get("view"), dict) else {}
        self.inputs.restore_view(view)  # before the config: its noise level wins
        if config is not None:
            self.apply_config(config)
        self.results.restore(view)

    def apply_config(self, config: RunConfig) -> list[str]:
        """Show ``config`` in the panels (it becomes the base of the next run's config);
        returns the methods it names that are not installed here."""
        self.base_config = config
        self.inputs.apply(config)
        self.results.set_units(config.units)
        return self.methods_panel.apply(config)

    def save_settings(self, path: str | os.PathLike[str]) -> Path:
        """Write the current values as a run configuration (JSON, atomic); ``ValueError``
        says what to fix first."""
        return self.config().save(path)

    def load_settings(self, path: str | os.PathLike[str]) -> RunConfig:
        """Read a run configuration (saved here or by the CLI) into the panels."""
        config = RunConfig.load(path)
        skipped = self.apply_config(config)
        if skipped:
            from napari.utils.notifications import show_warning

            show_warning(f"{path}: methods not installed here, left out: {', '.join(skipped)}")
        return config

    def _save_dialog(self) -> None:
        from napari.utils.notifications import show_error

        name, _ = QFileDialog.getSaveFileName(self, "Save settings", "", "JSON (*.json)")
        if name:
            try:
                self.save_settings(name)
            except (OSError, ValueError) as exc:
                show_error(f"Settings not saved: {exc}")

    def _load_dialog(self) -> None:
        from napari.utils.notifications import show_error

        name, _ = QFileDialog.getOpenFileName(self, "Load settings", "", "JSON (*.json)")
        if name:
            try:
                self.load_settings(name)
            except (OSError, ValueError) as exc:
                show_error(f"Settings not loaded: {exc}")

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
