"""The network as data: one frozen, validated config per roadmap checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args, get_type_hints


class NetConfigError(ValueError):
    """A network flag has a value the network cannot be built with."""


@dataclass(frozen=True)
class NetConfig:
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
    act: Literal["relu", "gelu"] = "relu"
    block_activations: Literal["all", "one"] = "all"
    # all: after the first two convs and after the residual add (ResNet); one: only before the last 1x1 conv
    norm: Literal["batch", "layer"] = "batch"    # layer = LayerNorm over channels at each position
    block_norms: Literal["all", "one"] = "all"   # all: after every conv; one: only after the spatial conv
    layer_scale_init: float | None = None        # per-channel residual scale (ConvNeXt: 1e-6); None = off
    drop_path_rate: float = 0.0                  # stochastic depth, linear from 0 to this over all blocks
    weight_init: Literal["kaiming", "trunc_normal"] = "kaiming"
    # kaiming: timm ResNet (fan-out normal, last BN of each branch zeroed); trunc_normal: ConvNeXt (std .02)
    num_classes: int = 1000
    in_chans: int = 3
    # --- speed only: never changes parameters, FLOPs or outputs
    pointwise_impl: Literal["auto", "conv", "linear"] = "auto"
    # conv: 1x1 Conv2d; linear: Linear on the NHWC view (timm ConvNeXt's layout); auto: conv, which oneDNN runs
    # faster than Linear on the CPU (results/bench/). Same params and outputs (to rounding) either way.

    def __post_init__(self):
        check_choices(self, "net")
        object.__setattr__(self, "depths", tuple(self.depths))
        check_value(len(self.depths) >= 1 and all(isinstance(d, int) and d >= 1 for d in self.depths),
               "depths", self.depths, "a list of positive integers, e.g. [3, 3, 9, 3]")
        for name in ("width", "expansion", "num_classes", "in_chans"):
            value = getattr(self, name)
            check_value(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   name, value, "a positive integer")
        check_value(isinstance(self.kernel_size, int) and self.kernel_size >= 1 and self.kernel_size % 2 == 1,
               "kernel_size", self.kernel_size, "an odd positive integer (3, 5, 7, 9, 11)")
        check_value(0.0 <= self.drop_path_rate < 1.0, "drop_path_rate", self.drop_path_rate, "a rate in [0, 1)")
        check_value(self.layer_scale_init is None or self.layer_scale_init > 0,
               "layer_scale_init", self.layer_scale_init, "null (off) or a positive float such as 1e-6")
        check_value(self.width_multiplier > 0 and min(self.stage_widths) >= 1,
               "width_multiplier", self.width_multiplier, "a positive float that leaves every stage >= 1 channel")
        for name in ("stem_act", "depthwise"):
            check_value(isinstance(getattr(self, name), bool), name, getattr(self, name), "true or false")

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
    def uses_linear_pointwise(self) -> bool:
        return self.pointwise_impl == "linear"

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

    @classmethod
    def from_dict(cls, values: dict) -> "NetConfig":
        """Builds from plain data (e.g. a resolved Hydra node); an unknown key is an error naming it."""
        values = dict(values)
        if "depths" in values:
            values["depths"] = tuple(values["depths"])
        return typed_from_dict(cls, values, "net", NetConfigError)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["depths"] = list(self.depths)
        return d


def check_choices(obj, prefix: str, error=NetConfigError) -> None:
    """Every Literal-typed field of dataclass `obj` holds one of its allowed values."""
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, allowed = getattr(obj, f.name), get_args(hints[f.name])
        if allowed and all(isinstance(a, str) for a in allowed) and value not in allowed:
            raise error(f"{prefix}.{f.name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def typed_from_dict(cls, values: dict, prefix: str, error=NetConfigError):
    """cls(**values), where an unknown key is an error naming it and the allowed keys."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(f"unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; "
                    f"allowed keys: {', '.join(sorted(known))}")
    return cls(**values)


def _scaled(width: int, multiplier: float) -> int:
    return max(1, int(round(width * multiplier)))


def check_value(ok: bool, key: str, value, allowed: str, prefix: str = "net", error=NetConfigError) -> None:
    if not ok:
        raise error(f"{prefix}.{key}={value!r} is not allowed; expected {allowed}")
