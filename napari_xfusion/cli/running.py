"""Running a :class:`RunConfig` for ``xfusion fuse``: exports, progress, Ctrl-C and SIGTERM.

What is never lost (issue 13): no write lands on an input (checked before anything is read);
``<stem>.tif`` only ever holds a complete export - an interrupted or failed run keeps its
frames in ``<stem>.partial.tif`` with a matching ``<stem>.partial.csv`` and leaves an earlier
complete ``<stem>.tif`` as it was; SIGTERM is handled like Ctrl-C (exit status 143).

A method's extra per-frame maps (its declared ``outputs``: ``flow``'s confidence, ``bayesian``'s
variance) go to ``<stem>_<output>.tif`` beside its export, page for page, with the same
complete/partial rule (single-process runs; ``--no-extras`` skips them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_xfusion.cli._common import CommandError, check_folder, make_folder, say
from napari_xfusion.cli.signals import DeferredInterrupt, exit_status, signal_name

if TYPE_CHECKING:
    from napari_xfusion.app.config import RunConfig
    from napari_xfusion.app.results import ResultTable

__all__ = [
    "DEFAULT_NAME",
    "ROLES",
    "FuseReport",
    "check_outputs",
    "fuse_run",
    "input_labels",
    "output_paths",
    "resolve_out",
]

ROLES = {"lr": "--lr", "hr": "--hr", "truth": "--truth"}
"""How read errors name the inputs (``--lr lr.tif: truncated TIFF ...``)."""

DEFAULT_NAME = "fused.tif"
"""The export's name when ``-o`` names an existing folder."""


@dataclass
class FuseReport:
    """What :func:`fuse_run` produced.

    ``outputs`` are the complete exports' paths (per method); an interrupted run's frames are
    in ``partial`` instead (``frames_done`` counts them either way). ``status`` is the exit
    status: 0, 130 (Ctrl-C) or 143 (SIGTERM).
    """

    outputs: dict[str, Path]
    csv_paths: dict[str, Path]
    frames_done: dict[str, int]
    total_per_method: int
    metrics: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    comparison: Path | None = None
    interrupted: bool = False
    seconds: float = 0.0
    table: ResultTable | None = None
    config: RunConfig | None = None
    partial: dict[str, Path] = field(default_factory=dict)
    status: int = 0
    extras: dict[str, dict[str, Path]] = field(default_factory=dict)
    """Per method, output name -> the extra map's stack (complete or partial name)."""


def resolve_out(out: str | os.PathLike[str]) -> Path:
    """``-o`` as the export's path: an existing folder, or a path ending in ``/``, gets
    :data:`DEFAULT_NAME` inside it; a path under a regular file, or a sidecar's suffix, is
    refused."""
    text = os.fspath(out)
    out = Path(out)
    if out.is_dir() or text.endswith(("/", os.sep)):
        out = out / DEFAULT_NAME
        say(f"xfusion fuse: -o names a folder; writing {out}")
    if out.suffix.lower() in (".csv", ".json"):
        raise CommandError(
            f"-o {out}: an export is a TIFF (its .csv and .config.json go next to it); "
            "use a .tif name"
        )
    check_folder(out.parent, f"-o {out}")
    return out


def output_paths(out: Path, methods: Sequence[str]) -> dict[str, Path]:
    """``out`` for one method, else ``<stem>_<method>.tif`` next to it (the GUI's too)."""
    from napari_xfusion.app.export import export_paths

    return export_paths(out, methods)


def _comparison(out: Path, partial: bool) -> Path:
    return out.with_name(f"{out.stem}_comparison{'.partial' if partial else ''}.csv")


def input_labels(config: RunConfig) -> dict[str, str | None]:
    """The run's input files by the option that names them (for :func:`check_writes`)."""
    return {"--lr input": config.lr, "--hr input": config.hr, "--truth input": config.truth}


def extra_paths(config: RunConfig, outputs: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """Per method, its declared extra outputs' stacks next to its export."""
    from napari_xfusion.app.export import extra_output_path
    from napari_xfusion.methods.registry import get_spec

    return {
        m: {o: extra_output_path(path, o) for o in get_spec(m).outputs}
        for m, path in outputs.items()
    }


def check_outputs(
    config: RunConfig, out: str | os.PathLike[str], *, extras: bool = True
) -> tuple[Path, dict[str, Path]]:
    """``(out, {method: export path})`` for ``-o out``, after refusing any file the run may
    write (exports, sidecars, partial names, extra maps, comparison) that is one of its
    inputs."""
    from napari_xfusion.app.export import check_writes, export_files

    out = resolve_out(out)
    outputs = output_paths(out, config.method_names)
    writes = [f for path in outputs.values() for f in export_files(path)]
    if extras:
        for maps in extra_paths(config, outputs).values():
            writes += [f for path in maps.values() for f in export_files(path)]
    writes += [_comparison(out, False), _comparison(out, True)]
    check_writes(writes, input_labels(config))
    return out, outputs


def fuse_run(
    config: RunConfig,
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
    extras: bool = True,
) -> FuseReport:
    """Run ``config`` through :mod:`napari_xfusion.app` and write the exports.

    Files: ``out`` for one method, else ``<stem>_<method>.tif`` next to it, each with its
    ``.csv`` (per-frame rows, metrics when there is truth) and ``.config.json``, plus
    ``<stem>_comparison.csv`` (the summary) for several methods. Frames are written as they
    come into hidden temp files, renamed when the run completes. On Ctrl-C, SIGTERM or an
    error the frames done go to ``<stem>.partial.tif`` (+ ``.partial.csv``,
    ``.partial.config.json``); an earlier complete export stays. Under torchrun the frames
    are split over the ranks and rank 0 writes one file per method.
    """
    from tqdm import tqdm

    from napari_xfusion.app.devices import rank_device
    from napari_xfusion.app.export import (
        ExportWriter,
        partial_path,
        run_metadata,
        write_sidecars,
    )
    from napari_xfusion.app.export import writing as writing_to
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.job import FrameEvent, run_job
    from napari_xfusion.cli.distributed import assemble, distributed
    from napari_xfusion.core.io import write_text_atomic
    from napari_xfusion.engine import split_targets

    out, outputs = check_outputs(config, out, extras=extras)
    methods = list(config.method_names)
    prepared = prepare_inputs(config, roles=ROLES)
    for note in prepared.notes:
        if "detector units" in note:
            say(f"xfusion fuse: {note}")
    make_folder(out.parent, "-o")
    targets = prepared.targets
    rank, world = distributed()
    device = rank_device(config.device, world)
    my_targets = split_targets(targets, rank, world)
    if world > 1:
        # Each rank writes its chunk to a private file next to the output (room for a full
        # stack is needed there anyway); rank 0 then assembles one file in order.
        writing = {
            m: outputs[m].with_name(f".{outputs[m].name}.rank{rank}-{os.getpid()}.tif")
            for m in methods
        }
    else:
        writing = outputs
    extras = extras and world == 1  # torchrun assembles the fused stacks only
    extra_files = extra_paths(config, writing) if extras else {}
    job = run_job(config, prepared, targets=my_targets, device=device)
    started = next(job)  # builds the methods (a bad option or device fails before any file)
    table = started.table
    base = run_metadata(config, prepared, device=device)
    # Everything that can fail or be interrupted between creating the writers and the loop's
    # try comes first (no temp file may be left behind).
    bar = tqdm(
        total=len(targets) * len(methods),
        disable=not progress or rank != 0,
        unit="frame",
        desc="fusing",
        dynamic_ncols=True,
    )
    writers: dict[str, ExportWriter] = {}
    # (method, output) -> writer of an extra map, opened at its first frame: a method that
    # declares an output but does not produce it in this run (bayesian's static prior has no
    # confidence) leaves no empty file.
    extra_writers: dict[tuple[str, str], ExportWriter] = {}

    def all_writers() -> list[tuple[str, ExportWriter]]:
        return [*writers.items(), *((f"{m} {o}", w) for (m, o), w in extra_writers.items())]

    def store_extras(event: FrameEvent) -> None:
        m = event.result.method
        for name, path in extra_files.get(m, {}).items():
            data = event.extras.get(name)
            if data is None:
                continue
            if (m, name) not in extra_writers:
                extra_writers[m, name] = ExportWriter(
                    path,
                    config,
                    m,
                    prepared.frame_shape,
                    max(len(my_targets), 1),
                    description=started.descriptions.get(m),
                    metadata={**base, "output": name},
                    sidecars=False,
                )
            extra_writers[m, name].write(np.asarray(data, np.float32), event.result.index)

    try:
        for m in methods:
            writers[m] = ExportWriter(
                writing[m],
                config,
                m,
                prepared.frame_shape,
                max(len(my_targets), 1),
                description=started.descriptions.get(m),
                normalisation=prepared.hr_normalisation,
                metadata=base,
                sidecars=world == 1,
                partial=world == 1,
            )
    except BaseException:
        job.close()
        bar.close()
        for _, w in all_writers():
            w.discard()
        raise
    tic = time.perf_counter()
    stopped: BaseException | None = None
    try:
        while True:
            # Ctrl-C / SIGTERM wait until the frame and its row are both stored, so an
            # interrupted export never holds a half-written page or a frame without its row.
            with DeferredInterrupt():
                event = next(job, None)
                if event is None:
                    break
                assert isinstance(event, FrameEvent)
                writers[event.result.method].write(
                    event.result.frame, event.result.index, event.row
                )
                store_extras(event)
            bar.update(world if rank == 0 else 0)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (signals.Terminated)
        stopped = exc
    except BaseException:
        job.close()
        bar.close()
        done = {}
        with DeferredInterrupt():  # finishing the partial files is not interrupted
            for m, w in all_writers():
                try:
                    done[m] = w.abort(table)
                except Exception:  # e.g. disk full again: abort left no temp file; go on
                    done[m] = 0
        for m, n in done.items():
            if n and m in writers:
                say(
                    f"xfusion fuse: error; kept {n} of {len(targets)} frames in "
                    f"{writers[m].written_to} (incomplete; {outputs[m].name} not written)"
                )
        raise
    finally:
        bar.close()
    job.close()
    interrupted = stopped is not None
    report_extras: dict[str, dict[str, Path]] = {}
    with DeferredInterrupt():  # finishing is not interrupted half way
        try:
            done = {}
            for m, w in writers.items():
                done[m] = w.abort(table) if interrupted else w.close(table)
            for (m, name), w in extra_writers.items():
                if w.abort() if interrupted else w.close():
                    report_extras.setdefault(m, {})[name] = w.written_to
        except BaseException:  # e.g. the disk filled up: no temp file stays behind
            for _, w in all_writers():
                w.discard()
            raise
        if world > 1:
            done = assemble(methods, writing, outputs, table, interrupted, rank, world)
    report = FuseReport(
        outputs={},
        csv_paths={},
        frames_done=done,
        total_per_method=len(targets),
        interrupted=interrupted,
        seconds=time.perf_counter() - tic,
        table=table,
        config=config,
        status=0 if stopped is None else exit_status(stopped),
        extras=report_extras,
    )
    if rank != 0:
        return report
    for m in methods:
        final = partial_path(outputs[m]) if interrupted else outputs[m]
        if interrupted:
            report.partial[m] = final
        else:
            report.outputs[m] = final
        report.csv_paths[m] = final.with_suffix(".csv")
        if world > 1 and done[m]:
            write_sidecars(final, config, table.to_csv_text(m))
        report.metrics[m] = table.metric_columns(m)
    if len(methods) > 1 and any(done.values()):
        report.comparison = _comparison(out, interrupted)
        with writing_to(report.comparison):
            write_text_atomic(report.comparison, table.summary_csv_text())
    if interrupted:
        for m in methods:
            previous = " (the complete one there is untouched)" if outputs[m].exists() else ""
            where = (
                f"kept {done[m]} of {len(targets)} frames in {report.partial[m]}, marked "
                f"incomplete; {outputs[m].name} not written{previous}"
                if done[m]
                else "no frame done, nothing written"
            )
            say(f"xfusion fuse: {signal_name(stopped)}; {m}: {where}")
    return report
