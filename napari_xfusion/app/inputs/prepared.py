"""What the input policy (:mod:`napari_xfusion.app.inputs`) returns and raises:
:class:`PreparedInputs`, :class:`Simulated`, :class:`InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xfusion.engine import InputError as EngineInputError


class InputError(EngineInputError):
    """Bad input for a run; the message names the input and what was expected."""


@dataclass
class Simulated:
    """The LR stream made from a full-rate HR stack (``simulate=True``)."""

    lr: np.ndarray  # (T, h, w) float32 in [0, 1]
    b0: float | None  # blank-scan factor of the shot noise (None: clean)
    lr_psnr: float | None  # achieved LR PSNR in dB (None: clean)
    noise: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedInputs:
    """What :func:`napari_xfusion.engine.run` and the metrics read; arrays stay lazy.

    Attributes
    ----------
    lr : array-like (T, h, w)
        The LR stream (memmap or layer data, or the simulated stream).
    lr_normalisation : Normalisation or None
        Applied by the engine per LR frame.
    keys : engine.KeyFrames
        HR keys (with their normalisation, :attr:`hr_normalisation`).
    truth : array-like (T, H, W) or None; truth_normalisation : Normalisation or None
    targets : numpy.ndarray of int64
        LR indices to reconstruct (``config.frames``, sorted).
    separation : int
    simulated : Simulated or None
    notes : list of str
        What was decided (normalisation applied, keys taken from...), for the user.
    noise : dict or None
        The LR stream's noise record (its metadata's ``noise``, or the simulation's).
    sources : dict
        ``{"lr": ..., "hr": ..., "truth": ...}``: the file path or layer label of each input.
    """

    lr: Any
    lr_normalisation: Any
    keys: Any
    truth: Any
    truth_normalisation: Any
    targets: np.ndarray
    separation: int
    simulated: Simulated | None = None
    notes: list[str] = field(default_factory=list)
    noise: dict[str, Any] | None = None
    sources: dict[str, str | None] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.lr.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of an HR (fused) frame."""
        return self.keys.frame_shape

    @property
    def hr_normalisation(self) -> Any:
        return self.keys.normalisation

    def truth_frame(self, t: int) -> np.ndarray | None:
        """Truth at LR time ``t`` as float32 in [0, 1] (None without truth)."""
        if self.truth is None:
            return None
        frame = np.asarray(self.truth[int(t)])
        if self.truth_normalisation is not None:
            return self.truth_normalisation.apply(frame)
        return frame.astype(np.float32, copy=False)
