"""ablate: reproduce, measure and extend the ResNet -> ConvNeXt roadmap of "A ConvNet for the 2020s"."""
import warnings
from pathlib import Path

# fvcore and timm call torch.jit.script at import time; the deprecation is theirs, not about the user's run
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parents[1]  # conf/, results/ and the git work tree the records name
CONF_DIR = REPO_ROOT / "conf"
