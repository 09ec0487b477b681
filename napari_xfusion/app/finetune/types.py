"""What fine-tuning takes and gives: settings, progress events, scores, the result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_xfusion.app.finetune.split import FinetuneError, KeySplit

__all__ = ["KEPT", "FinetuneProgress", "FinetuneResult", "FinetuneSettings", "LooScore"]

KEPT = ("finetuned", "original")


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune (defaults: a few CPU minutes from the shipped small weights).

    Attributes
    ----------
    lr : float
        Peak Adam learning rate (the shipped weights were trained at 4e-4; fine-tuning starts
        lower so a few steps on a few keys do not undo the pre-training).
    eta_min : float
        Learning rate at the end of the cosine.
    warmup : int
        Steps of linear warm-up.
    batch_size, crop, focus : int
        Items per step; HR crop (multiple of 4); candidate crops per item (the most
        structured is kept), as in :class:`napari_xfusion.train.config.DataConfig`.
    augment : bool
        Random flips and 90-degree rotations.
    validation_fraction : float
        Share of the interior keys held out (:func:`~.split.split_keys`).
    max_key_offset : int
        Neighbour keys up to this many places away (1: adjacent keys).
    grad_clip : float or None
        Global gradient-norm clip.
    max_steps : int or None
        Stop after this many steps even with time left (tests, reproducible runs).
    threads : int or None
        torch threads on the CPU during the training steps (restored after; the scoring runs
        with the engine's own setting); None: leave as is.
        1 by default: on a shared machine two spin-waiting OpenMP threads were measured ~5x
        slower per step than one (train/configs/shipped-small.yaml).
    min_gain_db : float
        The fine-tuned weights are kept only when their held-out PSNR beats the source's by
        more than this.
    """

    lr: float = 1e-4
    eta_min: float = 1e-6
    warmup: int = 10
    batch_size: int = 4
    crop: int = 64
    focus: int = 3
    augment: bool = True
    validation_fraction: float = 1 / 3
    max_key_offset: int = 1
    grad_clip: float | None = 5.0
    max_steps: int | None = None
    threads: int | None = 1
    min_gain_db: float = 0.0

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.eta_min < 0 or self.eta_min > self.lr:
            raise FinetuneError(
                f"need lr > 0 and 0 <= eta_min <= lr, got {self.lr}, {self.eta_min}"
            )
        if self.batch_size < 1 or self.focus < 1 or self.warmup < 0 or self.max_key_offset < 1:
            raise FinetuneError("batch_size, focus and max_key_offset must be >= 1, warmup >= 0")
        if self.crop % 4 or self.crop < 16:
            raise FinetuneError(f"crop must be a multiple of 4 and >= 16, got {self.crop}")
        if self.max_steps is not None and self.max_steps < 0:
            raise FinetuneError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.threads is not None and self.threads < 1:
            raise FinetuneError(f"threads must be >= 1, got {self.threads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinetuneProgress:
    """One progress event: ``phase`` in ``validate-before``, ``prepare``, ``train``,
    ``validate-after``, ``save``; ``step`` done, its ``loss`` (NaN outside training), training
    ``seconds`` so far of ``budget_seconds``."""

    phase: str
    step: int = 0
    loss: float = math.nan
    seconds: float = 0.0
    budget_seconds: float = 0.0
    message: str = ""

    @property
    def fraction(self) -> float:
        """Share of the training budget used, in [0, 1]."""
        if self.budget_seconds <= 0:
            return 1.0 if self.phase not in ("validate-before", "prepare") else 0.0
        return min(self.seconds / self.budget_seconds, 1.0)


@dataclass(frozen=True)
class LooScore:
    """Leave-one-key-out score of one set of weights on the held-out keys.

    ``psnr``, ``aad``, ``ssim``: means over the keys against the real keys; ``lr_psnr``: mean
    LR consistency (the reconstruction binned 4x4 against the LR frame, dB; NaN when not
    checked); ``per_key``: LR index -> PSNR (dB).
    """

    psnr: float
    aad: float
    ssim: float
    lr_psnr: float = math.nan
    per_key: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "psnr": self.psnr,
            "aad": self.aad,
            "ssim": self.ssim,
            "lr_psnr": None if math.isnan(self.lr_psnr) else self.lr_psnr,
            "per_key_psnr": {str(k): v for k, v in self.per_key.items()},
        }


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` did: the checkpoint written and why it holds what it holds."""

    checkpoint_path: Path
    kept: str  # "finetuned" | "original"
    loo_before: LooScore
    loo_after: LooScore
    steps: int
    seconds: float
    provenance: dict[str, Any]
    split: KeySplit | None = None
    stopped: str = ""  # "time", "steps", "cancelled"
    sha256: str = ""

    @property
    def gain_db(self) -> float:
        """Held-out PSNR after minus before (dB)."""
        return self.loo_after.psnr - self.loo_before.psnr

    def summary_text(self) -> str:
        """A few lines for the user: before/after, what was kept, where."""
        split = self.split
        keys = (
            f" (held-out keys {list(split.validation)}; trained on {list(split.train)})"
            if split
            else ""
        )
        lines = [
            f"leave-one-key-out PSNR on the held-out keys{keys}:",
            f"  before {self.loo_before.psnr:.2f} dB (SSIM {self.loo_before.ssim:.4f})",
            f"  after  {self.loo_after.psnr:.2f} dB (SSIM {self.loo_after.ssim:.4f}) after "
            f"{self.steps} steps in {self.seconds:.0f} s ({self.stopped or 'done'})",
        ]
        if self.kept == "finetuned":
            lines.append(
                f"kept the fine-tuned weights ({self.gain_db:+.2f} dB): {self.checkpoint_path}"
            )
        else:
            why = (
                "no training step was done"
                if self.steps == 0
                else (f"fine-tuning did not help ({self.gain_db:+.2f} dB)")
            )
            lines.append(f"kept the original weights, {why}: {self.checkpoint_path}")
        return "\n".join(lines)
