"""Shared fixtures.

- ``tiny_sample``: a seeded simulated sequence small enough for GUI tests on 2 CPU cores
  (8 frames, HR 64x128, LR 16x32, a key every 4 frames), as napari layer data.
- ``isolated_settings``: the fusion widget's remembered values go to ``tmp_path``, never to
  the user's config folder.
- ``_one_torch_thread`` (automatic): torch runs the suite's tiny tensors on one thread.
- ``plugin``: a tiny installed distribution (dist-info on ``sys.path``) whose entry points
  declare the method ``flat`` (a constant frame, option ``level``) and a broken entry ``oops``.
- ``load_benchmark``: imports a script of ``benchmarks/`` (not a package) as a module,
  ``load_benchmark("speed_table")``.
- ``fusion_viewer``: a napari viewer (``make_napari_viewer``) holding ``tiny_sample`` and a
  docked fusion widget; at teardown any run is cancelled and its thread awaited, and the test
  fails if a worker thread is still alive.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
import textwrap
from pathlib import Path

import pytest


def pytest_configure(config):
    """Ctrl-C raises KeyboardInterrupt in the tests even when the suite was started with SIGINT
    ignored (``nohup``, a background job): Python only installs its handler when SIGINT is not
    ignored at start-up, and the interrupt tests check that handler is restored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread for the whole suite: the tensors are tiny, and on 2 shared cores a
    second OpenMP thread spin-waits more than it computes (a tiny training step: 0.43 s of CPU
    with 2 threads, 0.02 s with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sample():
    """napari layer data ``[(truth, kwargs, "image"), (hr_keys, ...), (lr, ...)]``."""
    from napari_xfusion._napari._sample import make_sample

    return make_sample(8, (64, 128), key_step=4, noise_psnr=35.0, seed=1)


@pytest.fixture
def isolated_settings(tmp_path):
    """Point the widget's QSettings (INI, user scope) at a fresh folder for this test."""
    from qtpy.QtCore import QSettings

    QSettings.setPath(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings")
    )
    return tmp_path / "settings"


@pytest.fixture
def notifications():
    """Messages napari shows the user during the test (GUI tests)."""
    from napari.utils.notifications import notification_manager

    seen = []

    def record(event):
        notification = getattr(event, "value", event)
        seen.append(str(getattr(notification, "message", notification)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def fusion_viewer(make_napari_viewer, tiny_sample, isolated_settings, qtbot):
    """``(viewer, widget)``: the tiny sample loaded and the fusion widget docked."""
    from qtpy.QtCore import QThreadPool

    from napari_xfusion._napari._widget import FusionWidget

    viewer = make_napari_viewer()
    for data, kwargs, _ in tiny_sample:
        viewer.add_image(data.copy(), **kwargs)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fusion (napari-xfusion)")
    yield viewer, widget
    if widget.running:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.running, timeout=30000)
    assert QThreadPool.globalInstance().waitForDone(10000), "a worker thread is still running"
    assert QThreadPool.globalInstance().activeThreadCount() == 0


PLUGIN = '''
import numpy as np

from napari_xfusion.methods.base import Reconstruction, Reconstructor
from napari_xfusion.methods.registry import MethodSpec, OptionSpec


class Flat(Reconstructor):
    """Test method: a constant HR frame of value ``level``."""

    name = "flat"
    uses_hr_keys = False

    def __init__(self, level: float = 0.5):
        self.level = level

    def reconstruct(self, inputs):
        h, w = inputs.lr.shape[1:]
        return Reconstruction(frame=np.full((4 * h, 4 * w), self.level, np.float32))


SPEC = MethodSpec(
    "flat",
    "xf_plugin_demo:Flat",
    "constant frame (test plugin)",
    options=(OptionSpec("level", "float", 0.5, "grey level"),),
)


def make_spec():
    return SPEC


def broken():
    raise RuntimeError("plugin bug")
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    from napari_xfusion import methods
    from napari_xfusion.methods.registry import available_methods

    """A tiny installed distribution on sys.path declaring ``flat`` (and a broken entry)."""
    (tmp_path / "xf_plugin_demo.py").write_text(PLUGIN)
    info = tmp_path / "xf_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xf-plugin-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [napari_xfusion.methods]
            flat = xf_plugin_demo:make_spec
            oops = xf_plugin_demo:broken
            """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    monkeypatch.undo()
    sys.modules.pop("xf_plugin_demo", None)
    methods.METHODS.pop("flat", None)
    available_methods(refresh=True)
