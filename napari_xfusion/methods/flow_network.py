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
from napari_xfusion.methods.network import _check_finite_output, _NetworkMethod
from napari_xfusion.nn.edvr import forward_tiled
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
        info["flow"] = {
            "preset": self.fuser.preset,
            "consistency": self.fuser.consistency,
            "photometric": self.fuser.photometric,
            "bp_iterations": self.fuser.bp_iterations,
            "noise_target": self.fuser.noise_target,
            "max_chain": self.fuser.max_chain,
        }
        return info

    def _run(self, items: list[WindowInputs], use_cache: bool) -> list[Reconstruction]:
        del use_cache  # warped keys differ per target: nothing to reuse across windows
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
        to = {"device": self.device, "dtype": torch.float32}
        lr = torch.from_numpy(np.stack([np.asarray(it.lr, np.float32) for it in items]))
        lr = lr.unsqueeze(2).to(**to)  # (B, 3, 1, h, w)
        hr = torch.from_numpy(np.stack([f.packed() for f in flows])).to(**to)  # (B, 2, 3, H, W)
        with_attention = self.model.config.with_tsa
        with torch.inference_mode(), self._autocast():
            if self.tile is not None:
                result = forward_tiled(
                    self.model,
                    lr,
                    hr,
                    tile=self.tile,
                    overlap=self.overlap,
                    return_attention=with_attention,
                )
            else:
                result = self.model(lr, hr, return_attention=with_attention)
        out, scores = result if with_attention else (result, None)
        frames = out[:, 0].float().cpu().numpy()
        _check_finite_output(frames, items, self.name, self.weights)
        attention = None if scores is None else scores.double().cpu().numpy()
        return [
            Reconstruction(
                frame=frames[i],
                attention=None if attention is None else attention[i],
                extras={"confidence": flows[i].confidence},
            )
            for i in range(len(items))
        ]
