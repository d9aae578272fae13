"""The one parametric network: ResNet-50 at its default config, ConvNeXt-T at the last roadmap step."""
from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices  # timm's own models import it from here
from torch import nn

from .blocks import Block
from .config import NetConfig
from .downsampling import SeparateDownsample
from .layers import LargeKernelConv
from .norms import make_norm
from .stems import Stem


class Stage(nn.Module):
    def __init__(self, cfg: NetConfig, index: int, in_chs: int, out_chs: int, drop_paths: list[float]):
        super().__init__()
        separate = cfg.downsample == "separate"
        # the stem already downsamples into stage 0
        self.downsample = SeparateDownsample(in_chs, out_chs, cfg.norm) if separate and index > 0 else None
        block_in = out_chs if self.downsample is not None else in_chs
        block_stride = 2 if index > 0 and not separate else 1
        self.blocks = nn.Sequential(*[
            Block(cfg, block_in if j == 0 else out_chs, out_chs, block_stride if j == 0 else 1, dp)
            for j, dp in enumerate(drop_paths)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class Head(nn.Module):
    """Global average pool (-> norm, with separate downsampling) -> linear classifier."""

    def __init__(self, cfg: NetConfig, in_chs: int):
        super().__init__()
        self.norm = make_norm(cfg.norm, in_chs) if cfg.downsample == "separate" else None
        self.fc = nn.Linear(in_chs, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        if self.norm is not None:
            x = self.norm(x)
        return self.fc(x.flatten(1))


class Net(nn.Module):
    """`channels_last` is how the net lays out its activations, not what it computes (outputs agree to float
    rounding), so it is an argument and not part of NetConfig or a run's identity. NHWC is the layout of
    oneDNN's and cuDNN's fast convolutions, and where a LayerNorm over channels needs no copy
    (results/bench/ measures it against timm's NCHW)."""

    def __init__(self, cfg: NetConfig, channels_last: bool = True):
        super().__init__()
        self.cfg = cfg
        self.stem = Stem(cfg)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()  # floats, even on meta
        stages, in_chs = [], cfg.stem_width
        for i, (depth, out_chs) in enumerate(zip(cfg.depths, cfg.stage_widths)):
            start = sum(cfg.depths[:i])
            stages.append(Stage(cfg, i, in_chs, out_chs, rates[start:start + depth]))
            in_chs = out_chs
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self.head = Head(cfg, in_chs)
        # each stage's output as timm describes a backbone's features (both stems reduce 4x, each stage after the
        # first 2x more), so features_only / forward_intermediates hand the stages to a detector as timm's do
        self.feature_info = [{"num_chs": w, "reduction": 4 * 2 ** i, "module": f"stages.{i}"}
                             for i, w in enumerate(cfg.stage_widths)]
        self.init_weights()
        self.set_layout(channels_last)

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and self.cfg.weight_init == "trunc_normal":
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.cfg.weight_init == "kaiming":
            # timm's zero_init_last: each residual branch starts as identity when it ends in a BN
            for m in self.modules():
                if isinstance(m, Block) and isinstance(m.last_norm(), nn.BatchNorm2d):
                    nn.init.zeros_(m.last_norm().weight)

    # timm's classifier API, which its train.py, validate.py and benchmark.py read off a model
    @property
    def num_classes(self) -> int:
        fc = self.head.fc if isinstance(self.head, Head) else None  # no head: pruned for features_only
        return fc.out_features if isinstance(fc, nn.Linear) else 0

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for `num_classes` (0: none, the pooled features out), as timm's models do."""
        fc = self.head.fc
        self.head.fc = nn.Linear(fc.in_features, num_classes).to(fc.weight) if num_classes > 0 else nn.Identity()
        self.cfg = self.cfg.replace(num_classes=num_classes) if num_classes > 0 else self.cfg

    def set_layout(self, channels_last: bool) -> None:
        """The layout of the activations and of the 4-d weights from here on (also a run-time choice,
        ablate.autotune). Both: oneDNN runs a conv NHWC when its input or its weight is, and NHWC activations with
        NCHW weights trained the CIFAR proxy's `kernel` step 1.3x slower than with NHWC weights (one thread)."""
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x.contiguous(memory_format=self.memory_format)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's feature API: the outputs of the stages in `indices` (the last n if an int, all if None), and the
        final features unless intermediates_only. No norm applies to a feature map here (the head's norm acts
        on the pooled features, as timm ConvNeXt's), so `norm` changes nothing."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r} is not allowed; expected NCHW")
        take, last = feature_take_indices(len(self.stages), indices)
        x = self.stem(x.contiguous(memory_format=self.memory_format))
        intermediates = []
        for i, stage in enumerate(self.stages[:last + 1] if stop_early or intermediates_only else self.stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drops the stages after the last of `indices` (and the head), as timm's backbones do for features_only."""
        take, last = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:last + 1]
        if prune_head or last < len(self.feature_info) - 1:
            self.head = nn.Identity()
            self.num_features = self.feature_info[last]["num_chs"]
        return take


def reparameterize(net: nn.Module) -> nn.Module:
    """Merges every small-kernel branch into its large kernel, in place (eval-mode statistics; for inference).
    The outputs stay those of `net.eval()` to float rounding; training it afterwards trains the merged kernels."""
    for m in net.modules():
        if isinstance(m, LargeKernelConv):
            m.reparameterize()
    return net


def build_net(cfg: NetConfig | dict, channels_last: bool = True) -> Net:
    return Net(cfg if isinstance(cfg, NetConfig) else NetConfig.from_dict(cfg), channels_last)
