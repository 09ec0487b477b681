"""Command-line interface ``xfusion``: sample, simulate, fuse, evaluate, demo, train.

Every command runs the same code as the napari plugin: inputs through :mod:`core.io`,
reconstruction through :func:`napari_xfusion.engine.run`. Heavy imports (torch, the methods)
happen inside the commands so ``xfusion --help`` starts instantly.

``python -m napari_xfusion.cli fuse ...`` works too, which is what
``torchrun --nproc_per_node N -m napari_xfusion.cli fuse ...`` needs: the frames are then split
over the ranks and rank 0 writes one output file in order.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xfusion import __version__

if TYPE_CHECKING:
    from napari_xfusion.app.config import RunConfig
    from napari_xfusion.app.results import ResultTable
    from napari_xfusion.core.normalise import Normalisation

__all__ = [
    "main",
    "make_sample",
    "simulate_from_hr",
    "fuse",
    "fuse_config",
    "fuse_run",
    "evaluate",
    "run_demo",
]

SOFTWARE = f"napari-xfusion {__version__}"

# Frames read per block when a whole stack is streamed (normalising, binning, scanning ranges).
_BLOCK_FRAMES = 32


class CommandError(Exception):
    """A user error: printed as ``xfusion <command>: error: ...`` without a traceback."""


# ----------------------------------------------------------------------------- helpers


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse_frames(text: str | None) -> slice | None:
    """``"A:B"`` (B exclusive, either side optional) or ``"A"`` (one frame) -> slice."""
    if text is None:
        return None
    try:
        if ":" in text:
            start, stop = text.split(":", 1)
            return slice(int(start) if start else None, int(stop) if stop else None)
        return slice(int(text), int(text) + 1)
    except ValueError:
        raise CommandError(
            f"--frames must look like A:B (B exclusive) or A, got {text!r}"
        ) from None


def _parse_int_list(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise CommandError(f"{what} must be comma-separated integers, got {text!r}") from None


# ----------------------------------------------------------------------------- sample/simulate


def _add_lr_noise(
    clean_lr: np.ndarray, lr_psnr: float | None, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    from napari_xfusion.core.degrade import add_shot_noise, lr_psnr_for_b0, solve_b0

    if lr_psnr is None:
        return clean_lr, {"model": "none"}
    b0 = solve_b0(clean_lr, lr_psnr, seed=seed)
    noisy = add_shot_noise(clean_lr, b0, np.random.default_rng(seed)).astype(np.float32)
    return noisy, {
        "model": "poisson",
        "b0": b0,
        "target_lr_psnr_db": lr_psnr,
        "lr_psnr_db": lr_psnr_for_b0(clean_lr, b0, seed=seed),
        "seed": seed,
    }


def _check_pair_options(
    hr_shape: tuple[int, ...], separation: int, lr_psnr: float | None, crop: bool | None
) -> None:
    """Refuse bad options before anything is computed or written (``crop=None``: the command
    has no ``--crop``)."""
    from napari_xfusion.core.degrade import MAX_TARGET_PSNR_DB, MIN_TARGET_PSNR_DB

    if lr_psnr is not None and not MIN_TARGET_PSNR_DB <= lr_psnr <= MAX_TARGET_PSNR_DB:
        raise CommandError(
            f"--lr-psnr must be between {MIN_TARGET_PSNR_DB:g} and {MAX_TARGET_PSNR_DB:g} dB, "
            f"got {lr_psnr:g}"
        )
    if separation < 1:
        raise CommandError(f"--separation must be >= 1, got {separation}")
    h, w = hr_shape
    if not crop and (h % 4 or w % 4):
        hint = "" if crop is None else " (use --crop to drop the rows/columns left over)"
        raise CommandError(
            f"HR frames are {h}x{w}: both sides must be multiples of 4 for 4x4 binning{hint}"
        )
    if min(h, w) < 4:
        raise CommandError(f"HR frames are {h}x{w}: too small for 4x4 binning")


def _write_pair(
    out_dir: Path,
    truth: np.ndarray,
    hr_normalisation: Normalisation | None,
    key_step: int | None,
    first_last: bool,
    separation: int,
    lr_psnr: float | None,
    seed: int,
    crop: bool,
    provenance: dict[str, Any],
) -> dict[str, Path]:
    """Write ``truth.tif`` (normalised HR), ``lr.tif`` and ``hr_keys.tif`` from a full-rate HR
    stack, normalising and binning block by block (O(block) memory besides the LR stream)."""
    from napari_xfusion.core.degrade import bin_frames
    from napari_xfusion.core.io import StackWriter, write_stack
    from napari_xfusion.core.windows import key_indices

    n_frames = truth.shape[0]
    keys = key_indices(n_frames, key_step, first_last=first_last)
    _check_pair_options(truth.shape[1:], separation, lr_psnr, crop)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_rule = {"first_last": True} if first_last else {"key_step": key_step}
    common = {"software": SOFTWARE, **provenance, "key_rule": key_rule, "separation": separation}
    if hr_normalisation is not None:
        common["normalisation"] = {"hr": hr_normalisation.to_dict()}

    def hr_block(start: int) -> np.ndarray:
        block = np.asarray(truth[start : start + _BLOCK_FRAMES])
        if hr_normalisation is not None:
            return hr_normalisation.apply(block)
        return block.astype(np.float32, copy=False)

    first = bin_frames(hr_block(0)[:1], crop=crop)
    lr = np.empty((n_frames, *first.shape[1:]), dtype=np.float32)
    hr_shape = (first.shape[1] * 4, first.shape[2] * 4)
    paths = {
        "truth": out_dir / "truth.tif",
        "lr": out_dir / "lr.tif",
        "keys": out_dir / "hr_keys.tif",
    }
    key_set = {int(k) for k in keys}
    with (
        StackWriter(paths["truth"], (n_frames, *hr_shape), np.float32, common) as truth_out,
        StackWriter(paths["keys"], (len(keys), *hr_shape), np.float32, {**common}) as keys_out,
    ):
        for start in range(0, n_frames, _BLOCK_FRAMES):
            block = hr_block(start)[:, : hr_shape[0], : hr_shape[1]]
            lr[start : start + block.shape[0]] = bin_frames(block)
            for i, frame in enumerate(block, start=start):
                truth_out.write(frame, index=i)
                if i in key_set:
                    keys_out.write(frame, index=i)
        keys_out.update_metadata({"key_indices": keys})
    noisy, noise = _add_lr_noise(lr, lr_psnr, seed)
    write_stack(paths["lr"], noisy, {**common, "noise": noise, "key_indices": keys})
    return paths


def make_sample(
    out_dir: str | os.PathLike[str],
    *,
    n_frames: int = 60,
    shape: tuple[int, int] = (400, 1024),
    seed: int = 0,
    speed: float = 1.0,
    key_step: int | None = 10,
    first_last: bool = False,
    separation: int = 1,
    lr_psnr: float | None = None,
) -> dict[str, Path]:
    """Simulate an x-ray sequence and write ``truth.tif``, ``lr.tif`` and ``hr_keys.tif``.

    All three are float32 in [0, 1]; ``hr_keys.tif`` holds only the key frames, their LR time
    indices in its metadata (``key_indices``). Returns the three paths by role.
    """
    from napari_xfusion.core.sample import simulate_sequence
    from napari_xfusion.core.windows import key_indices

    # Check the options before the (slow) simulation.
    key_indices(n_frames, None if first_last else key_step, first_last=first_last)
    _check_pair_options(tuple(shape), separation, lr_psnr, crop=None)
    truth = simulate_sequence(n_frames, tuple(shape), seed=seed, speed=speed)
    provenance = {
        "sample": {"n_frames": n_frames, "shape": list(shape), "seed": seed, "speed": speed}
    }
    return _write_pair(
        Path(out_dir),
        truth,
        None,
        None if first_last else key_step,
        first_last,
        separation,
        lr_psnr,
        seed,
        False,
        provenance,
    )


def simulate_from_hr(
    hr_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    key_step: int | None = None,
    first_last: bool = False,
    separation: int = 1,
    lr_psnr: float | None = None,
    seed: int = 0,
    crop: bool = False,
    normalise_mode: str = "auto",
) -> dict[str, Path]:
    """Make an LR stream and HR keys from a user's full-rate HR stack (see :func:`make_sample`).

    The HR stack is normalised (percentile clip, unless it is already float in [0, 1]); the
    clip values are kept in the metadata so results can go back to detector units.
    """
    from napari_xfusion.app.inputs import fit_stream
    from napari_xfusion.core.io import read_stack

    hr = read_stack(hr_path)
    # The whole stack is binned into the LR stream: its clip values come from all of it
    # (sampled evenly), by the same rule as fuse's inputs.
    norm = fit_stream(hr, range(hr.shape[0]), normalise_mode, str(hr_path))
    return _write_pair(
        Path(out_dir),
        hr,
        norm,
        key_step,
        first_last,
        separation,
        lr_psnr,
        seed,
        crop,
        {"source": str(Path(hr_path).resolve())},
    )


# ----------------------------------------------------------------------------- fuse


@dataclass
class FuseReport:
    """What :func:`fuse` produced."""

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


def _weights_options(
    methods: list[str], weights: list[str], device: str
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Per-method options from ``--weights [name=]PATH`` flags, and the files' sha256."""
    from napari_xfusion.core.io import sha256_file
    from napari_xfusion.methods.registry import get_spec

    uses_weights = [m for m in methods if get_spec(m).needs_weights]
    options: dict[str, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    for item in weights:
        name, sep, path = item.partition("=")
        targets = [name] if sep else uses_weights
        path = path if sep else item
        if sep and name not in methods:
            raise CommandError(f"--weights {item}: method {name!r} is not in --method")
        if sep and name not in uses_weights:
            raise CommandError(f"--weights {item}: {name} uses no network weights")
        if not targets:
            raise CommandError(f"--weights {item}: none of {methods} uses network weights")
        file = Path(path)
        if not file.is_file():
            raise CommandError(f"--weights: {file}: no such file")
        for target in targets:
            options.setdefault(target, {})["weights"] = str(file)
            hashes[target] = sha256_file(file)
    return options, hashes


def _distributed() -> tuple[int, int]:
    """``(rank, world_size)`` under torchrun, ``(0, 1)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), dist.get_world_size()


def fuse_config(
    lr_path: str | os.PathLike[str],
    hr_path: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("bicubic",),
    key_step: int | None = None,
    first_last: bool = False,
    key_list: Sequence[int] | None = None,
    frames: slice | None = None,
    separation: int | None = None,
    device: str = "auto",
    weights: Sequence[str] = (),
    units: str = "float",
    truth_path: str | os.PathLike[str] | None = None,
    normalise_mode: str = "auto",
) -> RunConfig:
    """The :class:`RunConfig` that ``xfusion fuse``'s arguments describe (paths made absolute,
    weights hashed). ``frames`` is a slice with an exclusive stop, like ``--frames A:B``."""
    from napari_xfusion.app.config import ConfigError, KeyRule, MethodChoice, RunConfig
    from napari_xfusion.app.inputs import source_path

    methods = list(dict.fromkeys(methods))
    options, hashes = _weights_options(methods, list(weights), device)
    window = None
    if frames is not None:
        if frames.step not in (None, 1):
            raise CommandError("--frames takes A:B without a step")
        window = (frames.start or 0, frames.stop)
    try:
        return RunConfig(
            lr=source_path(lr_path),
            hr=source_path(hr_path),
            truth=source_path(truth_path),
            keys=KeyRule(
                step=key_step,
                first_last=first_last,
                indices=None if key_list is None else tuple(key_list),
            ),
            separation=separation,
            frames=window,
            normalise=normalise_mode,
            units=units,
            device=device,
            methods=tuple(
                MethodChoice(
                    m,
                    weights=options.get(m, {}).get("weights"),
                    weights_sha256=hashes.get(m),
                )
                for m in methods
            ),
        )
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def fuse(
    lr_path: str | os.PathLike[str],
    hr_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("bicubic",),
    key_step: int | None = None,
    first_last: bool = False,
    key_list: list[int] | None = None,
    frames: slice | None = None,
    separation: int | None = None,
    device: str = "auto",
    weights: Sequence[str] = (),
    units: str = "float",
    truth_path: str | os.PathLike[str] | None = None,
    normalise_mode: str = "auto",
    progress: bool = True,
) -> FuseReport:
    """Fuse an LR stream with HR keys, writing one export per method (see :func:`fuse_run`)."""
    if frames is not None and frames.stop is None:
        from napari_xfusion.core.io import read_stack

        frames = slice(frames.start, int(read_stack(lr_path, check_finite=False).shape[0]))
    config = fuse_config(
        lr_path,
        hr_path,
        methods=methods,
        key_step=key_step,
        first_last=first_last,
        key_list=key_list,
        frames=frames,
        separation=separation,
        device=device,
        weights=weights,
        units=units,
        truth_path=truth_path,
        normalise_mode=normalise_mode,
    )
    return fuse_run(config, out, progress=progress)


def _outputs(out: Path, methods: Sequence[str]) -> dict[str, Path]:
    """``out`` for one method, else ``<stem>_<method>.tif`` next to it."""
    if len(methods) == 1:
        return {methods[0]: out}
    return {m: out.with_name(f"{out.stem}_{m}{out.suffix or '.tif'}") for m in methods}


def fuse_run(
    config: RunConfig, out: str | os.PathLike[str], *, progress: bool = True
) -> FuseReport:
    """Run ``config`` through :mod:`napari_xfusion.app` and write the exports.

    Files: ``out`` for one method, else ``<stem>_<method>.tif`` next to it, each with its
    ``.csv`` (per-frame rows, metrics when there is truth) and ``.config.json``, plus
    ``<stem>_comparison.csv`` (the summary) for several methods. Frames are written as they
    come; on Ctrl-C or an error every file keeps the frames done (the report says how many).
    Under torchrun the frames are split over the ranks and rank 0 writes one file per method.
    """
    from tqdm import tqdm

    from napari_xfusion.app.devices import rank_device
    from napari_xfusion.app.export import ExportWriter, run_metadata, write_sidecars
    from napari_xfusion.app.inputs import prepare_inputs
    from napari_xfusion.app.job import FrameEvent, run_job
    from napari_xfusion.core.io import write_text_atomic
    from napari_xfusion.engine import split_targets

    out = Path(out)
    prepared = prepare_inputs(config)
    for note in prepared.notes:
        if "detector units" in note:
            _say(f"xfusion fuse: {note}")
    out.parent.mkdir(parents=True, exist_ok=True)
    targets = prepared.targets
    rank, world = _distributed()
    device = rank_device(config.device, world)
    my_targets = split_targets(targets, rank, world)
    methods = list(config.method_names)
    outputs = _outputs(out, methods)
    if world > 1:
        # Each rank writes its chunk to a private file next to the output (room for a full
        # stack is needed there anyway); rank 0 then assembles one file in order.
        writing = {
            m: outputs[m].with_name(f".{outputs[m].name}.rank{rank}-{os.getpid()}.tif")
            for m in methods
        }
    else:
        writing = outputs
    job = run_job(config, prepared, targets=my_targets, device=device)
    started = next(job)  # builds the methods (a bad option or device fails before any file)
    table = started.table
    base = run_metadata(config, prepared, device=device)
    writers = {
        m: ExportWriter(
            writing[m],
            config,
            m,
            prepared.frame_shape,
            max(len(my_targets), 1),
            description=started.descriptions.get(m),
            normalisation=prepared.hr_normalisation,
            metadata=base,
            sidecars=world == 1,
        )
        for m in methods
    }
    bar = tqdm(
        total=len(targets) * len(methods),
        disable=not progress or rank != 0,
        unit="frame",
        desc="fusing",
        dynamic_ncols=True,
    )
    tic = time.perf_counter()
    interrupted = False
    try:
        while True:
            # Ctrl-C waits until the frame and its row are both stored, so an interrupted
            # export never holds a half-written page or a frame without its row.
            with _DeferredInterrupt():
                event = next(job, None)
                if event is None:
                    break
                assert isinstance(event, FrameEvent)
                writers[event.result.method].write(
                    event.result.frame, event.result.index, event.row
                )
            bar.update(world if rank == 0 else 0)
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        job.close()
        bar.close()
        done = {m: w.abort(table) for m, w in writers.items()}
        for m, n in done.items():
            if n:
                _say(f"xfusion fuse: error; kept {n} of {len(targets)} frames in {outputs[m]}")
        raise
    finally:
        bar.close()
    job.close()
    done = {m: (w.abort(table) if interrupted else w.close(table)) for m, w in writers.items()}
    if world > 1:
        done = _assemble(methods, writing, outputs, table, interrupted, rank, world)
    report = FuseReport(
        outputs=outputs,
        csv_paths={},
        frames_done=done,
        total_per_method=len(targets),
        interrupted=interrupted,
        seconds=time.perf_counter() - tic,
        table=table,
        config=config,
    )
    if rank != 0:
        return report
    for m in methods:
        report.csv_paths[m] = outputs[m].with_suffix(".csv")
        if world > 1 and done[m]:
            write_sidecars(outputs[m], config, table.to_csv_text(m))
        report.metrics[m] = table.metric_columns(m)
    if len(methods) > 1:
        report.comparison = out.with_name(f"{out.stem}_comparison.csv")
        write_text_atomic(report.comparison, table.summary_csv_text())
    if interrupted:
        for m in methods:
            _say(
                f"xfusion fuse: interrupted; kept {done[m]} of {len(targets)} frames in "
                f"{outputs[m]}"
            )
    return report


class _DeferredInterrupt:
    """Hold Ctrl-C (SIGINT) back until the block ends, then raise KeyboardInterrupt.

    The block computes one frame and stores it with its row, so a first Ctrl-C finishes the
    frame in progress; a second one stops at once (the frames stored so far are kept).
    """

    def __enter__(self) -> _DeferredInterrupt:
        self.hit = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        if self.hit:  # the second Ctrl-C: do not make the user wait for the frame
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.hit:
            raise KeyboardInterrupt


def _assemble(
    methods: list[str],
    parts: dict[str, Path],
    outputs: dict[str, Path],
    table: ResultTable,
    interrupted: bool,
    rank: int,
    world: int,
) -> dict[str, int]:
    """torchrun: rank 0 writes every rank's frames into one file per method, in time order.

    Ranks send their frames one at a time as raw bytes (bounded memory, any dtype, no shared
    file system needed) and their per-frame rows as objects; rank 0's ``table`` ends up with
    every rank's rows. The result is marked incomplete when any rank was interrupted.
    """
    import torch
    import torch.distributed as dist

    from napari_xfusion.core.io import StackWriter, read_metadata, read_stack

    done: dict[str, int] = {}
    for m in methods:
        mine = table.rows(m)
        gathered: list[Any] = [None] * world
        dist.gather_object((mine, interrupted), gathered if rank == 0 else None, dst=0)
        if rank == 0:
            chunks = [chunk for chunk, _ in gathered]
            for chunk in chunks[1:]:
                table.extend(chunk)
            part = read_stack(parts[m], check_finite=False) if parts[m].exists() else None
            meta = read_metadata(parts[m]) if part is not None else {}
            for key in ("frame_indices", "frames_written", "complete", "frames"):
                meta.pop(key, None)
            meta["frames"] = table.attention_columns(m)
            counts = [len(chunk) for chunk in chunks]
            meta["distributed"] = {"world_size": world, "frames_per_rank": counts}
            frame_shape = part.shape[1:] if part is not None else None
            dtype = part.dtype if part is not None else None
            if frame_shape is None:  # rank 0 had no frames: take the shape from rank 1
                raise RuntimeError("torchrun: rank 0 computed no frames; use fewer ranks")
            writer = StackWriter(outputs[m], (sum(counts), *frame_shape), dtype, meta)
            try:
                for row, frame in zip(chunks[0], part, strict=True):
                    writer.write(frame, index=row.index)
                buf = np.empty(frame_shape, dtype=dtype)
                received = torch.from_numpy(buf.reshape(-1).view(np.uint8))
                for src in range(1, world):
                    for row in chunks[src]:
                        dist.recv(received, src=src)  # fills buf through the shared memory
                        writer.write(buf, index=row.index)
            except BaseException:
                writer.abort()
                raise
            any_interrupted = any(flag for _, flag in gathered)
            done[m] = writer.abort() if any_interrupted else writer.close()
            del part
        else:
            count = len(mine)
            part = read_stack(parts[m], check_finite=False) if count else None
            for i in range(count):
                frame = np.array(part[i])  # a writable copy: torch refuses read-only memmaps
                dist.send(torch.from_numpy(frame.reshape(-1).view(np.uint8)), dst=0)
            done[m] = count
            del part
        dist.barrier()
        parts[m].unlink(missing_ok=True)
    return done


# ----------------------------------------------------------------------------- evaluate


def evaluate(
    fused_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    csv_path: str | os.PathLike[str] | None = None,
) -> tuple[Path, dict[str, list[float]]]:
    """Per-frame PSNR/AAD/SSIM of a fused export (either face, any version) against the truth.

    :func:`napari_xfusion.app.export.read_export` says which LR frame each page is and which
    pages were computed (frames never run are not scored); detector-unit exports are mapped
    back with their stored normalisation. The truth is normalised by the input policy's rule
    (as is when float in [0, 1], else the export's HR clip values, else its own). Returns the
    CSV path and the metric columns.
    """
    _, _, path, columns = _evaluate(fused_path, truth_path, csv_path)
    return path, columns


def _evaluate(
    fused_path: str | os.PathLike[str],
    truth_path: str | os.PathLike[str],
    csv_path: str | os.PathLike[str] | None = None,
) -> tuple[ResultTable, str, Path, dict[str, list[float]]]:
    from napari_xfusion.app.export import read_export
    from napari_xfusion.app.inputs import truth_normalisation
    from napari_xfusion.app.results import ResultTable
    from napari_xfusion.core.io import read_stack, write_text_atomic

    fused_path, truth_path = Path(fused_path), Path(truth_path)
    fused, info = read_export(fused_path)
    truth = read_stack(truth_path, check_finite=False)
    pages = info.computed_pages
    indices = info.pages[pages]
    if not pages.size:
        raise CommandError(f"{fused_path}: holds no computed frame")
    if fused.shape[1:] != truth.shape[1:]:
        raise CommandError(
            f"{fused_path} frames are {fused.shape[1]}x{fused.shape[2]} but {truth_path} frames "
            f"are {truth.shape[1]}x{truth.shape[2]}"
        )
    if int(indices.max()) >= truth.shape[0]:
        raise CommandError(
            f"{fused_path} holds frame {int(indices.max())} but {truth_path} has only "
            f"{truth.shape[0]} frames"
        )
    truth_norm = truth_normalisation(truth, indices, "auto", info.normalisation, str(truth_path))

    def truth_frame(t: int) -> np.ndarray:
        ref = np.asarray(truth[t])
        return truth_norm.apply(ref) if truth_norm is not None else ref.astype(np.float32)

    keys = info.key_indices if info.key_indices is not None else ()
    table = ResultTable(keys, truth_frame)
    method = info.method or fused_path.stem
    for page, t in zip(pages, indices, strict=False):
        table.add_frame(method, int(t), info.to_unit(fused[page]))
    out = Path(csv_path) if csv_path else fused_path.with_name(f"{fused_path.stem}_metrics.csv")
    write_text_atomic(out, table.to_csv_text(method))
    return table, method, out, table.metric_columns(method)


# ----------------------------------------------------------------------------- demo


DEMO_SIZE = dict(n_frames=40, shape=(200, 512), key_step=10, lr_psnr=35.0, separation=1)
"""The demo's sample: sized to fuse with bicubic and bayesian in about a minute on 2 CPU cores."""


def _available_methods() -> tuple[list[str], dict[str, str]]:
    """Methods the demo can run: the baselines always, networks when shipped weights exist."""
    from napari_xfusion.methods import get_reconstructor
    from napari_xfusion.methods.registry import available_methods

    specs = available_methods()
    available = [n for n, spec in specs.items() if not spec.needs_weights]
    skipped: dict[str, str] = {}
    for name in (n for n, spec in specs.items() if spec.needs_weights):
        try:
            get_reconstructor(name, device="cpu")
        except Exception as exc:  # a probe: any failure means "not available here", say why
            skipped[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            available.append(name)
    return available, skipped


def run_demo(out_dir: str | os.PathLike[str] = "xfusion-demo", progress: bool = True) -> FuseReport:
    """The headless demo: simulate the sample, fuse it with every available method, print the
    metrics table and where the files are."""
    out_dir = Path(out_dir)
    _say(
        f"xfusion demo: simulating a {DEMO_SIZE['n_frames']}-frame "
        f"{DEMO_SIZE['shape'][0]}x{DEMO_SIZE['shape'][1]} x-ray sequence in {out_dir}/"
    )
    paths = make_sample(out_dir, **DEMO_SIZE)  # type: ignore[arg-type]
    methods, skipped = _available_methods()
    for name, why in skipped.items():
        _say(f"xfusion demo: skipping {name}: {why}")
    report = fuse(
        paths["lr"],
        paths["keys"],
        out_dir / "fused.tif",
        methods=methods,
        truth_path=paths["truth"],
        progress=progress,
    )
    assert report.table is not None
    print(report.table.summary_text())
    print(f"\nfiles in {out_dir}/:")
    print(
        f"  inputs: {paths['lr'].name} (LR), {paths['keys'].name} (HR keys), "
        f"{paths['truth'].name} (ground truth)"
    )
    for m in methods:
        print(f"  {m}: {report.outputs[m].name}, {report.csv_paths[m].name}")
    if report.comparison is not None:
        print(f"  comparison: {report.comparison.name}")
    montage = write_montage(out_dir / "montage.png", paths, report.outputs, DEMO_SIZE["key_step"])
    print(f"  montage: {montage.name} (LR | each method | truth, and their ratio I[t]/I[t-1])")
    return report


def write_montage(
    out_path: Path, paths: dict[str, Path], fused: dict[str, Path], key_step: int
) -> Path:
    """PNG of one frame half-way between two HR keys: LR (x4, nearest), each fused method and
    the truth, above their frame-to-frame ratio I[t] / I[t-1] (the paper's Fig. 3 view)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_xfusion.core.io import read_stack

    truth = read_stack(paths["truth"])
    t = min(key_step // 2 or 1, len(truth) - 1)
    lr = read_stack(paths["lr"])
    panels = {"LR (x4 nearest)": np.kron(lr[t - 1 : t + 1], np.ones((1, 4, 4), np.float32))}
    for method, path in fused.items():
        panels[method] = read_stack(path)[t - 1 : t + 1]
    panels["truth"] = truth[t - 1 : t + 1]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 3.0), squeeze=False)
    for column, (title, pair) in enumerate(panels.items()):
        pair = np.asarray(pair, dtype=np.float32)
        axes[0, column].imshow(pair[1], cmap="gray", vmin=0.0, vmax=1.0)
        axes[0, column].set_title(title, fontsize=9)
        ratio = pair[1] / np.maximum(pair[0], 1e-3)
        axes[1, column].imshow(ratio, cmap="gray", vmin=0.7, vmax=1.3)
        axes[1, column].set_title(f"I[{t}] / I[{t - 1}]", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"frame {t} (HR keys every {key_step} frames)", fontsize=10)
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_path)  # atomic, like every export
    return out_path


def _display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_gui() -> bool:
    """Open napari on the sample with the docks and a first run going; block until it closes.

    False when napari or its Qt binding cannot be imported (the caller then runs headless).
    """
    from napari_xfusion._napari.demo import open_demo  # lazy: the headless path never imports Qt

    return open_demo()


# ----------------------------------------------------------------------------- argparse


def _add_normalise_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--normalise",
        choices=("auto", "percentile", "none"),
        default="auto",
        help="input normalisation; auto: percentile clip unless already float in [0, 1]",
    )


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _epilog(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


def _add_key_rule(p: argparse.ArgumentParser, required: bool) -> None:
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--key-step",
        type=int,
        metavar="K",
        help="HR key every K-th frame (K >= 2) of a full-rate HR stack",
    )
    group.add_argument(
        "--first-last", action="store_true", help="only the first and the last frame are HR keys"
    )
    return None


def _method_names() -> list[str]:
    """The registry's method names (declarations only: nothing is imported)."""
    from napari_xfusion.methods.registry import available_methods

    return list(available_methods())


def build_parser() -> argparse.ArgumentParser:
    """The ``xfusion`` argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(
        prog="xfusion",
        formatter_class=_formatter,
        description="Spatio-temporal fusion of dual-camera high-speed x-ray image sequences.",
        epilog=_epilog("""
            xfusion demo                       # simulate, fuse with every method, print metrics
            xfusion sample -o data/
            xfusion fuse --lr data/lr.tif --hr data/hr_keys.tif --method bicubic -o fused.tif
            xfusion evaluate fused.tif --truth data/truth.tif
        """),
    )
    parser.add_argument("--version", action="version", version=SOFTWARE)
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of input errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "sample",
        formatter_class=_formatter,
        help="write the simulated x-ray sample",
        description="Simulate a laser powder-bed fusion radiography sequence and write the HR "
        "ground truth (truth.tif), the LR stream (lr.tif, 4x4 binned) and the sparse HR key "
        "frames (hr_keys.tif, key indices in its metadata), all float32 in [0, 1].",
        epilog=_epilog("""
            xfusion sample -o data/
            xfusion sample -o data/ --frames 200 --size 400x1024 --key-step 20 --lr-psnr 30
            xfusion sample -o small/ --frames 24 --size 64x128 --first-last
        """),
    )
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--frames", type=int, default=60, help="number of frames T (default 60)")
    p.add_argument(
        "--size",
        default="400x1024",
        metavar="HxW",
        help="HR frame size, multiples of 4 (default 400x1024)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--speed", type=float, default=1.0, help="motion speed factor (default 1)")
    _add_key_rule(p, required=False)
    p.add_argument(
        "--separation",
        type=int,
        default=1,
        metavar="S",
        help="LR separation s recorded for fuse (default 1)",
    )
    p.add_argument(
        "--lr-psnr",
        type=float,
        metavar="DB",
        help="add Poisson noise to LR for this PSNR (20..60 dB; default: none)",
    )

    p = sub.add_parser(
        "simulate",
        formatter_class=_formatter,
        help="make LR + HR keys from your HR stack",
        description="Make an LR stream (4x4 binning, optional Poisson noise) and HR key frames "
        "from a full-rate HR stack; writes truth.tif (normalised HR), lr.tif and hr_keys.tif.",
        epilog=_epilog("""
            xfusion simulate hr.tif --key-step 20 --lr-psnr 35 -o sim/
            xfusion simulate frames_folder/ --first-last --separation 2 -o sim/
        """),
    )
    p.add_argument("hr", type=Path, help="full-rate HR stack (TIFF, hyperstack or folder)")
    _add_key_rule(p, required=True)
    p.add_argument("--separation", type=int, default=1, metavar="S", help="LR separation s")
    p.add_argument("--lr-psnr", type=float, metavar="DB", help="target LR PSNR (20..60 dB)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--crop",
        action="store_true",
        help="crop rows/columns that do not fill a 4x4 block (default: error)",
    )
    _add_normalise_option(p)
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")

    p = sub.add_parser(
        "fuse",
        formatter_class=_formatter,
        help="reconstruct HR frames at the LR frame rate",
        description="Fuse the LR stream with HR key frames. Frames are written as they are "
        "done; Ctrl-C keeps the frames done in a valid TIFF. Also writes a per-frame CSV "
        "(attention scores, metrics with --truth or a full-rate --hr) and the run "
        "configuration (<stem>.config.json). Under torchrun the frames are split over "
        "the ranks and rank 0 writes one file.",
        epilog=_epilog("""
            xfusion fuse --lr data/lr.tif --hr data/hr_keys.tif --method bicubic -o fused.tif
            xfusion fuse --lr lr.tif --hr hr_full.tif --key-step 20 --method bicubic,bayesian \\
                --frames 100:300 --truth hr_full.tif -o out/fused.tif
            xfusion fuse --lr lr.tif --hr keys.tif --key-indices 0,40,80 --method edvr-stf \\
                --weights my.pt --device cuda --units detector -o fused.tif
            torchrun --nproc_per_node 4 -m napari_xfusion.cli fuse --lr lr.tif --hr keys.tif \\
                --method edvr-stf -o fused.tif
        """),
    )
    p.add_argument("--lr", required=True, type=Path, help="LR stream (T, h, w)")
    p.add_argument(
        "--hr",
        required=True,
        type=Path,
        help="HR key frames (sparse, key indices from metadata or --key-indices) or "
        "a full-rate HR stack with --key-step/--first-last",
    )
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--key-step", type=int, metavar="K", help="keys every K-th frame")
    rule.add_argument("--first-last", action="store_true", help="keys at first and last frame")
    rule.add_argument(
        "--key-indices",
        metavar="I,J,...",
        help="LR time index of each HR frame (real dual-camera data)",
    )
    p.add_argument(
        "--method",
        default="bicubic",
        metavar="M[,M...]",
        help=f"{', '.join(_method_names())}; several comma-separated write one "
        "file each (<stem>_<method>.tif) and a comparison table",
    )
    p.add_argument("--frames", metavar="A:B", help="LR frames A..B-1 only (default all)")
    p.add_argument(
        "--separation",
        type=int,
        metavar="S",
        help="LR separation s (default: from the LR metadata, else 1)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="[METHOD=]PATH",
        help="network weights (default: the shipped ones); repeatable",
    )
    p.add_argument(
        "--units",
        choices=("float", "detector"),
        default="float",
        help="float32 in [0, 1] (default) or detector units and dtype of the HR input",
    )
    _add_normalise_option(p)
    p.add_argument(
        "--truth",
        type=Path,
        metavar="T.tif",
        help="full-rate HR ground truth: per-frame PSNR/AAD/SSIM in the CSV",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--out", required=True, type=Path, help="output TIFF")

    p = sub.add_parser(
        "evaluate",
        formatter_class=_formatter,
        help="PSNR/AAD/SSIM of a fused stack",
        description="Compare a fused stack with the ground truth frame by frame; writes a CSV "
        "and prints mean/median PSNR, AAD and SSIM.",
        epilog=_epilog("""
            xfusion evaluate fused.tif --truth data/truth.tif
            xfusion evaluate fused.tif --truth data/truth.tif --csv metrics.csv
        """),
    )
    p.add_argument("fused", type=Path, help="fused TIFF written by xfusion fuse")
    p.add_argument("--truth", required=True, type=Path, help="full-rate HR ground truth")
    p.add_argument("--csv", type=Path, help="per-frame CSV (default <fused>_metrics.csv)")

    p = sub.add_parser(
        "demo",
        formatter_class=_formatter,
        help="the main job on the built-in sample",
        description="Simulate the sample, fuse it with every method whose weights are "
        "available, write the fused TIFFs and print the metrics table; opens napari when a "
        "display is available unless --headless.",
        epilog=_epilog("""
            xfusion demo
            xfusion demo -o /tmp/demo --headless
        """),
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("xfusion-demo"),
        metavar="DIR",
        help="output folder (default ./xfusion-demo)",
    )
    p.add_argument("--headless", action="store_true", help="never open napari")

    sub.add_parser(
        "train",
        formatter_class=_formatter,
        add_help=False,
        help="train edvr / edvr-stf",
        description="Forwarded to napari_xfusion.train (see xfusion train --help).",
    )
    return parser


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CommandError(f"--size must look like HxW (e.g. 400x1024), got {text!r}") from None
    return h, w


def _command(args: argparse.Namespace) -> int:
    if args.command == "sample":
        paths = make_sample(
            args.out,
            n_frames=args.frames,
            shape=_parse_size(args.size),
            seed=args.seed,
            speed=args.speed,
            key_step=args.key_step if args.key_step else 10,
            first_last=args.first_last,
            separation=args.separation,
            lr_psnr=args.lr_psnr,
        )
        for role, path in paths.items():
            print(f"{role}: {path}")
        return 0
    if args.command == "simulate":
        paths = simulate_from_hr(
            args.hr,
            args.out,
            key_step=args.key_step,
            first_last=args.first_last,
            separation=args.separation,
            lr_psnr=args.lr_psnr,
            seed=args.seed,
            crop=args.crop,
            normalise_mode=args.normalise,
        )
        for role, path in paths.items():
            print(f"{role}: {path}")
        return 0
    if args.command == "fuse":
        methods = [m.strip() for m in args.method.split(",") if m.strip()]
        report = fuse(
            args.lr,
            args.hr,
            args.out,
            methods=methods,
            key_step=args.key_step,
            first_last=args.first_last,
            key_list=_parse_int_list(args.key_indices, "--key-indices")
            if args.key_indices
            else None,
            frames=_parse_frames(args.frames),
            separation=args.separation,
            device=args.device,
            weights=args.weights,
            units=args.units,
            truth_path=args.truth,
            normalise_mode=args.normalise,
            progress=not args.no_progress,
        )
        if int(os.environ.get("RANK", "0")) != 0:
            return 130 if report.interrupted else 0
        if report.table is not None and report.table.has_truth:
            print(report.table.summary_text())
        for m, path in report.outputs.items():
            print(f"{m}: {path} ({report.frames_done[m]} frames), {report.csv_paths[m]}")
        if report.comparison is not None:
            print(f"comparison: {report.comparison}")
        return 130 if report.interrupted else 0
    if args.command == "evaluate":
        table, _, csv_path, _ = _evaluate(args.fused, args.truth, args.csv)
        print(table.summary_text())
        print(f"per-frame metrics: {csv_path}")
        return 0
    if args.command == "demo":
        # With a display the GUI runs the fusion itself; headless (or without napari) the same
        # engine writes the fused TIFFs and prints the metrics.
        if not args.headless and _display_available() and _open_gui():
            return 0
        run_demo(args.out)
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xfusion`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from napari_xfusion.train import main as train_main  # lazy: pulls in torch

        return int(train_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    from napari_xfusion.core.io import StackError
    from napari_xfusion.engine import InputError

    try:
        return _command(args)
    except (CommandError, InputError, StackError, FileNotFoundError, ValueError) as exc:
        # Bad input (a file, a frame, an option): the message says what to fix; a traceback
        # would only bury it. --debug shows it anyway.
        if args.debug:
            raise
        _say(f"xfusion {args.command}: error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
