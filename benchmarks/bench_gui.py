"""GUI cost of a run: the real fusion dock against the same work without a GUI (issue 15).

For each method, on the full-size simulated sample (400x1024 HR, 100x256 LR, a key every
20 frames, 100 frames by default), it measures in one process:

- ``engine``: :func:`napari_xfusion.engine.run` alone (reconstruction only);
- ``job``: the dock's worker generator :func:`~napari_xfusion._napari._job.fusion_job` driven
  without Qt (input checks, reconstruction, metrics against the truth): the work the GUI
  run does off the GUI thread;
- ``gui``: Run pressed in a shown napari viewer with the fusion, attention and metrics docks,
  until the run has ended and its last frames are on screen;
- ``gui cpu``: CPU seconds of the GUI thread during that run (what the dock costs, less
  sensitive to other load on the machine than wall time);
- event-loop gaps during the GUI run: a 20 ms ``QTimer`` records the time between its ticks;
  ``setup gap`` is the longest before the first frame shows (Run creating the result
  layers), ``gap max`` / ``gap p95`` are over the rest of the run. A stalled GUI thread shows
  as long gaps.

Targets (issue 15): gui <= 1.2 x job for bicubic; gaps max < 100 ms, p95 < 30 ms during an
``edvr-stf`` run (its shipped weights; ``--network-frames`` of them, 20 by default).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/bench_gui.py
    xvfb-run -a .venv/bin/python benchmarks/bench_gui.py --methods bicubic,bayesian --frames 40
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import numpy as np


def engine_seconds(method: str, lr: np.ndarray, keys_layer, frames: range) -> float:
    from napari_xfusion.engine import KeyFrames, run

    keys = KeyFrames(keys_layer[0], keys_layer[1]["metadata"]["xfusion"]["key_indices"])
    started = time.perf_counter()
    for _ in run([method], lr, keys, frames=frames):
        pass
    return time.perf_counter() - started


def job_seconds(method: str, sample, frames: range) -> float:
    from napari_xfusion._napari._job import FusionRequest, fusion_job
    from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig

    truth, keys, lr = (item[0] for item in sample)
    config = RunConfig(
        keys=KeyRule(indices=tuple(sample[1][1]["metadata"]["xfusion"]["key_indices"])),
        frames=(frames.start, frames.stop),
        methods=(MethodChoice(method),),
    )
    request = FusionRequest(config=config, hr=keys, lr=lr, truth=truth)
    started = time.perf_counter()
    for _ in fusion_job(request, threading.Event()):
        pass
    return time.perf_counter() - started


class GapRecorder:
    """Intervals between the ticks of a 20 ms QTimer on the GUI thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.intervals: list[float] = []
        self.times: list[float] = []  # when each interval ended, seconds since start()
        self._last = self._start = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.intervals.append(now - self._last)
        self.times.append(now - self._start)
        self._last = now

    def start(self) -> None:
        self._last = self._start = time.perf_counter()
        self.timer.start()

    def worst(self, n: int = 5) -> str:
        """The ``n`` longest gaps as ``ms@s`` (length, and when they ended after Run)."""
        order = np.argsort(self.intervals)[::-1][:n]
        return " ".join(f"{1000 * self.intervals[i]:.0f}@{self.times[i]:.2f}" for i in order)

    def stop(self, after: float = 0.0) -> tuple[float, float]:
        """(max, p95) in ms of the intervals that ended ``after`` seconds past start()."""
        self.timer.stop()
        keep = np.asarray(self.times) > after
        values = np.asarray(self.intervals)[keep] * 1000.0
        return (float(values.max()), float(np.percentile(values, 95))) if values.size else (0, 0)


def gui_run(
    viewer, widget, method: str, frames: range, verbose: bool = False
) -> tuple[float, float, float, float, float]:
    """Seconds from Run to the end of the run with its last frames shown, CPU seconds of the
    GUI thread meanwhile, the longest gap before the first frame showed, then the gaps' max
    and p95 (ms) from the first frame on."""
    from qtpy.QtCore import QEventLoop, QTimer

    for name, box in widget.method_boxes.items():
        box.setChecked(name == method)
    widget.start.setValue(frames.start)
    widget.end.setValue(frames.stop - 1)
    for layer in list(viewer.layers):
        if layer.name.startswith("fused ["):
            viewer.layers.remove(layer)
    loop = QEventLoop()
    gaps = GapRecorder()
    # Let the window settle, then measure.
    QTimer.singleShot(300, loop.quit)
    loop.exec()
    first_shown: list[float] = []
    record_first = lambda *_: first_shown or first_shown.append(time.perf_counter())  # noqa: E731
    widget.session.frames_added.connect(record_first)
    gaps.start()
    started, cpu = time.perf_counter(), time.thread_time()
    if not widget.run(resume=False):
        raise SystemExit(f"the run did not start: {widget.status.text()}")
    widget.worker.finished.connect(loop.quit)
    loop.exec()
    seconds = time.perf_counter() - started
    gui_cpu = time.thread_time() - cpu  # CPU time of the GUI thread itself during the run
    widget.session.frames_added.disconnect(record_first)
    # Gaps from the first frame on: Run itself pauses the GUI once (napari creating the
    # result layers, ~0.3 s), which the "setup" column shows.
    setup = first_shown[0] - started if first_shown else 0.0
    setup_gap = max(gaps.intervals[: int(np.searchsorted(gaps.times, setup)) + 1] or [0.0])
    worst, p95 = gaps.stop(after=setup)
    if verbose:
        print(f"  {method}: longest gaps (ms@s after Run): {gaps.worst()}", flush=True)
    summary = widget.last_summary
    if summary is None or summary.error or summary.cancelled:
        raise SystemExit(f"the run failed: {widget.status.text()}")
    return seconds, gui_cpu, 1000 * setup_gap, worst, p95


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="bicubic,bayesian,edvr-stf")
    parser.add_argument("--frames", type=int, default=100, help="frames of the sample to fuse")
    parser.add_argument(
        "--network-frames",
        type=int,
        default=20,
        help="frames for methods that need torch (edvr-stf: ~1 s a full-size frame on a CPU)",
    )
    parser.add_argument("--size", default="400x1024", help="HR frame size HxW")
    parser.add_argument(
        "--no-attention-dock",
        action="store_true",
        help="leave the attention dock out (how much of the gaps its matplotlib redraws cost)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print the longest gaps")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.split("x"))

    import napari
    import napari._qt.qt_main_window
    from qtpy.QtCore import QSettings

    from napari_xfusion._napari._attention import AttentionWidget
    from napari_xfusion._napari._metrics import MetricsWidget
    from napari_xfusion._napari._sample import make_sample
    from napari_xfusion._napari._widget import FusionWidget
    from napari_xfusion.engine import configure_torch_threads

    configure_torch_threads()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp())
    napari._qt.qt_main_window.SHOW_QT_WARNING = False
    started = time.perf_counter()
    sample = make_sample(args.frames, (height, width), key_step=20)
    print(
        f"sample: {args.frames} frames of {height}x{width} in {time.perf_counter() - started:.1f} s"
    )
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1700, 1000)
    for data, kwargs, _ in sample:
        viewer.add_image(data, **kwargs)
    widget = FusionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fusion (napari-xfusion)")
    if args.no_attention_dock:
        widget._open_dock = lambda title: None  # the dock would open it at the first scores
    else:
        viewer.window.add_dock_widget(AttentionWidget(viewer), name="Attention", area="bottom")
    viewer.window.add_dock_widget(MetricsWidget(viewer), name="Metrics", area="bottom")

    header = f"{'method':<10} {'frames':>6} {'engine s':>9} {'job s':>7} {'gui s':>7}"
    header += f" {'gui/job':>8} {'gui cpu s':>10} {'setup gap':>10} {'gap max ms':>11}"
    header += f" {'gap p95 ms':>11}"
    rows = []
    from napari_xfusion.methods.registry import get_spec

    for method in args.methods.split(","):
        n = min(args.frames, args.network_frames) if get_spec(method).needs_torch else args.frames
        frames = range(0, n)
        engine = engine_seconds(method, sample[2][0], sample[1], frames)
        job = job_seconds(method, sample, frames)
        gui, gui_cpu, setup, worst, p95 = gui_run(viewer, widget, method, frames, args.verbose)
        rows.append(
            f"{method:<10} {len(frames):>6} {engine:>9.2f} {job:>7.2f} {gui:>7.2f}"
            f" {gui / job:>8.2f} {gui_cpu:>10.2f} {setup:>10.0f} {worst:>11.0f} {p95:>11.0f}"
        )
        print(rows[-1], flush=True)
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(header)
    print("\n".join(rows))
    viewer.close()


if __name__ == "__main__":
    main()
