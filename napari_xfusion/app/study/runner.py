"""Running a study (:mod:`napari_xfusion.app.study`): :func:`iter_study` (events, resumable),
:func:`run_study` (progress bar, cancel) and :func:`report_study` (figures and summary).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_xfusion.app.study.config import Setting, StudyConfig, StudyError
from napari_xfusion.app.study.rows import _row, _rows_text, read_rows
from napari_xfusion.app.study.targets import (
    default_methods,
    describe_truth,
    load_truth,
    study_settings,
    study_targets,
    truth_frames,
)

_FLUSH_SECONDS = 60.0  # also rewrite frames.csv within a setting at most this often


@dataclass
class StudyProgress:
    """One event of :func:`iter_study`."""

    kind: str  # "start", "setting", "frame", "saved", "done"
    setting: Setting | None
    setting_index: int  # 0-based; n_settings when done
    n_settings: int
    done: int  # (method, frame) rows computed in this run so far
    total: int  # rows this run has to compute (those already in frames.csv excluded)
    row: dict[str, Any] | None = None
    message: str = ""


@dataclass
class StudyResult:
    """What :func:`run_study` made."""

    out_dir: Path
    config: StudyConfig
    rows: list[dict[str, Any]]
    computed: int  # rows computed by this call
    reused: int  # rows found in frames.csv
    complete: bool  # every setting done (figures and summary written)
    seconds: float
    files: list[Path] = field(default_factory=list)

    @property
    def frames_csv(self) -> Path:
        return self.out_dir / "frames.csv"

    @property
    def summary_md(self) -> Path:
        return self.out_dir / "summary.md"


def _check_out_dir(config: StudyConfig, out: Path) -> list[dict[str, Any]]:
    """Rows already done in ``out`` by the same study (refuses another study's folder)."""
    study_json, frames_csv = out / "study.json", out / "frames.csv"
    if not study_json.exists():
        if frames_csv.exists():
            raise StudyError(
                f"{frames_csv} exists but {study_json} does not: cannot tell which study made "
                "those rows; use another --out folder or delete frames.csv"
            )
        return []
    old = StudyConfig.load(study_json).to_dict()
    new = config.to_dict()
    differ = [k for k in new if k != "device" and old.get(k) != new[k]]
    if differ:
        what = "; ".join(f"{k}: {old.get(k)!r} there, {new[k]!r} now" for k in differ)
        raise StudyError(
            f"{out} holds another study ({what}); its rows would mix with this one's. Use "
            "another out folder, or delete it to start again"
        )
    return read_rows(frames_csv) if frames_csv.exists() else []


def _log_run(out: Path, started: tuple[float, Any], rows: int, device: str) -> None:
    """Append this call's wall time, rows and machine load to ``runs/log.jsonl`` (the summary
    quotes it: timings measured on a busy machine are slower than the machine can do)."""
    import platform

    entry = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started[0])),
        "seconds": round(time.time() - started[0], 1),
        "rows_computed": rows,
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_start": None if started[1] is None else [round(v, 2) for v in started[1]],
        "load_end": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    with (out / "runs" / "log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def iter_study(config: StudyConfig, out_dir: str | os.PathLike[str]) -> Iterator[StudyProgress]:
    """Run the study as a generator of :class:`StudyProgress` events (one per frame and
    method, plus setting boundaries); closing it stops between frames and saves the rows done.

    The last event (``kind == "done"``) comes after the figures and ``summary.md`` are written.
    """
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.job import FrameEvent, run_job
    from napari_xfusion.core.io import write_text_atomic

    if config.methods is None:
        config = config.replace(methods=default_methods())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _check_out_dir(config, out)
    truth, label = load_truth(config)
    n_frames = int(truth.shape[0])
    targets = study_targets(config, n_frames)
    config.save(out / "study.json")  # after the truth is known good: a typo binds no folder
    settings = study_settings(config)
    methods = list(config.methods or ())
    have = {(r["setting"], r["method"], r["frame"]) for r in rows}
    todo = {
        s.id: [(m, int(t)) for m in methods for t in targets if (s.id, m, int(t)) not in have]
        for s in settings
    }
    total = sum(len(v) for v in todo.values())
    frames_csv = out / "frames.csv"
    order = {s.id: i for i, s in enumerate(settings)}
    rank = {m: i for i, m in enumerate(methods)}

    def save() -> None:
        rows.sort(key=lambda r: (order.get(r["setting"], 1 << 30), rank.get(r["method"], 1 << 30),
                                 r["frame"]))  # fmt: skip
        write_text_atomic(frames_csv, _rows_text(rows))

    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    cache: dict[str, Any] = {}
    done = 0
    started = (time.time(), os.getloadavg() if hasattr(os, "getloadavg") else None)
    yield StudyProgress("start", None, 0, len(settings), 0, total,
                        message=f"{label}; {len(settings)} settings x {len(methods)} methods x "
                        f"{len(targets)} frames; {len(rows)} rows already done")  # fmt: skip
    try:
        for i, setting in enumerate(settings):
            needed = todo[setting.id]
            rc = setting.run_config(config, methods)
            rc.save(runs / f"{setting.id}.json")
            yield StudyProgress("setting", setting, i, len(settings), done, total,
                                message=f"{setting.id}: {len(needed)} rows to compute")  # fmt: skip
            if not needed:
                continue
            wanted = set(needed)
            run_methods = [m for m in methods if any(n[0] == m for n in needed)]
            run_targets = sorted({t for _, t in needed})
            rc_run = rc.replace(methods=tuple(c for c in rc.methods if c.name in run_methods))
            prepared = prepare_inputs(rc_run, hr=truth, names={"hr": label})
            last_flush = time.monotonic()
            job = run_job(rc_run, prepared, method_cache=cache, targets=run_targets)
            try:
                for event in job:
                    if not isinstance(event, FrameEvent):
                        continue
                    key = (event.row.method, int(event.row.index))
                    if key not in wanted:
                        continue
                    row = _row(setting, prepared, event.row)
                    rows.append(row)
                    done += 1
                    yield StudyProgress("frame", setting, i, len(settings), done, total, row)
                    if time.monotonic() - last_flush > _FLUSH_SECONDS:
                        save()
                        last_flush = time.monotonic()
            finally:
                job.close()
            save()
            yield StudyProgress("saved", setting, i, len(settings), done, total,
                                message=f"{setting.id} done")  # fmt: skip
    finally:
        save()  # Ctrl-C, an error or a closed generator: keep the rows done
        _log_run(out, started, done, config.device)
    files = report_study(out, config, rows, targets=targets, truth_label=label)
    yield StudyProgress("done", None, len(settings), len(settings), done, total,
                        message=f"{len(files)} files written in {out}")  # fmt: skip


def report_study(
    out_dir: str | os.PathLike[str],
    config: StudyConfig | None = None,
    rows: list[dict[str, Any]] | None = None,
    *,
    targets: Sequence[int] | None = None,
    truth_label: str | None = None,
) -> list[Path]:
    """(Re)make the figures and ``summary.md`` of ``out_dir`` from its ``frames.csv``."""
    from napari_xfusion.app.study.summary import write_report

    out = Path(out_dir)
    if config is None:
        config = StudyConfig.load(out / "study.json")
    if rows is None:
        rows = read_rows(out / "frames.csv")
    if targets is None:
        targets = study_targets(config, truth_frames(config))
    if truth_label is None:
        truth_label = describe_truth(config)
    return write_report(out, config, rows, targets=targets, truth_label=truth_label)


def run_study(
    config: StudyConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    cancel: Callable[[], bool] | None = None,
    on_event: Callable[[StudyProgress], None] | None = None,
) -> StudyResult:
    """Run (or resume) the study into ``out_dir``; see the module docstring.

    Parameters
    ----------
    progress : bool
        A tqdm bar on stderr.
    cancel : callable, optional
        Polled after every frame; True stops (rows done saved, ``complete=False``).
    on_event : callable, optional
        Called with every :class:`StudyProgress` (e.g. a GUI thread's signal).
    """
    from tqdm import tqdm

    tic = time.perf_counter()
    events = iter_study(config, out_dir)
    bar = None
    complete = False
    computed = total = 0
    message = ""
    try:
        for event in events:
            if on_event is not None:
                on_event(event)
            if event.kind == "start":
                total = event.total
                bar = tqdm(total=total, disable=not progress, unit="frame", desc="study")
                if progress:
                    bar.write(event.message)
            elif event.kind == "setting" and bar is not None:
                bar.set_postfix_str(event.setting.id if event.setting else "")
            elif event.kind == "frame" and bar is not None:
                bar.update(1)
            elif event.kind == "done":
                complete = True
                message = event.message
            computed = event.done
            if cancel is not None and cancel():
                break
    finally:
        events.close()
        if bar is not None:
            bar.close()
    out = Path(out_dir)
    resolved = StudyConfig.load(out / "study.json")
    rows = read_rows(out / "frames.csv") if (out / "frames.csv").exists() else []
    files = sorted(p for p in out.rglob("*") if p.is_file())
    if progress and message:
        print(message)
    return StudyResult(out, resolved, rows, computed, len(rows) - computed, complete,
                       time.perf_counter() - tic, files)  # fmt: skip
