"""Fine-tune a network on the user's own keys for a bounded time, keep it only if it helps.

Steps of :func:`iter_finetune` (:func:`finetune` drives it):

1. split the keys (:func:`~.split.split_keys`): training targets and held-out keys;
2. score the source weights by leave-one-key-out on the held-out keys
   (:func:`napari_xfusion.app.validation.leave_one_key_out`, the same code as ``xfusion
   validate``, through the method registry: the score is what a fusion run with those weights
   gives);
3. train from the source weights on the pairs of :mod:`.pairs` with the training loop's
   pieces (:class:`napari_xfusion.train.loop.ModelTrainer`: Adam, Charbonnier loss, gradient
   clipping, non-finite steps skipped; :func:`~napari_xfusion.train.loop.learning_rate`:
   warm-up then cosine annealing spread over the wall-time budget), until ``minutes`` pass,
   ``max_steps`` are done or ``cancel`` is set (checked between steps);
4. score the fine-tuned weights the same way on the same held-out keys;
5. keep the better (strictly higher mean PSNR by at least ``min_gain_db``; else the
   source), and save it with :func:`napari_xfusion.nn.checkpoint.save_checkpoint`, its
   provenance recording the source weights and hash, the data and hashes, the split, steps,
   time and both scores. The file loads like any checkpoint: ``MethodChoice(name,
   weights=path)``, ``xfusion fuse --weights edvr-stf=PATH``.

Cancelling keeps the better of the source and the weights trained so far (both are scored).
The wall time bounds training; the two validations add a forward pass per held-out key each.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.config import RunConfig
from napari_xfusion.app.finetune import scoring
from napari_xfusion.app.finetune.split import FinetuneError, split_keys
from napari_xfusion.app.finetune.types import (
    FinetuneProgress,
    FinetuneResult,
    FinetuneSettings,
    LooScore,
)
from napari_xfusion.app.finetune.weights import source_weights

__all__ = [
    "finetune",
    "iter_finetune",
]

# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------


def _data_record(prepared: Any, pairs_sha256: str) -> dict[str, Any]:
    from napari_xfusion.core.io import sha256_file

    out: dict[str, Any] = {"training_arrays_sha256": pairs_sha256}
    for role in ("lr", "hr"):
        source = (prepared.sources or {}).get(role)
        entry: dict[str, Any] = {"source": None if source is None else str(source)}
        if source is not None and Path(str(source)).is_file():
            entry["sha256"] = sha256_file(source)
        out[role] = entry
    out["n_frames"] = prepared.n_frames
    out["frame_shape"] = list(prepared.frame_shape)
    out["separation"] = int(prepared.separation)
    return out


@contextlib.contextmanager
def _torch_threads(n: int | None, device: str) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if n is not None and device == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _is_cancelled(cancel: Any) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return lambda: bool(cancel())


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _trainer(
    arch: str,
    source: Path,
    out: Path,
    settings: FinetuneSettings,
    minutes: float,
    seed: int,
    dev: str,
) -> tuple[Any, Any, int]:
    """The training loop's :class:`ModelTrainer` on ``source``, its optimiser settings (the
    cosine spread over ``minutes``) and the step limit."""
    import torch

    from napari_xfusion.train.config import ModelSpec, OptimConfig, TrainConfig, ValConfig
    from napari_xfusion.train.loop import DistInfo, ModelTrainer

    max_steps = settings.max_steps if settings.max_steps is not None else 10**9
    optim = OptimConfig(
        iterations=max(max_steps, 1),
        time_budget_minutes=float(minutes) if minutes > 0 else None,
        lr=settings.lr,
        eta_min=settings.eta_min,
        warmup=settings.warmup,
        grad_clip=settings.grad_clip,
    )
    spec = ModelSpec(arch=arch, init=str(source), name="finetune")
    config = TrainConfig(
        run_dir=str(out.parent),
        seed=seed,
        device=dev,
        models=[spec],
        optim=optim,
        val=ValConfig(every=0),
    )
    return ModelTrainer(spec, config, DistInfo(0, 1, torch.device(dev))), optim, max_steps


@dataclass
class _Trained:
    steps: int = 0
    seconds: float = 0.0
    stopped: str = ""
    threads: int = 0
    losses: list[float] = field(default_factory=list)


def _train(
    trainer: Any,
    optim: Any,
    max_steps: int,
    pairs: Any,
    settings: FinetuneSettings,
    minutes: float,
    cancelled: Callable[[], bool],
    rng: np.random.Generator,
    dev: str,
) -> Generator[FinetuneProgress, None, _Trained]:
    """Optimiser steps until the budget, ``max_steps`` or a cancel; one event per step."""
    import torch

    from napari_xfusion.train.loop import learning_rate, run_progress

    done = _Trained()
    budget = 60.0 * minutes
    # Set here, not around the whole run: the engine sets its own thread count on its first
    # run in a process (leave-one-key-out runs it), which once left training on 2 spin-waiting
    # threads at ~3 s/step where 1 thread takes ~0.3 s (benchmarks/finetune_gain.py).
    with _torch_threads(settings.threads, torch.device(dev).type):
        done.threads = torch.get_num_threads()
        t0 = time.monotonic()
        while True:
            elapsed = time.monotonic() - t0
            if cancelled():
                done.stopped = "cancelled"
                break
            if minutes <= 0 or done.steps >= max_steps:
                done.stopped = "steps" if minutes > 0 else "time"
                break
            progress = run_progress(optim, done.steps, elapsed)
            if progress >= 1.0:
                done.stopped = "time"
                break
            lr = learning_rate(optim, done.steps, progress)
            loss = trainer.step(pairs.batch(settings.batch_size, rng, dev), done.steps, lr)
            done.losses.append(loss)
            done.steps += 1
            yield FinetuneProgress("train", done.steps, loss, time.monotonic() - t0, budget)
        done.seconds = time.monotonic() - t0
    return done


def _provenance(
    *,
    method: str,
    arch: str,
    kept: str,
    source: Any,
    prepared: Any,
    pairs: Any,
    split: Any,
    trained: _Trained,
    trainer: Any,
    before: LooScore,
    after: LooScore,
    minutes: float,
    settings: FinetuneSettings,
    seed: int,
    dev: str,
    started: float,
) -> dict[str, Any]:
    """What the checkpoint records about how it was made (JSON types)."""

    from napari_xfusion import __version__

    losses = trained.losses[-10:]
    return {
        "kind": "finetune",
        "software": f"napari-xfusion {__version__}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "arch": arch,
        "kept": kept,
        "source_weights": {"path": str(source.path), "sha256": source.sha256},
        "source_provenance": source.provenance,
        "data": _data_record(prepared, pairs.sha256),
        "keys": split.to_dict(),
        "pairs": [{"target": p.target_index, "keys": list(p.keys)} for p in pairs.pairs],
        "steps": trained.steps,
        "seconds": round(trained.seconds, 2),
        "total_seconds": round(time.monotonic() - started, 2),
        "minutes": float(minutes),
        "stopped": trained.stopped,
        "mean_loss_last_10": float(np.nanmean(losses)) if losses else None,
        "settings": settings.to_dict(),
        "seed": int(seed),
        "device": dev,
        "threads": trained.threads,
        "git_commit": trainer.commit,
        "skipped_steps": trainer.skipped,
        "loo_before": before.to_dict(),
        "loo_after": after.to_dict(),
        "loo_rule": "mean over the held-out keys of app.validation.leave_one_key_out (each key "
        "reconstructed with it withheld, framed by its neighbour keys)",
    }


def iter_finetune(
    config: RunConfig,
    prepared: Any,
    *,
    method: str = "edvr-stf",
    minutes: float = 5.0,
    out: str | os.PathLike[str],
    cancel: Any = None,
    device: str | None = None,
    seed: int = 0,
    init: str | os.PathLike[str] | None = None,
    settings: FinetuneSettings | None = None,
    validation: list[int] | tuple[int, ...] | None = None,
) -> Generator[FinetuneProgress, None, FinetuneResult]:
    """Fine-tune, yielding :class:`FinetuneProgress`; returns the :class:`FinetuneResult`.

    See :func:`finetune` for the parameters. ``cancel`` (a ``threading.Event`` or a
    zero-argument callable) is checked between steps; the generator then scores what it has
    and returns normally (do not ``close()`` it to cancel: it would write nothing).
    """
    import torch

    from napari_xfusion.app.devices import resolve_device
    from napari_xfusion.app.export import check_writes
    from napari_xfusion.app.finetune.pairs import KeyPairs
    from napari_xfusion.nn.checkpoint import read_checkpoint, save_checkpoint

    settings = settings or FinetuneSettings()
    if not minutes >= 0:
        raise FinetuneError(f"minutes must be >= 0, got {minutes}")
    out = Path(out)
    check_writes([out], config)
    split = split_keys(
        prepared.keys.indices, fraction=settings.validation_fraction, validation=validation
    )
    arch, path = source_weights(config, method, init)
    source = read_checkpoint(path, expect={"arch": arch, "num_in_ch": 1, "num_frame": 3})
    dev = resolve_device(device or config.device)
    budget = 60.0 * float(minutes)
    started = time.monotonic()
    yield FinetuneProgress(
        "validate-before",
        budget_seconds=budget,
        message=f"scoring {path.name} on keys {list(split.validation)}",
    )
    before = scoring.score_weights(config, prepared, method, path, split.validation, dev)
    yield FinetuneProgress("prepare", budget_seconds=budget, message="reading the pairs")
    pairs = KeyPairs(
        prepared,
        split.train,
        arch,
        crop=settings.crop,
        max_key_offset=settings.max_key_offset,
        focus=settings.focus,
        augment=settings.augment,
    )
    torch.manual_seed(seed)
    trainer, optim, max_steps = _trainer(arch, path, out, settings, minutes, seed, dev)
    original = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trained = yield from _train(
        trainer,
        optim,
        max_steps,
        pairs,
        settings,
        float(minutes),
        _is_cancelled(cancel),
        np.random.default_rng(seed),
        dev,
    )
    after = before
    if trained.steps > 0:
        yield FinetuneProgress(
            "validate-after",
            trained.steps,
            seconds=trained.seconds,
            budget_seconds=budget,
            message="scoring the fine-tuned weights",
        )
        candidate = out.with_name(f".{out.name}.candidate.pt")
        try:
            save_checkpoint(candidate, trainer.model, trainer.model.config, {"candidate": True})
            after = scoring.score_weights(
                config, prepared, method, candidate, split.validation, dev
            )
        finally:
            candidate.unlink(missing_ok=True)
    better = trained.steps > 0 and after.psnr > before.psnr + settings.min_gain_db
    kept = "finetuned" if better else "original"
    if not better:
        trainer.model.load_state_dict(original)
    yield FinetuneProgress(
        "save",
        trained.steps,
        seconds=trained.seconds,
        budget_seconds=budget,
        message=f"saving the {kept} weights",
    )
    provenance = _provenance(
        method=method,
        arch=arch,
        kept=kept,
        source=source,
        prepared=prepared,
        pairs=pairs,
        split=split,
        trained=trained,
        trainer=trainer,
        before=before,
        after=after,
        minutes=minutes,
        settings=settings,
        seed=seed,
        dev=dev,
        started=started,
    )
    sha = save_checkpoint(out, trainer.model, trainer.model.config, provenance)
    return FinetuneResult(
        out,
        kept,
        before,
        after,
        trained.steps,
        trained.seconds,
        provenance,
        split,
        trained.stopped,
        sha,
    )


def finetune(
    config: RunConfig,
    prepared: Any,
    *,
    method: str = "edvr-stf",
    minutes: float = 5.0,
    out: str | os.PathLike[str],
    cancel: Any = None,
    on_progress: Callable[[FinetuneProgress], Any] | None = None,
    device: str | None = None,
    seed: int = 0,
    init: str | os.PathLike[str] | None = None,
    settings: FinetuneSettings | None = None,
    validation: list[int] | tuple[int, ...] | None = None,
) -> FinetuneResult:
    """Fine-tune ``method``'s network on the user's keys and keep it only if it helps.

    Parameters
    ----------
    config : RunConfig
        The run (device, the method's options and weights when it lists ``method``).
    prepared : PreparedInputs
        The aligned LR stream and HR keys (:func:`napari_xfusion.app.inputs.prepare_inputs`).
    method : str
        A network method (``edvr-stf``, ``edvr-stf-flow``, ``edvr``).
    minutes : float
        Wall-time budget of the training (0: only score the source and save it).
    out : path-like
        Checkpoint written (always: the fine-tuned or the original weights, with provenance).
    cancel : threading.Event or callable, optional
        Checked between steps; cancelling keeps the better model so far.
    on_progress : callable, optional
        Called with each :class:`FinetuneProgress` (phase, step, loss, seconds).
    device : str, optional
        Overrides ``config.device``.
    seed : int
        Seeds the crops and torch.
    init : path-like, optional
        Weights to start from (default: the config's for ``method``, else the shipped ones).
    settings : FinetuneSettings, optional
    validation : sequence of int, optional
        Held-out keys (LR indices) instead of the default split (:mod:`.split`).

    Returns
    -------
    FinetuneResult
    """
    events = iter_finetune(
        config,
        prepared,
        method=method,
        minutes=minutes,
        out=out,
        cancel=cancel,
        device=device,
        seed=seed,
        init=init,
        settings=settings,
        validation=validation,
    )
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)
