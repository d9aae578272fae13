"""The network as data: one frozen, validated config per roadmap checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

from .validation import Validated


MIN_WIDTH = 8  # channels; the paper's nets have 64 to 2048


class NetConfigError(ValueError):
    """A network flag has a value the network cannot be built with."""


@dataclass(frozen=True)
class NetConfig(Validated):
    PREFIX: ClassVar[str] = "net"
    ERROR: ClassVar[type[Exception]] = NetConfigError
    ADDED_FIELDS: ClassVar[tuple[str, ...]] = ("grn", "small_kernel")  # left out of the identity at their defaults

    # --- macro design
    depths: tuple[int, ...] = (3, 4, 6, 3)      # blocks per stage (stage ratio)
    width: int = 64                              # stem channels and stage-1 base width; doubles every stage
    width_multiplier: float = 1.0                # scales every width (CPU proxies); 1.0 = the paper's nets
    stem: Literal["resnet", "patchify"] = "resnet"  # 7x7/2 conv + maxpool, or 4x4/4 conv
    stem_act: bool = True                        # activation after the stem norm (ResNet has one, ConvNeXt not)
    downsample: Literal["in_block", "separate"] = "in_block"
    # in_block: stride 2 in the spatial conv of each stage's first block, with a 1x1/2 projection shortcut.
    # separate: norm -> 2x2/2 conv between stages, and a norm after global pooling (ConvNeXt).
    # --- micro design (the residual block)
    block: Literal["bottleneck", "inverted_bottleneck"] = "bottleneck"
    expansion: int = 4                           # bottleneck: out = 4 x inner; inverted: hidden = 4 x out
    depthwise: bool = False                      # spatial conv with groups = channels (ResNeXt-ify)
    spatial_conv_position: Literal["middle", "first"] = "middle"  # first = "move up depthwise conv"
    kernel_size: int = 3
    small_kernel: int | None = None              # a parallel small depthwise kernel + BN (RepLKNet); None = off
    act: Literal["relu", "gelu"] = "relu"
    block_activations: Literal["all", "one"] = "all"
    # all: after the first two convs and after the residual add (ResNet); one: only before the last 1x1 conv
    norm: Literal["batch", "layer"] = "batch"    # layer = LayerNorm over channels at each position
    block_norms: Literal["all", "one"] = "all"   # all: after every conv; one: only after the spatial conv
    grn: bool = False                            # Global Response Normalization on the input of the last 1x1 conv
    # (ConvNeXt V2: between the two pointwise layers, after the activation)
    layer_scale_init: float | None = None        # per-channel residual scale (ConvNeXt: 1e-6); None = off
    drop_path_rate: float = 0.0                  # stochastic depth, linear from 0 to this over all blocks
    weight_init: Literal["kaiming", "trunc_normal"] = "kaiming"
    # kaiming: timm ResNet (fan-out normal, last BN of each branch zeroed); trunc_normal: ConvNeXt (std .02)
    num_classes: int = 1000
    in_chans: int = 3
    # How layers run (1x1 conv or Linear, LayerNorm forms) is not the network: stages/forms.py.

    def check(self) -> None:
        self.require(len(self.depths) >= 1 and all(d >= 1 for d in self.depths), "depths",
                     "a list of positive integers, e.g. [3, 3, 9, 3]")
        for name in ("width", "expansion", "num_classes", "in_chans"):
            self.require(getattr(self, name) >= 1, name, "a positive integer")
        self.require(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "kernel_size",
                     "an odd positive integer (3, 5, 7, 9, 11)")
        self.require(self.small_kernel is None or (self.small_kernel >= 1 and self.small_kernel % 2 == 1
                                                   and self.small_kernel < self.kernel_size), "small_kernel",
                     f"null (off) or an odd kernel smaller than net.kernel_size={self.kernel_size}")
        self.require(self.small_kernel is None or (self.depthwise and self.norm == "batch"), "small_kernel",
                     "null unless net.depthwise=true and net.norm=batch (the branch is a depthwise conv, and only a "
                     "BatchNorm folds into a kernel for reparameterize)")
        self.require(0.0 <= self.drop_path_rate < 1.0, "drop_path_rate", "a rate in [0, 1)")
        self.require(self.layer_scale_init is None or self.layer_scale_init > 0, "layer_scale_init",
                     "null (off) or a positive float such as 1e-6")
        self.require(self.width_multiplier > 0 and min(self.stem_width, *self.stage_widths) >= MIN_WIDTH,
                     "width_multiplier", f"a positive float that leaves the stem and every stage >= {MIN_WIDTH} "
                     "channels")

    # --- derived quantities (the model as data)
    @property
    def stem_width(self) -> int:
        return _scaled(self.width, self.width_multiplier)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Channels of the residual stream (the block outputs) of each stage."""
        base = [_scaled(self.width * 2**i, self.width_multiplier) for i in range(len(self.depths))]
        return tuple(w * self.expansion for w in base) if self.block == "bottleneck" else tuple(base)

    @property
    def total_stride(self) -> int:
        """Input pixels per output pixel: 4 from either stem, 2 per later stage."""
        return 4 * 2 ** (len(self.depths) - 1)

    def check_input_size(self, size: int, key: str = "image_size") -> None:
        """Raises unless `size` fits the net: at least the total stride, and a multiple of it where the
        strided convs have no padding (patchify stem, separate downsampling) and would drop border pixels."""
        stride = self.total_stride
        exact = self.stem == "patchify" or self.downsample == "separate"
        if size < stride or (exact and size % stride):
            need = f"a multiple of {stride}" if exact else f"at least {stride}"
            raise NetConfigError(
                f"{key}={size} does not fit the net (stem={self.stem}, downsample={self.downsample}, "
                f"{len(self.depths)} stages): it must be {need}")

    def replace(self, **changes) -> "NetConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["depths"] = list(self.depths)
        return d


def _scaled(width: int, multiplier: float) -> int:
    return max(1, int(round(width * multiplier)))
