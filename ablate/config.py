"""Compose Hydra configs and turn them into typed, validated objects (a typo fails at start-up)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from stages import NetConfig
from stages.config import check_choices, check_value, typed_from_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class ConfigError(ValueError):
    """A run config value is not allowed."""


def _require(ok: bool, prefix: str, key: str, value, allowed: str) -> None:
    check_value(ok, key, value, allowed, prefix=prefix, error=ConfigError)


@dataclass(frozen=True)
class RecipeConfig:
    """A training recipe (conf/recipe/): optimisation, schedule, augmentation and regularisation."""
    name: str
    epochs: float                       # schedule length the recipe was designed for
    batch_size: int                     # the global batch its lr refers to
    optimizer: Literal["sgd", "adamw"]
    lr: float
    momentum: float
    betas: tuple[float, float]
    weight_decay: float
    no_weight_decay_1d: bool            # exempt norms, biases and layer scale from weight decay
    schedule: Literal["step", "cosine"]
    lr_step_epochs: float
    lr_step_gamma: float
    warmup_epochs: float
    min_lr: float
    interpolation: Literal["bilinear", "bicubic"]
    color_jitter: float
    auto_augment: str | None
    mixup: float
    cutmix: float
    random_erasing: float
    label_smoothing: float
    ema_decay: float | None
    # network regularisers and init; the net config reads them by interpolation
    weight_init: str
    drop_path_rate: float
    layer_scale_init: float | None

    def __post_init__(self):
        check_choices(self, "recipe", ConfigError)
        object.__setattr__(self, "betas", tuple(self.betas))
        for key in ("lr", "epochs", "batch_size"):
            _require(getattr(self, key) > 0, "recipe", key, getattr(self, key), "a positive number")
        _require(self.ema_decay is None or 0 < self.ema_decay < 1, "recipe", "ema_decay", self.ema_decay,
                 "null (off) or a decay in (0, 1) such as 0.9999")


@dataclass(frozen=True)
class BudgetConfig:
    """How much training (conf/budget/): the recipe's schedule is stretched or shrunk to `epochs`."""
    name: str
    epochs: float
    batch_size: int                     # global effective batch (all processes x accumulation steps)
    accum_steps: int = 1
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"  # lr = recipe.lr * f(batch / recipe.batch)
    lr_multiplier: float = 1.0          # applied after lr_scaling (short proxies may want another lr)
    augmentation: Literal["recipe", "light"] = "recipe"
    # light: random-resized crop + flip only (no RandAugment, Mixup/CutMix, erasing), for budgets far shorter
    # than the recipe's; like timm's ResNet-strikes-back A3 vs A1, augmentation shrinks with the schedule
    width_multiplier: float = 1.0       # read by net.width_multiplier (CPU proxies shrink the nets)

    def __post_init__(self):
        check_choices(self, "budget", ConfigError)
        _require(self.epochs > 0, "budget", "epochs", self.epochs, "a positive number")
        _require(self.batch_size >= 1, "budget", "batch_size", self.batch_size, "a positive integer")
        _require(self.accum_steps >= 1, "budget", "accum_steps", self.accum_steps, "a positive integer")


@dataclass(frozen=True)
class DataConfig:
    """What to train on (conf/data/)."""
    name: str
    kind: Literal["synthetic", "folder"]
    image_size: int
    num_classes: int
    root: str | None = None             # folder: holds train/<class>/*, val/<class>/*
    train_size: int = 0                 # synthetic: images per split
    val_size: int = 0
    train_subset: int | None = None     # folder: a fixed random subset of this many images (null = all)
    val_subset: int | None = None
    in_memory: bool = False             # decode every image once, keep uint8 arrays in RAM
    crop_scale: tuple[float, float] = (0.08, 1.0)
    eval_crop_pct: float = 0.875
    seed: int = 0                       # fixes the synthetic images and the subsets, not the run
    workers: int = 0                    # DataLoader worker processes

    def __post_init__(self):
        check_choices(self, "data", ConfigError)
        object.__setattr__(self, "crop_scale", tuple(self.crop_scale))
        if self.kind == "folder":
            _require(bool(self.root), "data", "root", self.root, "the path of an ImageFolder root (train/, val/)")
            root = Path(self.root).expanduser()
            _require(root.is_dir(), "data", "root", self.root, f"an existing folder ({root.resolve()} does not exist)")
        else:
            _require(self.train_size >= 1 and self.val_size >= 1, "data", "train_size", self.train_size,
                     "train_size and val_size >= 1 for synthetic data")
        _require(self.image_size >= 1, "data", "image_size", self.image_size, "a positive integer")


@dataclass(frozen=True)
class TrainConfig:
    """How to run (conf/config.yaml `train:`); none of it is part of a run's identity."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = True          # the net's activation layout (NHWC); outputs agree to rounding
    compile: bool = False
    sync_bn: bool = False               # SyncBatchNorm across processes (CUDA only)
    overwrite: bool = False             # retrain even if this directory holds a finished or different run
    threads: int | None = None          # torch CPU threads (null = torch's default)
    kill_after_epoch: int | None = None  # testing hook: SIGKILL the process after this epoch's checkpoint


@dataclass(frozen=True)
class RunConfig:
    step: dict
    regime: str
    seed: int
    net: NetConfig
    recipe: RecipeConfig
    budget: BudgetConfig
    data: DataConfig
    train: TrainConfig
    raw: dict                           # the whole resolved config, for the record

    @property
    def augment(self) -> "RecipeConfig":
        """The recipe's augmentation as this budget applies it."""
        if self.budget.augmentation == "recipe":
            return self.recipe
        return dataclasses.replace(self.recipe, auto_augment=None, mixup=0.0, cutmix=0.0, random_erasing=0.0)

    @property
    def identity(self) -> dict:
        return identity(self.raw)

    @property
    def identity_hash(self) -> str:
        return identity_hash(self.raw)

    @property
    def lr(self) -> float:
        """The recipe's lr moved from its reference batch to the budget's batch."""
        ratio = self.budget.batch_size / self.recipe.batch_size
        scale = {"linear": ratio, "sqrt": ratio**0.5, "none": 1.0}[self.budget.lr_scaling]
        return self.recipe.lr * scale * self.budget.lr_multiplier

    def per_process_batch(self, world_size: int) -> int:
        b, a = self.budget.batch_size, self.budget.accum_steps
        if b % (world_size * a):
            raise ConfigError(f"budget.batch_size={b} does not divide across {world_size} process(es) x "
                              f"budget.accum_steps={a}; choose a multiple of {world_size * a}")
        micro = b // (world_size * a)
        if (self.augment.mixup > 0 or self.augment.cutmix > 0) and micro % 2:
            raise ConfigError(f"mixup/cutmix pair samples within a batch: the per-process batch {micro} "
                              f"(budget.batch_size={b}) must be even")
        return micro


def identity(raw: dict) -> dict:
    """What makes two runs the same run: the resolved config but the `train` (how-to-run) group."""
    return {k: v for k, v in raw.items() if k not in ("train", "hydra")}


def identity_hash(raw: dict) -> str:
    return hashlib.sha256(json.dumps(identity(raw), sort_keys=True).encode()).hexdigest()[:16]


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The config `python -m ablate OVERRIDES...` would run with (through Hydra's compose API)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def expand_sweep(hydra_cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands a multirun: the sweep config's
    `hydra.sweeper.params` first, then the command line (which wins on a shared key)."""
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides([*params, *overrides]), None)[0]


def step_overrides(step: str, regime: str = "r50", extra: list[str] = ()) -> list[str]:
    return [f"+step={step}", f"regime={regime}", *extra]


def net_config(cfg: DictConfig) -> NetConfig:
    return NetConfig.from_dict(OmegaConf.to_container(cfg.net, resolve=True))


def run_config(cfg: DictConfig) -> RunConfig:
    """Validates a whole composed config; raises NetConfigError/ConfigError naming the bad key."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    run = RunConfig(
        step=raw["step"], regime=raw["regime"]["name"], seed=raw["seed"],
        net=net_config(cfg),
        recipe=typed_from_dict(RecipeConfig, raw["recipe"], "recipe", ConfigError),
        budget=typed_from_dict(BudgetConfig, raw["budget"], "budget", ConfigError),
        data=typed_from_dict(DataConfig, raw["data"], "data", ConfigError),
        train=typed_from_dict(TrainConfig, raw["train"], "train", ConfigError),
        raw=raw)
    run.net.check_input_size(run.data.image_size, key="data.image_size")
    if run.net.num_classes != run.data.num_classes:
        raise ConfigError(f"net.num_classes={run.net.num_classes} but data.num_classes={run.data.num_classes}")
    return run
