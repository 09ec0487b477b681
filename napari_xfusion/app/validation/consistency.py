"""LR consistency: does a reconstruction, binned 4x4, agree with the LR frame at its time?

The LR camera saw every frame. A fused HR frame that is right must, binned 4x4 (the LR
camera's view, :func:`napari_xfusion.core.degrade.bin_frames`), match the LR frame at the same
time up to the LR noise. Where it does not, the method put (or lost) structure that the LR does
not support. No ground truth is needed, so this runs on every frame of a real experiment.

Units. A fused frame is in the HR keys' [0, 1] normalisation; the LR stream has its own
(``PreparedInputs.lr_normalisation``; None when it was float [0, 1] already). The LR frame is
mapped into the HR keys' units by an affine :class:`LrMapping`: through detector units
(LR [0, 1] -> LR detector values -> HR [0, 1], exact when both cameras count in the same
units, as for a simulated pair) or, for two cameras with different gains, fitted on the binned
keys against the LR frames at the key times (:func:`lr_mapping` picks).

Noise. Estimated from the LR data itself (:func:`estimate_lr_noise`): the robust (MAD)
spread of a second-difference high-pass, per intensity level (shot noise grows with the
signal). A pixel is flagged when ``|binned - LR|`` exceeds :data:`Z_THRESHOLD` standard
deviations of that noise, or when the 3x3 mean of the difference exceeds the same number of
standard deviations of a 3x3 mean (structure a few LR pixels wide, below the per-pixel
noise); never below :data:`MIN_TOLERANCE`. A frame is flagged when more than
:data:`FLAG_FRACTION` of its LR pixels are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.app.results import format_table, rows_to_csv_text
from napari_xfusion.app.validation.lr_model import (
    LrMapping,
    LrNoise,
    _box3,
    detector_mapping,
    estimate_lr_noise,
    fit_mapping,
    lr_mapping,
)
from napari_xfusion.core.degrade import SCALE, bin_frames

__all__ = [
    "FLAG_FRACTION",
    "MIN_TOLERANCE",
    "Z_THRESHOLD",
    "ConsistencyRow",
    "ConsistencyTable",
    "LrChecker",
    "LrConsistency",
    "LrMapping",
    "LrNoise",
    "consistency_table",
    "detector_mapping",
    "estimate_lr_noise",
    "export_consistency",
    "fit_mapping",
    "lr_consistency",
    "lr_mapping",
]

Z_THRESHOLD = 4.0
"""Standard deviations of the LR noise beyond which a difference is not noise (a Gaussian
exceeds 4 sigma at 6e-5 of the pixels)."""

MIN_TOLERANCE = 0.01
"""Smallest difference ever flagged, in HR [0, 1] units (1 % of the range): a clean LR would
otherwise flag rounding."""

FLAG_FRACTION = 0.01
"""A frame is flagged (structure the LR does not support) above this fraction of LR pixels."""


# ----------------------------------------------------------------------------- one frame


@dataclass
class LrConsistency:
    """How one reconstruction agrees with the LR frame at its time.

    Attributes
    ----------
    psnr, aad : float
        Binned reconstruction against the (mapped) LR frame, HR [0, 1] units.
    flagged_fraction : float
        Fraction of LR pixels whose difference the LR noise does not explain.
    map : numpy.ndarray, float32, shape (h, w)
        ``binned - LR`` (signed), HR [0, 1] units.
    flags : numpy.ndarray, bool, shape (h, w)
        The flagged pixels.
    sigma : float
        Median LR noise standard deviation used (HR [0, 1] units).
    """

    psnr: float
    aad: float
    flagged_fraction: float
    map: np.ndarray
    flags: np.ndarray
    sigma: float

    @property
    def flagged(self) -> bool:
        """Whether the frame has structure the LR does not support (> :data:`FLAG_FRACTION`)."""
        return self.flagged_fraction > FLAG_FRACTION


def lr_consistency(
    frame01: np.ndarray,
    lr01: np.ndarray,
    *,
    noise_sigma: float | LrNoise | None = None,
    mapping: LrMapping | None = None,
    z: float = Z_THRESHOLD,
    min_tolerance: float = MIN_TOLERANCE,
) -> LrConsistency:
    """Bin ``frame01`` 4x4 and compare it with the LR frame at the same time.

    Parameters
    ----------
    frame01 : numpy.ndarray, shape (H, W)
        A reconstruction in the HR keys' [0, 1] units; H, W = 4 h, 4 w.
    lr01 : numpy.ndarray, shape (h, w)
        The LR frame at its time, LR [0, 1] units (mapped by ``mapping``; None: the same units
        as ``frame01`` already).
    noise_sigma : float or LrNoise, optional
        LR noise standard deviation in HR units after the mapping (a number, or per level);
        None: estimated from ``lr01`` itself (:func:`estimate_lr_noise`; one frame gives a
        rougher estimate than a stream's, see :class:`LrChecker`).
    mapping : LrMapping, optional
    z, min_tolerance : float
        The flag rule (module docstring).

    Returns
    -------
    LrConsistency
    """
    frame01 = np.asarray(frame01, dtype=np.float32)
    lr = np.asarray(lr01, dtype=np.float32)
    if lr.ndim != 2 or frame01.shape != (SCALE * lr.shape[0], SCALE * lr.shape[1]):
        raise ValueError(
            f"reconstruction {frame01.shape} and LR frame {lr.shape}: the reconstruction must "
            f"be exactly {SCALE}x the LR frame in each axis"
        )
    if mapping is not None:
        lr = mapping.apply(lr)
    if noise_sigma is None:
        noise = estimate_lr_noise(lr)
    elif isinstance(noise_sigma, LrNoise):
        noise = noise_sigma
    else:
        noise = LrNoise.constant(float(noise_sigma))
    binned = bin_frames(frame01, SCALE).astype(np.float64)
    diff = binned - lr
    sigma = noise.sigma(_box3(lr))
    pixel = np.maximum(z * sigma, min_tolerance)
    # The 3x3 mean of independent noise has a third of its spread: a blob a few LR pixels wide
    # is caught below the per-pixel threshold.
    local = np.maximum(z * sigma / 3.0, min_tolerance)
    flags = (np.abs(diff) > pixel) | (np.abs(_box3(diff)) > local)
    mse = float(np.mean(diff**2))
    return LrConsistency(
        psnr=10.0 * math.log10(1.0 / mse) if mse > 0 else math.nan,
        aad=float(np.mean(np.abs(diff))),
        flagged_fraction=float(flags.mean()),
        map=diff.astype(np.float32),
        flags=flags,
        sigma=float(np.median(sigma)),
    )


# ----------------------------------------------------------------------------- a stream


class LrChecker:
    """LR consistency of any frame of a run: the LR stream, its units map and noise model.

    Parameters
    ----------
    lr : array-like, shape (T, h, w)
        The LR stream (memmap or array; read frame by frame).
    lr_normalisation : Normalisation, optional
        The stream's (None: float [0, 1] as is).
    mapping : LrMapping, optional
        LR [0, 1] -> HR keys' units (default identity).
    noise : LrNoise, optional
        In HR units after ``mapping``; default estimated from ``noise_frames`` evenly spaced
        LR frames.
    """

    def __init__(
        self,
        lr: Any,
        lr_normalisation: Any = None,
        mapping: LrMapping | None = None,
        noise: LrNoise | None = None,
        *,
        noise_frames: int = 8,
    ) -> None:
        self.lr = lr
        self.lr_normalisation = lr_normalisation
        self.mapping = mapping or LrMapping()
        n = int(lr.shape[0])
        if noise is None:
            rows = np.unique(np.linspace(0, n - 1, min(noise_frames, n)).round().astype(int))
            noise = estimate_lr_noise(np.stack([self.lr_frame(int(t)) for t in rows]))
        self.noise = noise

    @classmethod
    def from_prepared(cls, prepared: Any, mode: str = "auto") -> LrChecker:
        """For a :class:`~napari_xfusion.app.inputs.PreparedInputs` (map chosen by
        :func:`lr_mapping`)."""
        return cls(prepared.lr, prepared.lr_normalisation, lr_mapping(prepared, mode))

    @property
    def n_frames(self) -> int:
        return int(self.lr.shape[0])

    def lr_frame(self, t: int) -> np.ndarray:
        """LR frame ``t`` in the HR keys' units (mapped), float32 (h, w)."""
        if not 0 <= int(t) < self.n_frames:
            raise IndexError(f"LR frame {t} is outside the LR stream (0..{self.n_frames - 1})")
        frame = np.asarray(self.lr[int(t)])
        if self.lr_normalisation is not None:
            frame = self.lr_normalisation.apply(frame)
        return self.mapping.apply(frame)

    def check(self, frame01: np.ndarray, t: int) -> LrConsistency:
        """:func:`lr_consistency` of a reconstruction of LR time ``t``."""
        return lr_consistency(frame01, self.lr_frame(t), noise_sigma=self.noise)

    def describe(self) -> dict[str, Any]:
        """The map and noise level, for reports."""
        m = self.mapping
        return {"mapping": m.source, "gain": m.gain, "offset": m.offset,
                "mapping_residual": m.residual, "lr_noise_sigma": self.noise.median}  # fmt: skip


@dataclass
class ConsistencyRow:
    """LR consistency of one fused frame of one method."""

    method: str
    index: int
    psnr: float
    aad: float
    flagged_fraction: float
    flagged: bool


_TEXT_COLUMNS = (
    ("method", "method"),
    ("frames", "frames"),
    ("flagged_frames", "flagged"),
    ("lr_psnr_median", "LR PSNR median"),
    ("flagged_fraction_median", "flagged px median"),
    ("flagged_fraction_max", "flagged px max"),
)


@dataclass
class ConsistencyTable:
    """Per-frame LR consistency of one or more methods' runs."""

    rows: list[ConsistencyRow] = field(default_factory=list)
    checker: LrChecker | None = None

    def add(self, method: str, index: int, frame01: np.ndarray) -> ConsistencyRow:
        """Check one frame (needs :attr:`checker`) and add its row."""
        if self.checker is None:
            raise ValueError("this table has no LR to check against")
        c = self.checker.check(frame01, index)
        row = ConsistencyRow(method, int(index), c.psnr, c.aad, c.flagged_fraction, c.flagged)
        self.rows.append(row)
        return row

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    def flagged(self, method: str | None = None) -> list[ConsistencyRow]:
        """The flagged frames (of ``method``, or all), by method then frame."""
        return [r for r in self.rows if r.flagged and method in (None, r.method)]

    def summary(self) -> list[dict[str, Any]]:
        """Per method: ``frames, flagged_frames, lr_psnr_median, lr_aad_mean,
        flagged_fraction_median, flagged_fraction_max``."""
        out = []
        for method in self.methods:
            rows = [r for r in self.rows if r.method == method]
            frac = np.array([r.flagged_fraction for r in rows])
            psnr = np.array([r.psnr for r in rows])
            psnr = psnr[np.isfinite(psnr)]
            out.append({
                "method": method,
                "frames": len(rows),
                "flagged_frames": sum(r.flagged for r in rows),
                "lr_psnr_median": float(np.median(psnr)) if psnr.size else math.nan,
                "lr_aad_mean": float(np.mean([r.aad for r in rows])),
                "flagged_fraction_median": float(np.median(frac)),
                "flagged_fraction_max": float(frac.max()),
            })  # fmt: skip
        return out

    def to_csv_text(self) -> str:
        """``method, frame, lr_psnr, lr_aad, flagged_fraction, flagged`` per row."""
        return rows_to_csv_text([
            {"method": r.method, "frame": r.index, "lr_psnr": r.psnr, "lr_aad": r.aad,
             "flagged_fraction": r.flagged_fraction, "flagged": r.flagged}
            for r in sorted(self.rows, key=lambda r: (self.methods.index(r.method), r.index))
        ])  # fmt: skip

    def summary_text(self) -> str:
        return format_table(self.summary(), _TEXT_COLUMNS)


def consistency_table(
    frames: Iterable[np.ndarray] | np.ndarray,
    indices: Sequence[int],
    checker: LrChecker,
    *,
    method: str = "fused",
    table: ConsistencyTable | None = None,
) -> ConsistencyTable:
    """LR consistency of a run's frames: ``frames[i]`` (HR [0, 1], e.g. ``FrameResult.frame``
    or ``ExportInfo.to_unit(page)``) is the reconstruction of LR time ``indices[i]``."""
    table = table if table is not None else ConsistencyTable(checker=checker)
    table.checker = table.checker or checker
    indices = [int(t) for t in indices]
    n = 0
    for frame, t in zip(frames, indices, strict=False):
        table.add(method, t, frame)
        n += 1
    if n != len(indices):
        raise ValueError(f"{n} frames for {len(indices)} frame indices")
    return table


def export_consistency(
    path: Any,
    checker: LrChecker,
    *,
    table: ConsistencyTable | None = None,
    role: str = "fused stack",
) -> ConsistencyTable:
    """LR consistency of every computed page of a fused export (either face,
    :func:`napari_xfusion.app.export.read_export`; ``role`` prefixes its errors), mapped back
    to [0, 1]."""
    from napari_xfusion.app.export import read_export
    from napari_xfusion.app.inputs import InputError

    stack, info = read_export(path, role=role)
    pages = info.computed_pages
    indices = [int(t) for t in info.pages[pages]]
    if indices and max(indices) >= checker.n_frames:
        raise InputError(
            f"{role} {path}: holds frame {max(indices)} but the LR stream has "
            f"{checker.n_frames} frames"
        )
    frames = (info.to_unit(stack[p]) for p in pages)
    return consistency_table(frames, indices, checker, method=info.method or str(path), table=table)
