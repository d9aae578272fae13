"""ablate: reproduce, measure and extend the ResNet -> ConvNeXt roadmap of "A ConvNet for the 2020s"."""
import warnings

# fvcore and timm call torch.jit.script at import time; the deprecation is theirs, not about the user's run
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"
