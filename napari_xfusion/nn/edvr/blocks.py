"""EDVR's building blocks: the feature :class:`Pyramid`, PCD alignment and TSA fusion."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from napari_xfusion.nn.dcn import DCNv2Pack


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.1, inplace=True)


def _lrelu_new(x: Tensor) -> Tensor:
    # Out of place: a DCN backend may return a view from a custom autograd Function, which
    # autograd forbids modifying in place.
    return F.leaky_relu(x, 0.1)


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


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
