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
from torch.autograd.function import once_differentiable

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


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _choose_backend(x: Tensor, backend: str | None) -> str:
    backend = (backend or os.environ.get(BACKEND_ENV, "auto")).lower()
    if backend not in ("auto", "pure", "torchvision"):
        raise ValueError(f"unknown DCN backend {backend!r}: use 'auto', 'pure' or 'torchvision'")
    if backend == "torchvision" and _tv_deform_conv2d is None:
        raise RuntimeError(
            "DCN backend 'torchvision' was requested but torchvision does not import"
        )
    if backend == "auto":
        # By measurement (benchmarks/bench_dcn.py, 1 CPU thread): torchvision's CPU kernel is
        # ~16x a plain 3x3 conv forward and ~33x forward+backward, the pure version ~3.8x and
        # ~5x. On CUDA torchvision's fused kernel is expected to be the fast one.
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

    Notes
    -----
    The pure version samples all taps of a chunk of output pixels with one ``grid_sample``,
    multiplies by the mask and does one matmul, so memory stays at a few MiB above the output;
    its backward pass recomputes the samples instead of storing them. On one CPU thread
    (benchmarks/bench_dcn.py, 64 channels, 8 groups, 100x256) it takes ~3.5x a plain 3x3 conv
    forward and ~4.5x forward + backward, against ~16x and ~30x for torchvision's CPU op. It
    matches torchvision to float round-off, gradients included (also at integer sample
    positions, where mmcv's kernel returns a zero offset gradient one pixel outside the image).
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


# Output pixels per chunk are chosen so the sampled (B, C * kh * kw, n) block holds about this
# many elements (2 MiB of float32) and stays in cache between sampling, masking and the matmul.
# Measured on the 64-channel, 100x256 case: 4 output rows per chunk cut the forward by ~30%
# against one block.
_CHUNK_ELEMS = 1 << 19
# The backward pass works in larger chunks: each chunk's grid_sample backward writes (and this
# module sums) a gradient of the whole input. 1 << 20 measured best of 1 << 19 ... 1 << 22.
_CHUNK_ELEMS_GRAD = 1 << 20


class _Geometry:
    """Tap positions without offsets, in grid_sample's normalised coordinates, and shapes.

    ``align_corners=False`` maps pixel ``p`` to ``(2p + 1) / size - 1`` (``size``: the padded size);
    an offset ``d`` then adds ``2 d / size``. grid_sample's zero padding reads every corner
    outside the image as zero, which is torchvision's border rule.
    """

    def __init__(self, x: Tensor, weight: Tensor, stride, padding, dilation, g: int, out_hw):
        self.b, self.c, self.h, self.w = x.shape
        self.c_out, _, kh, kw = weight.shape
        self.g, self.k = g, kh * kw
        self.ho, self.wo = out_hw
        self.n = self.ho * self.wo
        dev, dt = x.device, x.dtype
        tap_i = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dilation[0]
        tap_j = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dilation[1]
        row = torch.arange(self.ho, device=dev, dtype=dt) * stride[0] - padding[0]
        col = torch.arange(self.wo, device=dev, dtype=dt) * stride[1] - padding[1]
        base_y = (tap_i[:, None, None] + row[None, :, None]).expand(self.k, self.ho, self.wo)
        base_x = (tap_j[:, None, None] + col[None, None, :]).expand(self.k, self.ho, self.wo)
        # The image is zero-padded on the bottom/right to power-of-two sizes (reads beyond the
        # image are zero either way) so that the normalisation below and grid_sample's inverse
        # are exact: an integer sample position (all of them while offsets are zero) then
        # lands exactly on its pixel, and the offset gradient takes the same side of the kink
        # as torchvision's instead of a side picked by round-off.
        self.hs, self.ws = _pow2(self.h), _pow2(self.w)
        self.base_y = (2 * base_y.reshape(self.k, self.n) + 1) / self.hs - 1
        self.base_x = (2 * base_x.reshape(self.k, self.n) + 1) / self.ws - 1

    def grid(self, off: Tensor, n0: int, n1: int, out: Tensor | None = None) -> Tensor:
        """Sampling grid (B*G, K, n1 - n0, 2) as (x, y) from offsets viewed (B*G, K, 2, N).

        ``out`` (no autograd) saves the allocation and the stacking copy.
        """
        if out is None:
            gx = torch.add(self.base_x[:, n0:n1], off[:, :, 1, n0:n1], alpha=2.0 / self.ws)
            gy = torch.add(self.base_y[:, n0:n1], off[:, :, 0, n0:n1], alpha=2.0 / self.hs)
            return torch.stack((gx, gy), dim=-1)
        torch.add(self.base_x[:, n0:n1], off[:, :, 1, n0:n1], alpha=2.0 / self.ws, out=out[..., 0])
        torch.add(self.base_y[:, n0:n1], off[:, :, 0, n0:n1], alpha=2.0 / self.hs, out=out[..., 1])
        return out

    def padded(self, x: Tensor) -> Tensor:
        """``x`` (B, C, H, W) as (B*G, C/G, hs, ws), zero-padded to the sampling sizes."""
        xg = x.reshape(self.b * self.g, self.c // self.g, self.h, self.w)
        if (self.hs, self.ws) == (self.h, self.w):
            return xg
        return F.pad(xg, (0, self.ws - self.w, 0, self.hs - self.h))

    def step(self, elems: int) -> int:
        return max(1, elems // (self.b * self.c * self.k))


def _sample(xg: Tensor, grid: Tensor) -> Tensor:
    return F.grid_sample(xg, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _forward(geo: _Geometry, x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor) -> Tensor:
    """DCNv2 without bias and without autograd: (B, C_out, N), chunk by chunk of pixels."""
    b, c, g, k = geo.b, geo.c, geo.g, geo.k
    off = offset.reshape(b * g, k, 2, geo.n)
    msk = mask.reshape(b, g, 1, k, geo.n)
    xg = geo.padded(x)
    w_mat = weight.reshape(geo.c_out, c * k)  # columns ordered (channel, tap) like the samples
    step = geo.step(_CHUNK_ELEMS)
    grid_buf = x.new_empty(b * g, k, min(step, geo.n), 2)  # filled in place, chunk by chunk
    outs = []
    for n0 in range(0, geo.n, step):
        n1 = min(geo.n, n0 + step)
        cols = _sample(xg, geo.grid(off, n0, n1, out=grid_buf[:, :, : n1 - n0]))
        cols = cols.view(b, g, c // g, k, n1 - n0).mul_(msk[..., n0:n1])
        outs.append(torch.matmul(w_mat, cols.view(b, c * k, n1 - n0)))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


class _ModulatedDeformConv(torch.autograd.Function):
    """Autograd for the pure version that saves only the inputs and recomputes the samples.

    Saving the (B, C * kh * kw, Ho * Wo) samples for the backward pass would cost 9x the input
    per layer; recomputing them is one grid_sample per chunk.
    """

    @staticmethod
    def forward(ctx, x, offset, mask, weight, bias, geo):  # noqa: ANN001, ANN205 - autograd API
        out = _forward(geo, x, offset, mask, weight)
        if bias is not None:
            out.add_(bias.view(1, -1, 1))
        ctx.geo = geo
        ctx.save_for_backward(x, offset, mask, weight)
        return out.view(geo.b, geo.c_out, geo.ho, geo.wo)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205 - autograd API
        x, offset, mask, weight = ctx.saved_tensors
        need_x, need_off, need_mask, need_w, need_b, _ = ctx.needs_input_grad
        geo: _Geometry = ctx.geo
        b, c, g, k, n = geo.b, geo.c, geo.g, geo.k, geo.n
        cg = c // g
        off = offset.reshape(b * g, k, 2, n)
        msk = mask.reshape(b, g, 1, k, n)
        xg = geo.padded(x)
        w_mat = weight.reshape(geo.c_out, c * k)
        gout = grad_out.reshape(b, geo.c_out, n)
        gx = torch.zeros_like(xg) if need_x else None
        goff = torch.empty_like(off) if need_off else None
        gmask = torch.empty(b, g, k, n, dtype=mask.dtype, device=mask.device) if need_mask else None
        gw = torch.zeros_like(w_mat) if need_w else None
        step = geo.step(_CHUNK_ELEMS_GRAD)
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            m = n1 - n0
            grid = geo.grid(off, n0, n1)
            go = gout[:, :, n0:n1]
            # The samples themselves are only needed for the mask and weight gradients.
            if need_mask or need_w:
                cols = _sample(xg, grid).view(b, g, cg, k, m)
            gcols = None
            if need_x or need_off or need_mask:
                gcols = torch.matmul(w_mat.t(), go).view(b, g, cg, k, m)
            if need_mask:
                torch.sum(gcols * cols, dim=2, out=gmask[..., n0:n1])
            if need_w:
                masked = cols.mul_(msk[..., n0:n1]).view(b, c * k, m)  # raw samples done with
                gw += torch.matmul(go, masked.transpose(1, 2)).sum(0)
            if need_x or need_off:
                gcols.mul_(msk[..., n0:n1])
                gi, gg = torch.ops.aten.grid_sampler_2d_backward(
                    gcols.view(b * g, cg, k, m), xg, grid, 0, 0, False, [need_x, need_off]
                )
                if need_x:
                    gx += gi
                if need_off:
                    # grid = base + offset * 2 / size, with (x, y) swapped against (dy, dx).
                    torch.mul(gg[..., 1], 2.0 / geo.hs, out=goff[:, :, 0, n0:n1])
                    torch.mul(gg[..., 0], 2.0 / geo.ws, out=goff[:, :, 1, n0:n1])
                    # At a point exactly one pixel outside (y or x == -1, where zero offsets put
                    # the border taps) this is the derivative towards the image, as in
                    # torchvision; mmcv's kernel returns 0 there instead.
        return (
            gx[..., : geo.h, : geo.w].reshape(x.shape) if need_x else None,
            goff.view_as(offset) if need_off else None,
            gmask.view_as(mask) if need_mask else None,
            gw.view_as(weight) if need_w else None,
            gout.sum((0, 2)) if need_b else None,
            None,
        )


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
    """DCNv2 as grid_sample (fused bilinear gather) + mask + one matmul per chunk of pixels."""
    # One dtype throughout (that of x): under autocast the features arrive in half precision
    # while the parameters stay float32, and the hand-written backward runs outside autocast.
    offset, mask, weight = (t.to(x.dtype) for t in (offset, mask, weight))
    bias = None if bias is None else bias.to(x.dtype)
    geo = _Geometry(x, weight, stride, padding, dilation, g, out_hw)
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, offset, mask, weight, bias)
    ):
        return _ModulatedDeformConv.apply(x, offset, mask, weight, bias, geo)
    out = _forward(geo, x, offset, mask, weight)
    if bias is not None:
        out.add_(bias.view(1, -1, 1))
    return out.view(geo.b, geo.c_out, geo.ho, geo.wo)


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
    max_offset : float, optional
        Clamp the predicted offsets to +-``max_offset`` pixels (None: unbounded, BasicSR's).

    After every forward, :attr:`offset_stats` holds the detached ``(mean |offset|, max
    |offset|)`` of that call before clamping (the training loop logs them).
    """

    offset_warn_threshold = 50.0

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        padding: int = 1,
        deformable_groups: int = 8,
        max_offset: float | None = None,
    ) -> None:
        super().__init__()
        if max_offset is not None and not float(max_offset) > 0:
            raise ValueError(f"max_offset must be None or > 0, got {max_offset}")
        self.max_offset = None if max_offset is None else float(max_offset)
        self.offset_stats: tuple[Tensor, Tensor] | None = None
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
        magnitude = offset.detach().abs()
        offset_absmean = magnitude.mean()
        self.offset_stats = (offset_absmean, magnitude.max())
        if self.max_offset is not None:
            offset = offset.clamp(-self.max_offset, self.max_offset)
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
