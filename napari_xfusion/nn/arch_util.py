"""Building blocks shared by the architectures (BasicSR's ``arch_util`` in spirit and names).

Parameter names follow BasicSR (``conv1``/``conv2`` inside a residual block, blocks numbered by
``nn.Sequential``) so BasicSR state dicts load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ResidualBlockNoBN", "default_init_weights", "make_layer", "pad_to_multiple"]


@torch.no_grad()
def default_init_weights(modules: nn.Module | list[nn.Module], scale: float = 1.0) -> None:
    """Kaiming-normal initialise every conv in ``modules``, scale the weights, zero the biases.

    A scale of 0.1 on residual-branch convs keeps a deep stack of residual blocks close to the
    identity at the start of training (BasicSR's recipe, which EDVR was trained with).
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.zero_()


class ResidualBlockNoBN(nn.Module):
    """``x + conv2(relu(conv1(x)))`` with 3x3 convs and no batch norm.

    Parameters
    ----------
    num_feat : int
        Channels C; input and output are (N, C, H, W).
    """

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        default_init_weights([self.conv1, self.conv2], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


def make_layer(num_blocks: int, num_feat: int) -> nn.Sequential:
    """``num_blocks`` :class:`ResidualBlockNoBN` in an ``nn.Sequential`` (names ``0.conv1``...)."""
    return nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_blocks)))


def pad_to_multiple(x: torch.Tensor, multiple: int, scale: int = 1) -> torch.Tensor:
    """Replicate-pad the last two axes at the bottom/right up to a multiple.

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W)
    multiple : int
        The padded size is the smallest multiple of ``multiple * scale`` >= the size.
    scale : int
        For HR frames paired with LR frames: pad HR by exactly ``scale`` times the LR padding,
        so both stay aligned (the HR frame is ``scale`` times the LR frame).

    Returns
    -------
    torch.Tensor, shape (N, C, H', W')
    """
    h, w = x.shape[-2:]
    step = multiple * scale
    pad_h, pad_w = (-h) % step, (-w) % step
    if pad_h == 0 and pad_w == 0:
        return x
    # Replicate, not reflect: reflect needs the pad to be smaller than the frame, which fails on
    # tiny tiles, and a replicated edge adds no structure the network could mistake for content.
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
