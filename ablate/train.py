"""Train and evaluate one roadmap checkpoint; leave one complete, machine-readable record of the run
(files and schema: ablate/rundir.py)."""
from __future__ import annotations

import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from stages import Net, build_net

from .complexity import run_complexity
from .cli import one_line
from .config import ConfigError, RunConfig
from .data import GlobalBatchSampler, Splits, build_datasets, default_workers, make_loader, shard
from .device import autocast, describe_device, pick_device
from .distributed import World, close_world, init_world, replica_divergence
from .io import atomic_write_bytes
from .provenance import provenance
from .robustness import add_to_record, evaluate_robustness, wanted
from .rundir import (LAST, RESULT, WEIGHTS, WEIGHTS_EMA, RunDirConflict, RunDirLock, check_resume_settings,
                     check_run_dir, load_checkpoint, save_checkpoint, write_record)
from .seeding import derive_seed

LOSS_CHECK_EVERY = 50  # optimizer updates between checks for a non-finite loss (one host sync each)


__all__ = ["train", "evaluate", "predict", "TrainingFailed", "RunDirConflict", "RESULT", "LAST"]


class TrainingFailed(RuntimeError):
    """The run cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------------- pieces
def build_schedule(run: RunConfig, optimizer, updates_per_epoch: int):
    """The recipe's schedule stretched to the budget: warmup and decay points scale with the epochs.
    Lengths are passed to timm in optimizer updates (lr changes every update, as in ConvNeXt's code)."""
    scale = run.budget.epochs / run.recipe.epochs
    total = max(1, round(run.budget.epochs * updates_per_epoch))
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
    return create_optimizer_v2(model, "adamw", lr=run.lr, weight_decay=r.weight_decay, betas=r.betas,
                               filter_bias_and_bn=r.no_weight_decay_1d, fused=True)


def build_loss(run: RunConfig) -> tuple[Mixup | None, nn.Module]:
    r = run.augment
    if r.mixup > 0 or r.cutmix > 0:
        mixup = Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                      label_smoothing=r.label_smoothing, num_classes=run.data.num_classes)
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
    loader = make_loader(dataset, shard(len(dataset), world), batch, workers)
    loss_sum = top1 = top5 = seen = 0.0
    for logits, y in predict(model, loader, device, run.train.precision):
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (top[:, 0] == y).sum().item()
        top5 += (top == y[:, None]).any(1).sum().item()
        seen += len(y)
    loss_sum, top1, top5, seen = world.sum([loss_sum, top1, top5, seen])
    return {"top1": 100 * top1 / seen, "top5": 100 * top5 / seen, "loss": loss_sum / seen}


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = derive_seed(seed, "epoch", epoch, rank)
    torch.manual_seed(s)
    np.random.seed(s)  # timm Mixup draws from numpy


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


# --------------------------------------------------------------------------------------------- the run
def train(run: RunConfig, out_dir: str | Path) -> dict:
    out = Path(out_dir)
    device = pick_device(run.train.device)
    world = init_world(device.type)
    try:
        with RunDirLock(out) if world.is_main else nullcontext():
            return _train(run, out, device, world)
    finally:
        close_world(world)


def _train(run: RunConfig, out: Path, device: torch.device, world: World) -> dict:
    micro = run.per_process_batch(world.size)  # validates the batch split before any work
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    finished = check_run_dir(out, run.identity_hash, run.identity, run.train.overwrite) if world.is_main else None
    world.barrier()
    if finished is not None:
        print(f"{out}: finished run found (top-1 {finished['final']['top1']:.2f}); not retrained. "
              "Pass train.overwrite=true to retrain.")
        if wanted(finished, run.eval):  # a measurement asked for after the run: add it, train nothing
            finished = add_to_record(out, run, device)
        return finished

    ckpt = load_checkpoint(out, run.identity_hash, device)
    state = TrainingState.from_checkpoint(ckpt) if ckpt else TrainingState()
    check_resume_settings(state.segments, run.raw["train"], run.train.allow_setting_change)
    t = build_training(run, device, world, micro, ckpt, state)
    epochs = math.ceil(t.total_updates / (len(t.data.train) // run.budget.batch_size))
    state.segments.append({"from_epoch": state.epoch, "to_epoch": None, "train": run.raw["train"],
                           "device": describe_device(device), "world_size": world.size,
                           "provenance": provenance()})
    record = {
        "status": "running", "reason": None, "step": run.step, "regime": run.regime, "seed": run.seed,
        "identity_hash": run.identity_hash, "identity": run.identity, "config": run.raw,
        **run_complexity(run.net, run.data.image_size),
        "lr": run.lr, "augmentation": {k: getattr(run.augment, k) for k in
                                       ("auto_augment", "mixup", "cutmix", "random_erasing", "label_smoothing")},
        "pipeline": t.data.pipeline, "epochs_planned": epochs, "updates_planned": t.total_updates,
        "device": describe_device(device), "world_size": world.size, "provenance": state.segments[-1]["provenance"],
        "classes": t.data.classes, "train_images": len(t.data.train), "val_images": len(t.data.val),
    }

    def update_record(**fields):
        record.update(fields, epochs=state.history, segments=state.segments,
                      resumed_from_epoch=[seg["from_epoch"] for seg in state.segments[1:]])
        if world.is_main:
            write_record(out, record)

    update_record()
    try:
        for epoch in range(state.epoch, epochs):
            epoch_start = time.perf_counter()
            metrics = _train_epoch(t, state, epoch)
            evaluated = evaluate(t.net, t.data.val, run, device, world, micro * 2, t.workers)
            metrics.update({f"val_{k}": v for k, v in evaluated.items()})
            if t.ema is not None:
                metrics["val_top1_ema"] = evaluate(t.ema.module, t.data.val, run, device, world, micro * 2,
                                                   t.workers)["top1"]
            is_best = metrics["val_top1"] > state.best_top1
            state.epoch, state.best_top1 = epoch + 1, max(state.best_top1, metrics["val_top1"])
            state.history.append(metrics)
            state.wall_time_s += time.perf_counter() - epoch_start
            state.segments[-1]["to_epoch"] = state.epoch
            if world.is_main:
                _checkpoint(out, t, state, is_best)
            update_record()
            world.barrier()
            if run.train.kill_after_epoch == epoch + 1:
                os.kill(os.getpid(), signal.SIGKILL)  # testing hook: die as a killed job would
    except Exception as e:
        update_record(status="failed", reason=f"{type(e).__name__}: {one_line(e)}")
        raise

    last = state.history[-1]
    final = {"top1": last["val_top1"], "top5": last["val_top5"], "loss": last["val_loss"]}
    if t.ema is not None:
        final["top1_ema"] = last["val_top1_ema"]
    train_time = sum(h["train_time_s"] for h in state.history)
    if world.is_main:
        atomic_write_bytes(out / WEIGHTS, save_safetensors(_cpu_state(t.net)))
        if t.ema is not None:
            atomic_write_bytes(out / WEIGHTS_EMA, save_safetensors(_cpu_state(t.ema.module)))
    if run.eval.corruptions and world.is_main:
        record["robustness"] = evaluate_robustness(t.net, t.data.val, run.eval, device)
    update_record(status="finished", final=final, best_top1=state.best_top1,
                  wall_time_s=state.wall_time_s,  # training + evaluation, summed over segments
                  replica_divergence=replica_divergence(t.net, world), train_time_s=train_time,
                  train_throughput=sum(h["train_images"] for h in state.history) / max(train_time, 1e-9))
    if world.is_main:
        print(f"{run.step['name']}: top-1 {final['top1']:.2f}  top-5 {final['top5']:.2f}  -> {out / RESULT}")
    return record


def build_training(run: RunConfig, device, world: World, micro: int, ckpt: dict | None = None,
                   state: TrainingState | None = None) -> Training:
    """Data, net, optimizer, schedule, loss and loader of a run (from its checkpoint, if one is given)."""
    data = build_datasets(run.data, run.augment, run.seed)
    updates_per_epoch = len(data.train) // run.budget.batch_size
    if updates_per_epoch == 0:
        raise ConfigError(f"budget.batch_size={run.budget.batch_size} exceeds the {len(data.train)} training images; "
                          "choose a smaller batch or more data")
    torch.manual_seed(derive_seed(run.seed, "init"))  # same init on every process
    net = build_net(run.net, channels_last=run.train.channels_last).to(device)
    if run.train.sync_bn and world.size > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    ema = ModelEmaV3(net, decay=run.recipe.ema_decay) if run.recipe.ema_decay else None
    optimizer = build_optimizer(run, net)
    scheduler, total_updates = build_schedule(run, optimizer, updates_per_epoch)
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
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if run.train.compile:
        model = torch.compile(model)
    workers = default_workers(run.data) if run.train.workers is None else run.train.workers
    sampler = GlobalBatchSampler(len(data.train), run.budget.batch_size, run.budget.accum_steps, world, run.seed)
    loader = make_loader(data.train, sampler, micro, workers, pin_memory=device.type == "cuda")
    mixup, criterion = build_loss(run)
    return Training(run, net, model, ema, optimizer, scheduler, scaler, data, sampler, loader, mixup, criterion,
                    device, world, micro, workers, total_updates)


def _train_epoch(t: Training, state: TrainingState, epoch: int) -> dict:
    """One epoch of updates. The loss is summed on the device and read (one host sync) only every
    LOSS_CHECK_EVERY updates and at the end, where a non-finite loss stops the run on every process."""
    t.model.train()
    _seed_epoch(t.run.seed, epoch, t.world.rank)
    t.sampler.epoch = epoch
    t.data.train.set_epoch(epoch)
    accum = t.run.budget.accum_steps
    loss_sum = torch.zeros((), dtype=torch.float64, device=t.device)
    correct = torch.zeros((), dtype=torch.int64, device=t.device)
    seen = 0
    t0 = time.perf_counter()
    bar = tqdm(t.loader, desc=f"epoch {epoch + 1}", unit="batch", disable=not t.world.is_main, leave=False,
               mininterval=1.0, dynamic_ncols=True)
    for i, (x, y) in enumerate(bar):
        if state.update >= t.total_updates:
            break
        loss, right = train_step(t, state, x, y, last_micro=(i + 1) % accum == 0)
        loss_sum += loss.double() * len(y)
        correct += right
        seen += len(y)
        if (i + 1) % accum == 0 and state.update % LOSS_CHECK_EVERY == 0:
            _check_finite(t, state, epoch, loss_sum, seen)
            if t.world.is_main:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}",
                                img_s=f"{seen * t.world.size / (time.perf_counter() - t0):.0f}",
                                lr=f"{t.optimizer.param_groups[0]['lr']:.2e}")
    _check_finite(t, state, epoch, loss_sum, seen)
    train_time = time.perf_counter() - t0
    loss_total, correct_total, seen_total = t.world.sum([loss_sum.item(), float(correct.item()), float(seen)])
    return {"epoch": epoch + 1, "update": state.update, "lr": t.optimizer.param_groups[0]["lr"],
            "train_loss": loss_total / seen_total, "train_top1": 100 * correct_total / seen_total,
            "train_images": seen_total, "train_time_s": train_time, "train_images_per_s": seen_total / train_time}


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


def _check_finite(t: Training, state: TrainingState, epoch: int, loss_sum: torch.Tensor, seen: int) -> None:
    """Every process sees the same verdict (the loss summed over processes), so all stop together."""
    total = t.world.sum([loss_sum.item()])[0]
    if not math.isfinite(total):
        where = (f"the last good checkpoint is {LAST} (epoch {state.epoch})" if state.epoch
                 else "no checkpoint was written (it fails in the first epoch)")
        raise TrainingFailed(f"non-finite loss in epoch {epoch + 1} by update {state.update}; {where}. "
                             "Lower the lr (budget.lr_multiplier) or use train.precision=fp32")


def _checkpoint(out: Path, t: Training, state: TrainingState, is_best: bool) -> None:
    ckpt = {"model": t.net.state_dict(), "optimizer": t.optimizer.state_dict(), "scaler": t.scaler.state_dict(),
            "identity_hash": t.run.identity_hash, **asdict(state)}
    if t.ema is not None:
        ckpt["ema"] = t.ema.state_dict()
    best = {"model": t.net.state_dict(), "epoch": state.epoch, "val_top1": state.best_top1,
            "identity_hash": t.run.identity_hash} if is_best else None
    save_checkpoint(out, ckpt, state.history, best)


def _cpu_state(net: Net) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
