"""Ways to halve resolution between stages."""
from __future__ import annotations

from torch import nn

from .layers import ConvNormAct
from .norms import make_norm


class SeparateDownsample(nn.Sequential):
    """ConvNeXt's downsampling layer: norm -> 2x2 stride-2 conv (the norm keeps training from diverging)."""

    def __init__(self, in_chs: int, out_chs: int, norm: str):
        super().__init__()
        self.norm = make_norm(norm, in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, 2, stride=2)


def projection_shortcut(in_chs: int, out_chs: int, stride: int, norm: str) -> nn.Module:
    """ResNet's shortcut in a block that changes shape: 1x1 conv with the block's stride -> norm."""
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    return ConvNormAct(in_chs, out_chs, 1, stride=stride, norm=norm)
