"""One model's optimisation state: distributed set-up, the loss, the learning-rate schedule,
:class:`ModelTrainer` and the resume state it writes and reads.

Used by the loop in :mod:`napari_xfusion.train.loop` (which re-exports these names) and by
fine-tuning (:mod:`napari_xfusion.app.finetune.runner`).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from napari_xfusion.nn.edvr import NetConfig, build_model, named_config
from napari_xfusion.train.config import (
    ModelSpec,
    OptimConfig,
    TrainConfig,
)
from napari_xfusion.train.validation import offset_stats

logger = logging.getLogger(__name__)


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier loss ``mean(sqrt((pred - target)^2 + eps^2))``: a differentiable L1."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


# ---------------------------------------------------------------------------------------------
# Distributed set-up
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1).

    The backend is NCCL on GPUs and gloo on CPUs. Each rank uses GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, dev)


# ---------------------------------------------------------------------------------------------
# One model's optimisation state
# ---------------------------------------------------------------------------------------------


def learning_rate(optim: OptimConfig, step: int, progress: float) -> float:
    """Learning rate at ``step`` with the run ``progress`` in [0, 1].

    Linear warm-up over the first ``optim.warmup`` steps, times a cosine from ``optim.lr`` at
    progress 0 down to ``optim.eta_min`` at progress 1.
    """
    floor = optim.eta_min / optim.lr
    cosine = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    warm = min(1.0, (step + 1) / optim.warmup) if optim.warmup > 0 else 1.0
    return optim.lr * warm * cosine


def run_progress(optim: OptimConfig, step: int, seconds: float) -> float:
    """Fraction of the run done: steps over ``iterations``, or the wall-clock share of
    ``time_budget_minutes`` when that is larger (the run ends at 1)."""
    progress = step / optim.iterations
    if optim.time_budget_minutes:
        progress = max(progress, seconds / (60.0 * optim.time_budget_minutes))
    return progress


def _net_config(spec: ModelSpec) -> NetConfig:
    if isinstance(spec.net, str):
        return named_config(spec.net, spec.arch)
    return NetConfig.from_dict({**spec.net, "arch": spec.arch})


class ModelTrainer:
    """Model, optimizer, scheduler and outputs of one :class:`ModelSpec`."""

    def __init__(self, spec: ModelSpec, config: TrainConfig, info: DistInfo) -> None:
        self.spec, self.config, self.info = spec, config, info
        self.out_dir = Path(config.run_dir) / str(spec.name)
        if spec.init:
            from napari_xfusion.nn.checkpoint import load_model

            # The checkpoint defines the network; it must be the architecture asked for.
            self.model = load_model(spec.init, expect=spec.arch)
        else:
            self.model = build_model(_net_config(spec))
        self.model.to(info.device).train()
        opt = config.optim
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=opt.lr, betas=tuple(opt.betas)
        )
        self.frozen: bool | None = None
        self.skipped = 0  # steps skipped for non-finite gradients
        self.offsets: dict[str, list] = {}  # level -> [sum of means, max, steps] since last log
        self.commit = _git_commit()  # the code this run imported, not a later HEAD
        self.wrapped: nn.Module = self.model
        self.set_phase(0)

    def set_phase(self, step: int) -> None:
        """Freeze all but the fusion module during the TSA warm-up; (re)wrap in DDP.

        DDP registers the parameters that require gradients when it is built, so a phase change
        builds a new wrapper (it also re-broadcasts rank 0's weights, harmlessly).
        """
        frozen = step < self.config.optim.tsa_iterations
        if frozen == self.frozen:
            return
        self.frozen = frozen
        for name, p in self.model.named_parameters():
            p.requires_grad_(not frozen or name.startswith("fusion."))
        if self.info.distributed:
            ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, batch: dict[str, Tensor], step: int, lr: float) -> float:
        """One optimizer step on ``batch`` at learning rate ``lr``; returns the loss."""
        self.set_phase(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        lr, hr, target = batch["lr"], batch["hr"], batch["target"]
        if self.model.config.arch == "edvr-stf-flow":
            hr = batch["hr_flow"]
        out = self.wrapped(lr, hr if self.model.config.uses_hr_keys else None)
        loss = charbonnier(out, target, self.config.optim.charbonnier_eps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The gradients are all-reduced, so every rank takes the same decision here.
        clip = self.config.optim.grad_clip or math.inf
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not torch.isfinite(norm):
            # One bad batch (e.g. exploding deformable offsets) must not poison the weights.
            self.skipped += 1
            logger.warning("%s: non-finite gradient at step %d, step skipped", self.spec.name, step)
            return float("nan")
        self.optimizer.step()
        for level, (mean, peak) in offset_stats(self.model).items():
            acc = self.offsets.setdefault(level, [0.0, 0.0, 0])
            acc[0] += mean
            acc[1] = max(acc[1], peak)
            acc[2] += 1
        return float(loss.detach())

    def take_offsets(self) -> dict[str, float]:
        """Log columns ``offset_<level>_mean/max`` since the last call (then cleared)."""
        out = {}
        for level, (total, peak, n) in self.offsets.items():
            out[f"offset_{level}_mean"] = total / max(n, 1)
            out[f"offset_{level}_max"] = peak
        self.offsets.clear()
        return out

    # -- saving -------------------------------------------------------------------------------

    def save(self, step: int, seconds: float, extra: dict[str, Any], snapshot: bool) -> Path:
        """Write the model (nn.checkpoint format) and the resume state; rank 0 only."""
        from napari_xfusion.nn.checkpoint import save_checkpoint

        self.out_dir.mkdir(parents=True, exist_ok=True)
        provenance = {
            "training": self.config.to_dict(),
            "model_name": self.spec.name,
            "iteration": step,
            "wall_seconds": round(seconds, 1),
            "machine": _machine(self.info),
            "git_commit": self.commit,
            "skipped_steps": self.skipped,
            **extra,
        }
        latest = self.out_dir / "model_latest.pt"
        save_checkpoint(latest, self.model, self.model.config, provenance)
        if snapshot:
            save_checkpoint(
                self.out_dir / f"model_iter{step:07d}.pt", self.model, self.model.config,
                provenance,
            )  # fmt: skip
        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "iteration": step,
            "seconds": float(seconds),
            "skipped": self.skipped,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "net_config": self.model.config.to_dict(),
            "rng": _rng_state(),
        }
        tmp = self.out_dir / "state_latest.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out_dir / "state_latest.pt")
        return latest

    def load_state(self) -> tuple[int, float]:
        """Restore from ``state_latest.pt``; returns ``(step, seconds)`` done.

        Loaded with ``torch.load(weights_only=True)``: only tensors, numbers, strings and
        containers, so a crafted run folder cannot run code. Older state files (which held
        other objects) are refused with a message.
        """
        path = self.out_dir / "state_latest.pt"
        state = load_train_state(path, self.info.device)
        if NetConfig.from_dict(state["net_config"]) != self.model.config:
            raise ValueError(f"{path} holds a different network configuration than the config")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: the saved model/optimizer state does not fit this "
                             f"model: {str(err)[:300]}") from None  # fmt: skip
        self.skipped = int(state.get("skipped", 0))
        _set_rng_state(state["rng"])
        return int(state["iteration"]), float(state["seconds"])


STATE_FORMAT = "napari-xfusion-train-state"
STATE_VERSION = 2
_STATE_KEYS = ("iteration", "seconds", "model", "optimizer", "net_config", "rng")


class TrainStateError(ValueError):
    """A ``state_latest.pt`` cannot be resumed from (unsafe, old or incomplete)."""


def _rng_state() -> dict[str, Any]:
    """torch's and NumPy's global RNG states as tensors and plain numbers (weights_only-safe)."""
    # The legacy global state: our code uses Generators, a user data source might not.
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    state_tuple = (n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(state_tuple)  # noqa: NPY002


def load_train_state(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """Read a resume state written by :meth:`ModelTrainer.save`, without unpickling objects.

    Raises
    ------
    FileNotFoundError
        No state file.
    TrainStateError
        The file holds anything besides tensors and plain containers (refused: loading it
        would run code), was written by an older version, or lacks entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        unsafe = "weights_only" in str(err) or "Unsupported global" in str(err)
        reason = (
            "it holds Python objects besides tensors and plain containers, so loading it "
            "could run code; it was not loaded"
            if unsafe
            else f"it is damaged or not a training state ({type(err).__name__})"
        )
        raise TrainStateError(
            f"{path}: cannot resume: {reason}. A state written by napari-xfusion before "
            "version 2 of this format looks like that too: start a new run, with "
            "init: <run>/<model>/model_latest.pt to keep the weights"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise TrainStateError(
            f"{path}: cannot resume: not a napari-xfusion training state (no format "
            f"{STATE_FORMAT!r}; an older version's?); start a new run, with init: "
            "<run>/<model>/model_latest.pt to keep the weights"
        )
    if state.get("version") != STATE_VERSION:
        raise TrainStateError(
            f"{path}: training state version {state.get('version')!r}; this code resumes "
            f"version {STATE_VERSION}"
        )
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise TrainStateError(f"{path}: training state lacks {', '.join(missing)}")
    return state


def _machine(info: DistInfo) -> str:
    if info.device.type == "cuda":
        what = f"{info.world_size}x {torch.cuda.get_device_name(info.device)}"
    else:
        what = f"{info.world_size} process(es) x {torch.get_num_threads()} threads, CPU"
    return f"{socket.gethostname()} ({platform.processor() or platform.machine()}): {what}"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
