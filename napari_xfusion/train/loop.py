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
"""

from __future__ import annotations

import csv
import logging
import math
import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.metrics import psnr, ssim
from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.core.windows import key_indices, plan
from napari_xfusion.nn.edvr import EDVR, NetConfig, build_model, named_config
from napari_xfusion.train.config import (
    ModelSpec,
    OptimConfig,
    TrainConfig,
    ValConfig,
    save_config,
)
from napari_xfusion.train.datasets import (
    TRAINING_SEED_MIN,
    FlowSampling,
    RealMotionPool,
    SimulatedPool,
    SourcePool,
    StackFolder,
    TexturePool,
    TrainingWindows,
    WindowSampler,
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

OFFSET_LEVELS = ("l3", "l2", "l1", "cascade")
"""The DCN layers of PCD alignment, coarse to fine (their offsets are logged)."""

LOG_FIELDS = (
    "iteration",
    "seconds",
    "loss",
    "lr",
    "val_psnr",
    "val_ssim",
    "bicubic_psnr",
    "bicubic_ssim",
    "flow_psnr",
    "flow_ssim",
    "real_psnr",
    "real_ssim",
    "real_bicubic_psnr",
    "real_flow_psnr",
    *(f"offset_{lv}_{k}" for lv in OFFSET_LEVELS for k in ("mean", "max")),
)
"""Columns of ``log.csv``: validation medians (``val_*`` simulator, ``real_*`` real motion, with
the bicubic and ``flow`` baselines on the same frames; ``flow_*`` only for ``edvr-stf-flow``
runs) and the mean / max |offset| (pixels of the level) of every DCN layer since the last
row."""


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
# Validation
# ---------------------------------------------------------------------------------------------


class _ValSet:
    """One validation sequence: its HR truth, LR and target windows, with lazily computed
    flow inputs (only when an ``edvr-stf-flow`` model is validated)."""

    def __init__(self, hr: np.ndarray, windows: list) -> None:
        self.hr = hr
        self.lr = bin_frames(hr)
        self.windows = windows
        self._flow: list | None = None

    def flow_inputs(self) -> list:
        if self._flow is None:
            from napari_xfusion.nn.edvr_flow import RecordingFlowFuser, flow_key_inputs

            fuser = RecordingFlowFuser()
            lr = self.lr
            self._flow = [
                flow_key_inputs(
                    fuser,
                    w.target,
                    w.keys,
                    lr[w.target],
                    self.hr[list(w.keys)],
                    lr[list(w.keys)],
                    read_lr=lambda i: lr[i],
                )  # fmt: skip
                for w in self.windows
            ]
        return self._flow


def _targets(n_frames: int, key_step: int, count: int, separation: int) -> list:
    keys = key_indices(n_frames, key_step)
    candidates = np.setdiff1d(np.arange(n_frames), keys)
    pick = np.linspace(0, candidates.size - 1, min(count, candidates.size))
    return plan(candidates[np.round(pick).astype(int)], n_frames, separation, keys)


def _median_scores(preds: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    return {
        "psnr": float(np.median([psnr(p, t) for p, t in zip(preds, truths, strict=True)])),
        "ssim": float(np.median([ssim(p, t) for p, t in zip(preds, truths, strict=True)])),
    }


class Validator:
    """PSNR/SSIM on fixed held-out sequences, against bicubic (and ``flow``) on the same frames.

    The simulator sequence is simulated noise-free with ``config.seed`` (< ``TRAINING_SEED_MIN``,
    so never drawn for training); LR = 4x4 binning; keys every ``key_step`` frames; the
    ``targets`` evaluated are non-key frames spread evenly over the sequence. ``real_motion``
    names sequences of :func:`napari_xfusion.core.motion.validation_suite` (validation stills:
    never trained on), scored the same way and reported apart (``real_*``).
    """

    def __init__(self, config: ValConfig) -> None:
        if config.seed >= TRAINING_SEED_MIN:
            raise ValueError(
                f"the validation seed must be < {TRAINING_SEED_MIN} (training seeds start there)"
            )
        hr = simulate_sequence(config.n_frames, tuple(config.shape), seed=config.seed, noise=False)
        self.sets: dict[str, list[_ValSet]] = {
            "val": [
                _ValSet(
                    hr,
                    _targets(config.n_frames, config.key_step, config.targets, config.separation),
                )
            ]  # fmt: skip
        }
        if config.real_motion:
            from napari_xfusion.core.motion import validation_suite

            suite = validation_suite(tuple(config.real_shape), config.n_frames, seed=config.seed,
                                     names=config.real_motion)  # fmt: skip
            self.sets["real"] = [
                _ValSet(
                    frames,
                    _targets(
                        config.n_frames, config.key_step, config.real_targets, config.separation
                    ),
                )  # fmt: skip
                for _, frames in suite
            ]
        self.baselines: dict[str, dict[str, float]] = {}
        for name, sets in self.sets.items():
            preds, truths = [], []
            for vs in sets:
                preds += list(upscale_bicubic(vs.lr[[w.target for w in vs.windows]]))
                truths += [vs.hr[w.target] for w in vs.windows]
            self.baselines[name] = _median_scores(preds, truths)
        self._flow_baselines: dict[str, dict[str, float]] | None = None

    @property
    def bicubic(self) -> dict[str, float]:
        """Bicubic's median PSNR / SSIM on the simulator targets."""
        return self.baselines["val"]

    def flow_baselines(self) -> dict[str, dict[str, float]]:
        """The ``flow`` method's medians per set (computes the flow inputs once)."""
        if self._flow_baselines is None:
            self._flow_baselines = {}
            for name, sets in self.sets.items():
                preds, truths = [], []
                for vs in sets:
                    preds += [np.clip(f.frame, 0, 1) for f in vs.flow_inputs()]
                    truths += [vs.hr[w.target] for w in vs.windows]
                self._flow_baselines[name] = _median_scores(preds, truths)
        return self._flow_baselines

    @torch.no_grad()
    def __call__(self, model: EDVR, device: torch.device) -> dict[str, float]:
        """Median PSNR and SSIM of ``model`` per set: ``psnr``, ``ssim`` (simulator) and
        ``real_psnr``, ``real_ssim`` when real-motion sequences are configured (model left in
        train mode)."""
        model.eval()
        flow_arch = model.config.arch == "edvr-stf-flow"
        out_scores: dict[str, float] = {}
        try:
            for name, sets in self.sets.items():
                preds, truths = [], []
                for vs in sets:
                    flow = vs.flow_inputs() if flow_arch else None
                    for i, w in enumerate(vs.windows):
                        lr = torch.from_numpy(vs.lr[list(w.lr_indices)])[None, :, None]
                        hr = None
                        if flow is not None:
                            hr = torch.from_numpy(flow[i].packed())[None]
                        elif model.config.uses_hr_keys:
                            hr = torch.from_numpy(vs.hr[list(w.keys)])[None, :, None]
                        hr = None if hr is None else hr.to(device)
                        out = model(lr.to(device), hr).clamp(0, 1)[0, 0].cpu().numpy()
                        preds.append(out)
                        truths.append(vs.hr[w.target])
                scores = _median_scores(preds, truths)
                prefix = "" if name == "val" else f"{name}_"
                out_scores.update({f"{prefix}{k}": v for k, v in scores.items()})
        finally:
            model.train()
        return out_scores


def offset_stats(model: nn.Module) -> dict[str, tuple[float, float]]:
    """``{level: (mean |offset|, max |offset|)}`` of the last forward's DCN layers (pixels of
    each level, before any ``max_offset`` clamp); empty before the first forward."""
    pcd = getattr(model, "pcd_align", None)
    if pcd is None:
        return {}
    out = {}
    for level, pack in pcd.dcn_packs().items():
        if pack.offset_stats is not None:
            out[level] = (float(pack.offset_stats[0]), float(pack.offset_stats[1]))
    return out


def plot_curves(log_csv: str | os.PathLike, png: str | os.PathLike, title: str = "") -> Path:
    """Plot a run's ``log.csv`` (loss, validation PSNR with its baselines, DCN offsets) as a
    PNG (matplotlib's Agg backend; written atomically). Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    rows = list(csv.DictReader(open(log_csv, encoding="utf-8")))  # noqa: SIM115

    def series(name: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            v = r.get(name)
            if v not in (None, ""):
                xs.append(float(r["iteration"]))
                ys.append(float(v))
        return xs, ys

    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_loss, ax_val, ax_off = fig.subplots(1, 3)
    ax_loss.semilogy(*series("loss"), lw=0.8)
    ax_loss.set(xlabel="iteration", ylabel="Charbonnier loss", title="training loss")
    for col, style in (
        ("val_psnr", "C0-o"), ("bicubic_psnr", "C0:"), ("flow_psnr", "C0--"),
        ("real_psnr", "C1-o"), ("real_bicubic_psnr", "C1:"), ("real_flow_psnr", "C1--"),
    ):  # fmt: skip
        xs, ys = series(col)
        if xs:
            ax_val.plot(xs, ys, style, ms=3, label=col)
    ax_val.set(xlabel="iteration", ylabel="median PSNR (dB)", title="validation")
    ax_val.legend(fontsize=7)
    for i, lv in enumerate(OFFSET_LEVELS):
        for k, style in (("mean", "-"), ("max", ":")):
            xs, ys = series(f"offset_{lv}_{k}")
            if xs:
                ax_off.plot(xs, ys, style, color=f"C{i}", lw=0.8, label=f"{lv} {k}")
    ax_off.set(xlabel="iteration", ylabel="|offset| (px of level)", title="DCN offsets")
    ax_off.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    png = Path(png)
    tmp = png.with_name(png.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(png)
    return png


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
    finally:
        bar.close()
        for f, _ in writers.values():
            f.close()
        if info.distributed:
            dist.destroy_process_group()
    return final
