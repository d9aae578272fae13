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
    return build_net(net_config(compose_config(step_overrides(step, regime, extra))))
