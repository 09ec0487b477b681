"""The transform an alignment starts from: given, a transform file, a calibration target pair,
or an estimate from the keys (searched again near its scale when poor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.app.dualcam.prepare import PreparedPair, Progress, _say, _unit


@dataclass
class _Chosen:
    """The transform in use and where it came from (``registration``: an estimate's)."""

    transform: Any
    source: str
    registration: Any = None

    @property
    def from_keys(self) -> bool:
        return self.registration is not None and self.source == ESTIMATED


ESTIMATED = "estimated from the keys"


def _estimate(
    prepared: PreparedPair, lr_frames: np.ndarray, scale_hint: float | None, progress: Progress
) -> _Chosen:
    from napari_xfusion.core.registration import estimate_transform

    config = prepared.config
    _say(progress, f"estimating the transform from {lr_frames.shape[0]} keys")
    options = {"model": config.model, "allow_flip": config.allow_flip}
    found = estimate_transform(prepared.hr, lr_frames, scale_hint=scale_hint, **options)
    if scale_hint is None and not found.residual_lr_px <= config.max_residual_lr_px:
        # The search over every scale can settle a few % off (measured: a 2.78 ratio for 2.90
        # on the 41-frame simulated pair, 1.47 LR px); searched densely near what it found,
        # the scale comes right (0.058 LR px, 1.2 s). Keep the better of the two.
        _say(progress, "searching again near the scale found")
        again = estimate_transform(
            prepared.hr, lr_frames, scale_hint=float(found.transform.scale), **options
        )
        if again.residual_lr_px < found.residual_lr_px:
            found = again
    return _Chosen(found.transform, ESTIMATED, found)


def _initial(prepared: PreparedPair, progress: Progress) -> _Chosen:
    """The transform by the config: a given transform, a file, a calibration target pair, or
    an estimate from the keys and their (time-matched) LR frames."""
    from napari_xfusion.core import registration as reg

    config = prepared.config
    if config.transform is not None:
        if isinstance(config.transform, Path):
            return _Chosen(reg.CameraTransform.load(config.transform), f"file {config.transform}")
        return _Chosen(config.transform, "given")
    if config.target_lr is not None:
        from napari_xfusion.core.io import read_stack

        _say(progress, "estimating the transform from the calibration target")
        notes: list[str] = []
        lr_t, _ = _unit(read_stack(config.target_lr, role="--target-lr")[:1],
                        str(config.target_lr), "LR target", notes)  # fmt: skip
        hr_t, _ = _unit(read_stack(config.target_hr, role="--target-hr")[:1],
                        str(config.target_hr), "HR target", notes)  # fmt: skip
        kwargs = {"model": config.model, "allow_flip": config.allow_flip,
                  "scale_hint": config.scale_hint}  # fmt: skip
        try:
            found = reg.estimate_from_target(hr_t[0], lr_t[0], **kwargs)
        except reg.RegistrationError as exc:
            if "ambiguous" not in str(exc):
                raise
            # A perfectly periodic view: the keys give the coarse estimate that picks the
            # period, the grid then refines it.
            _say(progress, "the target alone is ambiguous: a coarse estimate from the keys")
            coarse = _estimate(prepared, prepared.lr[prepared.lr_index], config.scale_hint, None)
            found = reg.estimate_from_target(hr_t[0], lr_t[0], coarse=coarse.registration, **kwargs)
        return _Chosen(found.transform, f"calibration target {config.target_hr}", found)
    return _estimate(prepared, prepared.lr[prepared.lr_index], config.scale_hint, progress)
