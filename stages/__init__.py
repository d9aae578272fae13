"""The parametric network that walks ResNet-50 to ConvNeXt-T."""
import importlib

from .config import NetConfig, NetConfigError
from .validation import Validated

# the modules that need torch load when first used, so the config schema (NetConfig) stands on plain Python
_LAZY = {"Net": "net", "build_net": "net", "reparameterize": "net", "from_timm": "port", "to_timm": "port"}

__all__ = ["NetConfig", "NetConfigError", "Net", "build_net", "reparameterize", "from_timm", "to_timm", "Validated"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
