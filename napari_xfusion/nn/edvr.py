"""EDVR (Wang et al. 2019) and EDVR-STF (Tang et al.) for grey x-ray frames, x4.

One implementation, configured by a :class:`NetConfig`:

- ``EDVR`` (``arch="edvr"``): LR frames t-s, t, t+s; the reference is LR t.
- ``EDVRSTF`` (``arch="edvr-stf"``): the same network with the two HR key frames encoded down to
  LR size (conv, conv + maxpool, conv + maxpool) and appended as frames 4 and 5 before PCD
  alignment and TSA fusion. TSA order: LR t-s, LR t, LR t+s, HR key before, HR key after.

Parameter names follow BasicSR's ``edvr_arch.py`` and the XFusion reference code
(``conv_first_hi``, ``conv1_hi``, ``conv2_hi`` for the HR encoder), so their state dicts load
without renaming (see :mod:`napari_xfusion.nn.checkpoint`).

The forward pass is split into a per-frame part that does not depend on the reference frame
(:meth:`EDVR.encode_lr`, :meth:`EDVRSTF.encode_keys`: encoder, residual trunk, pyramid) and a
per-target part (:meth:`EDVR.decode`: PCD alignment, TSA fusion, reconstruction), so that
:class:`FeatureCache` can reuse the first across consecutive targets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.nn.arch_util import make_layer, pad_to_multiple
from napari_xfusion.nn.dcn import DCNv2Pack

__all__ = [
    "ALL_ARCHS",
    "ARCHS",
    "CONFIGS",
    "EDVR",
    "EDVRSTF",
    "FeatureCache",
    "NetConfig",
    "Pyramid",
    "build_model",
    "count_parameters",
    "forward_cached",
    "forward_tiled",
    "named_config",
]

# The up-sampling factor (two PixelShuffle(2)) is the cameras' grid ratio, defined in core.

ARCHS = ("edvr", "edvr-stf")
"""The paper's architectures (raw inputs), implemented in this module."""
ALL_ARCHS = (*ARCHS, "edvr-stf-flow")
"""Every architecture a :class:`NetConfig` may name; ``edvr-stf-flow`` is
:class:`napari_xfusion.nn.edvr_flow.EDVRSTFFlow` (built lazily by :func:`build_model`)."""
NUM_KEYS = 2
"""HR key frames of EDVR-STF (the one before and the one after the target)."""

_PAD = 4
"""The LR frame is padded to a multiple of 4: the 3-level pyramid halves it twice."""


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.1, inplace=True)


def _lrelu_new(x: Tensor) -> Tensor:
    # Out of place: a DCN backend may return a view from a custom autograd Function, which
    # autograd forbids modifying in place.
    return F.leaky_relu(x, 0.1)


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class NetConfig:
    """Architecture hyper-parameters; saved inside every checkpoint.

    Attributes
    ----------
    arch : {"edvr", "edvr-stf", "edvr-stf-flow"}
        LR frames only, LR frames plus two HR key frames, or LR frames plus the two keys warped
        to t along optical flow (:mod:`napari_xfusion.nn.edvr_flow`).
    num_feat : int
        Feature channels C of the LR-resolution body.
    deformable_groups : int
        Deformable groups of the DCNv2 layers in PCD alignment (C must be divisible by it).
    num_extract_block : int
        Residual blocks of the shared per-frame trunk.
    num_reconstruct_block : int
        Residual blocks R after fusion.
    with_tsa : bool
        TSA fusion (temporal + spatial attention); without it a 1x1 conv fuses the frames and
        no attention scores exist.
    num_frame : int
        LR frames per target (odd; the centre one is the reference).
    num_in_ch : int
        Image channels (1: grey x-ray; 3 only to reproduce BasicSR's RGB models).
    num_feat_hr : int
        Channels of the two convs at HR resolution after the up-samplers (BasicSR fixes 64);
        at 16x the LR pixel count these dominate a small model's cost.
    max_offset : float, optional
        Clamp every DCN offset to +-``max_offset`` pixels of its pyramid level (None: no bound,
        as in the paper). A guard for short, high-rate runs whose offsets blow up.
    """

    arch: str = "edvr-stf"
    num_feat: int = 64
    deformable_groups: int = 8
    num_extract_block: int = 5
    num_reconstruct_block: int = 10
    with_tsa: bool = True
    num_frame: int = 3
    num_in_ch: int = 1
    num_feat_hr: int = 64
    max_offset: float | None = None

    def __post_init__(self) -> None:
        if self.arch not in ALL_ARCHS:
            raise ValueError(f"arch must be one of {ALL_ARCHS}, got {self.arch!r}")
        for name in ("num_feat", "deformable_groups", "num_frame", "num_in_ch", "num_feat_hr"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_extract_block", "num_reconstruct_block"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_feat % self.deformable_groups:
            raise ValueError(
                f"num_feat {self.num_feat} must be divisible by deformable_groups "
                f"{self.deformable_groups}"
            )
        if self.num_frame % 2 == 0:
            raise ValueError(f"num_frame must be odd (centre = reference), got {self.num_frame}")
        if self.max_offset is not None and not float(self.max_offset) > 0:
            raise ValueError(f"max_offset must be None or > 0, got {self.max_offset}")

    @property
    def uses_hr_keys(self) -> bool:
        return self.arch != "edvr"

    @property
    def num_inputs(self) -> int:
        """Frames entering PCD/TSA: LR frames, plus the HR keys for EDVR-STF."""
        return self.num_frame + (NUM_KEYS if self.uses_hr_keys else 0)

    @property
    def center(self) -> int:
        """Index of the reference (LR t) among the inputs."""
        return self.num_frame // 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["max_offset"] is None:
            # Unbounded (the default): omitted, so configs saved before the field existed
            # compare equal.
            del d["max_offset"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown NetConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def differences(self, other: NetConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (self value, other value)}`` for every field that differs."""
        a, b = asdict(self), asdict(other)
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


# Sizes, independent of the arch (combine with `named_config(name, arch)`).
CONFIGS: dict[str, NetConfig] = {
    # The paper's EDVR-STF / EDVR-L size.
    "paper": NetConfig(num_feat=128, num_reconstruct_block=40, deformable_groups=8),
    # Trained on CPU and shipped. Measured (benchmarks/bench_networks.py, shared 2-core EPYC,
    # 1 thread, 100x256 -> 400x1024): EDVR-STF ~3.2 CPU-s per frame plain (PCD 55 %, HR key
    # encoder 30 %, whose full-resolution conv is the paper's design), ~2.6 s channels-last;
    # C=16 would be ~1.1 s but C=32 is the smallest width the issue allows and training
    # steps (crop 64, batch 4) stay at a few seconds. 8 deformable groups as in the paper.
    "small": NetConfig(num_feat=32, num_reconstruct_block=5, deformable_groups=8, num_feat_hr=16),
    # For tests only: untrained output is meaningless, but every code path runs.
    "tiny": NetConfig(
        num_feat=8,
        num_extract_block=1,
        num_reconstruct_block=1,
        deformable_groups=2,
        num_feat_hr=8,
    ),
}


def named_config(name: str, arch: str = "edvr-stf") -> NetConfig:
    """The named size ``paper`` / ``small`` / ``tiny`` for ``arch``."""
    try:
        base = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}") from None
    return replace(base, arch=arch)


class Pyramid(NamedTuple):
    """Features at LR size and at 1/2 and 1/4 of it: (..., C, h, w), (..., C, h/2, w/2), ...."""

    l1: Tensor
    l2: Tensor
    l3: Tensor


class PCDAlignment(nn.Module):
    """Pyramid, cascading and deformable alignment of a neighbour to the reference.

    Coarse to fine: at each level, offsets are predicted from [neighbour, reference] and the
    x2 up-sampled offsets of the coarser level (their magnitude doubled with the grid), the
    neighbour is deform-convolved and merged with the up-sampled coarser result; a last
    cascading DCN refines the full-resolution result against the reference.
    """

    def __init__(
        self, num_feat: int = 64, deformable_groups: int = 8, max_offset: float | None = None
    ) -> None:
        super().__init__()
        c = num_feat
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        for i in (3, 2, 1):
            level = f"l{i}"
            self.offset_conv1[level] = nn.Conv2d(2 * c, c, 3, 1, 1)
            if i == 3:
                self.offset_conv2[level] = nn.Conv2d(c, c, 3, 1, 1)
            else:
                self.offset_conv2[level] = nn.Conv2d(2 * c, c, 3, 1, 1)
                self.offset_conv3[level] = nn.Conv2d(c, c, 3, 1, 1)
            self.dcn_pack[level] = DCNv2Pack(
                c, c, 3, padding=1, deformable_groups=deformable_groups, max_offset=max_offset
            )
            if i < 3:
                self.feat_conv[level] = nn.Conv2d(2 * c, c, 3, 1, 1)
        self.cas_offset_conv1 = nn.Conv2d(2 * c, c, 3, 1, 1)
        self.cas_offset_conv2 = nn.Conv2d(c, c, 3, 1, 1)
        self.cas_dcnpack = DCNv2Pack(
            c, c, 3, padding=1, deformable_groups=deformable_groups, max_offset=max_offset
        )

    def dcn_packs(self) -> dict[str, DCNv2Pack]:
        """The DCN layers by pyramid level (``l3``, ``l2``, ``l1``, ``cascade``)."""
        return {**{k: self.dcn_pack[k] for k in ("l3", "l2", "l1")}, "cascade": self.cas_dcnpack}

    def forward(self, nbr: Pyramid, ref: Pyramid) -> Tensor:
        """Align ``nbr`` to ``ref`` (both pyramids of (N, C, ...)); returns (N, C, h, w)."""
        up_offset: Tensor | None = None
        up_feat: Tensor | None = None
        feat = nbr.l1  # overwritten at every level
        for i in (3, 2, 1):
            level = f"l{i}"
            offset = _lrelu(self.offset_conv1[level](torch.cat([nbr[i - 1], ref[i - 1]], 1)))
            if i == 3:
                offset = _lrelu(self.offset_conv2[level](offset))
            else:
                offset = _lrelu(self.offset_conv2[level](torch.cat([offset, up_offset], 1)))
                offset = _lrelu(self.offset_conv3[level](offset))
            feat = self.dcn_pack[level](nbr[i - 1], offset)
            if i < 3:
                feat = self.feat_conv[level](torch.cat([feat, up_feat], 1))
            if i > 1:
                feat = _lrelu_new(feat)
                # Offsets are in pixels of their level: doubling the grid doubles them.
                up_offset = _up2(offset) * 2
                up_feat = _up2(feat)
        offset = torch.cat([feat, ref.l1], 1)
        offset = _lrelu(self.cas_offset_conv2(_lrelu(self.cas_offset_conv1(offset))))
        return _lrelu_new(self.cas_dcnpack(feat, offset))


class TSAFusion(nn.Module):
    """Temporal and spatial attention fusion of T aligned frames.

    Temporal: each aligned frame is weighted per pixel by ``sigmoid(corr_i)``, with
    ``corr_i = sum_c temporal_attn2(aligned_i) * temporal_attn1(aligned_ref)``. Spatial: a
    two-level pyramid of max/avg-pooled attention modulates the fused features (SFT-like).
    """

    def __init__(self, num_feat: int = 64, num_frame: int = 5, center_frame_idx: int = 2) -> None:
        super().__init__()
        c = num_feat
        self.center_frame_idx = center_frame_idx
        self.temporal_attn1 = nn.Conv2d(c, c, 3, 1, 1)
        self.temporal_attn2 = nn.Conv2d(c, c, 3, 1, 1)
        self.feat_fusion = nn.Conv2d(num_frame * c, c, 1, 1)
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg_pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.spatial_attn1 = nn.Conv2d(num_frame * c, c, 1)
        self.spatial_attn2 = nn.Conv2d(2 * c, c, 1)
        self.spatial_attn3 = nn.Conv2d(c, c, 3, 1, 1)
        self.spatial_attn4 = nn.Conv2d(c, c, 1)
        self.spatial_attn5 = nn.Conv2d(c, c, 3, 1, 1)
        self.spatial_attn_l1 = nn.Conv2d(c, c, 1)
        self.spatial_attn_l2 = nn.Conv2d(2 * c, c, 3, 1, 1)
        self.spatial_attn_l3 = nn.Conv2d(c, c, 3, 1, 1)
        self.spatial_attn_add1 = nn.Conv2d(c, c, 1)
        self.spatial_attn_add2 = nn.Conv2d(c, c, 1)

    def forward(self, aligned: Tensor) -> tuple[Tensor, Tensor]:
        """Fuse ``aligned`` (B, T, C, h, w).

        Returns
        -------
        feat : Tensor, shape (B, C, h, w)
        corr : Tensor, shape (B, T, h, w)
            The raw (pre-sigmoid) temporal correlation of every frame with the reference; it is
            computed anyway, so returning it costs nothing.
        """
        b, t, c, h, w = aligned.shape
        emb_ref = self.temporal_attn1(aligned[:, self.center_frame_idx])
        emb = self.temporal_attn2(aligned.reshape(b * t, c, h, w)).view(b, t, c, h, w)
        corr = (emb * emb_ref.unsqueeze(1)).sum(2)  # (b, t, h, w)
        weighted = (aligned * torch.sigmoid(corr).unsqueeze(2)).view(b, t * c, h, w)

        feat = _lrelu(self.feat_fusion(weighted))
        attn = _lrelu(self.spatial_attn1(weighted))
        attn = _lrelu(self.spatial_attn2(torch.cat([self.max_pool(attn), self.avg_pool(attn)], 1)))
        level = _lrelu(self.spatial_attn_l1(attn))
        level = _lrelu(
            self.spatial_attn_l2(torch.cat([self.max_pool(level), self.avg_pool(level)], 1))
        )
        level = _up2(_lrelu(self.spatial_attn_l3(level)))
        attn = _lrelu(self.spatial_attn3(attn)) + level
        attn = _up2(_lrelu(self.spatial_attn4(attn)))
        attn = self.spatial_attn5(attn)
        attn_add = self.spatial_attn_add2(_lrelu(self.spatial_attn_add1(attn)))
        # sigmoid starts near 0.5: the factor 2 starts the modulation near the identity.
        return feat * torch.sigmoid(attn) * 2 + attn_add, corr


class EDVR(nn.Module):
    """EDVR video super-resolution (x4) of the centre LR frame from LR frames only.

    Parameters
    ----------
    config : NetConfig, optional
        Defaults to ``named_config("small", "edvr")``. Its ``arch`` must be ``"edvr"`` (use
        :func:`build_model` to pick the class from the config).
    """

    arch = "edvr"

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        config = named_config("small", self.arch) if config is None else config
        if config.arch != self.arch:
            raise ValueError(f"{type(self).__name__} needs arch={self.arch!r}, got {config.arch!r}")
        self.config = config
        c, c_hr = config.num_feat, config.num_feat_hr
        n = config.num_inputs

        self.conv_first = nn.Conv2d(config.num_in_ch, c, 3, 1, 1)
        self.feature_extraction = make_layer(config.num_extract_block, c)
        self.conv_l2_1 = nn.Conv2d(c, c, 3, 2, 1)
        self.conv_l2_2 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv_l3_1 = nn.Conv2d(c, c, 3, 2, 1)
        self.conv_l3_2 = nn.Conv2d(c, c, 3, 1, 1)

        self.pcd_align = PCDAlignment(c, config.deformable_groups, config.max_offset)
        if config.with_tsa:
            self.fusion: nn.Module = TSAFusion(c, n, config.center)
        else:
            self.fusion = nn.Conv2d(n * c, c, 1, 1)

        self.reconstruction = make_layer(config.num_reconstruct_block, c)
        self.upconv1 = nn.Conv2d(c, 4 * c, 3, 1, 1)
        self.upconv2 = nn.Conv2d(c, 4 * c_hr, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_hr = nn.Conv2d(c_hr, c_hr, 3, 1, 1)
        self.conv_last = nn.Conv2d(c_hr, config.num_in_ch, 3, 1, 1)

    # -- per-frame part (independent of the reference) --------------------------------------

    def _trunk(self, feat: Tensor) -> Pyramid:
        l1 = self.feature_extraction(feat)
        l2 = _lrelu(self.conv_l2_2(_lrelu(self.conv_l2_1(l1))))
        l3 = _lrelu(self.conv_l3_2(_lrelu(self.conv_l3_1(l2))))
        return Pyramid(l1, l2, l3)

    def encode_lr(self, frames: Tensor) -> Pyramid:
        """Features of LR frames (N, in_ch, h, w), h and w multiples of 4 (see :meth:`pad_lr`)."""
        return self._trunk(_lrelu(self.conv_first(frames)))

    @staticmethod
    def pad_lr(frames: Tensor) -> Tensor:
        """Replicate-pad LR frames (N, C, h, w) to a multiple of 4."""
        return pad_to_multiple(frames, _PAD)

    @staticmethod
    def pad_hr(frames: Tensor) -> Tensor:
        """Replicate-pad HR frames (N, C, 4h, 4w) consistently with :meth:`pad_lr`."""
        return pad_to_multiple(frames, _PAD, scale=SCALE)

    # -- per-target part ---------------------------------------------------------------------

    def decode(
        self, feats: Pyramid, centre: Tensor, base: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Align, fuse and reconstruct.

        Parameters
        ----------
        feats : Pyramid of Tensor, shapes (B, T, C, h, w), (B, T, C, h/2, w/2), ...
            Per-frame features in TSA order (T = ``config.num_inputs``), h, w multiples of 4.
        centre : Tensor, shape (B, in_ch, h, w)
            The padded reference LR frame (the residual is added to its x4 bilinear up-sample).
        base : Tensor, shape (B, in_ch, 4h, 4w), optional
            What the residual is added to instead of that up-sample (EDVR-STF-flow: the
            ``flow`` method's frame).

        Returns
        -------
        out : Tensor, shape (B, in_ch, 4h, 4w)
        corr : Tensor, shape (B, T, h, w), or None without TSA
            Raw temporal-attention correlation map.
        """
        b, t = feats.l1.shape[:2]
        ci = self.config.center
        # All T frames go through PCD as one batch: larger convs run faster than T small ones.
        nbr = Pyramid(*(f.flatten(0, 1) for f in feats))
        ref = Pyramid(*(f[:, ci : ci + 1].expand_as(f).flatten(0, 1) for f in feats))
        aligned = self.pcd_align(nbr, ref)
        h, w = aligned.shape[-2:]
        aligned = aligned.view(b, t, -1, h, w)
        if self.config.with_tsa:
            feat, corr = self.fusion(aligned)
        else:
            feat, corr = self.fusion(aligned.view(b, -1, h, w)), None

        out = self.reconstruction(feat)
        out = _lrelu(self.pixel_shuffle(self.upconv1(out)))
        out = _lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(_lrelu(self.conv_hr(out)))
        if base is None:
            base = F.interpolate(centre, scale_factor=SCALE, mode="bilinear", align_corners=False)
        return out + base, corr

    # -- whole network -------------------------------------------------------------------

    def check_inputs(self, lr: Tensor, hr: Tensor | None) -> None:
        """Raise ``ValueError`` naming the shapes when ``lr``/``hr`` do not fit the config."""
        cfg = self.config
        if lr.ndim != 5 or lr.shape[1] != cfg.num_frame or lr.shape[2] != cfg.num_in_ch:
            raise ValueError(
                f"lr must have shape (B, {cfg.num_frame}, {cfg.num_in_ch}, h, w), "
                f"got {tuple(lr.shape)}"
            )
        if not cfg.uses_hr_keys:
            if hr is not None:
                raise ValueError("EDVR uses LR frames only: pass hr=None (use EDVR-STF for keys)")
            return
        if hr is None:
            raise ValueError(f"EDVR-STF needs the {NUM_KEYS} HR key frames: hr is None")
        h, w = lr.shape[-2:]
        want = (lr.shape[0], NUM_KEYS, cfg.num_in_ch, SCALE * h, SCALE * w)
        if tuple(hr.shape) != want:
            raise ValueError(
                f"HR keys must be exactly {SCALE}x the LR frames: LR {h}x{w} needs hr of shape "
                f"{want}, got {tuple(hr.shape)}"
            )

    def encode_inputs(self, lr: Tensor, hr: Tensor | None) -> Pyramid:
        """Per-frame features of one batch in TSA order, (B, T, C, ...) per level."""
        b, t = lr.shape[:2]
        lr_feats = self.encode_lr(self.pad_lr(lr.flatten(0, 1)))
        return Pyramid(*(f.unflatten(0, (b, t)) for f in lr_feats))

    def forward_with_corr(
        self, lr: Tensor, hr: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Like :meth:`forward` but returning the raw correlation map (B, T, h, w) (or None)."""
        self.check_inputs(lr, hr)
        h, w = lr.shape[-2:]
        feats = self.encode_inputs(lr, hr)
        centre = self.pad_lr(lr[:, self.config.center])
        out, corr = self.decode(feats, centre)
        out = out[..., : SCALE * h, : SCALE * w]
        return out, None if corr is None else corr[..., :h, :w]

    def forward(
        self, lr: Tensor, hr: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Reconstruct the HR frame at the centre LR time.

        Parameters
        ----------
        lr : Tensor, shape (B, num_frame, in_ch, h, w)
            LR frames t-s, t, t+s; any h, w (padded internally to a multiple of 4).
        hr : Tensor, shape (B, 2, in_ch, 4h, 4w), or None
            HR keys before and after t (EDVR-STF only; None for EDVR).
        return_attention : bool
            Also return the attention scores.

        Returns
        -------
        out : Tensor, shape (B, in_ch, 4h, 4w)
        scores : Tensor, shape (B, T)
            Only with ``return_attention``: the spatial mean of the raw temporal-attention
            correlation of every input with the reference, in input order.
        """
        out, corr = self.forward_with_corr(lr, hr)
        if not return_attention:
            return out
        if corr is None:
            raise ValueError("attention scores need TSA fusion (config.with_tsa=True)")
        return out, corr.float().mean((-2, -1))


class EDVRSTF(EDVR):
    """EDVR-STF: EDVR with the two HR key frames as two more inputs (see the module docstring)."""

    arch = "edvr-stf"

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__(config)
        c, cin = self.config.num_feat, self.config.num_in_ch
        # Names as in the XFusion reference code, so its checkpoints load.
        self.conv_first_hi = nn.Conv2d(cin, c, 3, 1, 1)
        self.conv1_hi = nn.Conv2d(c, c, 3, 1, 1)
        self.max_pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2_hi = nn.Conv2d(c, c, 3, 1, 1)
        self.max_pool2 = nn.MaxPool2d(3, stride=2, padding=1)

    def encode_keys(self, frames: Tensor) -> Pyramid:
        """Features of HR key frames (N, in_ch, 4h, 4w), h, w multiples of 4: LR-size pyramid."""
        y = _lrelu(self.conv_first_hi(frames))
        y = self.max_pool1(_lrelu(self.conv1_hi(y)))
        y = self.max_pool2(_lrelu(self.conv2_hi(y)))
        return self._trunk(y)

    def encode_inputs(self, lr: Tensor, hr: Tensor | None) -> Pyramid:
        assert hr is not None  # check_inputs ran
        lr_feats = super().encode_inputs(lr, hr)
        b, k = hr.shape[:2]
        hr_feats = self.encode_keys(self.pad_hr(hr.flatten(0, 1)))
        return Pyramid(
            *(
                torch.cat([a, f.unflatten(0, (b, k))], 1)
                for a, f in zip(lr_feats, hr_feats, strict=True)
            )
        )


def build_model(config: NetConfig) -> EDVR:
    """:class:`EDVR`, :class:`EDVRSTF` or ``EDVRSTFFlow`` for ``config.arch``."""
    if config.arch == "edvr-stf-flow":
        from napari_xfusion.nn.edvr_flow import EDVRSTFFlow  # imports this module

        return EDVRSTFFlow(config)
    return (EDVRSTF if config.uses_hr_keys else EDVR)(config)


def count_parameters(config: NetConfig) -> int:
    """Trainable parameters of the model for ``config``, without allocating its weights."""
    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for p in model.parameters())


# -- inference helpers -----------------------------------------------------------------------


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
