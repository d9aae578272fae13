"""The unit every part of the network is made of: conv -> optional norm -> optional activation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norms import make_act, make_norm


class ConvNormAct(nn.Module):
    """conv -> norm -> act, each optional but the conv.

    The conv has a bias unless a BatchNorm follows it (BN's shift makes it redundant): this one rule gives
    both timm ResNet (no conv bias) and timm ConvNeXt (bias everywhere).

    `linear=True` runs a 1x1 conv as a Linear on the NHWC view (timm ConvNeXt's layout), keeping the
    Conv2d-shaped weight, so parameters, FLOPs and outputs are those of the conv form.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 norm: str | None = None, act: str | None = None, linear: bool = False):
        super().__init__()
        if linear and (kernel_size != 1 or stride != 1 or groups != 1):
            raise ValueError("the linear (NHWC) form is only for ungrouped 1x1 convs with stride 1")
        self.linear = linear
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=norm != "batch")
        self.norm = make_norm(norm, out_chs, channels_last_dim=linear) if norm else nn.Identity()
        self.act = make_act(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.linear:
            return self.act(self.norm(self.conv(x)))
        x = F.linear(x.permute(0, 2, 3, 1), self.conv.weight.flatten(1), self.conv.bias)
        return self.act(self.norm(x)).permute(0, 3, 1, 2)
