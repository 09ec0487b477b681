"""Inference helpers: per-frame feature reuse across targets and tiled forward passes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.nn.edvr.blocks import Pyramid
from napari_xfusion.nn.edvr.model import EDVR, EDVRSTF


class FeatureCache:
    """Small LRU of per-frame feature pyramids, keyed by (kind, frame index, frame size).

    Consecutive targets share most inputs (t+1 reuses LR t and t+s; within a key interval,
    both HR keys), and the per-frame part (encoder, trunk, pyramid) does not depend on the
    reference frame: computing it once per frame leaves only alignment, fusion and
    reconstruction per target. Feed targets in time order; call :meth:`clear` when the input
    sequence, the model or the device changes.

    Parameters
    ----------
    capacity : int
        Frames kept; >= 2s + 1 LR frames + 2 keys avoids recomputation for separation s. A batch
        never evicts its own frames, whatever the capacity.
    """

    def __init__(self, capacity: int = 16) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._store: OrderedDict[Hashable, Pyramid] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0

    def lookup(
        self,
        kind: str,
        ids: Sequence[Sequence[int]],
        frames: Tensor,
        encode: Callable[[Tensor], Pyramid],
    ) -> Pyramid:
        """Features of ``frames`` (B, T, C, H, W) whose sequence indices are ``ids`` (B x T).

        Frames not in the cache are encoded in one batch by ``encode`` ((N, C, H, W) ->
        Pyramid of (N, ...)); ``kind`` separates index spaces ("lr", "hr"). Returns a Pyramid of
        (B, T, C, ...) tensors.
        """
        size = tuple(frames.shape[-2:])
        keys = [[(kind, int(i), size) for i in row] for row in ids]
        found: dict[Hashable, Pyramid] = {}
        todo: dict[Hashable, Tensor] = {}
        for b, row in enumerate(keys):
            for t, key in enumerate(row):
                if key in found or key in todo:
                    continue
                cached = self._store.get(key)
                if cached is None:
                    todo[key] = frames[b, t]
                    self.misses += 1
                else:
                    self._store.move_to_end(key)
                    found[key] = cached
                    self.hits += 1
        if todo:
            feats = encode(torch.stack(list(todo.values())))
            for n, key in enumerate(todo):
                found[key] = self._store[key] = Pyramid(*(f[n] for f in feats))
        # Evict after the lookup: this batch holds its own features in `found`.
        while len(self._store) > self.capacity:
            self._store.popitem(last=False)
        return Pyramid(
            *(
                torch.stack([torch.stack([found[k][lv] for k in row]) for row in keys])
                for lv in range(3)
            )
        )


def forward_cached(
    model: EDVR,
    lr: Tensor,
    hr: Tensor | None,
    lr_ids: Sequence[Sequence[int]],
    key_ids: Sequence[Sequence[int]] | None,
    cache: FeatureCache,
    return_attention: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """:meth:`EDVR.forward` reusing per-frame features from ``cache``.

    Parameters
    ----------
    lr, hr, return_attention
        As in :meth:`EDVR.forward`.
    lr_ids : B sequences of num_frame ints
        Sequence indices of the LR frames in ``lr``.
    key_ids : B sequences of 2 ints, or None
        Sequence indices of the HR keys (EDVR-STF).

    Equal to the plain forward up to float32 round-off (different batch compositions).
    """
    model.check_inputs(lr, hr)
    h, w = lr.shape[-2:]
    feats = cache.lookup("lr", lr_ids, lr, lambda x: model.encode_lr(model.pad_lr(x)))
    if model.config.uses_hr_keys:
        if key_ids is None:
            raise ValueError("EDVR-STF with a cache needs key_ids")
        assert isinstance(model, EDVRSTF) and hr is not None
        keys = cache.lookup("hr", key_ids, hr, lambda x: model.encode_keys(model.pad_hr(x)))
        feats = Pyramid(*(torch.cat([a, k], 1) for a, k in zip(feats, keys, strict=True)))
    out, corr = model.decode(feats, model.pad_lr(lr[:, model.config.center]))
    out = out[..., : SCALE * h, : SCALE * w]
    if not return_attention:
        return out
    if corr is None:
        raise ValueError("attention scores need TSA fusion (config.with_tsa=True)")
    return out, corr[..., :h, :w].float().mean((-2, -1))


def forward_tiled(
    model: EDVR,
    lr: Tensor,
    hr: Tensor | None = None,
    *,
    tile: int,
    overlap: int = 16,
    return_attention: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """:meth:`EDVR.forward` on overlapping LR tiles, so memory is bounded by the tile size.

    Each tile of ``tile`` x ``tile`` LR pixels is run with ``overlap`` LR pixels of context on
    every side (clipped at the frame edge) and only its core is kept. The result differs from
    the untiled forward where the network's receptive field reaches past the context; 16 LR
    pixels (64 HR) keep the difference small. The attention scores are the area-weighted mean
    of the tiles' correlation over their cores, i.e. the spatial mean over the whole frame.
    Scores are reduced in float32 (also under a bfloat16 autocast).
    """
    if tile < 4:
        raise ValueError(f"tile must be >= 4 LR pixels, got {tile}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    model.check_inputs(lr, hr)
    b, _, cin, h, w = lr.shape
    out = lr.new_empty(b, cin, SCALE * h, SCALE * w)
    score_sum = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y1 + overlap), min(w, x1 + overlap)
            lr_t = lr[..., ya:yb, xa:xb]
            hr_t = None if hr is None else hr[..., SCALE * ya : SCALE * yb, SCALE * xa : SCALE * xb]
            o, corr = model.forward_with_corr(lr_t, hr_t)
            out[..., SCALE * y0 : SCALE * y1, SCALE * x0 : SCALE * x1] = o[
                ..., SCALE * (y0 - ya) : SCALE * (y1 - ya), SCALE * (x0 - xa) : SCALE * (x1 - xa)
            ]
            if return_attention:
                if corr is None:
                    raise ValueError("attention scores need TSA fusion (config.with_tsa=True)")
                core = corr[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa].float().sum((-2, -1))
                score_sum = core if score_sum is None else score_sum + core
    if not return_attention:
        return out
    return out, score_sum / (h * w)
