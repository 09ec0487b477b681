"""What an alignment found, for people (:meth:`AlignmentReport.summary`) and files
(:meth:`AlignmentReport.to_dict`, ``alignment.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["AlignmentReport", "format_transform"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def format_transform(params: dict[str, Any]) -> str:
    """``flip x, scale 0.3448 (2.900 HR px per LR px), rotation 3.000 deg, shift (...)``."""
    flips = [a for a in ("x", "y") if params.get(f"flip_{a}")]
    scale = float(params["scale"])
    sx, sy = (float(v) for v in params["shift_xy"])
    text = (
        f"flip {' '.join(flips) if flips else 'none'}, scale {scale:.4f} LR px per HR px "
        f"({1 / scale:.3f} HR px per LR px), rotation {float(params['rotation_deg']):.3f} deg, "
        f"shift ({sx:.2f}, {sy:.2f}) LR px"
    )
    shear = params.get("shear")
    if shear is not None and abs(float(shear)) > 1e-9:
        text += f", shear {float(shear):.4f}"
    return text


@dataclass
class AlignmentReport:
    """The time match, time refinement, transform and residual of one alignment.

    Times: ``metadata_residual_ns`` / ``_frames`` are each key's LR frame time minus its HR
    time (from the metadata or rates; :func:`core.cameras.match_frames`' sign);
    ``subframe_offset_frames`` is where the images put the keys after the LR frame they were
    assigned (from :func:`core.cameras.refine_time_offset`),
    ``clock_correction_frames`` what the refinement changed relative to the metadata;
    ``key_times_frames`` the LR time (in LR frames) each key really belongs to.
    Space: ``transform`` (HR px -> LR px params), ``residual_lr_px`` (median over keys),
    ``lr_crop`` ``(y0, y1, x0, x1)`` of the LR stack kept, intensity map of the HR keys
    ``hr_gain``/``hr_offset`` into the LR's [0, 1] units.
    """

    lr_source: str
    hr_source: str
    lr_times_source: str
    hr_times_source: str
    lr_interval_s: float
    hr_interval_s: float
    n_lr_frames: int
    n_hr_frames: int
    lr_shape: tuple[int, int]
    hr_frame_numbers: list[int]
    key_indices: list[int]
    metadata_residual_ns: list[float]
    metadata_residual_frames: list[float]
    trigger_delay_s: float
    refined: bool = False
    subframe_offset_frames: float = 0.0
    per_key_offset_frames: list[float] = field(default_factory=list)
    refinement_confidence: float | None = None
    clock_correction_frames: float = 0.0
    rematched: bool = False
    key_times_frames: list[float] = field(default_factory=list)
    transform_source: str = ""
    transform: dict[str, Any] = field(default_factory=dict)
    matrix: list[list[float]] = field(default_factory=list)
    model: str = "similarity"
    residual_lr_px: float = float("nan")
    per_key_residual_lr_px: list[float] = field(default_factory=list)
    max_residual_lr_px: float = 0.5
    lr_crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    valid_fraction: float = 1.0
    hr_gain: float = 1.0
    hr_offset: float = 0.0
    lr_normalisation: dict[str, Any] | None = None
    hr_normalisation: dict[str, Any] | None = None
    lr_pixel_um: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def time_offset_frames(self) -> float:
        """LR time (in LR frames) of the first key: the HR camera's offset on the LR clock."""
        return float(self.key_times_frames[0]) if self.key_times_frames else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON types (``alignment.json``)."""
        out = _jsonable(asdict(self))
        out["time_offset_frames"] = self.time_offset_frames
        out["lr_crop"] = list(self.lr_crop)
        out["lr_shape"] = list(self.lr_shape)
        return out

    def time_text(self) -> str:
        """The time match in a few lines (residuals in ns and frames, refined offset)."""
        res_ns = np.abs(np.asarray(self.metadata_residual_ns, dtype=float))
        res_fr = np.abs(np.asarray(self.metadata_residual_frames, dtype=float))
        lines = [
            f"time: LR {self.lr_times_source} ({1 / self.lr_interval_s:,.0f} fps), "
            f"HR {self.hr_times_source} ({1 / self.hr_interval_s:,.0f} fps)"
            + (
                f", trigger delay {self.trigger_delay_s * 1e9:.0f} ns"
                if self.trigger_delay_s
                else ""
            ),
            f"  {len(self.key_indices)} HR frames matched to LR frames {_short(self.key_indices)};"
            f" metadata residual max {res_ns.max():.0f} ns = {res_fr.max():.3f} frames, "
            f"median {np.median(res_ns):.0f} ns",
        ]
        if self.refined:
            lines.append(
                f"  refined from the images: keys at LR index {self.subframe_offset_frames:+.3f} "
                f"frames (= {self.subframe_offset_frames * self.lr_interval_s * 1e9:+.0f} ns), "
                f"HR clock corrected by {self.clock_correction_frames:+.3f} frames "
                f"({self.clock_correction_frames * self.lr_interval_s * 1e9:+.0f} ns)"
                + ("; keys re-matched to other LR frames" if self.rematched else "")
                + (
                    f", confidence {self.refinement_confidence:.2f}"
                    if self.refinement_confidence is not None
                    else ""
                )
            )
        lines.append(
            f"  first HR frame at LR time {self.time_offset_frames:.3f} frames "
            f"({self.time_offset_frames * self.lr_interval_s * 1e9:.0f} ns)"
        )
        return "\n".join(lines)

    def space_text(self) -> str:
        """The transform and residual in a few lines."""
        y0, y1, x0, x1 = self.lr_crop
        per_key = ", ".join(f"{v:.3f}" for v in self.per_key_residual_lr_px)
        return "\n".join(
            [
                f"transform ({self.transform_source}, {self.model}): "
                + (format_transform(self.transform) if self.transform else "?"),
                f"  residual {self.residual_lr_px:.3f} LR px (median over keys; per key "
                f"{per_key}; refused above {self.max_residual_lr_px:g})",
                f"  LR crop rows {y0}:{y1}, columns {x0}:{x1} ({y1 - y0}x{x1 - x0} LR px, HR "
                f"keys {4 * (y1 - y0)}x{4 * (x1 - x0)} on the exact 4x grid, "
                f"{100 * self.valid_fraction:.1f} % covered)",
                f"  HR intensities mapped to LR units: {self.hr_gain:.4f} * HR + "
                f"{self.hr_offset:+.4f}",
            ]
        )

    def summary(self) -> str:
        """The human summary (``alignment.txt`` and what ``xfusion register`` prints)."""
        text = f"LR {self.lr_source} ({self.n_lr_frames} frames), HR {self.hr_source} "
        text += f"({self.n_hr_frames} frames)\n{self.time_text()}\n{self.space_text()}"
        if self.notes:
            text += "\n" + "\n".join(f"note: {n}" for n in self.notes)
        return text


def _short(indices: list[int]) -> str:
    keys = [int(k) for k in indices]
    if len(keys) <= 6:
        return ", ".join(map(str, keys))
    return f"{keys[0]}, {keys[1]}, {keys[2]} .. {keys[-1]}"
