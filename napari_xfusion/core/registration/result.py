"""The result of a camera registration: :class:`Registration` (transform and how well it fits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.core.registration.transform import CameraTransform

__all__ = ["Registration"]


@dataclass(frozen=True, eq=False)
class Registration:
    """An estimated camera transform and how well it fits.

    Attributes
    ----------
    transform : CameraTransform
        HR pixel -> LR pixel map.
    residual_lr_px : float
        Residual misregistration, LR pixels (:func:`measure_residual`: median local shift
        between the binned resampled keys and the LR frames; inf when unmeasurable).
    per_key_residual_lr_px : numpy.ndarray, float64, shape (K,)
        The same per key.
    overlap_lr : (y0, y1, x0, x1)
        LR crop both cameras see (end-exclusive LR pixel indices).
    score : float
        Mean correlation (Pearson, over the overlap) of the LR frames with the aligned HR keys
        blurred to the LR pixel footprint; ~1 for a perfect, clean match.
    model : str
        "similarity" or "affine".
    hr_shape, lr_shape : (int, int)
        Image sizes the estimate was made for.
    candidates : tuple of dict
        Per mirror candidate tried: ``flip_x``, ``flip_y``, ``coarse_score``, ``score`` (None
        when not refined).
    source : str
        "keys" or "target".
    """

    transform: CameraTransform
    residual_lr_px: float
    per_key_residual_lr_px: np.ndarray
    overlap_lr: tuple[int, int, int, int]
    score: float
    model: str = "similarity"
    hr_shape: tuple[int, int] = (0, 0)
    lr_shape: tuple[int, int] = (0, 0)
    candidates: tuple[dict[str, Any], ...] = field(default=())
    source: str = "keys"

    def info(self) -> dict[str, Any]:
        """JSON-ready summary (for ``CameraTransform.save(path, info=...)`` and reports)."""
        return {
            "source": self.source,
            "model": self.model,
            "residual_lr_px": float(self.residual_lr_px),
            "per_key_residual_lr_px": [float(v) for v in self.per_key_residual_lr_px],
            "overlap_lr": list(self.overlap_lr),
            "score": float(self.score),
            "hr_shape": list(self.hr_shape),
            "lr_shape": list(self.lr_shape),
            "candidates": [dict(c) for c in self.candidates],
        }

    def report(self) -> str:
        """A few lines for a person: the parameters, the overlap, the residual."""
        p = self.transform.params()
        flips = " and ".join(
            n for n, f in (("left-right", p["flip_x"]), ("top-bottom", p["flip_y"])) if f
        )
        y0, y1, x0, x1 = self.overlap_lr
        lines = [
            f"HR -> LR ({self.model}, from {self.source}): scale {p['scale']:.5f} LR px per HR px "
            f"(ratio {1 / p['scale']:.4f}), rotation {p['rotation_deg']:+.3f} deg, shift "
            f"({p['shift_xy'][0]:.2f}, {p['shift_xy'][1]:.2f}) LR px, mirrored "
            f"{flips or 'no'}" + (f", shear {p['shear']:+.4f}, aspect {p['aspect']:.4f}"
                                   if self.model == "affine" else ""),
            f"common area: LR rows {y0}-{y1 - 1}, columns {x0}-{x1 - 1} ({y1 - y0} x {x1 - x0} "
            f"LR px)",
            f"residual misregistration {self.residual_lr_px:.3f} LR px (per key "
            + ", ".join(f"{v:.3f}" for v in self.per_key_residual_lr_px)
            + f"); correlation {self.score:.3f}",
        ]  # fmt: skip
        return "\n".join(lines)
