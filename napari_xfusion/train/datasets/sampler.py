"""The window sampler (items, flow inputs, augmentation) and the training dataset.

See :mod:`napari_xfusion.train.datasets` for the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from napari_xfusion.core.degrade import SCALE, add_shot_noise, bin_frames
from napari_xfusion.core.windows import Window, window
from napari_xfusion.train.datasets.pools import SourcePool
from napari_xfusion.train.datasets.sources import Box, FrameSource

# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowSampling:
    """How :class:`WindowSampler` computes the ``edvr-stf-flow`` inputs of an item.

    Attributes
    ----------
    context : int
        HR size of the square box the flow is computed on, centred on the crop where the
        frame allows (a multiple of 4, >= the crop): the flow needs field of view to follow
        motion; at inference it sees the whole frame.
    preset : str
        DIS preset of the fuser (the ``flow`` method's default: ``"fast"``).
    """

    context: int = 128
    preset: str = "fast"

    def __post_init__(self) -> None:
        if self.context % SCALE or self.context < 4 * SCALE:
            raise ValueError(f"flow context must be a multiple of {SCALE} and >= 16, got "
                             f"{self.context}")  # fmt: skip


@dataclass
class Sample:
    """One training item (numpy, float32 in [0, 1]).

    Attributes
    ----------
    lr : shape (3, 1, h, w)
        Noisy LR frames at ``window.lr_indices``.
    hr : shape (2, 1, 4h, 4w)
        HR keys at ``window.key_before`` and ``window.key_after``.
    target : shape (1, 4h, 4w)
        HR frame at ``window.target``.
    window : Window
    b0 : float
        Blank-scan factor of the LR noise.
    hr_flow : shape (2, 3, 4h, 4w), optional
        With :class:`FlowSampling`: the ``edvr-stf-flow`` key inputs (per key: the key warped
        to t, its confidence, the flow frame), :func:`napari_xfusion.nn.edvr_flow.flow_key_inputs`
        on the noisy LR frames.
    """

    lr: np.ndarray
    hr: np.ndarray
    target: np.ndarray
    window: Window
    b0: float
    hr_flow: np.ndarray | None = None


class WindowSampler:
    """Draws a :class:`Sample` from a frame source (the recipe in the module docstring).

    Parameters
    ----------
    crop : int
        HR crop size (square, a multiple of 4); the LR crop is ``crop // 4``.
    separations : sequence of int
        LR separations s drawn uniformly.
    key_offsets : (int, int)
        Inclusive range of the key offsets a, b (in units of s).
    log10_b0 : (float, float) or None
        Range of log10 of the LR blank-scan factor; None: noise-free LR.
    augment : bool
        Random flips and 90-degree rotations.
    focus : int
        Candidate crop positions per item; the one whose target frame has the largest
        standard deviation is kept (1: uniform crops). Simulated frames are mostly flat gas and
        plate; a short run learns more from the edges.
    """

    def __init__(
        self,
        crop: int = 64,
        separations: Sequence[int] = (1, 2, 3),
        key_offsets: tuple[int, int] = (1, 20),
        log10_b0: tuple[float, float] | None = (1.0, 7.0),
        augment: bool = True,
        focus: int = 1,
        flow: FlowSampling | None = None,
    ) -> None:
        if crop % SCALE or crop < SCALE:
            raise ValueError(f"HR crop must be a positive multiple of {SCALE}, got {crop}")
        if key_offsets[0] < 1 or key_offsets[1] < key_offsets[0]:
            raise ValueError(f"key offsets must be a range [a, b] with 1 <= a <= b: {key_offsets}")
        self.crop = int(crop)
        self.separations = tuple(int(s) for s in separations)
        self.key_offsets = (int(key_offsets[0]), int(key_offsets[1]))
        self.log10_b0 = log10_b0
        self.augment = augment
        self.focus = max(int(focus), 1)
        if flow is not None and flow.context < self.crop:
            raise ValueError(f"flow context {flow.context} is smaller than the crop {self.crop}")
        self.flow = flow
        self._fuser = None
        if flow is not None:
            from napari_xfusion.nn.edvr_flow import RecordingFlowFuser

            self._fuser = RecordingFlowFuser(preset=flow.preset)

    def draw_window(self, n_frames: int, rng: np.random.Generator) -> Window:
        """Draw ``(s, a, b, t)`` fitting a sequence of ``n_frames`` and return its window.

        With enough frames (``1 + 2 * max(s) * max(a)``) s, a and b are independent uniforms.
        Shorter sequences cap a and b to what fits, with a and b in random order so neither
        side is favoured.
        """
        fitting = [s for s in self.separations if 2 * s * self.key_offsets[0] <= n_frames - 1]
        if not fitting:
            raise ValueError(
                f"a sequence of {n_frames} frames holds no window with separation in "
                f"{self.separations} and key offsets >= {self.key_offsets[0]}"
            )
        s = fitting[int(rng.integers(len(fitting)))]
        span = (n_frames - 1) // s  # a + b may not exceed this
        lo, hi = self.key_offsets
        a = int(rng.integers(lo, min(hi, span - lo) + 1))
        b = int(rng.integers(lo, min(hi, span - a) + 1))
        if rng.random() < 0.5:
            a, b = b, a
        t = int(rng.integers(s * a, n_frames - s * b))
        return window(t, n_frames, s, [t - s * a, t + s * b])

    def draw(self, source: FrameSource, rng: np.random.Generator) -> Sample:
        """Draw one training item from ``source``."""
        height, width = source.shape
        if height < self.crop or width < self.crop:
            raise ValueError(
                f"frames of {height}x{width} px are smaller than the HR crop {self.crop}"
            )
        win = self.draw_window(source.n_frames, rng)
        # Crop on the LR grid so the LR crop is exactly the binned HR crop of the full frame.
        boxes = [
            (
                SCALE * int(rng.integers((height - self.crop) // SCALE + 1)),
                SCALE * int(rng.integers((width - self.crop) // SCALE + 1)),
                self.crop,
                self.crop,
            )
            for _ in range(self.focus)
        ]
        if len(boxes) > 1:
            boxes.sort(key=lambda box: -float(source.read([win.target], box).std()))
        if self.flow is not None:
            return self._draw_flow(source, win, boxes[0], rng)
        times = [*win.lr_indices, win.key_before, win.key_after]
        frames = source.read(times, boxes[0])  # (5, P, P)
        if self.augment:
            if rng.random() < 0.5:
                frames = frames[:, :, ::-1]
            if rng.random() < 0.5:
                frames = frames[:, ::-1, :]
            frames = np.rot90(frames, int(rng.integers(4)), axes=(1, 2))
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        lr = bin_frames(frames[:3], SCALE)
        b0 = math.inf
        if self.log10_b0 is not None:
            b0 = 10.0 ** rng.uniform(*self.log10_b0)
            lr = add_shot_noise(lr, b0, rng)
        return Sample(
            lr=lr[:, None],
            hr=frames[3:, None].copy(),
            target=frames[1:2].copy(),
            window=win,
            b0=b0,
        )

    def _augment(self, arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """The same random flips and 90-degree rotation of the last two axes of every array."""
        return flip_rotate(arrays, rng) if self.augment else arrays

    def _draw_flow(
        self, source: FrameSource, win: Window, box: Box, rng: np.random.Generator
    ) -> Sample:
        """An item with the ``edvr-stf-flow`` inputs (see the module docstring)."""
        from napari_xfusion.nn.edvr_flow import flow_key_inputs

        assert self.flow is not None and self._fuser is not None
        height, width = source.shape
        y0, x0 = box[:2]
        c = self.flow.context
        ch, cw = min(c, height - height % SCALE), min(c, width - width % SCALE)

        # The context box: centred on the crop, shifted to stay inside the frame, LR grid.
        def place(start: int, size: int, full: int) -> int:
            half = (size - self.crop) // 2 // SCALE * SCALE
            return min(max(start - half, 0), (full - size) // SCALE * SCALE)

        cy, cx = place(y0, ch, height), place(x0, cw, width)
        first, last = win.key_before, win.key_after
        frames = source.read(range(first, last + 1), (cy, cx, ch, cw))  # (n, ch, cw)
        lr_all = bin_frames(frames, SCALE)
        b0 = math.inf
        if self.log10_b0 is not None:
            b0 = 10.0 ** rng.uniform(*self.log10_b0)
            lr_all = add_shot_noise(lr_all, b0, rng)
        lr_all = lr_all.astype(np.float32, copy=False)
        # A new sequence every item: the fuser's caches are keyed by frame index only.
        self._fuser.reset()
        t, kb, ka = win.target - first, 0, last - first
        inputs = flow_key_inputs(
            self._fuser, t, (kb, ka), lr_all[t], frames[[kb, ka]], lr_all[[kb, ka]],
            read_lr=lambda i: lr_all[i],
        )  # fmt: skip
        packed = inputs.packed()  # (2, 3, ch, cw)
        # Back to the crop, in context coordinates (the crop lies inside the context).
        oy, ox = y0 - cy, x0 - cx
        hr_sl = (slice(oy, oy + self.crop), slice(ox, ox + self.crop))
        lr_sl = tuple(slice(s.start // SCALE, s.stop // SCALE) for s in hr_sl)
        lr = lr_all[[i - first for i in win.lr_indices]][(slice(None), *lr_sl)]
        keys = frames[[kb, ka]][(slice(None), *hr_sl)]
        target = frames[t][hr_sl][None]
        hr_flow = packed[(slice(None), slice(None), *hr_sl)]
        lr, keys, target, hr_flow = self._augment([lr, keys, target, hr_flow], rng)
        return Sample(
            lr=lr[:, None], hr=keys[:, None], target=target, window=win, b0=b0, hr_flow=hr_flow
        )


def flip_rotate(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The same random flips and 90-degree rotation of the last two axes of every array.

    Returns C-contiguous float32 copies (views of flipped arrays cannot become tensors).
    Used by :class:`WindowSampler` and by fine-tuning on a user's own key pairs
    (:mod:`napari_xfusion.app.finetune`).
    """
    flip_x, flip_y, turns = rng.random() < 0.5, rng.random() < 0.5, int(rng.integers(4))
    out = []
    for a in arrays:
        if flip_x:
            a = a[..., :, ::-1]
        if flip_y:
            a = a[..., ::-1, :]
        out.append(np.ascontiguousarray(np.rot90(a, turns, axes=(-2, -1)), dtype=np.float32))
    return out


def _stream_rng(seed: int, rank: int, worker: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, rank, worker, stream]))


class TrainingWindows(IterableDataset):
    """Endless stream of training items from a weighted mixture of source pools.

    Items are dicts of tensors ``lr (3, 1, h, w)``, ``hr (2, 1, 4h, 4w)``, ``target (1, 4h,
    4w)`` for a :class:`torch.utils.data.DataLoader` (which stacks them into batches). Each
    (rank, loader worker) pair draws from its own generator seeded with ``(seed, rank, worker)``.

    Parameters
    ----------
    pools : sequence of SourcePool
    weights : sequence of float
        Relative frequencies of the pools.
    sampler : WindowSampler
    seed : int
    rank : int
        Distributed rank (different ranks must see different data).
    stream : int
        A further seed component (the training loop passes the start step, so a resumed run
        draws new items instead of repeating the first ones).
    """

    def __init__(
        self,
        pools: Sequence[SourcePool],
        weights: Sequence[float],
        sampler: WindowSampler,
        seed: int = 0,
        rank: int = 0,
        stream: int = 0,
    ) -> None:
        if len(pools) != len(weights) or not pools:
            raise ValueError("give one weight per source pool, and at least one pool")
        p = np.asarray(weights, dtype=np.float64)
        if np.any(p < 0) or p.sum() <= 0:
            raise ValueError(f"pool weights must be >= 0 with a positive sum, got {weights}")
        self.pools = list(pools)
        self.p = p / p.sum()
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.stream = stream

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        if info is not None:
            # A data worker: OpenCV (the flow inputs) would start a pool of all cores in each
            # of the num_workers processes, next to the training process's own threads.
            import cv2

            cv2.setNumThreads(1)
        rng = _stream_rng(self.seed, self.rank, info.id if info is not None else 0, self.stream)
        while True:
            pool = self.pools[int(rng.choice(len(self.pools), p=self.p))]
            item = self.sampler.draw(pool.draw(rng), rng)
            out = {
                "lr": torch.from_numpy(item.lr),
                "hr": torch.from_numpy(item.hr),
                "target": torch.from_numpy(item.target),
            }
            if item.hr_flow is not None:
                out["hr_flow"] = torch.from_numpy(item.hr_flow)
            yield out
