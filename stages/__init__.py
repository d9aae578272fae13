"""The parametric network that walks ResNet-50 to ConvNeXt-T."""
from .config import NetConfig, NetConfigError
from .net import Net, build_net
from .port import from_timm, to_timm
from .validation import Validated

__all__ = ["NetConfig", "NetConfigError", "Net", "build_net", "from_timm", "to_timm", "Validated"]
