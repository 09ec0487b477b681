"""One interface for every reconstruction method.

A :class:`Reconstructor` turns the inputs of one :class:`~napari_xfusion.core.windows.Window`
into the HR frame at the window's target time. The engine feeds windows in time order through
:meth:`Reconstructor.reconstruct_stream`, which network methods override to reuse per-frame
features and batch targets; simple methods inherit the frame-by-frame default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.core.windows import Window

__all__ = ["WindowInputs", "Reconstruction", "Reconstructor", "SCALE"]


@dataclass
class WindowInputs:
    """Arrays of one window, all float32 in [0, 1].

    Attributes
    ----------
    window : Window
        Indices the arrays were taken at.
    lr : numpy.ndarray, shape (3, h, w)
        LR frames at ``window.lr_indices`` (t - s, t, t + s).
    hr_keys : numpy.ndarray, shape (2, 4h, 4w)
        HR key frames at ``window.key_before`` and ``window.key_after``.
    lr_at_keys : numpy.ndarray, shape (2, h, w)
        LR frames at the two key times (the Bayesian method pairs them with the HR keys).
    read_lr : callable, optional
        ``read_lr(i)`` is the normalised LR frame (h, w) at any index ``i`` of the stream,
        through the engine's frame cache (do not modify it); for methods that need frames
        beyond the window (``flow`` chains flows through the frames between t and the keys).
        None when the inputs were built by hand.
    """

    window: Window
    lr: np.ndarray
    hr_keys: np.ndarray
    lr_at_keys: np.ndarray
    read_lr: Callable[[int], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.lr.ndim != 3 or self.lr.shape[0] != 3:
            raise ValueError(f"lr must have shape (3, h, w), got {self.lr.shape}")
        h, w = self.lr.shape[1:]
        if self.hr_keys.ndim != 3 or self.hr_keys.shape[0] != 2:
            raise ValueError(
                f"hr_keys must hold the 2 HR key frames around t, shape (2, H, W); "
                f"got {self.hr_keys.shape}"
            )
        if self.hr_keys.shape[1:] != (SCALE * h, SCALE * w):
            raise ValueError(
                f"HR keys must be exactly {SCALE}x the LR frames: LR {h}x{w} needs HR keys "
                f"{SCALE * h}x{SCALE * w}, got {self.hr_keys.shape[1]}x{self.hr_keys.shape[2]}"
            )
        if self.lr_at_keys.shape != (2, h, w):
            raise ValueError(
                f"lr_at_keys must have shape (2, {h}, {w}), got {self.lr_at_keys.shape}"
            )


@dataclass
class Reconstruction:
    """Output of one window.

    Attributes
    ----------
    frame : numpy.ndarray, float32, shape (H, W)
        The reconstructed HR frame at the window's target time.
    attention : numpy.ndarray of float64, shape (5,), optional
        Raw temporal-attention scores (spatial mean of the pre-sigmoid correlation with the
        reference) in TSA input order: LR t-s, LR t, LR t+s, HR key before, HR key after.
        Only methods with temporal attention (``edvr-stf``; ``edvr`` gives its 3) set it.
    variance : numpy.ndarray, float32, shape (H, W), optional
        Per-pixel posterior variance (``bayesian``).
    """

    frame: np.ndarray
    attention: np.ndarray | None = None
    variance: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Reconstructor(ABC):
    """Base class of the reconstruction methods.

    Subclasses set :attr:`name` and :attr:`uses_hr_keys` and implement :meth:`reconstruct`.
    """

    name: ClassVar[str]
    uses_hr_keys: ClassVar[bool]

    @abstractmethod
    def reconstruct(self, inputs: WindowInputs) -> Reconstruction:
        """Reconstruct the HR frame of one window."""

    def reconstruct_stream(self, inputs: Iterable[WindowInputs]) -> Iterator[Reconstruction]:
        """Reconstruct windows given in time order, yielding one result per window, in order.

        The default calls :meth:`reconstruct` per window. Network methods override it to cache
        per-frame features and batch targets; results must equal :meth:`reconstruct`'s.
        """
        for item in inputs:
            yield self.reconstruct(item)

    def reset(self) -> None:
        """Forget any state kept between windows (feature caches); stateless methods keep none."""
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description saved in export metadata (name, parameters, weights)."""
        return {"method": self.name}
