"""The unit every part of the network is made of: conv -> optional norm -> optional activation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .forms import FORMS
from .norms import make_act, make_norm


class ConvNormAct(nn.Module):
    """conv -> norm -> act, each optional but the conv.

    The conv has a bias unless a BatchNorm follows it (BN's shift makes it redundant): this one rule gives
    both timm ResNet (no conv bias) and timm ConvNeXt (bias everywhere).

    An ungrouped 1x1 conv with stride 1 is `pointwise` and runs in one of two forms (stages/forms.py): `conv`,
    or `linear`, a Linear on the NHWC view (timm ConvNeXt's form) with the Conv2d-shaped weight, so parameters,
    FLOPs and outputs are those of the conv form.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 norm: str | None = None, act: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=norm != "batch")
        self.norm = make_norm(norm, out_chs) if norm else nn.Identity()
        self.act = make_act(act) if act else nn.Identity()
        self.form_kind = "pointwise" if (kernel_size, stride, groups) == (1, 1, 1) else None
        self.form = FORMS["pointwise"][0]
        self._name = f"{in_chs}->{out_chs}, norm={norm}, act={act}"

    def signature(self) -> str:
        """What a form's speed depends on besides the input's shape (tuned layers are grouped by it)."""
        return f"ConvNormAct({self._name})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "linear":
            x = F.linear(x.permute(0, 2, 3, 1), self.conv.weight.flatten(1), self.conv.bias).permute(0, 3, 1, 2)
        else:
            x = self.conv(x)
        return self.act(self.norm(x))
