"""``flow``: HR key detail carried to every LR time along optical flow (no training).

The fusion is :class:`napari_xfusion.core.flow.FlowFuser` (its module docstring has the model):
OpenCV DIS optical flow on the up-sampled LR frames, direct and chained flows to each key chosen
per pixel by forward-backward consistency, key detail warped and blended by confidence and
distance in time, then back-projected onto the LR frame at t. Besides the frame, each result
carries the per-pixel confidence (``extras["confidence"]``, (H, W) float32 in [0, 1]): low where
no key could be trusted and the frame falls back to bicubic.

The chained flows need the LR frames between t and the keys: the engine gives them through
:attr:`WindowInputs.read_lr <napari_xfusion.methods.base.WindowInputs.read_lr>`. Without it
(hand-built inputs) only the direct flows are used. Consecutive-frame flows are cached between
windows, so a time-ordered stream computes each once; :meth:`FlowMethod.reset` clears them.
"""

from __future__ import annotations

from typing import Any

from napari_xfusion.core.flow import PRESETS, FlowFuser
from napari_xfusion.methods.base import Reconstruction, Reconstructor, WindowInputs

__all__ = ["FlowMethod"]


class FlowMethod(Reconstructor):
    """Motion-compensated key transfer along DIS optical flow, with a confidence map.

    Parameters
    ----------
    preset : str
        OpenCV DIS preset: ``"ultrafast"``, ``"fast"`` (default) or ``"medium"`` (slower,
        finer flow grid).
    consistency : float
        Forward-backward flow tolerance in HR pixels (> 0); larger trusts less consistent flow.
    photometric : float
        Tolerated local mismatch (intensity, > 0) between the LR frame at t and the key's LR
        frame warped to t; larger trusts the keys more where the scene changed.
    bp_iterations : int
        Back-projection iterations onto the LR frame at t (>= 0; 0: none).
    noise_target : float
        Noise level (intensity standard deviation, > 0) to which the LR residual is smoothed
        before it is back-projected; keeps shot noise out of the HR frame.
    max_chain : int
        Longest chain of consecutive flows in frames (>= 0; 0: direct flows only); bounds memory.
    """

    name = "flow"
    uses_hr_keys = True

    def __init__(
        self,
        preset: str = "fast",
        consistency: float = 1.0,
        photometric: float = 0.03,
        bp_iterations: int = 4,
        noise_target: float = 0.001,
        max_chain: int = 100,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"flow: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        try:
            self._fuser = FlowFuser(
                preset=preset,
                consistency=consistency,
                photometric=photometric,
                bp_iterations=bp_iterations,
                noise_target=noise_target,
                max_chain=max_chain,
            )
        except ValueError as exc:
            raise ValueError(f"flow: {exc}") from None

    def reconstruct(self, inputs: WindowInputs) -> Reconstruction:
        w = inputs.window
        frame, confidence = self._fuser.fuse(
            w.target,
            w.keys,
            inputs.lr[1],
            inputs.hr_keys,
            inputs.lr_at_keys,
            read_lr=inputs.read_lr,
        )
        return Reconstruction(frame=frame, extras={"confidence": confidence})

    def reset(self) -> None:
        self._fuser.reset()

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, **self._fuser.options()}
