"""``edvr-stf-flow``: the ``flow`` method's motion + EDVR-STF's learned fusion.

Per target, :class:`~napari_xfusion.nn.edvr_flow.RecordingFlowFuser` (the ``flow`` method's
:class:`~napari_xfusion.core.flow.FlowFuser`, with its defaults, as in training) fuses the
frame and its confidence and keeps the flows to both keys; the keys are warped to t along
them, and :class:`~napari_xfusion.nn.edvr_flow.EDVRSTFFlow` adds its residual to the flow frame
from the three LR frames and the two (warped key, confidence, flow frame) inputs. The result
carries the flow's confidence map (``extras["confidence"]``) and the 5 attention scores like
``edvr-stf``'s (LR t-s, LR t, LR t+s, key before, key after).

The chained flows need the LR frames between t and the keys (``WindowInputs.read_lr``, set by
the engine); consecutive-frame flows are cached between windows, so feed targets in time order.
The warped keys differ per target, so the network's per-frame feature cache is not used (the
LR encoder is a small part of a forward); ``tile`` works as for the other networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_xfusion.methods.base import Reconstruction, WindowInputs
from napari_xfusion.methods.network import _NetworkMethod
from napari_xfusion.nn.edvr_flow import ARCH, RecordingFlowFuser, flow_key_inputs

__all__ = ["EDVRSTFFlowMethod"]


class EDVRSTFFlowMethod(_NetworkMethod):
    """EDVR-STF on the keys warped along the ``flow`` method's motion, residual on its frame.

    Options as :class:`~napari_xfusion.methods.network.EDVRSTFMethod` (``weights``,
    ``device``, ``batch_size``, ``tile``, ``overlap``, ``precision``, ``channels_last``,
    ``cache_size``). Without ``weights`` the shipped ``resources/weights/edvr-stf-flow-small.pt``
    is used; a clear ``FileNotFoundError`` says so when it is not shipped.
    """

    name = "edvr-stf-flow"
    uses_hr_keys = True
    arch = ARCH

    _fuser: RecordingFlowFuser | None = None

    @property
    def fuser(self) -> RecordingFlowFuser:
        """The flow fuser (the flow method's defaults, those the network was trained with)."""
        # Built on first use: the constructor is the other networks' (same declared options).
        if self._fuser is None:
            self._fuser = RecordingFlowFuser()
        return self._fuser

    def reset(self) -> None:
        super().reset()
        self.fuser.reset()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["flow"] = self.fuser.options()
        return info

    def _hr_inputs(self, items: list[WindowInputs]) -> tuple[torch.Tensor, list[dict]]:
        """The keys warped to each target along the flow, with their confidences and the flow
        frame, packed ``(B, 2, 3, H, W)``; each item's extras carry flow's confidence map."""
        flows = []
        for it in items:
            w = it.window
            flows.append(
                flow_key_inputs(
                    self.fuser,
                    w.target,
                    w.keys,
                    np.asarray(it.lr[1], np.float32),
                    np.asarray(it.hr_keys, np.float32),
                    np.asarray(it.lr_at_keys, np.float32),
                    read_lr=it.read_lr,
                )
            )
        hr = torch.from_numpy(np.stack([f.packed() for f in flows]))
        return hr, [{"confidence": f.confidence} for f in flows]

    def _run(self, items: list[WindowInputs], use_cache: bool) -> list[Reconstruction]:
        del use_cache  # warped keys differ per target: nothing to reuse across windows
        return super()._run(items, use_cache=False)
