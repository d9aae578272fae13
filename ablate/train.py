"""Train and evaluate one roadmap checkpoint; leave one complete, machine-readable record of the run
(its files and schema: ablate/record.py; lock and checkpoints: ablate/rundir.py; what it trains with:
ablate/engine.py)."""
from __future__ import annotations

import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors
from tqdm import tqdm

from stages import Net

from .complexity import run_complexity
from .cli import one_line
from .config import RunConfig
from .device import describe_device, pick_device
from .distributed import World, close_world, init_world, replica_divergence
from .engine import Training, TrainingState, build_training, evaluate, train_step
from .io import atomic_write_bytes, atomic_write_text
from .provenance import provenance
from .record import LAST, RESULT, WEIGHTS, WEIGHTS_EMA, write_record
from .robustness import add_to_record, evaluate_robustness, wanted
from .rundir import (RunDirConflict, RunDirLock, check_best, check_resume_settings, check_run_dir, load_checkpoint,
                     save_checkpoint)
from .seeding import derive_seed
from .trackers import Tracker, open_tracker

LOSS_CHECK_EVERY = 50  # optimizer updates between checks for a non-finite loss (one host sync each)
# the tests' lever, kept out of the run config users see: SIGKILL the process after this epoch's checkpoint,
# as a killed job dies
KILL_AFTER_EPOCH_ENV = "ABLATE_TEST_KILL_AFTER_EPOCH"


__all__ = ["train", "TrainingFailed", "RunDirConflict", "RESULT", "LAST"]


class TrainingFailed(RuntimeError):
    """The run cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = derive_seed(seed, "epoch", epoch, rank)
    torch.manual_seed(s)
    np.random.seed(s)  # timm Mixup draws from numpy


# --------------------------------------------------------------------------------------------- the run
def train(run: RunConfig, out_dir: str | Path, job_files: dict[str, str] | None = None,
          sweep_dir: str | Path | None = None) -> dict:
    """Trains (or resumes, or finds finished) the run in `out_dir`. `job_files` (relative path -> text: the
    launcher's own copy of the config, Hydra's `.hydra/*.yaml`) are written only once the directory is known to
    hold this run and it is about to train, so a refused command leaves a finished run's files as they were.
    `sweep_dir`: the multirun's directory, where a tracker shared by its runs keeps its store (logger=mlflow)."""
    out = Path(out_dir)
    device = pick_device(run.train.device)
    world = init_world(device.type)
    try:
        with RunDirLock(out) if world.is_main else nullcontext():
            return _train(run, out, device, world, job_files or {}, Path(sweep_dir) if sweep_dir else None)
    finally:
        close_world(world)


def _train(run: RunConfig, out: Path, device: torch.device, world: World, job_files: dict[str, str],
           sweep_dir: Path | None) -> dict:
    micro = run.per_process_batch(world.size)  # validates the batch split before any work
    if run.train.threads:
        torch.set_num_threads(run.train.threads)
    finished = _finished_run(run, out, device, world)
    if finished is not None:
        return finished
    ckpt, state = _resumed_state(run, out, device, world)
    if world.is_main:
        for name, text in job_files.items():
            atomic_write_text(out / name, text)
    t = build_training(run, device, world, micro, ckpt, state)
    state.segments.append({"from_epoch": state.epoch, "to_epoch": None, "train": run.raw["train"],
                           "device": describe_device(device), "world_size": world.size,
                           "forms": t.forms, "provenance": provenance()})
    record = _Record(out, _first_record(run, t, state, device, world), state, world.is_main)
    record.write()
    with open_tracker(run.logger, run.identity, run.identity_hash, out, sweep_dir, state.epoch,
                      world.is_main) as tracker:
        try:
            for epoch in range(state.epoch, record.fields["epochs_planned"]):
                _epoch(t, state, epoch, out)
                record.write()
                tracker.epoch(state.history[-1])  # after its checkpoint: a resumed run logs no epoch twice
                world.barrier()
                if os.environ.get(KILL_AFTER_EPOCH_ENV) == str(epoch + 1):
                    os.kill(os.getpid(), signal.SIGKILL)
        except Exception as e:
            record.fail(e)
            raise
        return _finish(t, state, out, record, tracker)


def _finished_run(run: RunConfig, out: Path, device: torch.device, world: World) -> dict | None:
    """The directory's finished record of this run (with any measurement asked for since added), or None."""
    finished = check_run_dir(out, run.identity_hash, run.identity, run.train.overwrite) if world.is_main else None
    world.barrier()
    if finished is None:
        return None
    print(f"{out}: finished run found (top-1 {finished.top1:.2f}); not retrained. "
          "Pass train.overwrite=true to retrain.")
    if wanted(finished, run.eval):  # a measurement asked for after the run: add it, train nothing
        finished = add_to_record(out, run, device)
    return finished.to_dict()


def _resumed_state(run: RunConfig, out: Path, device: torch.device, world: World):
    """(checkpoint or None, training state) to continue from; refuses a damaged best.pt or changed settings."""
    ckpt = load_checkpoint(out, run.identity_hash, device)
    if ckpt is not None and world.is_main:
        check_best(out, run.identity_hash)
    state = TrainingState.from_checkpoint(ckpt) if ckpt else TrainingState()
    check_resume_settings(state.segments, run.raw["train"], world.size, run.train.allow_setting_change)
    return ckpt, state


def _first_record(run: RunConfig, t: Training, state: TrainingState, device: torch.device, world: World) -> dict:
    """What the record says before the first epoch of this segment: the run, its net, data and plan."""
    return {
        "status": "running", "reason": None, "step": run.step, "regime": run.regime, "seed": run.seed,
        "identity_hash": run.identity_hash, "identity": run.identity, "config": run.raw,
        **run_complexity(run.net, run.data.image_size),
        "lr": run.lr, "augmentation": run.augment.augmentation,
        "pipeline": t.data.pipeline, "epochs_planned": run.schedule_length(len(t.data.train))[2],
        "updates_planned": t.total_updates, "device": describe_device(device), "world_size": world.size,
        "provenance": state.segments[-1]["provenance"], "classes": t.data.classes,
        "train_images": len(t.data.train), "val_images": len(t.data.val), "data_fingerprint": t.data.fingerprint,
    }


class _Record:
    """The run's result.json, rewritten with the training state's history and segments after every change."""

    def __init__(self, out: Path, fields: dict, state: TrainingState, is_main: bool):
        self.out, self.fields, self.state, self.is_main = out, fields, state, is_main

    def write(self, **fields) -> None:
        self.fields.update(fields, epochs=self.state.history, segments=self.state.segments,
                           resumed_from_epoch=[seg["from_epoch"] for seg in self.state.segments[1:]])
        if self.is_main:
            write_record(self.out, self.fields)

    def fail(self, e: Exception) -> None:
        try:
            self.write(status="failed", reason=f"{type(e).__name__}: {one_line(e)}")
        except OSError:
            pass  # the disk that failed the run may refuse the record too: the run's own error is the one to see


def _epoch(t: Training, state: TrainingState, epoch: int, out: Path) -> None:
    """One epoch: train, evaluate (the EMA too), update the state, checkpoint."""
    run, device, world, micro = t.run, t.device, t.world, t.micro
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


def _finish(t: Training, state: TrainingState, out: Path, record: _Record, tracker: Tracker) -> dict:
    """The final weights, robustness if asked for, and the finished record."""
    run, world = t.run, t.world
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
        record.fields["robustness"] = evaluate_robustness(t.net, t.data.val, run.eval, t.device)
    record.write(status="finished", final=final, best_top1=state.best_top1,
                 wall_time_s=state.wall_time_s,  # training + evaluation, summed over segments
                 replica_divergence=replica_divergence(t.net, world), train_time_s=train_time,
                 train_throughput=sum(h["train_images"] for h in state.history) / max(train_time, 1e-9))
    numbers = {**final, "best_top1": state.best_top1, "train_throughput": record.fields["train_throughput"]}
    if "robustness" in record.fields:
        numbers["mean_corruption_top1"] = record.fields["robustness"]["mean_corruption_top1"]
    tracker.finish(numbers)
    if world.is_main:
        print(f"{run.step['name']}: top-1 {final['top1']:.2f}  top-5 {final['top5']:.2f}  -> {out / RESULT}")
    return record.fields


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
