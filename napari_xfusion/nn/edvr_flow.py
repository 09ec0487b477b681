"""EDVR-STF-flow: EDVR-STF fed the HR keys warped to t along the ``flow`` method's motion.

The paper's EDVR-STF (:class:`~napari_xfusion.nn.edvr.EDVRSTF`) sees the two raw HR keys and
must learn to carry their detail across up to 20 frames of motion with three deformable
convolutions at LR resolution; a short CPU training does not get there (its key ablation costs
it ~0.2 dB on real motion). This variant gives it the motion explicitly:

- the two key inputs are the keys *warped to t* by :class:`napari_xfusion.core.flow.FlowFuser`'s
  selected flows (:meth:`~napari_xfusion.core.flow.FlowFuser.motion`), each with its per-pixel
  confidence map and the ``flow`` method's fused frame as two more channels: a key input is
  ``(warped key, confidence, flow frame)``, shape (3, 4h, 4w), encoded by the same HR key
  encoder as EDVR-STF's (``conv_first_hi`` takes 3 channels instead of 1);
- the output is a **residual on top of the flow frame** (not on the bilinear LR up-sample), and
  the last conv is zero-initialised, so the untrained network *is* ``flow``: training can only
  start from there.

Everything else (LR encoder, PCD alignment, TSA fusion over the 5 inputs LR t-s, LR t, LR t+s,
key before, key after, reconstruction) is EDVR-STF's, so the attention scores read the same.

The key inputs are packed into the ``hr`` argument of the usual forward, shape
(B, 2, 3, 4h, 4w) (:func:`pack_key_inputs`), so :func:`~napari_xfusion.nn.edvr.forward_tiled`,
the training loop and the checkpoints work unchanged. :func:`flow_key_inputs` computes them
with a :class:`RecordingFlowFuser` (numpy/OpenCV).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from napari_xfusion.core.flow import FlowFuser, KeyMotion, warp
from napari_xfusion.nn.edvr import EDVRSTF, NUM_KEYS, SCALE, NetConfig, named_config

__all__ = [
    "ARCH",
    "KEY_CHANNELS",
    "EDVRSTFFlow",
    "FlowKeyInputs",
    "RecordingFlowFuser",
    "flow_key_inputs",
    "pack_key_inputs",
]

ARCH = "edvr-stf-flow"
KEY_CHANNELS = 3
"""Channels of one key input: warped key, its confidence, the flow method's frame."""


class EDVRSTFFlow(EDVRSTF):
    """EDVR-STF on motion-compensated keys, predicting a residual on the ``flow`` frame.

    Parameters
    ----------
    config : NetConfig, optional
        ``arch="edvr-stf-flow"``, grey (``num_in_ch=1``). Default ``named_config("small",
        "edvr-stf-flow")``.
    """

    arch = ARCH

    def __init__(self, config: NetConfig | None = None) -> None:
        config = named_config("small", ARCH) if config is None else config
        super().__init__(config)
        if self.config.num_in_ch != 1:
            raise ValueError(f"{ARCH} is for grey frames (num_in_ch=1), got {config.num_in_ch}")
        # Same encoder as EDVR-STF's, on (warped key, confidence, flow frame).
        self.conv_first_hi = nn.Conv2d(KEY_CHANNELS, self.config.num_feat, 3, 1, 1)
        # Zero residual: the untrained network returns the flow frame exactly.
        nn.init.zeros_(self.conv_last.weight)
        nn.init.zeros_(self.conv_last.bias)

    def check_inputs(self, lr: Tensor, hr: Tensor | None) -> None:
        self.check_lr(lr)
        if hr is None:
            raise ValueError(
                f"{ARCH} needs the {NUM_KEYS} warped key inputs (pack_key_inputs): hr is None"
            )
        h, w = lr.shape[-2:]
        want = (lr.shape[0], NUM_KEYS, KEY_CHANNELS, SCALE * h, SCALE * w)
        if tuple(hr.shape) != want:
            raise ValueError(
                f"{ARCH} key inputs must be (B, {NUM_KEYS}, {KEY_CHANNELS} = warped key, "
                f"confidence, flow frame, 4h, 4w): LR {h}x{w} needs {want}, got {tuple(hr.shape)}"
            )

    def forward_with_corr(
        self, lr: Tensor, hr: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        self.check_inputs(lr, hr)
        assert hr is not None
        h, w = lr.shape[-2:]
        feats = self.encode_inputs(lr, hr)
        centre = self.pad_lr(lr[:, self.config.center])
        base = self.pad_hr(hr[:, 0, 2:3])  # the flow frame (the same in both key inputs)
        out, corr = self.decode(feats, centre, base=base)
        out = out[..., : SCALE * h, : SCALE * w]
        return out, None if corr is None else corr[..., :h, :w]


# ---------------------------------------------------------------------------------------------
# Inputs (numpy): the flow method's motion, reused
# ---------------------------------------------------------------------------------------------


class RecordingFlowFuser(FlowFuser):
    """A :class:`~napari_xfusion.core.flow.FlowFuser` that keeps the motions of its last call.

    :meth:`FlowFuser.fuse` computes the flows to both keys internally; recording them here
    lets the network warp the keys along the very flows the ``flow`` frame was made with,
    without computing them twice.
    """

    last_motion: list[KeyMotion] | None = None

    def motion(self, *args: Any, **kwargs: Any) -> list[KeyMotion]:
        self.last_motion = super().motion(*args, **kwargs)
        return self.last_motion


@dataclass
class FlowKeyInputs:
    """What :func:`flow_key_inputs` returns (numpy, float32).

    Attributes
    ----------
    frame : shape (H, W)
        The ``flow`` method's fused frame.
    confidence : shape (H, W)
        Its confidence (the ``flow`` method's output map).
    warped : shape (2, H, W)
        The keys warped to t.
    key_confidence : shape (2, H, W)
        Per-key confidence of the warp.
    """

    frame: np.ndarray
    confidence: np.ndarray
    warped: np.ndarray
    key_confidence: np.ndarray

    def packed(self) -> np.ndarray:
        """(2, 3, H, W): per key (warped key, confidence, flow frame) - the network's ``hr``."""
        return pack_key_inputs(self.warped, self.key_confidence, self.frame)


def pack_key_inputs(warped: np.ndarray, confidence: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Stack ``warped`` (2, H, W), ``confidence`` (2, H, W) and ``frame`` (H, W) into the
    (2, 3, H, W) float32 key inputs of :class:`EDVRSTFFlow`."""
    frame = np.broadcast_to(np.asarray(frame, np.float32), warped.shape)
    return np.stack([warped, confidence, frame], axis=1).astype(np.float32, copy=False)


def flow_key_inputs(
    fuser: RecordingFlowFuser,
    t: int,
    keys: tuple[int, int],
    lr_t: np.ndarray,
    hr_keys: np.ndarray,
    lr_at_keys: np.ndarray,
    read_lr: Callable[[int], np.ndarray] | None = None,
) -> FlowKeyInputs:
    """The flow frame and the keys warped to ``t`` along its motion.

    Parameters are those of :meth:`FlowFuser.fuse`: ``lr_t`` (h, w), ``hr_keys`` (2, 4h, 4w),
    ``lr_at_keys`` (2, h, w) in [0, 1]; ``read_lr`` the LR frame at any index (chained flows).
    At a key time the frame is that key and the motions are computed directly (flow to the key
    itself is ~0, so its warped key is the key).
    """
    keys = (int(keys[0]), int(keys[1]))
    fuser.last_motion = None
    frame, conf = fuser.fuse(t, keys, lr_t, hr_keys, lr_at_keys, read_lr=read_lr)
    motions = fuser.last_motion
    if motions is None:  # a key time: fuse returned the key without computing motion
        motions = fuser.motion(
            t, keys, hr_keys, lr_at_keys, read_lr, lr_t=np.asarray(lr_t, np.float32)
        )
    warped = np.stack(
        [warp(np.asarray(hr_keys[j], np.float32), m.flow) for j, m in enumerate(motions)]
    )
    key_conf = np.stack([m.confidence for m in motions]).astype(np.float32)
    return FlowKeyInputs(frame.astype(np.float32), conf, warped, key_conf)


def to_tensor(packed: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """(B, 2, 3, H, W) numpy key inputs as a float32 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(packed, np.float32)).to(device)
