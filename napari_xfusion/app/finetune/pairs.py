"""Training pairs from the user's own data: each training key and the frames around it.

For a training target key ``t`` (LR index) with neighbour keys ``t_b < t < t_a`` (the keys
``a`` and ``b`` places before and after it in the key list):

- LR input: the window ``(t-s, t, t+s)`` of :func:`napari_xfusion.core.windows.window`
  (clamped at the ends), the user's real LR frames, normalised as the engine reads them;
- HR input: the keys ``t_b`` and ``t_a`` (``edvr-stf``), or for ``edvr-stf-flow`` the
  flow inputs computed on the *whole* frame exactly as at inference
  (:func:`napari_xfusion.nn.edvr_flow.flow_key_inputs`, once per pair); none for ``edvr``;
- target: key ``t`` itself.

A batch draws pairs uniformly, crops them at random on the 4-pixel LR grid (of ``focus``
candidate crops the one whose target varies most, as in training), and applies the same
random flips and 90-degree rotation to every array
(:func:`napari_xfusion.train.datasets.flip_rotate`). No noise is added: the LR frames already
carry the camera's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.core.windows import window

__all__ = ["KeyPairs", "Pair"]


@dataclass
class Pair:
    """One training pair, whole frames (float32 in [0, 1])."""

    target_index: int  # LR index of the target key
    keys: tuple[int, int]  # LR indices of the neighbour keys
    lr: np.ndarray  # (3, h, w)
    hr: np.ndarray  # (2, H, W)
    target: np.ndarray  # (H, W)
    hr_flow: np.ndarray | None = None  # (2, 3, H, W) for edvr-stf-flow


def _lr_reader(prepared: Any) -> Any:
    norm = prepared.lr_normalisation

    def read(i: int) -> np.ndarray:
        frame = np.asarray(prepared.lr[int(i)])
        if norm is not None:
            return np.asarray(norm.apply(frame), dtype=np.float32)
        return frame.astype(np.float32, copy=False)

    return read


class KeyPairs:
    """The training pairs of ``targets`` and a batch sampler over them.

    Parameters
    ----------
    prepared : PreparedInputs
        The user's inputs (:func:`napari_xfusion.app.inputs.prepare_inputs`).
    targets : sequence of int
        LR indices of the training target keys (interior keys; see :mod:`.split`).
    arch : str
        ``edvr``, ``edvr-stf`` or ``edvr-stf-flow`` (what the HR input is).
    crop : int
        HR crop size (a multiple of 4); frames smaller than it are cropped to their largest
        multiple of 16.
    max_key_offset : int
        Neighbour keys up to this many places away on each side (1: the adjacent keys only,
        the geometry of leave-one-key-out).
    focus : int
        Candidate crops per item; the most structured is kept.
    augment : bool
        Random flips and 90-degree rotations.
    """

    def __init__(
        self,
        prepared: Any,
        targets: Sequence[int],
        arch: str,
        *,
        crop: int = 64,
        max_key_offset: int = 1,
        focus: int = 3,
        augment: bool = True,
    ) -> None:
        keys = [int(k) for k in prepared.keys.indices]
        height, width = prepared.frame_shape
        # Frames smaller than the crop: the largest crop whose LR side is a multiple of 4 (the
        # PCD pyramid halves it twice).
        self.crop = min(int(crop), height // 16 * 16, width // 16 * 16)
        if self.crop < 16:
            raise ValueError(
                f"HR frames of {height}x{width} px are too small to train on (at least 16x16)"
            )
        self.focus = max(int(focus), 1)
        self.augment = augment
        self.arch = arch
        read_lr = _lr_reader(prepared)
        lr_cache: dict[int, np.ndarray] = {}

        def lr(i: int) -> np.ndarray:
            if i not in lr_cache:
                lr_cache[i] = read_lr(i)
            return lr_cache[i]

        fuser = None
        if arch == "edvr-stf-flow":
            from napari_xfusion.nn.edvr_flow import RecordingFlowFuser

            fuser = RecordingFlowFuser()
        self.pairs: list[Pair] = []
        digest = hashlib.sha256()
        for t in targets:
            j = keys.index(int(t))
            for a in range(1, max_key_offset + 1):
                for b in range(1, max_key_offset + 1):
                    if j - a < 0 or j + b >= len(keys):
                        continue
                    kb, ka = keys[j - a], keys[j + b]
                    win = window(int(t), prepared.n_frames, prepared.separation, [kb, ka])
                    hr = np.stack([prepared.keys[kb], prepared.keys[ka]]).astype(np.float32)
                    pair = Pair(
                        int(t),
                        (kb, ka),
                        np.stack([lr(i) for i in win.lr_indices]),
                        hr,
                        np.asarray(prepared.keys[int(t)], dtype=np.float32),
                    )
                    if fuser is not None:
                        pair.hr_flow = self._flow(fuser, pair, lr)
                    for part in (pair.lr, pair.hr, pair.target):
                        digest.update(np.ascontiguousarray(part).tobytes())
                    self.pairs.append(pair)
        if not self.pairs:
            raise ValueError(f"no training pair for the target keys {list(targets)}")
        self.sha256 = digest.hexdigest()
        """SHA-256 of every array the pairs hold (the exact training data)."""

    @staticmethod
    def _flow(fuser: Any, pair: Pair, lr: Any) -> np.ndarray:
        from napari_xfusion.nn.edvr_flow import flow_key_inputs

        kb, ka = pair.keys
        inputs = flow_key_inputs(
            fuser,
            pair.target_index,
            (kb, ka),
            lr(pair.target_index),
            pair.hr,
            np.stack([lr(kb), lr(ka)]),
            read_lr=lr,
        )
        return np.asarray(inputs.packed(), dtype=np.float32)

    def item(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One random crop of one random pair: ``lr (3, 1, c/4, c/4)``, ``hr (2, 1, c, c)``,
        ``target (1, c, c)`` (and ``hr_flow (2, 3, c, c)`` for ``edvr-stf-flow``)."""
        from napari_xfusion.train.datasets import flip_rotate

        pair = self.pairs[int(rng.integers(len(self.pairs)))]
        height, width = pair.target.shape
        c = self.crop
        boxes = [
            (
                SCALE * int(rng.integers((height - c) // SCALE + 1)),
                SCALE * int(rng.integers((width - c) // SCALE + 1)),
            )
            for _ in range(self.focus)
        ]
        y0, x0 = max(
            boxes, key=lambda b: float(pair.target[b[0] : b[0] + c, b[1] : b[1] + c].std())
        )
        hr_sl = (slice(y0, y0 + c), slice(x0, x0 + c))
        lr_sl = (slice(y0 // SCALE, (y0 + c) // SCALE), slice(x0 // SCALE, (x0 + c) // SCALE))
        arrays = [
            pair.lr[(slice(None), *lr_sl)],
            pair.hr[(slice(None), *hr_sl)],
            pair.target[hr_sl][None],
        ]
        if pair.hr_flow is not None:
            arrays.append(pair.hr_flow[(slice(None), slice(None), *hr_sl)])
        if self.augment:
            arrays = flip_rotate(arrays, rng)
        else:
            arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
        out = {"lr": arrays[0][:, None], "hr": arrays[1][:, None], "target": arrays[2]}
        if pair.hr_flow is not None:
            out["hr_flow"] = arrays[3]
        return out

    def batch(self, size: int, rng: np.random.Generator, device: Any = "cpu") -> dict[str, Any]:
        """``size`` items stacked into tensors on ``device`` (what ``ModelTrainer.step`` takes)."""
        import torch

        items = [self.item(rng) for _ in range(size)]
        return {k: torch.from_numpy(np.stack([it[k] for it in items])).to(device) for k in items[0]}
