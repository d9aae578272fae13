"""Norm and activation layers chosen by name, for NCHW tensors or for NHWC ("channels last dim") tensors.

Every variant of one norm has the same parameters and buffers, so a state_dict moves freely between the
conv (NCHW) and linear (NHWC) execution of the pointwise layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6  # ConvNeXt's value


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each position of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class BatchNormLastDim(nn.BatchNorm2d):
    """BatchNorm2d applied to an NHWC tensor (same parameters and statistics as on NCHW)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def make_norm(kind: str, channels: int, channels_last_dim: bool = False) -> nn.Module:
    if kind == "batch":
        return BatchNormLastDim(channels) if channels_last_dim else nn.BatchNorm2d(channels)
    if kind == "layer":
        cls = nn.LayerNorm if channels_last_dim else LayerNorm2d
        return cls(channels, eps=LAYER_NORM_EPS)
    raise ValueError(f"unknown norm {kind!r}; choose one of: batch, layer")


def make_act(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {kind!r}; choose one of: relu, gelu")
