"""Stems: the layers before the first stage."""
from __future__ import annotations

from torch import nn

from .config import NetConfig
from .norms import make_act, make_norm


class Stem(nn.Sequential):
    """resnet: 7x7/2 conv -> norm -> act -> 3x3/2 maxpool.  patchify: 4x4/4 conv -> norm (-> act).

    The stem keeps a norm in every step; its activation is `stem_act` (ConvNeXt's stem has none).
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        out, bias = cfg.stem_width, cfg.norm != "batch"
        if cfg.stem == "resnet":
            self.conv = nn.Conv2d(cfg.in_chans, out, 7, stride=2, padding=3, bias=bias)
        else:
            self.conv = nn.Conv2d(cfg.in_chans, out, 4, stride=4, bias=bias)
        self.norm = make_norm(cfg.norm, out)
        if cfg.stem_act:
            self.act = make_act(cfg.act)
        if cfg.stem == "resnet":
            self.pool = nn.MaxPool2d(3, stride=2, padding=1)
