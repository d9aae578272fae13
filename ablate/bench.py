"""python -m ablate.bench [+step=NAME | +sweep=roadmap] [compare=timm] [device=...] [precision=...] [KEY=VALUE]

Images/s for inference and training and peak memory of each step's network, measured as timm's benchmark.py
does: untimed warm-up, device synchronisation, channels_last and autocast options, torch.compile, and batch-size
back-off on out-of-memory. All the steps of a sweep are measured in one process, alternating block by block,
so drifts in machine speed hit every step alike. With compare=timm the endpoints' timm models (conf/regime:
`timm`) join the rotation, and the ratio reported is the median over blocks of ours/timm. Writes a CSV with
provenance (conf/bench.yaml lists the keys).
"""
from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from torch import nn

from stages import NetConfigError, build_net
from stages.config import check_choices, check_value, typed_from_dict

from .config import CONF_DIR, ConfigError, expand_sweep, net_config
from .io import atomic_write_text
from .provenance import csv_header, provenance
from .train import describe_device, pick_device

BENCH_KEYS = ("device", "precision", "channels_last", "compile", "image_size", "batch_size", "num_classes",
              "modes", "warmup", "iters", "repeats", "compare", "threads", "out")


@dataclass(frozen=True)
class BenchConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool | None = None  # None: each model's own layout (ours NHWC, timm's NCHW); else both
    compile: bool = False
    image_size: int = 224
    batch_size: int = 32
    num_classes: int = 1000
    modes: tuple[str, ...] = ("infer", "train")
    warmup: int = 3
    iters: int = 10
    repeats: int = 5
    compare: Literal["none", "timm"] = "none"
    threads: int | None = None
    out: str | None = None

    def __post_init__(self):
        check_choices(self, "bench", ConfigError)
        object.__setattr__(self, "modes", tuple(self.modes))
        check_value(self.channels_last in (None, True, False), "channels_last", self.channels_last,
                    "null (each model's own layout), true or false (both models)", prefix="bench", error=ConfigError)
        check_value(bool(self.modes) and set(self.modes) <= {"infer", "train"}, "modes", list(self.modes),
                    "a list of infer, train", prefix="bench", error=ConfigError)
        for key in ("image_size", "batch_size", "iters", "repeats"):
            check_value(getattr(self, key) >= 1, key, getattr(self, key), "a positive integer", prefix="bench",
                        error=ConfigError)

    @property
    def ours_channels_last(self) -> bool:
        """Ours runs NHWC, its default, unless channels_last=false puts both models in NCHW."""
        return self.channels_last is not False


# ------------------------------------------------------------------------------------------ configs
def _argv_overrides(argv: list[str]) -> list[str]:
    """Short forms: `compare=timm` means `bench.compare=timm` for every bench key."""
    return [f"bench.{a}" if a.split("=", 1)[0] in BENCH_KEYS else a for a in argv]


def compose_bench(overrides: list[str]) -> list:
    """One composed config per step: a +sweep=NAME expands to its jobs, as Hydra's basic sweeper would."""
    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs = expand_sweep(compose("bench", overrides=fixed, return_hydra_config=True).hydra, overrides)
        return [compose("bench", overrides=job) for job in jobs]


def bench_config(cfg) -> BenchConfig:
    return typed_from_dict(BenchConfig, OmegaConf.to_container(cfg.bench, resolve=True), "bench", ConfigError)


def build_models(cfg, bench: BenchConfig) -> dict[str, nn.Module]:
    """Ours and, with compare=timm, the timm reference of this step (the endpoints have one) at the same width."""
    net = net_config(cfg).replace(num_classes=bench.num_classes)
    models = {"ours": build_net(net, channels_last=bench.ours_channels_last)}
    name = cfg.regime.timm.get(cfg.step.name)
    if bench.compare == "timm" and name is not None:
        if net.width_multiplier != 1.0:
            raise ConfigError("compare=timm needs the paper's widths: budget.width_multiplier=1.0")
        # the same network: timm's default drop path is 0, ours follows the recipe (ConvNeXt-T: 0.1)
        models[name] = timm.create_model(name, num_classes=bench.num_classes, drop_path_rate=net.drop_path_rate)
    return models


# ------------------------------------------------------------------------------------------ measure
class Runner:
    """One model ready to run one mode (infer or train) at a batch size; `block()` times `iters` iterations."""

    def __init__(self, model: nn.Module, mode: str, bench: BenchConfig, device: torch.device, batch: int):
        self.bench, self.device, self.mode, self.batch = bench, device, mode, batch
        # channels_last=true converts model and input, as timm's benchmark.py --channels-last
        fmt = torch.channels_last if bench.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=fmt).train(mode == "train")
        self.fn = torch.compile(self.model) if bench.compile else self.model
        size = bench.image_size
        self.x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, bench.num_classes, (batch,), device=device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-6) if mode == "train" else None
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16 if bench.precision == "bf16"
                                        else torch.float16) if bench.precision != "fp32" else nullcontext())

    def step(self) -> None:
        if self.mode == "infer":
            with torch.inference_mode(), self.autocast:
                self.fn(self.x)
            return
        with self.autocast:
            loss = nn.functional.cross_entropy(self.fn(self.x).float(), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def block(self, warmup: int) -> float:
        """Images/s over `iters` timed iterations after `warmup` untimed ones."""
        for _ in range(warmup):
            self.step()
        self.sync()
        start = time.perf_counter()
        for _ in range(self.bench.iters):
            self.step()
        self.sync()
        return self.bench.iters * self.batch / (time.perf_counter() - start)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e)


def make_runner(model, mode, bench, device) -> Runner:
    """A runner at the largest batch <= bench.batch_size that fits (halving on out-of-memory, as timm's
    benchmark decays the batch), after its first warm-up (compilation happens there)."""
    batch = bench.batch_size
    while True:
        try:
            runner = Runner(model, mode, bench, device, batch)
            runner.block(bench.warmup)
            return runner
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not _is_oom(e) or batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()


def measure(models: dict, bench: BenchConfig, device: torch.device, mode: str) -> dict:
    """Alternates all the models block by block, so a drift in machine speed hits every one alike; returns
    per-model images/s of every block, the batch it ran and its peak memory (CUDA: its own, above what the
    other models held)."""
    runners, memory = {}, {}
    for model in models.values():
        model.to("cpu")  # on the device only while its own runner is made: its memory is counted once
    for key, model in models.items():
        if device.type == "cuda":
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        runners[key] = make_runner(model, mode, bench, device)
        memory[key] = ((torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda"
                       else float("nan"))
    speeds = {key: [] for key in models}
    for _ in range(bench.repeats):
        for key, runner in runners.items():
            speeds[key].append(runner.block(warmup=1))
    return {"speeds": speeds, "memory": memory, "batch": {k: r.batch for k, r in runners.items()}}


def bench_rows(configs: list, bench: BenchConfig, device: torch.device) -> list[dict]:
    """Every step's net (and its timm reference, if compared) measured together, one mode at a time."""
    models = {(cfg.step.name, name): model for cfg in configs for name, model in build_models(cfg, bench).items()}
    rows = []
    for mode in bench.modes:
        torch.manual_seed(0)
        result = measure(models, bench, device, mode)
        for cfg in configs:
            rows.append(_row(cfg, bench, device, mode, result))
            print(_line(rows[-1]), flush=True)
    return rows


def _row(cfg, bench: BenchConfig, device: torch.device, mode: str, result: dict) -> dict:
    step = cfg.step.name
    ours = result["speeds"][step, "ours"]
    row = {"regime": cfg.regime.name, "step": step, "step_index": cfg.step.index, "adopted": cfg.step.adopted,
           "mode": mode, "device": describe_device(device), "precision": bench.precision,
           "channels_last": bench.ours_channels_last, "compile": bench.compile,
           "image_size": bench.image_size, "batch_size": result["batch"][step, "ours"],
           "width_multiplier": net_config(cfg).width_multiplier, "repeats": bench.repeats, "iters": bench.iters,
           "img_s": statistics.median(ours), "img_s_min": min(ours), "img_s_max": max(ours),
           "peak_mem_mib": result["memory"][step, "ours"]}
    for (other_step, name), ref in result["speeds"].items():
        if other_step == step and name != "ours":  # at most one: the step's timm reference
            ratios = [a / b for a, b in zip(ours, ref)]
            row.update({"timm_model": name, "timm_channels_last": bool(bench.channels_last),
                        "timm_img_s": statistics.median(ref), "timm_peak_mem_mib": result["memory"][step, name],
                        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)})
    return row


def _line(row: dict) -> str:
    text = (f"{row['step']:>22} {row['mode']:>5} {row['image_size']}px b{row['batch_size']}: "
            f"{row['img_s']:8.1f} img/s")
    if "ratio" in row:
        text += f" | {row['timm_model']} {row['timm_img_s']:8.1f} img/s | ours/timm {row['ratio']:.3f} " \
                f"[{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]"
    return text


def run(argv: list[str]) -> pd.DataFrame:
    configs = compose_bench(_argv_overrides(argv))
    bench = bench_config(configs[0])
    if bench.compare == "timm" and not any(cfg.step.name in cfg.regime.timm for cfg in configs):
        raise ConfigError(f"compare=timm: no step here ({', '.join(c.step.name for c in configs)}) has a timm "
                          f"model; steps with one: "
                          f"{', '.join(configs[0].regime.timm)} (regime={configs[0].regime.name})")
    threads = torch.get_num_threads()
    torch.set_num_threads(bench.threads or threads)
    try:
        device = pick_device(bench.device, key="bench.device")
        rows = bench_rows(configs, bench, device)
    finally:
        torch.set_num_threads(threads)
    table = pd.DataFrame(rows)
    out = Path(bench.out or f"outputs/bench/{dt.datetime.now():%Y-%m-%d_%H-%M-%S}.csv")
    atomic_write_text(out, csv_header(provenance()) + table.to_csv(index=False, float_format="%.4g"))
    print(f"-> {out}")
    return table


def main(argv: list[str]) -> int:
    try:
        run(argv)
    except (ConfigError, NetConfigError, HydraException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
