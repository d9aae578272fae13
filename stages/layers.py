"""The unit every part of the network is made of: conv -> optional norm -> optional activation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .forms import default_forms
from .norms import make_act, make_norm


class ConvNormAct(nn.Module):
    """conv -> norm -> act, each optional but the conv.

    The conv has a bias unless a BatchNorm follows it (BN's shift makes it redundant): this one rule gives
    both timm ResNet (no conv bias) and timm ConvNeXt (bias everywhere).

    Its forms (stages/forms.py): an ungrouped 1x1 conv with stride 1 is `pointwise`, run as a `conv` or as a
    `linear` on the NHWC view (timm ConvNeXt's form) with the Conv2d-shaped weight; a BatchNorm after the conv is
    `batch_norm`, applied `separate` or, in eval mode, `folded` into the conv's weight and bias. Parameters,
    FLOPs and outputs are those of the default forms, to float rounding.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 norm: str | None = None, act: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2,
                              groups=groups, bias=norm != "batch")
        self.norm = make_norm(norm, out_chs) if norm else nn.Identity()
        self.act = make_act(act) if act else nn.Identity()
        pointwise = (kernel_size, stride, groups) == (1, 1, 1)
        self.forms = default_forms(*(["pointwise"] if pointwise else []), *(["batch_norm"] if norm == "batch" else []))
        self._name = f"{in_chs}->{out_chs}, k={kernel_size}, s={stride}, g={groups}, norm={norm}, act={act}"
        self._folded_cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def signature(self) -> str:
        """What a form's speed depends on besides the input's shape (tuned layers are grouped by it)."""
        return f"ConvNormAct({self._name})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folded = not self.training and self.forms.get("batch_norm") == "folded"
        weight, bias = self._folded_for_inference() if folded else (self.conv.weight, self.conv.bias)
        if self.forms.get("pointwise") == "linear":
            x = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
        elif folded:
            c = self.conv
            x = F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)
        else:
            x = self.conv(x)
        return self.act(x if folded else self.norm(x))

    def _folded_for_inference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`_folded()`, kept outside autograd until a weight or statistic changes (their storage or version counter):
        folding reads the whole weight, which at small images costs more than the BatchNorm pass it saves
        (ResNet-50's late stages at 32 px). BatchNorm updates its statistics in training without a version bump, so
        `train()` drops the cache too. With gradients on, or under torch.compile, folded afresh."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._folded()
        bn = self.norm
        key = tuple((t.data_ptr(), t._version) for t in (self.conv.weight, bn.weight, bn.bias, bn.running_mean,
                                                          bn.running_var))
        if self._folded_cache is None or self._folded_cache[0] != key:
            self._folded_cache = (key, self._folded())
        return self._folded_cache[1]

    def train(self, mode: bool = True) -> ConvNormAct:
        self._folded_cache = None
        return super().train(mode)

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv's weight and bias with the eval-mode BatchNorm after it folded in:
        bn(conv(x)) = conv(x) * s + (beta - mean * s), s = gamma / sqrt(var + eps). The conv has no bias here."""
        bn = self.norm
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return self.conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class LargeKernelConv(nn.Module):
    """A large-kernel conv + norm with a parallel small-kernel conv + norm, summed, then the activation (RepLKNet,
    Ding et al., CVPR 2022): the small kernel eases training a large one. `reparameterize()` folds both eval-mode
    BatchNorms into their convs and pads the small kernel into the large one, leaving one conv with a bias: the same
    outputs to float rounding, and the large kernel's cost at inference."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, small_kernel: int, stride: int = 1,
                 groups: int = 1, norm: str = "batch", act: str | None = None):
        super().__init__()
        self.large = ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, groups=groups, norm=norm)
        self.small = ConvNormAct(in_chs, out_chs, small_kernel, stride=stride, groups=groups, norm=norm)
        self.act = make_act(act) if act else nn.Identity()
        self.merged: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged is not None:
            return self.act(self.merged(x))
        return self.act(self.large(x) + self.small(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge the two branches into `merged` (from the BatchNorms' running statistics: inference only)."""
        (w_large, b_large), (w_small, b_small) = self.large._folded(), self.small._folded()
        pad = (w_large.shape[-1] - w_small.shape[-1]) // 2
        c = self.large.conv
        merged = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, groups=c.groups,
                           bias=True).to(w_large)
        merged.weight.copy_(w_large + F.pad(w_small, [pad] * 4))
        merged.bias.copy_(b_large + b_small)
        self.merged = merged
        del self.large, self.small
