"""Modulated deformable convolution (DCNv2) in plain PyTorch, with torchvision as a CUDA backend.

The layout and the numbers follow ``torchvision.ops.deform_conv2d`` (and mmcv/BasicSR): for
deformable group ``g`` and kernel tap ``k = i * kw + j`` the offset channels ``2 * (g * kh * kw +
k)`` and ``+ 1`` hold ``(dy, dx)``, the mask channel ``g * kh * kw + k`` the (already sigmoid-ed)
modulation. A tap of output pixel ``(ho, wo)`` samples the input at

    y = ho * stride - padding + i * dilation + dy,   x = wo * stride - padding + j * dilation + dx

bilinearly, with every pixel outside the image read as zero; a sample point at or beyond one
pixel outside the image (``y <= -1`` or ``y >= H``, same for ``x``) is zero as a whole.
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["modulated_deform_conv2d", "DCNv2Pack", "BACKEND_ENV"]

logger = logging.getLogger(__name__)

BACKEND_ENV = "XFUSION_DCN_BACKEND"
"""Environment variable forcing the backend: ``"pure"``, ``"torchvision"`` or ``"auto"``."""

try:  # torchvision is optional: its wheel does not import beside every torch build.
    from torchvision.ops import deform_conv2d as _tv_deform_conv2d
except Exception:  # noqa: BLE001 - any import failure (ImportError, RuntimeError, ...) means "absent"
    _tv_deform_conv2d = None


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _choose_backend(x: Tensor, backend: str | None) -> str:
    backend = (backend or os.environ.get(BACKEND_ENV, "auto")).lower()
    if backend not in ("auto", "pure", "torchvision"):
        raise ValueError(f"unknown DCN backend {backend!r}: use 'auto', 'pure' or 'torchvision'")
    if backend == "torchvision" and _tv_deform_conv2d is None:
        raise RuntimeError(
            "DCN backend 'torchvision' was requested but torchvision does not import"
        )
    if backend == "auto":
        # By measurement: torchvision's CPU kernel is ~38x a plain conv, the pure version ~3x;
        # on CUDA torchvision's fused kernel is the fast one.
        return "torchvision" if x.is_cuda and _tv_deform_conv2d is not None else "pure"
    return backend


def modulated_deform_conv2d(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 1,
    dilation: int | tuple[int, int] = 1,
    deform_groups: int = 1,
    backend: str | None = None,
) -> Tensor:
    """Modulated deformable 2-D convolution (DCNv2), torchvision's semantics.

    Parameters
    ----------
    x : Tensor, shape (B, C, H, W), float
        Input features.
    offset : Tensor, shape (B, 2 * G * kh * kw, Ho, Wo)
        Sampling offsets, ``(dy, dx)`` pairs per group and tap, in input pixels.
    mask : Tensor, shape (B, G * kh * kw, Ho, Wo)
        Modulation per group and tap, already passed through a sigmoid.
    weight : Tensor, shape (C_out, C, kh, kw)
        Convolution weight (no weight groups).
    bias : Tensor, shape (C_out,), optional
    stride, padding, dilation : int or (int, int)
    deform_groups : int
        ``G``: the channels split into ``G`` groups that share offsets and mask.
    backend : {"auto", "pure", "torchvision"}, optional
        ``None`` reads :data:`BACKEND_ENV` (default ``"auto"``: torchvision on CUDA where it
        imports, the pure PyTorch version otherwise).

    Returns
    -------
    Tensor, shape (B, C_out, Ho, Wo), dtype of ``x``
    """
    b, c, h, w = x.shape
    c_out, c_w, kh, kw = weight.shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    g = deform_groups
    if c_w != c:
        raise ValueError(
            f"weight must have shape (C_out, {c}, kh, kw) (no weight groups), got "
            f"{tuple(weight.shape)}"
        )
    if c % g:
        raise ValueError(f"channels {c} are not divisible by deform_groups {g}")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = kh * kw
    if offset.shape != (b, 2 * g * k, ho, wo):
        raise ValueError(
            f"offset must have shape {(b, 2 * g * k, ho, wo)}, got {tuple(offset.shape)}"
        )
    if mask.shape != (b, g * k, ho, wo):
        raise ValueError(f"mask must have shape {(b, g * k, ho, wo)}, got {tuple(mask.shape)}")

    if _choose_backend(x, backend) == "torchvision":
        return _tv_deform_conv2d(
            x, offset, weight, bias, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), mask=mask
        )
    return _pure(x, offset, mask, weight, bias, (sh, sw), (ph, pw), (dh, dw), g, (ho, wo))


def _pure(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    g: int,
    out_hw: tuple[int, int],
) -> Tensor:
    b, c, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    ho, wo = out_hw
    k = kh * kw
    n = ho * wo
    cg = c // g
    # One ring of zeros lets the four corners of every sample point in (-1, H) x (-1, W) be read
    # without bounds checks; points further out get zero weight.
    hp, wp = h + 2, w + 2
    xp = F.pad(x, (1, 1, 1, 1)).reshape(b, g, cg, hp * wp)
    off = offset.reshape(b, g, k, 2, ho, wo)
    msk = mask.reshape(b, g, k, ho, wo)
    base_y = (torch.arange(ho, device=x.device, dtype=x.dtype) * stride[0] - padding[0]).view(
        1, 1, ho, 1
    )
    base_x = (torch.arange(wo, device=x.device, dtype=x.dtype) * stride[1] - padding[1]).view(
        1, 1, 1, wo
    )
    w_taps = weight.reshape(c_out, c, k)
    out = None
    for tap in range(k):
        i, j = divmod(tap, kw)
        py = base_y + i * dilation[0] + off[:, :, tap, 0]  # (B, G, Ho, Wo)
        px = base_x + j * dilation[1] + off[:, :, tap, 1]
        cols = _sample(xp, py, px, msk[:, :, tap], h, w).reshape(b, c, n)
        term = torch.matmul(w_taps[:, :, tap], cols)  # (B, C_out, N)
        out = term if out is None else out + term
    out = out.reshape(b, c_out, ho, wo)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


def _sample(xp: Tensor, py: Tensor, px: Tensor, m: Tensor, h: int, w: int) -> Tensor:
    """Mask-modulated bilinear samples of ``xp`` (B, G, Cg, (H+2)*(W+2)) at (py, px) (B, G, Ho, Wo).

    Returns (B, G, Cg, Ho*Wo).
    """
    b, g, cg, _ = xp.shape
    wp = w + 2
    valid = (py > -1) & (py < h) & (px > -1) & (px < w)
    # Clamp before flooring so that far-away (invalid) points cannot overflow the integer index.
    py = py.clamp(-1.0, float(h))
    px = px.clamp(-1.0, float(w))
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly = py - y0
    lx = px - x0
    mv = m * valid.to(m.dtype)
    yi = (y0.long() + 1).clamp(0, h)  # padded row of the upper corners, in [0, H]
    xi = (x0.long() + 1).clamp(0, w)
    idx00 = (yi * wp + xi).reshape(b, g, 1, -1).expand(b, g, cg, -1)
    idx01 = idx00 + 1
    idx10 = idx00 + wp
    idx11 = idx10 + 1
    w00 = ((1 - ly) * (1 - lx) * mv).reshape(b, g, 1, -1)
    w01 = ((1 - ly) * lx * mv).reshape(b, g, 1, -1)
    w10 = (ly * (1 - lx) * mv).reshape(b, g, 1, -1)
    w11 = (ly * lx * mv).reshape(b, g, 1, -1)
    return (
        w00 * xp.gather(3, idx00)
        + w01 * xp.gather(3, idx01)
        + w10 * xp.gather(3, idx10)
        + w11 * xp.gather(3, idx11)
    )


class DCNv2Pack(nn.Module):
    """Modulated deformable conv whose offsets and mask are predicted from a second input.

    Parameter names and shapes match BasicSR's ``DCNv2Pack`` (``weight``, ``bias``,
    ``conv_offset.weight``, ``conv_offset.bias``), so its state dicts load unchanged.

    Parameters
    ----------
    in_ch, out_ch : int
        Channels of ``x`` (and of ``feat``) and of the output.
    kernel_size, padding : int
    deformable_groups : int
        ``G``; ``in_ch`` must be divisible by it.
    """

    offset_warn_threshold = 50.0

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        padding: int = 1,
        deformable_groups: int = 8,
    ) -> None:
        super().__init__()
        if in_ch % deformable_groups:
            raise ValueError(
                f"in_ch {in_ch} is not divisible by deformable_groups {deformable_groups}"
            )
        self.in_ch = in_ch
        self.out_ch = out_ch
        self.kernel_size = kernel_size
        self.padding = padding
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_ch))
        self.conv_offset = nn.Conv2d(
            in_ch, 3 * deformable_groups * kernel_size * kernel_size, kernel_size, padding=padding
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BasicSR's initialisation: uniform weight, zero bias, zero offsets and mask logits.

        Zero offset/mask logits start the layer as a plain conv with every tap weighted 0.5.
        """
        stdv = 1.0 / math.sqrt(self.in_ch * self.kernel_size**2)
        nn.init.uniform_(self.weight, -stdv, stdv)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor, feat: Tensor) -> Tensor:
        """Deform-convolve ``x`` (B, in_ch, H, W) with offsets predicted from ``feat`` (same shape).

        Returns (B, out_ch, H, W) for stride 1 and ``padding = kernel_size // 2``.
        """
        out = self.conv_offset(feat)
        # BasicSR's split: the first two thirds are the (dy, dx) offsets, the last the mask logits.
        o1, o2, logits = torch.chunk(out, 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        mask = torch.sigmoid(logits)
        offset_absmean = offset.detach().abs().mean()
        if offset_absmean > self.offset_warn_threshold:
            logger.warning(
                "DCNv2Pack: offset mean %.1f > %.0f: training may be diverging",
                float(offset_absmean),
                self.offset_warn_threshold,
            )
        return modulated_deform_conv2d(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            stride=1,
            padding=self.padding,
            dilation=1,
            deform_groups=self.deformable_groups,
        )
