"""Norm and activation layers chosen by name, for NCHW tensors (in either memory layout)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .forms import default_forms

LAYER_NORM_EPS = 1e-6  # ConvNeXt's value


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of an NCHW tensor, in one of two forms (stages/forms.py):
    `permute`, F.layer_norm on the NHWC view (no copy when the memory is channels_last), or `mean_var`, the
    statistics over dim 1 as ConvNeXt's channels-first code computes them."""

    def __init__(self, channels: int, eps: float = LAYER_NORM_EPS):
        super().__init__(channels, eps=eps)
        self.forms = default_forms("layer_norm")

    def signature(self) -> str:
        return f"LayerNorm2d({self.normalized_shape[0]})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forms["layer_norm"] == "mean_var":
            mean = x.mean(1, keepdim=True)
            var = (x - mean).pow(2).mean(1, keepdim=True)
            x = (x - mean) * torch.rsqrt(var + self.eps)
            return x * self.weight[:, None, None] + self.bias[:, None, None]
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return LayerNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}; choose one of: batch, layer")


def make_act(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {kind!r}; choose one of: relu, gelu")
