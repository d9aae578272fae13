"""The residual block of every roadmap step: one spatial conv and two 1x1 convs, arranged by flags.

    bottleneck, spatial conv in the middle (ResNet):   1x1 C_in->w,  kxk w->w,       1x1 w->4w
    inverted bottleneck, middle:                       1x1 C_in->4C, kxk 4C->4C,     1x1 4C->C
    inverted bottleneck, spatial conv first (ConvNeXt): kxk C_in->C_in, 1x1 C_in->4C, 1x1 4C->C

Norms follow every conv (`block_norms=all`) or only the spatial conv (`one`). Activations follow the first
two convs and the residual add (`block_activations=all`) or only the conv before the last 1x1 (`one`). With `grn`,
Global Response Normalization (ConvNeXt V2, timm's layer) normalizes the last 1x1 conv's input; with `small_kernel`,
the spatial conv has RepLKNet's parallel small kernel (layers.LargeKernelConv).
"""
from __future__ import annotations

import torch
from timm.layers import drop_path
from timm.layers.grn import GlobalResponseNorm
from torch import nn

from .config import NetConfig
from .downsampling import projection_shortcut
from .layers import ConvNormAct, LargeKernelConv
from .norms import make_act


class LayerScale(nn.Module):
    """Per-channel scale of the residual branch, initialised small (CaiT / ConvNeXt). `Block` applies it."""

    def __init__(self, channels: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), init_value))


class Block(nn.Module):
    def __init__(self, cfg: NetConfig, in_chs: int, out_chs: int, stride: int, drop_path: float):
        super().__init__()
        inverted = cfg.block == "inverted_bottleneck"
        hidden = out_chs * cfg.expansion if inverted else out_chs // cfg.expansion
        first = cfg.spatial_conv_position == "first"
        all_norms, all_acts = cfg.block_norms == "all", cfg.block_activations == "all"

        # channels in and out of each conv, in execution order
        if first:
            spatial_io, pw1_io, pw2_io = (in_chs, in_chs), (in_chs, hidden), (hidden, out_chs)
        else:
            pw1_io, spatial_io, pw2_io = (in_chs, hidden), (hidden, hidden), (hidden, out_chs)
        before_last_pw = "pw1" if first else "spatial"

        def act_after(name: str) -> str | None:
            # `all`: after the first two convs (pw2 is always last); `one`: only before the last 1x1 conv
            if all_acts:
                return cfg.act if name != "pw2" else None
            return cfg.act if name == before_last_pw else None

        spatial_groups = spatial_io[0] if cfg.depthwise else 1
        if cfg.small_kernel:
            self.spatial = LargeKernelConv(*spatial_io, cfg.kernel_size, cfg.small_kernel, stride=stride,
                                           groups=spatial_groups, norm=cfg.norm, act=act_after("spatial"))
        else:
            self.spatial = ConvNormAct(*spatial_io, cfg.kernel_size, stride=stride, groups=spatial_groups,
                                       norm=cfg.norm, act=act_after("spatial"))
        self.pw1 = ConvNormAct(*pw1_io, norm=cfg.norm if all_norms else None, act=act_after("pw1"))
        self.pw2 = ConvNormAct(*pw2_io, norm=cfg.norm if all_norms else None)
        # ConvNeXt V2's eps; on NCHW-indexed tensors, as every layer here
        self.grn = GlobalResponseNorm(pw2_io[0], eps=1e-6, channels_last=False) if cfg.grn else None
        self.order = (*(("spatial", "pw1") if first else ("pw1", "spatial")), *(("grn",) if cfg.grn else ()), "pw2")

        self.layer_scale = LayerScale(out_chs, cfg.layer_scale_init) if cfg.layer_scale_init else None
        self.drop_path_rate = drop_path
        self.shortcut = projection_shortcut(in_chs, out_chs, stride, cfg.norm)
        self.act = make_act(cfg.act) if all_acts else nn.Identity()  # ResNet's post-addition activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        for name in self.order:
            x = getattr(self, name)(x)
        return self.act(self.residual_add(x, shortcut))

    def residual_add(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """shortcut + drop_path(layer_scale(branch)), in as few passes over the activations as autograd allows:
        the scales broadcast inside one fused multiply-add (timm makes a new tensor for each of the three)."""
        gamma = self.layer_scale.gamma.reshape(1, -1, 1, 1) if self.layer_scale is not None else None
        keep = self.drop_path_keep(branch)
        if keep is None:
            return branch.add_(shortcut) if gamma is None else torch.addcmul(shortcut, branch, gamma)
        # gamma stays its own product: one (N, C) scale would need a slow per-sample gradient reduction
        return torch.addcmul(shortcut, branch if gamma is None else branch * gamma, keep)

    def drop_path_keep(self, x: torch.Tensor) -> torch.Tensor | None:
        """DropPath's per-sample keep / keep_prob (N, 1, 1, 1) in training, else None. timm's drop_path on ones:
        the same random draws as timm's DropPath on the branch itself."""
        if not self.training or self.drop_path_rate == 0:
            return None
        return drop_path(x.new_ones(x.shape[0], 1, 1, 1), self.drop_path_rate, training=True)

    def last_norm(self) -> nn.Module:
        """The norm closing the residual branch (zeroed by the ResNet init), if any: pw2's, always last."""
        return self.pw2.norm
