"""What :func:`~napari_xfusion.app.dualcam.align_pair` is asked to do: :class:`DualCameraConfig`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_xfusion.core.registration import CameraTransform

__all__ = ["MODELS", "DualCameraConfig", "DualCameraError"]

MODELS = ("similarity", "affine")
"""Transform models: flip + scale + rotation + shift, or a full affine (shear, two scales)."""

PathLike = str | os.PathLike


class DualCameraError(ValueError):
    """A dual-camera input or setting that cannot be used; the message names the file or the
    option and says what was expected (a ``ValueError``: the CLI prints it, exit status 2)."""


def _path(value: Any, name: str) -> Path | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    raise DualCameraError(f"{name}: expected a file path, got {type(value).__name__}")


def _positive(value: Any, name: str, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DualCameraError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        more = ">= 0" if allow_zero else "> 0"
        raise DualCameraError(f"{name}: expected a finite number {more}, got {value!r}")
    return number


@dataclass(frozen=True)
class DualCameraConfig:
    """The two cameras' stacks and how to align them (paths are checked when read).

    Parameters
    ----------
    lr, hr : path
        LR (fast, coarse) and HR (slow, fine) camera stacks: TIFF stacks or folders
        (:func:`napari_xfusion.core.io.read_stack`), or a Phantom ``.cine`` (images and times).
        May be None when :func:`align_pair` is given the arrays (GUI layers).
    lr_times, hr_times : path, optional
        Camera metadata with the frame times (``.ini`` Shimadzu, ``.xml`` / ``.cine``
        Phantom). None: a metadata file beside the stack with the same stem (``lr.ini``,
        ``hr.xml``, ``hr.cine``), else the rate below.
    lr_rate_hz, hr_rate_hz : float, optional
        Frame rates used when a camera has no metadata (and given: instead of the metadata).
    trigger_delay_s : float
        Added to every HR time (the HR camera's clock starts this much after the LR's; >= 0 or
        < 0).
    transform : path or CameraTransform, optional
        A saved transform file (``transform.json``) or a transform to use instead of
        estimating one.
    target_lr, target_hr : path, optional
        A calibration target pair (e.g. a copper grid imaged by both cameras): the transform
        is estimated from it instead of the keys.
    model : {"similarity", "affine"}
        Transform model of the estimate.
    allow_flip : bool
        Let the estimate find a mirror flip.
    max_residual_lr_px : float
        Refuse the alignment when the median residual misregistration is larger (LR pixels).
    tolerance_frames : float
        A HR frame must lie within this many LR frame intervals of its LR frame.
    drop_outside : bool
        Drop (with a note) HR frames recorded before or after the LR recording instead of
        refusing them.
    refine_time : bool
        Refine the time offset from the images (binned registered HR keys vs LR frames).
    search_frames : float
        How far (LR frames) the image-based refinement may move a key.
    lr_pixel_um : float, optional
        LR pixel size in micrometres (written as ``pixel_size_um``: LR, and LR / 4 for HR).
    hr_pixel_um : float, optional
        HR camera pixel size; with ``lr_pixel_um`` it gives the estimate its scale (LR px per
        HR px = hr / lr), which makes it ~30x faster and safer on repetitive scenes.
    """

    lr: PathLike | None = None
    hr: PathLike | None = None
    lr_times: PathLike | None = None
    hr_times: PathLike | None = None
    lr_rate_hz: float | None = None
    hr_rate_hz: float | None = None
    trigger_delay_s: float = 0.0
    transform: PathLike | CameraTransform | None = None
    target_lr: PathLike | None = None
    target_hr: PathLike | None = None
    model: str = "similarity"
    allow_flip: bool = True
    max_residual_lr_px: float = 0.5
    tolerance_frames: float = 0.5
    drop_outside: bool = False
    refine_time: bool = True
    search_frames: float = 2.0
    lr_pixel_um: float | None = None
    hr_pixel_um: float | None = None

    def __post_init__(self) -> None:
        for name in ("lr", "hr", "lr_times", "hr_times", "target_lr", "target_hr"):
            object.__setattr__(self, name, _path(getattr(self, name), name))
        if isinstance(self.transform, (str, os.PathLike)):
            object.__setattr__(self, "transform", Path(self.transform))
        for name in ("lr_rate_hz", "hr_rate_hz", "lr_pixel_um", "hr_pixel_um"):
            object.__setattr__(self, name, _positive(getattr(self, name), name))
        for name in ("max_residual_lr_px", "tolerance_frames", "search_frames"):
            object.__setattr__(self, name, _positive(getattr(self, name), name))
        delay = self.trigger_delay_s
        if (
            isinstance(delay, bool)
            or not isinstance(delay, (int, float))
            or not math.isfinite(delay)
        ):
            raise DualCameraError(f"trigger_delay_s: expected a finite number, got {delay!r}")
        object.__setattr__(self, "trigger_delay_s", float(delay))
        if self.model not in MODELS:
            raise DualCameraError(f"model: expected one of {', '.join(MODELS)}, got {self.model!r}")
        if (self.target_lr is None) != (self.target_hr is None):
            raise DualCameraError(
                "a calibration target needs both images: give target_lr and target_hr"
            )
        if self.transform is not None and self.target_lr is not None:
            raise DualCameraError(
                "give either a transform file or a calibration target pair, not both"
            )

    @property
    def scale_hint(self) -> float | None:
        """LR pixels per HR pixel from the two pixel sizes (None unless both are given)."""
        if self.lr_pixel_um is None or self.hr_pixel_um is None:
            return None
        return self.hr_pixel_um / self.lr_pixel_um

    def replace(self, **changes: Any) -> DualCameraConfig:
        """A copy with ``changes`` (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON types (paths as strings; a transform object as its matrix)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif f.name == "transform" and value is not None:
                value = value.to_dict()
            out[f.name] = value
        return out
