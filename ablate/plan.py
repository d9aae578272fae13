"""python -m ablate.plan [+step=NAME | +sweep=NAME] [seed=0,1,2] [budget=...] [data=...] [train.*=...] [KEY=VALUE]

What a sweep will cost on this machine, before it is run. For every distinct job (seeds share a measurement)
it measures, with the run's own objects (data, net, loss, optimizer, schedule: ablate.engine.build_training):
  - training images/s of one device: the run's train step on a fixed batch at the per-device batch (halved on
    out-of-memory: the largest batch that fits, and the budget.accum_steps that keeps the global batch);
  - images/s of the data pipeline alone (the run's loader at its train.workers), and whether the job is data-bound;
  - evaluation images/s (val loader + forward), which prices the per-epoch evaluation and eval.corruptions;
and from them the time per epoch and per job and the sweep's device-hours, beside the job's FLOPs.

The model, stated so a plan can be checked: an epoch's training takes images / train images/s, plus
images / data images/s when the data is made in the training process (train.workers=0), else the slower of
the two; devices scale images/s linearly (no communication cost); evaluation runs every epoch (twice with an
EMA); corrupted images are read from the cache (the first run that makes them pays more). On a CPU, the
measured batch is capped (`max_batch`, default 256) and images/s taken as flat beyond it. `measured=DIR` puts the wall
time of the finished runs under DIR (training + evaluation + corruptions, from their records) beside each
prediction.
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .bench import BenchConfig, make_runner
from .cli import Command
from .complexity import run_complexity
from .config import CommandOptions, RunConfig, compose_jobs, run_config
from .corruption_suites import corruption_list
from .device import pick_device, torch_threads
from .engine import predict
from .errors import ConfigError
from .provenance import write_csv
from .record import RESULT, read_record

CPU_MAX_BATCH = 256  # a CPU plan measures at most this per-device batch (a paper batch at 224 px would take
# minutes per step); images/s is taken as flat beyond it


@dataclass(frozen=True)
class PlanOptions(CommandOptions):
    """The plan's own keys (python -m ablate.plan --help); the jobs come from the run config's overrides."""
    devices: int = 1                     # processes (GPUs) per job: the world size that splits the batch
    max_batch: int | None = None         # measure at most this per-device batch (null: the job's; CPU: 256)
    warmup: int = 2
    iters: int = 5                       # timed train steps per block
    repeats: int = 3                     # blocks; the median is used
    data_batches: int = 10               # batches timed for the data pipeline and for evaluation
    train_images: int | None = None      # images per epoch to plan for (null: the data's own)
    val_images: int | None = None
    measured: str | None = None          # a sweep directory of finished runs to set beside the prediction
    out: str | None = None

    def check(self) -> None:
        for key in ("devices", "iters", "repeats", "data_batches"):
            self.require(getattr(self, key) >= 1, key, "a positive integer")
        self.require(self.warmup >= 0, "warmup", "an integer >= 0")
        for key in ("max_batch", "train_images", "val_images"):
            self.require(getattr(self, key) is None or getattr(self, key) >= 1, key, "null or a positive integer")


# ------------------------------------------------------------------------------------------ measure
def _images_per_s(batches, count) -> float:
    """Images/s of iterating `batches` (after one untimed batch); count(batch) -> images in it."""
    it = iter(batches)
    next(it)
    seen, start = 0, time.perf_counter()
    for batch in it:
        seen += count(batch)
    return seen / (time.perf_counter() - start)


def measure(cfg, run: RunConfig, options: PlanOptions, device: torch.device) -> dict:
    """Train, data and evaluation images/s of one job on one device, and the batch that fits."""
    micro = run.per_process_batch(options.devices)
    cap = options.max_batch or (micro if device.type == "cuda" else CPU_MAX_BATCH)
    # the job runs as its own train.* says (precision, layout, compile, forms): the bench reads them from cfg
    bench = BenchConfig(device=device.type, image_size=run.data.image_size, batch_size=min(micro, cap),
                        warmup=options.warmup, iters=options.iters)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    runner = make_runner(None, "step", bench, device, cfg)  # the largest batch <= bench.batch_size that fits
    train_img_s = statistics.median(runner.block(warmup=1) for _ in range(options.repeats))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    t = runner.training
    n = options.data_batches + 1
    data_img_s = _images_per_s(itertools.islice(t.loader, n), lambda b: len(b[1]))
    eval_batch = runner.batch * 2  # as the run evaluates
    val = t.data.val.loader(range(min(len(t.data.val), n * eval_batch)), eval_batch, t.workers)
    eval_img_s = _images_per_s(predict(t.net, val, device, run.train.precision), lambda b: len(b[1]))
    fits = runner.batch == bench.batch_size  # else halved on out-of-memory
    return {"per_device_batch": micro, "measured_batch": runner.batch, "fits": fits,
            "accum_steps_needed": run.budget.accum_steps * (1 if fits else math.ceil(micro / runner.batch)),
            "peak_mem_mib": peak, "train_img_s": train_img_s, "data_img_s": data_img_s, "eval_img_s": eval_img_s,
            "workers": t.workers, "train_images": len(t.data.train), "val_images": len(t.data.val),
            "ema": t.ema is not None}


def estimate(run: RunConfig, m: dict, options: PlanOptions) -> dict:
    """Epochs, updates and seconds of one job from its measurements (the model in the module docstring)."""
    train_images = options.train_images or m["train_images"]
    val_images = options.val_images or m["val_images"]
    updates_per_epoch, updates, epochs = run.schedule_length(train_images)
    images = updates * run.budget.batch_size / options.devices  # per device
    compute_s, data_s = images / m["train_img_s"], images / m["data_img_s"]
    train_s = compute_s + data_s if m["workers"] == 0 else max(compute_s, data_s)
    eval_s = epochs * (2 if m["ema"] else 1) * val_images / options.devices / m["eval_img_s"]
    made = corruption_list(run.eval.corruptions) if run.eval.corruptions else ()
    robust_images = min(run.eval.subset, val_images) * (1 + len(made) * len(run.eval.severities)) if made else 0
    robust_s = robust_images / m["eval_img_s"]
    job_s = train_s + eval_s + robust_s
    return {"epochs": epochs, "updates": updates, "data_bound": m["workers"] > 0 and data_s > compute_s,
            "workers_needed": max(1, math.ceil(m["workers"] * data_s / compute_s)) if m["workers"] else 0,
            "epoch_s": (train_s + eval_s) / epochs, "train_s": train_s, "eval_s": eval_s, "robustness_s": robust_s,
            "job_s": job_s, "device_hours": job_s * options.devices / 3600}


def measured_wall(root: Path) -> dict[str, float]:
    """{identity_hash: seconds} of the finished runs under root: training + evaluation (wall_time_s, summed
    over segments) + corruption evaluation."""
    if not root.is_dir():
        raise FileNotFoundError(f"measured={root}: no such directory")
    wall = {}
    for path in root.rglob(RESULT):
        record = read_record(path)
        if record.finished:
            wall[record.current_identity_hash] = record.wall_time_s + (record.robustness or {}).get("time_s", 0)
    return wall


def plan_rows(configs: list, options: PlanOptions, device: torch.device) -> list[dict]:
    measured_s = measured_wall(Path(options.measured)) if options.measured else {}
    cache, rows = {}, []
    for cfg in configs:
        run = run_config(cfg)
        if options.train_images is not None and options.train_images < run.budget.batch_size:
            raise ConfigError(f"train_images={options.train_images} is fewer than one batch (budget.batch_size="
                              f"{run.budget.batch_size})")
        # seeds and budgets of one step share the measurement: neither changes a step's speed
        key = json.dumps({**{k: v for k, v in run.raw.items() if k not in ("seed", "budget")},
                          "budget": {k: v for k, v in run.raw["budget"].items() if k != "epochs"}}, sort_keys=True)
        if key not in cache:
            cache[key] = {**run_complexity(run.net, run.data.image_size), **measure(cfg, run, options, device)}
        m = cache[key]
        row = {"step": run.step["name"], "seed": run.seed, "identity_hash": run.identity_hash,
               "devices": options.devices, "precision": run.train.precision,
               "image_size": run.data.image_size, "params": m["params"], "gflops": m["gflops"],
               "gflops_at_input": m["gflops_at_input"],
               **{k: v for k, v in m.items() if k not in ("params", "gflops", "fvcore_gflops", "gflops_at_input")},
               **estimate(run, m, options)}
        if options.measured:
            row["measured_s"] = measured_s.get(run.identity_hash, float("nan"))
            row["predicted_over_measured"] = row["job_s"] / row["measured_s"]
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: dict) -> str:
    text = (f"{row['step']:>22} s{row['seed']} b{row['measured_batch']}/{row['per_device_batch']}"
            f"{'' if row['fits'] else ' (accum ' + str(row['accum_steps_needed']) + ')'}: "
            f"train {row['train_img_s']:7.1f}  data {row['data_img_s']:8.1f}  eval {row['eval_img_s']:7.1f} img/s"
            f"{' DATA-BOUND' if row['data_bound'] else ''} | {row['epochs']} ep, {row['job_s'] / 60:6.1f} min")
    if "measured_s" in row:
        text += f" | measured {row['measured_s'] / 60:6.1f} min ({row['predicted_over_measured']:.2f}x)"
    return text


def run(options: PlanOptions, overrides: list[str]) -> pd.DataFrame:
    configs = compose_jobs(overrides)
    train = run_config(configs[0]).train  # how to run is the same for every job of one command
    device = pick_device(train.device)
    with torch_threads(train.threads):
        table = pd.DataFrame(plan_rows(configs, options, device))
    hours = table["device_hours"].sum()
    print(f"{len(table)} jobs: {hours:.2f} device-hours ({hours / options.devices:.2f} h one job at a time "
          f"on {options.devices} device(s))")
    if options.measured:
        ratio = table["predicted_over_measured"].dropna()
        print(f"predicted/measured over {len(ratio)} finished jobs: median {ratio.median():.2f}, "
              f"range [{ratio.min():.2f}, {ratio.max():.2f}]")
    write_csv(table, options.out, "plan")
    return table


COMMAND = Command(
    "python -m ablate.plan", "Measures what each job of a sweep costs on this machine (train, data and eval "
    "images/s, memory, the batch that fits) and estimates epoch, job and sweep time, without training.",
    PlanOptions, overrides=True,
    examples=("python -m ablate.plan +experiment=cifar10_proxy +sweep=roadmap seed=0,1,2 train.threads=1",
              "python -m ablate.plan +sweep=roadmap budget=paper data=imagenet data.root=/data/imagenet devices=8 "
              "train.precision=bf16"))


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
