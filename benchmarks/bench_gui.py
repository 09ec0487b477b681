"""GUI cost of a run: the real fusion dock against the same work without a GUI (issue 15).

For each method, on the full-size simulated sample (400x1024 HR, 100x256 LR, a key every
20 frames, 100 frames by default), it measures in one process, ``--repeat`` times in turn
(engine, job, GUI, engine, job, GUI, ...) so that the machine's load hits all three alike:

- ``engine``: :func:`napari_xfusion.engine.run` alone (reconstruction only);
- ``job``: the dock's worker generator :func:`~napari_xfusion._napari._job.fusion_job` driven
  without Qt (input checks, reconstruction, metrics against the truth): the work the GUI
  run does off the GUI thread, and what ``gui`` is compared with (the GUI run computes the
  metrics too; ``engine`` does not);
- ``gui``: Run pressed in a shown napari viewer with the fusion, attention and metrics docks,
  until the run has ended and its last frames are on screen;
- CPU seconds: of the job (``job cpu``), of the whole process during the GUI run (``run
  cpu``: worker, GUI thread, the OpenGL rasteriser's threads under Xvfb), and of the GUI
  thread alone (``gui thr``, also per frame); ``ui`` = run cpu - job cpu, what the GUI adds
  in all threads. On a machine where other work takes the other cores, wall time is about
  CPU time, so ``(job cpu + ui) / job cpu`` is what gui/job tends to there;
- ``upd``: window updates (Qt ``UpdateRequest`` events of top-level windows: each one a
  composition of the whole window, under Xvfb done in software);
- event-loop gaps during the GUI run: a 20 ms ``QTimer`` records the time between its ticks;
  ``setup`` is the longest before the first frame shows (Run creating the result layers),
  ``max`` / ``p95`` are over the rest of the run. A stalled GUI thread shows as long gaps.

Each column is the median over the repeats, with the minimum in brackets for times
(the least disturbed run); ``gui/job`` is the ratio of the medians [of the minimums].
Targets (issue 15): gui <= 1.2 x job for bicubic over 100 frames; gaps max < 100 ms, p95 <
30 ms during an ``edvr-stf`` run (its shipped weights; ``--network-frames`` of them, 20 by
default). ``--profile FILE`` writes a cProfile of the GUI thread over the GUI runs.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/bench_gui.py
    xvfb-run -a .venv/bin/python benchmarks/bench_gui.py --methods bicubic --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np


def engine_seconds(method: str, lr: np.ndarray, keys_layer, frames: range) -> float:
    from napari_xfusion.engine import KeyFrames, run

    keys = KeyFrames(keys_layer[0], keys_layer[1]["metadata"]["xfusion"]["key_indices"])
    started = time.perf_counter()
    for _ in run([method], lr, keys, frames=frames):
        pass
    return time.perf_counter() - started


def job_seconds(method: str, sample, frames: range) -> tuple[float, float]:
    """Wall and CPU seconds of the dock's worker generator alone."""
    from napari_xfusion._napari._job import FusionRequest, fusion_job
    from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig

    truth, keys, lr = (item[0] for item in sample)
    config = RunConfig(
        keys=KeyRule(indices=tuple(sample[1][1]["metadata"]["xfusion"]["key_indices"])),
        frames=(frames.start, frames.stop),
        methods=(MethodChoice(method),),
    )
    request = FusionRequest(config=config, hr=keys, lr=lr, truth=truth)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in fusion_job(request, threading.Event()):
        pass
    return time.perf_counter() - started, time.process_time() - cpu


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


def _update_counter():
    """An application event filter counting ``UpdateRequest`` events of top-level windows."""
    from qtpy.QtCore import QEvent, QObject

    class Counter(QObject):
        count = 0

        def eventFilter(self, obj, event):  # Qt's name
            if event.type() == QEvent.Type.UpdateRequest:
                Counter.count += 1
            return False

    return Counter()


@dataclass
class GuiRun:
    seconds: float
    cpu: float  # the process, all threads
    gui_cpu: float  # the GUI thread
    updates: int
    setup_gap: float  # ms
    gap_max: float  # ms
    gap_p95: float  # ms


def gui_run(viewer, widget, method: str, frames: range, verbose=False, profile=None) -> GuiRun:
    """Run pressed in the dock, until the run has ended with its last frames shown."""
    from qtpy.QtCore import QEventLoop, QTimer
    from qtpy.QtWidgets import QApplication

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
    counter = _update_counter()
    app = QApplication.instance()
    app.installEventFilter(counter)
    gaps.start()
    if profile is not None:
        profile.enable()
    started, cpu, gui_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    if not widget.run(resume=False):
        raise SystemExit(f"the run did not start: {widget.status.text()}")
    widget.worker.finished.connect(loop.quit)
    loop.exec()
    seconds = time.perf_counter() - started
    cpu, gui_cpu = time.process_time() - cpu, time.thread_time() - gui_cpu
    if profile is not None:
        profile.disable()
    app.removeEventFilter(counter)
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
    return GuiRun(seconds, cpu, gui_cpu, counter.count, 1000 * setup_gap, worst, p95)


def _stat(values: list[float], fmt: str = "{:.2f}", low: bool = True) -> str:
    """Median, with the minimum in brackets when there are several values."""
    text = fmt.format(statistics.median(values))
    return f"{text} [{fmt.format(min(values))}]" if low and len(values) > 1 else text


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
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each, in turn")
    parser.add_argument(
        "--no-attention-dock",
        action="store_true",
        help="leave the attention dock out (how much of the gaps its matplotlib draws cost)",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile of the GUI thread's runs")
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
    from napari_xfusion.methods.registry import get_spec

    threads = configure_torch_threads()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp())
    napari._qt.qt_main_window.SHOW_QT_WARNING = False
    started = time.perf_counter()
    sample = make_sample(args.frames, (height, width), key_step=20)
    print(
        f"sample: {args.frames} frames of {height}x{width} in {time.perf_counter() - started:.1f} s"
        f"; torch threads {threads}; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
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
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()

    header = (
        f"{'method':<9} {'frames':>6} {'engine s':>12} {'job s':>12} {'gui s':>12}"
        f" {'gui/job':>12} {'job cpu':>12} {'run cpu':>12} {'ui cpu':>6} {'gui thr':>12}"
        f" {'ms/frame':>8} {'upd':>4} {'setup':>5} {'max ms':>6} {'p95 ms':>6}"
    )
    rows = []
    for method in args.methods.split(","):
        n = min(args.frames, args.network_frames) if get_spec(method).needs_torch else args.frames
        frames = range(0, n)
        engine, job, job_cpu, runs = [], [], [], []
        for i in range(args.repeat):
            engine.append(engine_seconds(method, sample[2][0], sample[1], frames))
            wall, cpu = job_seconds(method, sample, frames)
            job.append(wall)
            job_cpu.append(cpu)
            runs.append(gui_run(viewer, widget, method, frames, args.verbose, profile))
            run = runs[-1]
            print(
                f"  {method} #{i + 1}: engine {engine[-1]:.2f} s, job {wall:.2f} s "
                f"({cpu:.2f} cpu), gui {run.seconds:.2f} s ({run.cpu:.2f} cpu, gui thread "
                f"{run.gui_cpu:.2f}), {run.updates} updates, gaps setup {run.setup_gap:.0f} "
                f"max {run.gap_max:.0f} p95 {run.gap_p95:.0f} ms; load "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )
        gui = [r.seconds for r in runs]
        ratio = f"{statistics.median(gui) / statistics.median(job):.2f}"
        if len(runs) > 1:
            ratio += f" [{min(gui) / min(job):.2f}]"
        ui = statistics.median([r.cpu for r in runs]) - statistics.median(job_cpu)
        per_frame = [1000 * r.gui_cpu / n for r in runs]
        rows.append(
            f"{method:<9} {n:>6} {_stat(engine):>12} {_stat(job):>12} {_stat(gui):>12}"
            f" {ratio:>12} {_stat(job_cpu):>12} {_stat([r.cpu for r in runs]):>12} {ui:>6.2f}"
            f" {_stat([r.gui_cpu for r in runs]):>12} {_stat(per_frame, '{:.1f}', False):>8}"
            f" {_stat([r.updates for r in runs], '{:.0f}', False):>4}"
            f" {_stat([r.setup_gap for r in runs], '{:.0f}', False):>5}"
            f" {max(r.gap_max for r in runs):>6.0f}"
            f" {_stat([r.gap_p95 for r in runs], '{:.0f}', False):>6}"
        )
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{args.repeat} runs each: median [min]; max ms = the worst run's")
    print(header)
    print("\n".join(rows))
    if profile is not None:
        import pstats

        profile.dump_stats(args.profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    viewer.close()


if __name__ == "__main__":
    main()
