"""Train and evaluate one roadmap checkpoint; leave one complete, machine-readable record of the run.

Files in the run directory (all written atomically, by the main process):
  result.json     config, step, params, GFLOPs, per-epoch metrics, final top-1/top-5, timing, provenance, status
  metrics.jsonl   one line per finished epoch
  last.pt         everything needed to resume (after every epoch)
  best.pt         weights of the epoch with the best val top-1
  model.safetensors (and model_ema.safetensors)  the final weights
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import nullcontext
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
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from stages import Net, build_net

from .complexity import count
from .config import ConfigError, RunConfig
from .data import build_datasets
from .distributed import World, close_world, init_world, replica_divergence
from .io import atomic_torch_save, atomic_write_bytes, atomic_write_json, atomic_write_text
from .provenance import provenance

RESULT, LAST, BEST, METRICS = "result.json", "last.pt", "best.pt", "metrics.jsonl"


class TrainingFailed(RuntimeError):
    """The run cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


class RunDirConflict(RuntimeError):
    """The run directory holds a different run; nothing is overwritten without train.overwrite=true."""


# ------------------------------------------------------------------------------------------ data order
class GlobalBatchSampler(Sampler):
    """Each optimizer step takes the next `batch` samples of a (seed, epoch) permutation; every
    accumulation step and process takes its own contiguous slice. One process with accumulation and
    several processes therefore see exactly the same global batches. The last partial batch is dropped."""

    def __init__(self, n: int, batch: int, accum: int, world: World, seed: int):
        self.n, self.batch, self.accum, self.world, self.seed, self.epoch = n, batch, accum, world, seed, 0
        self.micro = batch // (accum * world.size)

    def __len__(self) -> int:  # samples this process yields per epoch
        return self.n // self.batch * self.batch // self.world.size

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(hash((self.seed, self.epoch)))).tolist()
        for start in range(0, self.n // self.batch * self.batch, self.batch):
            for a in range(self.accum):
                chunk = start + a * self.micro * self.world.size + self.world.rank * self.micro
                yield from perm[chunk:chunk + self.micro]


def shard(n: int, world: World) -> list[int]:
    return list(range(world.rank, n, world.size))


# ---------------------------------------------------------------------------------------------- pieces
def pick_device(requested: str, key: str = "train.device") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}=cuda but no CUDA device is visible; use {key}=auto or cpu")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


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
    r = run.recipe
    if r.optimizer == "sgd":  # timm's "sgd" is Nesterov; torchvision's recipe is plain momentum
        return create_optimizer_v2(model, "momentum", lr=run.lr, weight_decay=r.weight_decay,
                                   momentum=r.momentum, filter_bias_and_bn=r.no_weight_decay_1d)
    return create_optimizer_v2(model, "adamw", lr=run.lr, weight_decay=r.weight_decay, betas=r.betas,
                               filter_bias_and_bn=r.no_weight_decay_1d)


def build_loss(run: RunConfig) -> tuple[Mixup | None, nn.Module]:
    r = run.augment
    if r.mixup > 0 or r.cutmix > 0:
        mixup = Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                      label_smoothing=r.label_smoothing, num_classes=run.data.num_classes)
        return mixup, SoftTargetCrossEntropy()
    if r.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(r.label_smoothing)
    return None, nn.CrossEntropyLoss()


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, run: RunConfig, device, world: World, batch: int) -> dict:
    """top-1, top-5 and loss over the whole val split (sharded over processes, summed exactly)."""
    model.eval()
    idx = shard(len(dataset), world)
    loader = DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=batch, num_workers=run.data.workers)
    loss_sum = top1 = top5 = seen = 0.0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, run.train.precision):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (top[:, 0] == y).sum().item()
        top5 += (top == y[:, None]).any(1).sum().item()
        seen += len(y)
    loss_sum, top1, top5, seen = world.sum([loss_sum, top1, top5, seen])
    return {"top1": 100 * top1 / seen, "top5": 100 * top5 / seen, "loss": loss_sum / seen}


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = hash((seed, epoch, rank)) & 0xFFFFFFFF
    torch.manual_seed(s)
    np.random.seed(s)  # timm Mixup draws from numpy


# --------------------------------------------------------------------------------------------- the run
def check_run_dir(out: Path, run: RunConfig) -> dict | None:
    """The finished result to reuse, or None to (re)start. Raises on a different run in the directory."""
    result_path = out / RESULT
    if run.train.overwrite:
        for name in (RESULT, LAST, BEST, METRICS, "model.safetensors", "model_ema.safetensors"):
            (out / name).unlink(missing_ok=True)
        return None
    if not result_path.exists():
        return None
    try:
        previous = json.loads(result_path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise RunDirConflict(f"{result_path} is unreadable ({e}); move it away or pass train.overwrite=true") from e
    if previous.get("identity_hash") != run.identity_hash:
        diff = _diff(previous.get("identity", {}), run.identity)
        raise RunDirConflict(f"{out} holds a different run (differs at: {', '.join(diff[:8]) or 'unknown'}); "
                             "use another hydra.run.dir, or train.overwrite=true to replace it")
    return previous if previous.get("status") == "finished" else None


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def train(run: RunConfig, out_dir: str | Path) -> dict:
    out = Path(out_dir)
    device = pick_device(run.train.device)
    world = init_world(device.type)
    try:
        return _train(run, out, device, world)
    finally:
        close_world(world)


def _train(run: RunConfig, out: Path, device: torch.device, world: World) -> dict:
    micro = run.per_process_batch(world.size)  # validates the batch split before any work
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    finished = check_run_dir(out, run)
    world.barrier()
    if finished is not None:
        if world.is_main:
            print(f"{out}: finished run found (top-1 {finished['final']['top1']:.2f}); not retrained. "
                  "Pass train.overwrite=true to retrain.")
        return finished

    data = build_datasets(run.data, run.augment, run.seed)
    torch.manual_seed(run.seed)  # same init on every process
    net = build_net(run.net, channels_last=run.train.channels_last)
    paper_convention = count(build_net(run.net.replace(num_classes=1000)), 224)  # ImageNet head, 224x224
    complexity = {"params": sum(p.numel() for p in net.parameters()),  # the trained net's own
                  "gflops": paper_convention["gflops"], "fvcore_gflops": paper_convention["fvcore_gflops"],
                  "gflops_at_input": count(net, run.data.image_size)["gflops"]}
    net.to(device)
    if run.train.sync_bn and world.size > 1:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    ema = ModelEmaV3(net, decay=run.recipe.ema_decay) if run.recipe.ema_decay else None
    optimizer = build_optimizer(run, net)
    sampler = GlobalBatchSampler(len(data.train), run.budget.batch_size, run.budget.accum_steps, world, run.seed)
    loader = DataLoader(data.train, batch_size=micro, sampler=sampler, num_workers=run.data.workers,
                        pin_memory=device.type == "cuda", drop_last=True)
    updates_per_epoch = len(data.train) // run.budget.batch_size
    if updates_per_epoch == 0:
        raise TrainingFailed(f"budget.batch_size={run.budget.batch_size} exceeds the {len(data.train)} training images")
    scheduler, total_updates = build_schedule(run, optimizer, updates_per_epoch)
    epochs = math.ceil(total_updates / updates_per_epoch)
    mixup, criterion = build_loss(run)
    scaler = torch.amp.GradScaler(device.type, enabled=run.train.precision == "fp16")

    state = {"epoch": 0, "update": 0, "history": [], "best_top1": -1.0, "resumed_from": [], "wall_time_s": 0.0}
    if (out / LAST).exists():
        ckpt = torch.load(out / LAST, map_location=device, weights_only=True)
        if ckpt["identity_hash"] != run.identity_hash:
            raise RunDirConflict(f"{out / LAST} belongs to a different run; use train.overwrite=true to replace it")
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        state = {k: ckpt[k] for k in state}
        state["resumed_from"] = [*state["resumed_from"], state["epoch"]]
        scheduler.step_update(state["update"])
    model = net
    if world.size > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if run.train.compile:
        model = torch.compile(model)

    record = {
        "status": "running", "reason": None, "step": run.step, "regime": run.regime, "seed": run.seed,
        "identity_hash": run.identity_hash, "identity": run.identity, "config": run.raw, **complexity,
        "lr": run.lr, "augmentation": {k: getattr(run.augment, k) for k in
                                       ("auto_augment", "mixup", "cutmix", "random_erasing", "label_smoothing")},
        "epochs_planned": epochs, "updates_planned": total_updates,
        "device": describe_device(device), "world_size": world.size, "provenance": provenance(),
        "classes": data.classes, "train_images": len(data.train), "val_images": len(data.val),
    }

    def write_record(**fields):
        record.update(fields, epochs=state["history"], resumed_from_epoch=state["resumed_from"])
        if world.is_main:
            atomic_write_json(out / RESULT, record)

    write_record()
    try:
        for epoch in range(state["epoch"], epochs):
            epoch_start = time.perf_counter()
            metrics = _train_epoch(run, model, net, ema, optimizer, scheduler, scaler, loader, sampler, data,
                                   mixup, criterion, device, world, epoch, state, total_updates, micro)
            metrics.update({f"val_{k}": v for k, v in evaluate(net, data.val, run, device, world, micro * 2).items()})
            if ema is not None:
                metrics["val_top1_ema"] = evaluate(ema.module, data.val, run, device, world, micro * 2)["top1"]
            state["epoch"] = epoch + 1
            state["history"].append(metrics)
            is_best = metrics["val_top1"] > state["best_top1"]
            state["best_top1"] = max(state["best_top1"], metrics["val_top1"])
            state["wall_time_s"] += time.perf_counter() - epoch_start
            if world.is_main:
                _checkpoint(out, run, net, optimizer, scaler, ema, state, is_best, epoch)
            write_record()
            world.barrier()
            if run.train.kill_after_epoch == epoch + 1:
                os.kill(os.getpid(), signal.SIGKILL)  # testing hook: die as a killed job would
    except Exception as e:
        write_record(status="failed", reason=f"{type(e).__name__}: {e}")
        raise

    last = state["history"][-1]
    final = {"top1": last["val_top1"], "top5": last["val_top5"], "loss": last["val_loss"]}
    if ema is not None:
        final["top1_ema"] = last["val_top1_ema"]
    train_time = sum(h["train_time_s"] for h in state["history"])
    if world.is_main:
        atomic_write_bytes(out / "model.safetensors", save_safetensors(_cpu_state(net)))
        if ema is not None:
            atomic_write_bytes(out / "model_ema.safetensors", save_safetensors(_cpu_state(ema.module)))
    write_record(status="finished", final=final, best_top1=state["best_top1"],
                 wall_time_s=state["wall_time_s"],  # training + evaluation, summed over resumed processes
                 replica_divergence=replica_divergence(net, world),
                 train_time_s=train_time,
                 train_throughput=sum(h["train_images"] for h in state["history"]) / max(train_time, 1e-9))
    if world.is_main:
        print(f"{run.step['name']}: top-1 {final['top1']:.2f}  top-5 {final['top5']:.2f}  -> {out / RESULT}")
    return record


def _train_epoch(run, model, net, ema, optimizer, scheduler, scaler, loader, sampler, data, mixup, criterion,
                 device, world, epoch, state, total_updates, micro) -> dict:
    model.train()
    _seed_epoch(run.seed, epoch, world.rank)
    sampler.epoch = epoch
    data.train.set_epoch(epoch)
    accum = run.budget.accum_steps
    loss_sum = correct = seen = 0.0
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", unit="batch", disable=not world.is_main, leave=False,
               mininterval=1.0, dynamic_ncols=True)
    for i, (x, y) in enumerate(bar):
        if state["update"] >= total_updates:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        target = y
        if mixup is not None:
            x, target = mixup(x, y)
        last_micro = (i + 1) % accum == 0
        sync = model.no_sync() if world.size > 1 and not last_micro else nullcontext()
        with sync, autocast(device, run.train.precision):
            logits = model(x)
            loss = criterion(logits.float(), target)
        scaler.scale(loss / accum).backward()
        # every process sees the same global loss, so all stop together on a non-finite one
        step_loss = world.sum([loss.item()])[0] / world.size
        if not math.isfinite(step_loss):
            raise TrainingFailed(f"non-finite loss ({step_loss}) at epoch {epoch + 1}, update {state['update']}; "
                                 f"the last good checkpoint is {LAST} (epoch {state['epoch']})")
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        if last_micro:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state["update"] += 1
            scheduler.step_update(state["update"])
            if ema is not None:
                ema.update(net, step=state["update"])
        if world.is_main and i % 10 == 0:
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                            img_s=f"{seen * world.size / elapsed:.0f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    train_time = time.perf_counter() - t0
    loss_sum, correct, seen = world.sum([loss_sum, correct, seen])
    return {"epoch": epoch + 1, "update": state["update"], "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / seen, "train_top1": 100 * correct / seen, "train_images": seen,
            "train_time_s": train_time, "train_images_per_s": seen / train_time}


def _checkpoint(out: Path, run, net, optimizer, scaler, ema, state, is_best: bool, epoch: int) -> None:
    ckpt = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "identity_hash": run.identity_hash, **state}
    if ema is not None:
        ckpt["ema"] = ema.state_dict()
    atomic_torch_save(out / LAST, ckpt)
    if is_best:
        atomic_torch_save(out / BEST, {"model": net.state_dict(), "epoch": epoch + 1,
                                       "val_top1": state["best_top1"], "identity_hash": run.identity_hash})
    atomic_write_text(out / METRICS, "".join(json.dumps(h) + "\n" for h in state["history"]))


def _cpu_state(net: Net) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


def describe_device(device: torch.device) -> str:
    """The device as records and benchmark CSVs name it."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"
