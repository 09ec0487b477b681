"""Validation during training: fixed held-out sequences scored with median PSNR / SSIM, the
DCN offset statistics, the ``log.csv`` columns and the curves plotted from them.

Used by the loop in :mod:`napari_xfusion.train.loop` (which re-exports these names).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_xfusion.core.degrade import bin_frames
from napari_xfusion.core.metrics import psnr, ssim
from napari_xfusion.core.resample import upscale_bicubic
from napari_xfusion.core.sample import simulate_sequence
from napari_xfusion.core.windows import key_indices, plan
from napari_xfusion.nn.edvr import EDVR
from napari_xfusion.train.config import (
    ValConfig,
)
from napari_xfusion.train.datasets import (
    TRAINING_SEED_MIN,
)

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
