"""Compose Hydra configs and turn them into typed, validated objects (a typo fails at start-up)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from stages import NetConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The config `python -m ablate OVERRIDES...` would run with (through Hydra's compose API)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def step_overrides(step: str, regime: str = "r50", extra: list[str] = ()) -> list[str]:
    return [f"+step={step}", f"regime={regime}", *extra]


def net_config(cfg: DictConfig) -> NetConfig:
    return NetConfig.from_dict(OmegaConf.to_container(cfg.net, resolve=True))
