"""The training loop: one process, or many under ``torchrun`` (DistributedDataParallel).

Several models can be trained side by side on the *same* batches (``config.models``): the
shipped ``edvr`` and ``edvr-stf`` are trained that way, so their comparison is not confounded by
different data or budgets.

Layout of a run directory::

    run_dir/config.yaml                    the resolved configuration
    run_dir/<model>/log.csv                loss, learning rate, validation metrics, DCN offsets
    run_dir/<model>/curves.png             loss / validation / offset curves (every validation)
    run_dir/<model>/model_latest.pt        nn.checkpoint format (load with nn.checkpoint)
    run_dir/<model>/model_iter<N>.pt       snapshots every ``checkpoint_every`` steps
    run_dir/<model>/state_latest.pt        optimizer state, step and time, for ``--resume``

Only rank 0 writes. Determinism: the weights are initialised from ``config.seed`` (identical on
every rank; DDP also broadcasts them), and each rank's data stream is seeded with
``(seed, rank, worker, start step)``.

The pieces live in :mod:`napari_xfusion.train.trainer` (one model's optimisation state,
distributed set-up, resume state) and :mod:`napari_xfusion.train.validation` (validation,
log columns, curves); their public names are re-exported here.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from napari_xfusion.train.config import (
    TrainConfig,
    save_config,
)
from napari_xfusion.train.datasets import (
    FlowSampling,
    RealMotionPool,
    SimulatedPool,
    SourcePool,
    StackFolder,
    TexturePool,
    TrainingWindows,
    WindowSampler,
)
from napari_xfusion.train.trainer import (
    DistInfo,
    ModelTrainer,
    TrainStateError,
    charbonnier,
    learning_rate,
    load_train_state,
    run_progress,
    setup_distributed,
)
from napari_xfusion.train.validation import (
    LOG_FIELDS,
    OFFSET_LEVELS,
    Validator,
    offset_stats,
    plot_curves,
)

__all__ = [
    "train",
    "TrainStateError",
    "load_train_state",
    "charbonnier",
    "learning_rate",
    "run_progress",
    "Validator",
    "offset_stats",
    "plot_curves",
    "OFFSET_LEVELS",
    "DistInfo",
    "setup_distributed",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def _pools(config: TrainConfig) -> tuple[list[SourcePool], list[float]]:
    pools: list[SourcePool] = []
    for src in config.data.sources:
        if src.kind == "simulated":
            pools.append(SimulatedPool(**src.options))
        elif src.kind == "textures":
            pools.append(TexturePool(**src.options))
        elif src.kind == "real-motion":
            pools.append(RealMotionPool(**src.options))
        else:
            pools.append(StackFolder(src.path, **src.options))
    return pools, [s.weight for s in config.data.sources]


def _batches(config: TrainConfig, info: DistInfo, start: int) -> Iterator[dict[str, Tensor]]:
    d = config.data
    sampler = WindowSampler(
        crop=d.crop,
        separations=d.separations,
        key_offsets=tuple(d.key_offsets),
        log10_b0=None if d.log10_b0 is None else tuple(d.log10_b0),
        augment=d.augment,
        focus=d.focus,
        flow=FlowSampling(d.flow_context)
        if any(m.arch == "edvr-stf-flow" for m in config.models)
        else None,
    )
    pools, weights = _pools(config)
    # The start step enters the seed: a resumed run continues with fresh, reproducible data.
    dataset = TrainingWindows(pools, weights, sampler, seed=config.seed, rank=info.rank,
                              stream=start)  # fmt: skip
    loader = DataLoader(
        dataset,
        batch_size=d.batch_size,
        num_workers=d.num_workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=d.num_workers > 0,
    )
    for batch in loader:
        yield {k: v.to(info.device, non_blocking=True) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _agree(value: float, info: DistInfo) -> float:
    """Rank 0's ``value`` on every rank (wall-clock decisions must not split the ranks)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.broadcast(t, 0)
    return float(t.item())


def _param_checksum(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in model.parameters()))


def _gather(value: float, info: DistInfo) -> list[float]:
    if not info.distributed:
        return [value]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return [float(v) for v in out]


def _log(
    trainers: list[ModelTrainer],
    writers: dict[str, tuple[Any, csv.DictWriter]],
    validator: Validator | None,
    step: int,
    seconds: float,
    lr: float | None,
    losses: dict[str, list[float]],
) -> dict[str, str]:
    """Write one CSV row per model (validating it when ``validator`` is given) and return the
    progress-bar summary. The losses since the last row are averaged and cleared."""
    post = {}
    for tr in trainers:
        name = str(tr.spec.name)
        row: dict[str, Any] = {"iteration": step, "seconds": round(seconds, 1), "lr": lr}
        if losses[name]:
            row["loss"] = float(np.nanmean(losses[name]))
            losses[name].clear()
        row.update(tr.take_offsets())
        if validator is not None:
            scores = validator(tr.model, tr.info.device)
            row.update(
                val_psnr=scores["psnr"],
                val_ssim=scores["ssim"],
                bicubic_psnr=validator.bicubic["psnr"],
                bicubic_ssim=validator.bicubic["ssim"],
            )
            if "real_psnr" in scores:
                row.update(
                    real_psnr=scores["real_psnr"],
                    real_ssim=scores["real_ssim"],
                    real_bicubic_psnr=validator.baselines["real"]["psnr"],
                )
            if tr.model.config.arch == "edvr-stf-flow":
                flow = validator.flow_baselines()
                row.update(flow_psnr=flow["val"]["psnr"], flow_ssim=flow["val"]["ssim"])
                if "real" in flow:
                    row["real_flow_psnr"] = flow["real"]["psnr"]
            post[name] = f"{scores['psnr']:.2f}dB"
        else:
            post[name] = f"{row.get('loss', math.nan):.4f}"
        f, writer = writers[name]
        writer.writerow(row)
        f.flush()
        if validator is not None:
            try:
                plot_curves(tr.out_dir / "log.csv", tr.out_dir / "curves.png", name)
            except Exception as err:  # a plot must never stop a training run
                logger.warning("%s: could not plot the curves: %s", name, err)
    return post


def train(config: TrainConfig, resume: bool = False) -> dict[str, Path]:
    """Run the training described by ``config``.

    Parameters
    ----------
    config : TrainConfig
    resume : bool
        Continue from ``run_dir/<model>/state_latest.pt`` (all models must have one).

    Returns
    -------
    dict
        Model name -> path of its final checkpoint (on rank 0; empty on the other ranks).
    """
    info = setup_distributed(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    trainers = [ModelTrainer(spec, config, info) for spec in config.models]
    start, seconds_done = 0, 0.0
    if resume:
        states = [tr.load_state() for tr in trainers]
        steps = {step for step, _ in states}
        if len(steps) != 1:
            raise ValueError(f"the models were saved at different steps: {sorted(steps)}")
        start, seconds_done = steps.pop(), max(seconds for _, seconds in states)
    run_dir = Path(config.run_dir)
    validator = Validator(config.val) if info.main and config.val.every > 0 else None
    writers = {}
    if info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        for tr in trainers:
            tr.out_dir.mkdir(parents=True, exist_ok=True)
            path = tr.out_dir / "log.csv"
            new = not (resume and path.exists())
            f = open(path, "w" if new else "a", newline="", encoding="utf-8")  # noqa: SIM115
            writers[tr.spec.name] = (f, csv.DictWriter(f, LOG_FIELDS))
            if new:
                writers[tr.spec.name][1].writeheader()

    iterations = config.optim.iterations
    batches = _batches(config, info, start)
    t0 = time.monotonic() - seconds_done
    last_save = time.monotonic()
    losses: dict[str, list[float]] = {str(tr.spec.name): [] for tr in trainers}
    bar = tqdm(total=iterations, initial=start, disable=not info.main, desc="train",
               dynamic_ncols=True)  # fmt: skip
    final: dict[str, Path] = {}
    step = start
    validated_at = -1
    lr: float | None = None
    try:
        while True:
            elapsed = _agree(time.monotonic() - t0, info)  # one clock for every rank
            progress = run_progress(config.optim, step, elapsed)
            if progress >= 1.0:
                break
            lr = learning_rate(config.optim, step, progress)
            batch = next(batches)
            for tr in trainers:
                losses[str(tr.spec.name)].append(tr.step(batch, step, lr))
            step += 1
            bar.update(1)
            last = run_progress(config.optim, step, time.monotonic() - t0) >= 1.0
            validate = validator is not None and (step % config.val.every == 0 or last)
            if not info.main:
                continue
            if step % config.log_every == 0 or validate or last:
                check = validator if validate else None
                seconds = time.monotonic() - t0
                bar.set_postfix(_log(trainers, writers, check, step, seconds, lr, losses))
                validated_at = step if validate else validated_at
            snapshot = config.checkpoint_every > 0 and step % config.checkpoint_every == 0
            timed = time.monotonic() - last_save >= 60 * config.checkpoint_minutes
            if snapshot or timed:
                elapsed = time.monotonic() - t0
                for tr in trainers:
                    tr.save(step, elapsed, {}, snapshot)
                last_save = time.monotonic()
        if validator is not None and validated_at != step:
            # The time budget ran out between two checks: validate the final weights too.
            _log(trainers, writers, validator, step, time.monotonic() - t0, lr, losses)
        # Every rank must hold the same weights: check it, and record it in the checkpoint.
        sums = {str(tr.spec.name): _gather(_param_checksum(tr.model), info) for tr in trainers}
        if info.main:
            elapsed = time.monotonic() - t0
            for tr in trainers:
                name = str(tr.spec.name)
                extra = {"rank_checksums": sums[name], "world_size": info.world_size}
                final[name] = tr.save(step, elapsed, extra, snapshot=False)
            for name, ranks in sums.items():
                if len(set(ranks)) != 1:
                    raise RuntimeError(f"{name}: the ranks' weights diverged: {ranks}")
        if info.distributed:
            # Rank 0 is still saving when the others finish; a gloo group torn down while a
            # peer is still connected can abort that rank ("terminate called without an active
            # exception", seen once in CI): meet here, then tear down together. Only on a
            # normal end: after an error a peer may never arrive.
            dist.barrier()
    finally:
        bar.close()
        for f, _ in writers.values():
            f.close()
        if info.distributed:
            dist.destroy_process_group()
    return final
