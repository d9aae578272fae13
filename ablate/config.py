"""Compose Hydra configs and turn them into typed, validated objects (a typo fails at start-up)."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf, open_dict
from omegaconf.errors import InterpolationToMissingValueError

from stages import NetConfig, NetConfigError, Validated
from stages.forms import AUTO, FORMS

from . import CONF_DIR
from .corruption_suites import SUITES, corruption_list
from .errors import ConfigError
from .io import path_component
from .roadmap import DERIVED_GROUPS, register, roadmap
from .seeding import SEED_LIMIT


# the top-level keys of a run config; anything else came from a misspelt `+key=` and is refused
RUN_KEYS = ("step", "regime", "seed", "net", "recipe", "budget", "data", "train", "eval", "logger")
# what is not part of a run's identity: how it runs (train), what is measured after it (eval), where else it is
# shown (logger)
NOT_IDENTITY = ("train", "eval", "logger", "hydra")
# inside an identity group, yet not what makes a run: data.verify only checks the files; net.pointwise_impl is how
# records written before train.pointwise_form spelt a layer form (the form never changed what a run trains)
NOT_IDENTITY_KEYS = ("data.verify", "net.pointwise_impl")
LOGGERS = ("none", "tensorboard", "wandb", "mlflow")  # conf/logger/ (ablate/trackers.py)
PLUS_GROUPS = ("step", "undo", "only", "experiment", "sweep", "launcher")
CHECKPOINT_GROUPS = ("step", "undo", "only")  # each chooses the net a run trains, and names it


def _timm_auto_augment_ok(policy: str) -> bool:
    """Whether timm can build this auto-augment policy string (as create_transform would)."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
    build = {"rand": rand_augment_transform, "augmix": augment_and_mix_transform}.get(policy.split("-")[0],
                                                                                    auto_augment_transform)
    try:
        build(policy, {"translate_const": 100, "img_mean": (124, 116, 104)})
    except Exception:  # timm asserts or raises on an unknown policy or op
        return False
    return True


class RunConfigPart(Validated):
    """A group of the run config: its errors are ConfigErrors."""
    ERROR: ClassVar[type[Exception]] = ConfigError


class CommandOptions(Validated):
    """The own keys of a toolkit command (`python -m ablate.bench KEY=VALUE`): named without a prefix, refused as
    ConfigErrors as the run config's are."""
    PREFIX: ClassVar[str] = ""
    ERROR: ClassVar[type[Exception]] = ConfigError


def _finite_positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


@dataclass(frozen=True)
class StepConfig(RunConfigPart):
    """Which checkpoint a run trains (conf/step/, undo/, only/): its place in the roadmap, its name, whether the
    paper adopted it, and the step it is compared with where that is not the one before it."""
    PREFIX: ClassVar[str] = "step"
    index: int
    name: str
    adopted: bool
    reference: str | None = None

    def check(self) -> None:
        self.require(self.index >= 0, "index", "an integer >= 0")
        self.require(bool(self.name.strip()), "name", "a non-empty name")


def regime_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "regime").glob("*.yaml"))


@dataclass(frozen=True)
class RecipeConfig(RunConfigPart):
    """A training recipe (conf/recipe/): optimisation, schedule, augmentation and regularisation."""
    PREFIX: ClassVar[str] = "recipe"
    # its augmentation by what it changes: each image (timm's create_transform; the batched pipeline does crop +
    # flip only), pairs of images in a batch, the targets
    IMAGE_AUGMENTATION: ClassVar[tuple[str, ...]] = ("color_jitter", "auto_augment", "random_erasing")
    SAMPLE_AUGMENTATION: ClassVar[tuple[str, ...]] = ("repeated_augmentation",)  # how often an image recurs
    BATCH_AUGMENTATION: ClassVar[tuple[str, ...]] = ("mixup", "cutmix")
    TARGET_AUGMENTATION: ClassVar[tuple[str, ...]] = ("label_smoothing",)
    # left out of the identity at their defaults (Validated.ADDED_FIELDS)
    ADDED_FIELDS: ClassVar[tuple[str, ...]] = ("loss", "bce_target_threshold", "repeated_augmentation",
                                               "train_size_fraction")
    name: str
    epochs: float                       # schedule length the recipe was designed for
    batch_size: int                     # the global batch its lr refers to
    optimizer: Literal["sgd", "adamw", "lamb"]
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
    # ResNet strikes back (Wightman et al. 2021): binary cross-entropy on targets thresholded at
    # bce_target_threshold (timm's BinaryCrossEntropy), and each image `repeated_augmentation` times in an epoch
    loss: Literal["cross_entropy", "binary_cross_entropy"] = "cross_entropy"
    bce_target_threshold: float | None = None
    repeated_augmentation: int = 1
    # train crops at this fraction of data.image_size, evaluated at data.image_size (RSB A3: 160 / 224)
    train_size_fraction: float = 1.0

    def check(self) -> None:
        for key in ("lr", "epochs", "batch_size", "lr_step_epochs"):
            self.require(_finite_positive(getattr(self, key)), key, "a positive number")
        for key in ("momentum", "lr_step_gamma"):
            self.require(0 <= getattr(self, key) <= 1, key, "a number in [0, 1]")
        self.require(all(0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)")
        for key in ("weight_decay", "warmup_epochs", "min_lr", "color_jitter", "mixup", "cutmix"):
            self.require(math.isfinite(getattr(self, key)) and getattr(self, key) >= 0, key, "a number >= 0")
        for key in ("random_erasing", "label_smoothing"):
            self.require(0 <= getattr(self, key) < 1, key, "a probability in [0, 1)")
        self.require(self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay",
                     "null (off) or a decay in (0, 1) such as 0.9999")
        self.require(self.bce_target_threshold is None or (self.loss == "binary_cross_entropy"
                                                           and 0 <= self.bce_target_threshold < 1),
                     "bce_target_threshold", "null, or a threshold in [0, 1) with loss=binary_cross_entropy")
        self.require(0 < self.train_size_fraction <= 1, "train_size_fraction", "a fraction in (0, 1] (RSB A3: 160/224)")
        self.require(self.repeated_augmentation >= 1, "repeated_augmentation",
                     "an integer >= 1 (1: each image once an epoch; RSB A1/A2: 3)")
        self.require(self.auto_augment is None or _timm_auto_augment_ok(self.auto_augment), "auto_augment",
                     "null or a timm policy such as rand-m9-mstd0.5-inc1 (rand-*, augmix-*, original, v0)")

    @property
    def augmentation(self) -> dict:
        """Every augmentation setting (the record's `augmentation`)."""
        return {k: getattr(self, k) for k in (*self.IMAGE_AUGMENTATION, *self.SAMPLE_AUGMENTATION,
                                              *self.BATCH_AUGMENTATION, *self.TARGET_AUGMENTATION)}

    def crop_and_flip_only(self) -> "RecipeConfig":
        """This recipe with its image, sampling and batch augmentation off (label smoothing kept): a budget's
        `light`."""
        off = {k: None if k == "auto_augment" else 0.0 for k in (*self.IMAGE_AUGMENTATION, *self.BATCH_AUGMENTATION)}
        return dataclasses.replace(self, **off, repeated_augmentation=1)


@dataclass(frozen=True)
class BudgetConfig(RunConfigPart):
    """How much training (conf/budget/): the recipe's schedule is stretched or shrunk to `epochs`."""
    PREFIX: ClassVar[str] = "budget"
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

    def check(self) -> None:
        self.require(_finite_positive(self.epochs), "epochs", "a positive number")
        self.require(self.batch_size >= 1, "batch_size", "a positive integer")
        self.require(self.accum_steps >= 1, "accum_steps", "a positive integer")
        self.require(_finite_positive(self.lr_multiplier), "lr_multiplier", "a positive number")
        self.require(_finite_positive(self.width_multiplier), "width_multiplier", "a positive number")


@dataclass(frozen=True)
class DataConfig(RunConfigPart):
    """What to train on (conf/data/). How to load it (worker processes) is train.workers."""
    PREFIX: ClassVar[str] = "data"
    name: str
    kind: Literal["synthetic", "folder"]
    image_size: int
    num_classes: int
    root: str | None = None             # folder: holds train/<class>/*, val/<class>/*
    train_size: int = 0                 # synthetic: images per split
    val_size: int = 0
    train_subset: int | None = None     # a fixed random subset of this many images (null = all)
    val_subset: int | None = None
    in_memory: bool = False             # decode every image once, keep uint8 arrays in RAM
    pipeline: Literal["auto", "batched", "per_sample"] = "auto"
    # batched: crop + flip on whole uint8 batches with tensor ops (in-memory data, light augmentation);
    # per_sample: timm transforms on one PIL image at a time; auto: batched wherever it can serve
    verify: bool = False                # open every streamed image at start-up, so a bad file fails now
    crop_scale: tuple[float, float] = (0.08, 1.0)
    eval_crop_pct: float = 0.875
    seed: int = 0                       # fixes the synthetic images and the subsets, not the run

    def check(self) -> None:
        if self.kind == "folder":
            self.require(bool(self.root), "root", "the path of an ImageFolder root (train/, val/)")
            root = Path(self.root).expanduser()
            if not root.is_dir():
                what = "is a file" if root.exists() else "does not exist"
                raise ConfigError(f"data.root={self.root!r} is not allowed; expected an ImageFolder root folder "
                                  f"with train/ and val/ ({root.resolve()} {what})")
        else:
            self.require(self.train_size >= 1, "train_size", "a positive integer for synthetic data")
            self.require(self.val_size >= 1, "val_size", "a positive integer for synthetic data")
        self.require(self.image_size >= 1, "image_size", "a positive integer")
        self.require(self.num_classes >= 2, "num_classes", "an integer >= 2")
        for key in ("train_subset", "val_subset"):
            self.require(getattr(self, key) is None or getattr(self, key) >= 1, key, "null (all) or a positive integer")
        lo, hi = self.crop_scale
        self.require(0 < lo <= hi <= 1, "crop_scale", "[min, max] with 0 < min <= max <= 1")
        self.require(0 < self.eval_crop_pct <= 1, "eval_crop_pct", "a fraction in (0, 1]")


@dataclass(frozen=True)
class TrainConfig(RunConfigPart):
    """How to run (conf/config.yaml `train:`); none of it is part of a run's identity."""
    PREFIX: ClassVar[str] = "train"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # the net's activation layout: NHWC (true), NCHW (false) or `auto`, a timed trial of both; outputs agree to rounding
    channels_last: bool | Literal[AUTO] = AUTO
    compile: bool = False
    # each tunable layer's form (stages/forms.py): one for all, or `auto`, a timed trial on this machine
    pointwise_form: Literal[(AUTO, *FORMS["pointwise"])] = AUTO
    layer_norm_form: Literal[(AUTO, *FORMS["layer_norm"])] = AUTO
    batch_norm_form: Literal[(AUTO, *FORMS["batch_norm"])] = AUTO  # eval mode only: separate or folded
    forms_cache: str | None = "~/.cache/ablate/forms.json"  # the `auto` trials' results (null: memory only)
    sync_bn: bool = False               # SyncBatchNorm across processes (CUDA only)
    overwrite: bool = False             # retrain even if this directory holds a finished or different run
    threads: int | None = None          # torch CPU threads (null = torch's default)
    workers: int | None = None          # DataLoader processes (null: 0 for in-memory data, else up to 8)
    allow_setting_change: bool = False  # resume a run under another precision or layout (recorded per segment)

    @property
    def starts_channels_last(self) -> bool:
        """The layout a net is built in (`auto` starts NHWC; ablate.autotune.pick_forms may switch it)."""
        return self.channels_last is not False

    @property
    def forms(self) -> dict[str, str]:
        """The form setting of each tunable layer kind (stages/forms.py), as ablate.autotune.pick_forms takes it."""
        return {kind: getattr(self, f"{kind}_form") for kind in FORMS}

    def check(self) -> None:
        self.require(self.threads is None or self.threads >= 1, "threads", "null or a positive integer")
        self.require(self.workers is None or self.workers >= 0, "workers", "null (auto) or an integer >= 0")


@dataclass(frozen=True)
class EvalConfig(RunConfigPart):
    """What is measured on a trained net besides clean val accuracy (conf/config.yaml `eval:`); not part of
    a run's identity, so it can be added to finished runs (python -m ablate.robustness)."""
    PREFIX: ClassVar[str] = "eval"
    corruptions: str | tuple[str, ...] | None = None  # null: none; a suite (all its corruptions); or a list
    suite: str = "cifar10c"             # whose parameters a list uses (a suite named in corruptions sets it)
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    subset: int = 2000                  # val images corrupted: a fixed subset, the same for every run
    batch_size: int = 500
    cache_dir: str | None = "~/.cache/ablate/corruptions"  # corrupted subsets kept on disk (null: memory only)

    @property
    def suite_name(self) -> str:
        return self.corruptions if isinstance(self.corruptions, str) and self.corruptions in SUITES else self.suite

    def check(self) -> None:
        self.require(self.suite in SUITES, "suite", f"one of: {', '.join(SUITES)}")
        try:
            corruption_list(self.corruptions)
        except ValueError as e:
            self.require(False, "corruptions", str(e))
        self.require(bool(self.severities) and all(1 <= s <= 5 for s in self.severities), "severities",
                     "a list of severities in 1..5")
        self.require(self.subset >= 1, "subset", "a positive integer")
        self.require(self.batch_size >= 1, "batch_size", "a positive integer")
        cache = Path(self.cache_dir).expanduser() if self.cache_dir else None
        self.require(cache is None or not cache.exists() or cache.is_dir(), "cache_dir",
                     "null or a directory (this path is a file)")


@dataclass(frozen=True)
class LoggerConfig(RunConfigPart):
    """Which experiment tracker also shows the run (conf/logger/, ablate/trackers.py); not part of a run's identity:
    result.json stays the record, a tracker is a view of it."""
    PREFIX: ClassVar[str] = "logger"
    name: Literal[LOGGERS] = "none"
    project: str = "ablate"             # the W&B project, the MLflow experiment
    mode: Literal["offline", "online"] = "offline"  # W&B: offline writes the run folder only (`wandb sync` later)
    tracking_uri: str | None = None     # MLflow: null is a local file store, mlruns/ in the sweep (or run) directory


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
    eval: EvalConfig
    logger: LoggerConfig
    raw: dict                           # the whole resolved config, for the record

    @property
    def augment(self) -> "RecipeConfig":
        """The recipe's augmentation as this budget applies it."""
        if self.budget.augmentation == "recipe":
            return self.recipe
        return self.recipe.crop_and_flip_only()

    @property
    def train_image_size(self) -> int:
        """The side of the training crops: data.image_size, or the recipe's fraction of it rounded to a multiple of
        the net's total stride (RSB A3: 224 -> 160), so every step's net takes it."""
        if self.recipe.train_size_fraction == 1:
            return self.data.image_size
        stride = self.net.total_stride
        return max(stride, stride * round(self.data.image_size * self.recipe.train_size_fraction / stride))

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

    def schedule_length(self, train_images: int) -> tuple[int, int, int]:
        """(updates per epoch, total updates, epochs) of the budget on `train_images` images: the budget's epochs
        rounded to whole updates, so the last epoch may be partial. Training, the record and the plan all read it."""
        per_epoch = train_images // self.budget.batch_size
        if per_epoch == 0:
            raise ConfigError(f"budget.batch_size={self.budget.batch_size} exceeds the {train_images} training "
                              "images; choose a smaller batch or more data")
        updates = max(1, round(self.budget.epochs * per_epoch))
        return per_epoch, updates, math.ceil(updates / per_epoch)

    def per_process_batch(self, world_size: int) -> int:
        b, a = self.budget.batch_size, self.budget.accum_steps
        if b % (world_size * a):
            raise ConfigError(f"budget.batch_size={b} does not divide across {world_size} process(es) x "
                              f"budget.accum_steps={a}; choose a multiple of {world_size * a}")
        micro = b // (world_size * a)
        if any(getattr(self.augment, k) > 0 for k in RecipeConfig.BATCH_AUGMENTATION) and micro % 2:
            raise ConfigError(f"mixup/cutmix pair samples within a batch: the per-process batch {micro} "
                              f"(budget.batch_size={b}) must be even")
        return micro


def identity(raw: dict) -> dict:
    """What makes two runs the same run: the resolved config but how it runs (`train`) and what is measured
    on it afterwards (`eval`). A step's unset reference (null, the default) is no key, as before references existed;
    nor is a net or recipe field added since (ADDED_FIELDS) at its default."""
    kept = {k: v for k, v in raw.items() if k not in NOT_IDENTITY}
    if isinstance(kept.get("step"), dict) and "reference" in kept["step"] and kept["step"]["reference"] is None:
        kept["step"] = {k: v for k, v in kept["step"].items() if k != "reference"}
    for group, schema in (("net", NetConfig), ("recipe", RecipeConfig)):  # a field at the default it had before
        added = schema.added_defaults()                                   # it existed
        if isinstance(kept.get(group), dict) and any(k in added and v == added[k] for k, v in kept[group].items()):
            kept[group] = {k: v for k, v in kept[group].items() if not (k in added and v == added[k])}
    for dotted in NOT_IDENTITY_KEYS:
        group, key = dotted.split(".")
        if key in kept.get(group, {}):
            kept[group] = {k: v for k, v in kept[group].items() if k != key}
    if isinstance(kept.get("data", {}).get("root"), str):  # data/x/ and data/x are one folder
        kept["data"] = {**kept["data"], "root": os.path.normpath(kept["data"]["root"])}
    return kept


def identity_hash(raw: dict) -> str:
    return _hash(identity(raw))


def record_identity_hash(record: dict) -> str:
    """A record's identity as this code defines it (from the config it holds), so records written under an older
    definition are still found: the hash stored in the record is what its writer computed."""
    return identity_hash(record["config"]) if isinstance(record.get("config"), dict) else record["identity_hash"]


# what the steps of one experiment differ in: each step's net, recipe and name; the rest they share
STEP_KEYS = ("step", "net", "recipe")


def experiment_hash(raw: dict) -> str:
    """The runs a report averages over seeds: the same identity but for the seed."""
    return _hash({k: v for k, v in identity(raw).items() if k != "seed"})


def setting_hash(raw: dict) -> str:
    """What a report compares steps within: the identity but for the seed, what the steps change (STEP_KEYS) and
    the budget's length (a report column of its own, so budgets sit side by side)."""
    shared = {k: v for k, v in identity(raw).items() if k not in ("seed", *STEP_KEYS)}
    shared["budget"] = {k: v for k, v in shared.get("budget", {}).items() if k != "epochs"}
    return _hash(shared)


def dotted(tree: dict, prefix: str = "") -> dict:
    """A nested config as {dotted key: value} (`net.kernel_size`), values as they are."""
    out: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def run_dirname(override_dirname: str) -> str:
    """A run directory's name from Hydra's override_dirname: one path component (`data.root=../x` cannot reach
    outside outputs/), and long override lists still name unique, creatable directories (io.path_component)."""
    return path_component(override_dirname)


def dirname_exclude_keys() -> list[str]:
    """The keys a run directory's name leaves out (conf/config.yaml's override_dirname.exclude_keys): the groups the
    directory is already filed under, every key outside a run's identity, and the directories Hydra itself takes."""
    outside = [f"{cls.PREFIX}.{f.name}" for cls in (TrainConfig, EvalConfig, LoggerConfig)
               for f in dataclasses.fields(cls)]
    return [*PLUS_GROUPS, "regime", LoggerConfig.PREFIX, *outside, *NOT_IDENTITY_KEYS, "hydra.run.dir", "hydra.sweep.dir"]


OmegaConf.register_new_resolver("run_dirname", run_dirname, replace=True)
OmegaConf.register_new_resolver("dirname_exclude_keys", dirname_exclude_keys, replace=True)
OmegaConf.register_new_resolver("path_safe", path_component, replace=True)  # step and regime names in run paths
register()  # the configs derived from the step declarations (+undo=, +only=, reference=) and the sweeps' step lists


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The config `python -m ablate OVERRIDES...` would run with (through Hydra's compose API)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def expand_sweep(hydra_cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands a multirun: the sweep config's
    `hydra.sweeper.params` first, then the command line (which wins on a shared key); the cartesian product
    in the basic sweeper's order (the first key varies slowest)."""
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    by_key: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides([*params, *overrides]):
        key = o.get_key_element()
        by_key[key] = [f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() \
            else [o.input_line]
    return [list(job) for job in itertools.product(*by_key.values())]


def check_checkpoint_choice(job_overrides: list[str]) -> None:
    """A job's net is chosen by at most one of +step=, +undo=, +only= (a sweep's own list included): with two,
    the later group's name would be recorded for a net the earlier group's file had (partly) built. `reference=STEP`
    only rebuilds an +undo=/+only= on another step, which must have the change to undo (lack the one to add)."""
    parsed = [o for o in OverridesParser.create().parse_overrides(list(job_overrides)) if o.type.name != "DEL"]
    chosen = [o for o in parsed if o.key_or_group in CHECKPOINT_GROUPS]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(o.input_line for o in chosen)} both choose the checkpoint; choose it with "
                          f"one of {', '.join(f'+{g}=' for g in CHECKPOINT_GROUPS)} (a +sweep= lists its own)")
    reference = next((str(o.value()) for o in parsed if o.key_or_group == "reference"), None)
    derived = [(o.key_or_group, str(o.value())) for o in chosen if o.key_or_group in DERIVED_GROUPS]
    if reference is not None and reference not in roadmap().steps:
        raise ConfigError(f"reference={reference} is not a step; choose one of: {', '.join(roadmap().steps)}")
    if reference is not None and not derived:
        raise ConfigError(f"reference={reference} is the step an +undo= or +only= is built on; to train it, use "
                          f"+step={reference}")
    for group, change in derived:
        roadmap().check_derived(group, change, reference)


def compose_jobs(overrides: list[str], config_name: str = "config") -> list[DictConfig]:
    """One composed config per job of `python -m ablate -m OVERRIDES` (a +sweep=NAME expands to its jobs)."""
    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs = expand_sweep(compose(config_name, overrides=fixed, return_hydra_config=True).hydra, overrides)
        for job in jobs:
            check_checkpoint_choice(job)
        return [compose(config_name, overrides=job) for job in jobs]


def step_overrides(step: str, regime: str = "r50", extra: list[str] = ()) -> list[str]:
    return [f"+step={step}", f"regime={regime}", *extra]


def net_config(cfg: DictConfig) -> NetConfig:
    return NetConfig.from_dict(OmegaConf.to_container(cfg.net, resolve=True))


def check_top_level_keys(raw) -> None:
    """Refuses a key no run config has (`+steps=kernel` for `+step=kernel`): it would be ignored silently."""
    unknown = sorted(set(raw) - set(RUN_KEYS) - {"hydra"})
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)} (a misspelt +KEY=?); allowed: "
                          f"{', '.join(f'+{g}=' for g in PLUS_GROUPS)} and the keys {', '.join(RUN_KEYS)}")


def run_config(cfg: DictConfig) -> RunConfig:
    """Validates a whole composed config; raises NetConfigError/ConfigError naming the bad key."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as e:  # also reached through an interpolation: name the key that is missing
        found = re.search(r"Missing mandatory value: ([\w.]+)", str(e))
        key = found.group(1) if isinstance(e, InterpolationToMissingValueError) and found else e.full_key
        raise ConfigError(f"{key} has no value; set {key}=VALUE (e.g. data=folder needs data.root=PATH and "
                          "data.num_classes=N)") from None
    raw.pop("hydra", None)
    check_top_level_keys(raw)
    if isinstance(raw.get("seed"), bool) or not isinstance(raw.get("seed"), int) or not 0 <= raw["seed"] < SEED_LIMIT:
        raise ConfigError(f"seed={raw.get('seed')!r} is not allowed; expected an integer in [0, {SEED_LIMIT})")
    StepConfig.from_dict(raw["step"])
    if raw["regime"].get("name") not in regime_names():
        raise ConfigError(f"regime.name={raw['regime'].get('name')!r} is not allowed; choose a regime with "
                          f"regime=NAME, one of: {', '.join(regime_names())}")
    run = RunConfig(
        step=raw["step"], regime=raw["regime"]["name"], seed=raw["seed"],
        net=net_config(cfg),
        recipe=RecipeConfig.from_dict(raw["recipe"]),
        budget=BudgetConfig.from_dict(raw["budget"]),
        data=DataConfig.from_dict(raw["data"]),
        train=TrainConfig.from_dict(raw["train"]),
        eval=EvalConfig.from_dict(raw["eval"]),
        logger=LoggerConfig.from_dict(raw.get("logger", {})),  # a record written before trackers has none
        raw=raw)
    run.net.check_input_size(run.data.image_size, key="data.image_size")
    run.net.check_input_size(run.train_image_size, key="the training size (recipe.train_size_fraction of it)")
    side = SUITES[run.eval.suite_name].source_size
    if run.eval.corruptions and side and run.data.kind == "synthetic":
        raise ConfigError(f"eval suite {run.eval.suite_name} corrupts the val files at {side} px; synthetic data "
                          "has none: use eval.suite=cifar10c")
    if run.net.num_classes != run.data.num_classes:
        raise ConfigError(f"net.num_classes={run.net.num_classes} but data.num_classes={run.data.num_classes}")
    return run


class StartupChecks(Callback):
    """Hydra callback (conf/config.yaml), run before any job: the output directory can be created (a name too long,
    a file in its path, a read-only disk are one line here, not a traceback from Hydra's own mkdir), and in a
    multirun every job's config is composed and validated, so a bad value anywhere in `-m seed=0,1,2,3,x` stops the
    sweep before anything is trained."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _check_creatable("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_creatable("hydra.sweep.dir", config.hydra.sweep.dir)
        loader = GlobalHydra.instance().config_loader()
        for job in expand_sweep(config.hydra, list(config.hydra.overrides.task)):
            try:
                check_checkpoint_choice(job)
                job_cfg = loader.load_sweep_config(config, job)
                with open_dict(job_cfg):
                    del job_cfg["hydra"]
                run_config(job_cfg)
            except (ConfigError, NetConfigError) as e:
                raise SystemExit(f"error: job {' '.join(job)}: {e}; nothing was trained") from None


def _check_creatable(key: str, directory: str) -> None:
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: {key}={directory} cannot be created ({e.strerror or type(e).__name__})") from None


def os_error(e: OSError) -> str:
    """An OS error as a reader needs it: what failed, on which file (the message without the errno prefix)."""
    where = f" on {e.filename}" if e.filename else ""
    return f"{e.strerror or type(e).__name__}{where}"
