import pytest
import torch

from ablate.config import compose_config, net_config, step_overrides
from ablate.paper import roadmap_steps
from stages import build_net

R50_STEPS = roadmap_steps("r50")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def step_net(step: str, regime: str = "r50", extra: list[str] = ()):
    """The paper's network of a step (full width, 1000 classes) unless `extra` says otherwise."""
    paper_net = ["net.num_classes=1000", "net.width_multiplier=1.0"]
    return build_net(net_config(compose_config(step_overrides(step, regime, [*paper_net, *extra]))))
