"""What a run trains and evaluates with: the recipe's optimizer, schedule and loss from timm, the data and net
built together (`build_training`), one optimizer update (`train_step`) and evaluation. `ablate.train` drives
these through a run; `ablate.bench` and `ablate.plan` time the same objects, so they measure what a run does."""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn

from stages import Net, build_net

from .autotune import pick_forms
from .config import RunConfig
from .data import GlobalBatchSampler, Splits, build_datasets, default_workers, shard
from .device import autocast
from .distributed import World
from .seeding import derive_seed


def build_schedule(run: RunConfig, optimizer, train_images: int):
    """The recipe's schedule stretched to the budget: warmup and decay points scale with the epochs.
    Lengths are passed to timm in optimizer updates (lr changes every update, as in ConvNeXt's code)."""
    scale = run.budget.epochs / run.recipe.epochs
    updates_per_epoch, total, _ = run.schedule_length(train_images)
    warmup = min(total - 1, round(run.recipe.warmup_epochs * scale * updates_per_epoch))
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=run.recipe.schedule, num_epochs=total - warmup, warmup_epochs=warmup,
        warmup_prefix=True, warmup_lr=0.0, min_lr=run.recipe.min_lr,
        decay_epochs=max(1, round(run.recipe.lr_step_epochs * scale * updates_per_epoch)),
        decay_rate=run.recipe.lr_step_gamma, step_on_epochs=False, updates_per_epoch=1)
    return scheduler, total


def build_optimizer(run: RunConfig, model: nn.Module):
    """The recipe's optimizer from timm, as PyTorch's fused kernel (one pass over all parameters: 4x faster
    than the per-tensor loop for AdamW on the CPU, same update up to rounding)."""
    r = run.recipe
    if r.optimizer == "sgd":  # timm's "sgd" is Nesterov; torchvision's recipe is plain momentum
        return create_optimizer_v2(model, "momentum", lr=run.lr, weight_decay=r.weight_decay,
                                   momentum=r.momentum, filter_bias_and_bn=r.no_weight_decay_1d, fused=True)
    if r.optimizer == "lamb":  # timm's LAMB (ResNet strikes back); it has no fused form
        return create_optimizer_v2(model, "lamb", lr=run.lr, weight_decay=r.weight_decay, betas=r.betas,
                                   filter_bias_and_bn=r.no_weight_decay_1d)
    return create_optimizer_v2(model, "adamw", lr=run.lr, weight_decay=r.weight_decay, betas=r.betas,
                               filter_bias_and_bn=r.no_weight_decay_1d, fused=True)


def build_loss(run: RunConfig) -> tuple[Mixup | None, nn.Module]:
    """Mixup/CutMix (soft targets, smoothed by Mixup) if the recipe mixes, and its loss, as timm's train.py builds
    them: binary cross-entropy (smoothing its own targets when nothing mixes) or cross-entropy."""
    r = run.augment
    mixes = r.mixup > 0 or r.cutmix > 0
    mixup = Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                  label_smoothing=r.label_smoothing, num_classes=run.data.num_classes) if mixes else None
    if r.loss == "binary_cross_entropy":
        return mixup, BinaryCrossEntropy(smoothing=0.0 if mixes else r.label_smoothing,
                                         target_threshold=r.bce_target_threshold)
    if mixes:
        return mixup, SoftTargetCrossEntropy()
    if r.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(r.label_smoothing)
    return None, nn.CrossEntropyLoss()


@torch.no_grad()
def predict(model: nn.Module, batches, device: torch.device, precision: str):
    """(logits, labels) of every batch, the model in eval mode."""
    model.eval()
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            yield model(x).float(), y


def evaluate(model: nn.Module, dataset, run: RunConfig, device, world: World, batch: int, workers: int) -> dict:
    """top-1, top-5 and loss over the whole val split (sharded over processes, summed exactly)."""
    loader = dataset.loader(shard(len(dataset), world), batch, workers)
    loss_sum = top1 = top5 = seen = 0.0
    for logits, y in predict(model, loader, device, run.train.precision):
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (top[:, 0] == y).sum().item()
        top5 += (top == y[:, None]).any(1).sum().item()
        seen += len(y)
    loss_sum, top1, top5, seen = world.sum([loss_sum, top1, top5, seen])
    return {"top1": 100 * top1 / seen, "top5": 100 * top5 / seen, "loss": loss_sum / seen}


# ------------------------------------------------------------------------------------- training state
@dataclass
class TrainingState:
    """What a checkpoint carries besides weights: where the run is and what it has measured so far."""
    epoch: int = 0
    update: int = 0
    history: list[dict] = field(default_factory=list)
    best_top1: float = -1.0
    wall_time_s: float = 0.0
    segments: list[dict] = field(default_factory=list)  # one per process that trained the run

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TrainingState":
        return cls(**{k: ckpt[k] for k in cls.__dataclass_fields__ if k in ckpt})


@dataclass
class Training:
    """The objects one run trains with, built once."""
    run: RunConfig
    net: Net                            # the module whose weights are saved
    model: nn.Module                    # what the forward pass calls (net, or net under DDP / compile)
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    data: Splits
    sampler: GlobalBatchSampler
    loader: object
    mixup: Mixup | None
    criterion: nn.Module
    device: torch.device
    world: World
    micro: int                          # per-process batch of one forward pass
    workers: int
    total_updates: int
    forms: dict                         # each tunable layer kind's setting and, for `auto`, its trials


def build_training(run: RunConfig, device, world: World, micro: int, ckpt: dict | None = None,
                   state: TrainingState | None = None) -> Training:
    """Data, net, optimizer, schedule, loss and loader of a run (from its checkpoint, if one is given)."""
    data = build_datasets(run.data, run.augment, run.seed, run.train_image_size)
    run.schedule_length(len(data.train))  # a batch larger than the data fails before the net is built
    torch.manual_seed(derive_seed(run.seed, "init"))  # same init on every process
    net = build_net(run.net, channels_last=run.train.starts_channels_last).to(device)
    side = run.train_image_size
    forms = pick_forms(net, run.train.forms, (micro, run.net.in_chans, side, side), device,
                       run.train.precision, training=True, cache_path=run.train.forms_cache,
                       layout=run.train.channels_last)
    if run.train.sync_bn and world.size > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    ema = ModelEmaV3(net, decay=run.recipe.ema_decay) if run.recipe.ema_decay else None
    optimizer = build_optimizer(run, net)
    scheduler, total_updates = build_schedule(run, optimizer, len(data.train))
    scaler = torch.amp.GradScaler(device.type, enabled=run.train.precision == "fp16")
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        scheduler.step_update(state.update)
    model = net
    if world.size > 1:
        # A 1x1 conv's gradient can come back channels_last-strided on its two size-1 dims: the same memory order
        # as DDP's bucket, which DDP's exact stride check still reports as a slow layout.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if run.train.compile:
        model = torch.compile(model)
    workers = default_workers(run.data) if run.train.workers is None else run.train.workers
    sampler = GlobalBatchSampler(len(data.train), run.budget.batch_size, run.budget.accum_steps, world, run.seed,
                                 repeats=run.augment.repeated_augmentation)
    loader = data.train.loader(sampler, micro, workers, pin_memory=device.type == "cuda")
    mixup, criterion = build_loss(run)
    return Training(run, net, model, ema, optimizer, scheduler, scaler, data, sampler, loader, mixup, criterion,
                    device, world, micro, workers, total_updates, forms)


def train_step(t: Training, state: TrainingState, x: torch.Tensor, y: torch.Tensor, last_micro: bool):
    """Forward and backward of one micro-batch, and the optimizer update when it closes an accumulation.
    Returns the loss and the number of correct predictions, on the device (no host sync)."""
    x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
    target = y
    if t.mixup is not None:
        x, target = t.mixup(x, y)
    sync = t.model.no_sync() if t.world.size > 1 and not last_micro else nullcontext()
    with sync, autocast(t.device, t.run.train.precision):
        logits = t.model(x)
        loss = t.criterion(logits.float(), target)
    t.scaler.scale(loss / t.run.budget.accum_steps).backward()
    if last_micro:
        t.scaler.step(t.optimizer)
        t.scaler.update()
        t.optimizer.zero_grad(set_to_none=True)
        state.update += 1
        t.scheduler.step_update(state.update)
        if t.ema is not None:
            t.ema.update(t.net, step=state.update)
    return loss.detach(), (logits.detach().argmax(1) == y).sum()
