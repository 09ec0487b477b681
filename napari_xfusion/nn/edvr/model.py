"""The EDVR and EDVR-STF networks and building one from its :class:`NetConfig`."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from napari_xfusion.core.degrade import SCALE
from napari_xfusion.nn.arch_util import make_layer, pad_to_multiple
from napari_xfusion.nn.edvr.blocks import PCDAlignment, Pyramid, TSAFusion, _lrelu
from napari_xfusion.nn.edvr.config import NUM_KEYS, NetConfig, named_config

# The up-sampling factor (two PixelShuffle(2)) is the cameras' grid ratio, defined in core.

_PAD = 4
"""The LR frame is padded to a multiple of 4: the 3-level pyramid halves it twice."""


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

    def check_lr(self, lr: Tensor) -> None:
        """Raise ``ValueError`` naming the shape when ``lr`` is not (B, num_frame, C, h, w)."""
        cfg = self.config
        if lr.ndim != 5 or lr.shape[1] != cfg.num_frame or lr.shape[2] != cfg.num_in_ch:
            raise ValueError(
                f"lr must have shape (B, {cfg.num_frame}, {cfg.num_in_ch}, h, w), "
                f"got {tuple(lr.shape)}"
            )

    def check_inputs(self, lr: Tensor, hr: Tensor | None) -> None:
        """Raise ``ValueError`` naming the shapes when ``lr``/``hr`` do not fit the config."""
        cfg = self.config
        self.check_lr(lr)
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
