"""python -m ablate.bench [+step=NAME | +sweep=roadmap] [compare=timm] [device=...] [precision=...] [KEY=VALUE]

Images/s for inference and training and peak memory of each step's network, measured as timm's benchmark.py
does: untimed warm-up, device synchronisation, channels_last and autocast options, torch.compile, and batch-size
back-off on out-of-memory. All the steps of a sweep are measured in one process, alternating block by block,
so drifts in machine speed hit every step alike. With compare=timm the endpoints' timm models (conf/regime:
`timm`) join the rotation, and the ratio reported is the median over blocks of ours/timm. Writes a CSV with
provenance (`--help` lists the keys).
"""
from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stages import Net, build_net
from stages.forms import forms_in_use

from .autotune import pick_forms
from .cli import Command
from .config import (CommandOptions, TrainConfig, check_top_level_keys, compose_jobs, dotted, net_config,
                     run_config)
from .device import autocast, describe_device, pick_device, torch_threads
from .distributed import World
from .engine import TrainingState, build_training, train_step
from .errors import ConfigError
from .provenance import write_csv


@dataclass(frozen=True)
class BenchConfig(CommandOptions):
    """The bench's own keys (python -m ablate.bench --help). The nets, and how each runs in every mode (precision,
    layout, compile, layer forms), come from each job's run config: `train.precision=bf16`, `train.compile=true`,
    `train.pointwise_form=conv,auto` (a sweep of two jobs, measured in one rotation)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    timm_channels_last: bool = False    # timm's reference in NHWC (its own layout is NCHW)
    image_size: int = 224
    batch_size: int = 32
    num_classes: int = 1000
    modes: tuple[Literal["infer", "onnx", "train", "step", "e2e"], ...] = ("infer", "train")
    # onnx: the net exported (ablate.export) and run by onnxruntime on the CPU in fp32, in one rotation with `infer`
    # (torch eager), so a row's onnx_over_infer is the deploy runtime's speed-up.
    # step: the run's own training step (its loss, optimizer, schedule) on one fixed batch; e2e: the same fed
    # by the run's data loader. Measured in one rotation with `train` (the bare net, timm's SGD step), so a row's
    # e2e_over_train and e2e_over_step say what the run costs beyond the net, and what the data path costs
    warmup: int = 3
    iters: int = 10
    repeats: int = 5
    compare: Literal["none", "timm"] = "none"
    threads: int | None = None
    out: str | None = None

    def check(self) -> None:
        self.require(bool(self.modes), "modes", "a non-empty list of infer, train, step, e2e")
        for key in ("image_size", "batch_size", "num_classes", "iters", "repeats"):
            self.require(getattr(self, key) >= 1, key, "a positive integer")
        self.require(self.warmup >= 0, "warmup", "an integer >= 0")
        self.require(self.threads is None or self.threads >= 1, "threads", "null or a positive integer")


def job_settings(cfg: DictConfig) -> TrainConfig:
    """How a job runs, in every mode: its run config's train.* (validated)."""
    return TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))


# ------------------------------------------------------------------------------------------ configs
def compose_bench(overrides: list[str]) -> dict[str, DictConfig]:
    """One composed config per job (conf/bench.yaml: the paper's widths), by its name (`job_names`)."""
    configs = compose_jobs(overrides, "bench")
    return dict(zip(job_names(configs), configs))


def job_names(configs: list[DictConfig]) -> list[str]:
    """Each job's name: its step, and where jobs share a step (`train.pointwise_form=conv,linear`), the values
    that tell them apart, so that no job's numbers stand under another's name."""
    # each value as text, null as `null` (pandas' NaN for it went uncounted, and 4 jobs ran as 2)
    flat = pd.DataFrame([{k: v if isinstance(v, str) else json.dumps(v)
                          for k, v in dotted(OmegaConf.to_container(c, resolve=True)).items()} for c in configs])
    names = []
    for i, cfg in enumerate(configs):
        same = flat[[c.step.name == cfg.step.name for c in configs]]
        varying = [k for k in same.columns if same[k].nunique() > 1]
        names.append(" ".join([cfg.step.name, *(f"{k}={flat.at[i, k]}" for k in varying)]))
    if len(set(names)) < len(names):
        raise ConfigError(f"two bench jobs would share a name ({', '.join(names)}); their rows would be mixed")
    return names


def build_models(cfg, bench: BenchConfig) -> dict[str, nn.Module]:
    """Ours and, with compare=timm, the timm reference of this step (the endpoints have one) at the same width."""
    net = net_config(cfg).replace(num_classes=bench.num_classes)
    models = {"ours": build_net(net, channels_last=job_settings(cfg).channels_last)}
    name = cfg.regime.timm.get(cfg.step.name)
    if bench.compare == "timm" and name is not None:
        if net.width_multiplier != 1.0:
            raise ConfigError("compare=timm needs the paper's widths: budget.width_multiplier=1.0")
        # the same network: timm's default drop path is 0, ours follows the recipe (ConvNeXt-T: 0.1)
        models[name] = timm.create_model(name, num_classes=bench.num_classes, drop_path_rate=net.drop_path_rate)
    return models


# ------------------------------------------------------------------------------------------ measure
class Runner:
    """One model ready to run one mode (infer or train) at a batch size, as its job's train.* says (precision,
    compile, layer forms; ours in the job's layout, timm's in its own unless timm_channels_last=true);
    `block()` times `iters` iterations."""

    def __init__(self, model: nn.Module, mode: str, bench: BenchConfig, device: torch.device, batch: int,
                 settings: TrainConfig):
        self.bench, self.device, self.mode, self.batch = bench, device, mode, batch
        self.precision = settings.precision
        ours = isinstance(model, Net)
        nhwc = settings.starts_channels_last if ours else bench.timm_channels_last
        fmt = torch.channels_last if nhwc else torch.contiguous_format  # model and input, as timm's --channels-last
        self.model = model.to(device, memory_format=fmt).train(mode == "train")
        size = bench.image_size
        self.net = model if ours else None  # the net whose layer forms the row names
        if ours:
            pick_forms(model, settings.forms, (batch, 3, size, size), device, settings.precision, training=mode == "train",
                       cache_path=settings.forms_cache, layout=settings.channels_last)
            fmt = model.memory_format  # the layout the trial chose, with channels_last=auto
        self.fn = torch.compile(self.model) if settings.compile else self.model
        self.x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, bench.num_classes, (batch,), device=device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-6) if mode == "train" else None

    def step(self) -> None:
        if self.mode == "infer":
            with torch.inference_mode(), autocast(self.device, self.precision):
                self.fn(self.x)
            return
        with autocast(self.device, self.precision):
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


RUN_MODES = ("step", "e2e")  # measured on the run's own training loop (ours only)
OURS_ONLY = (*RUN_MODES, "onnx")
# the modes measured in one rotation (block by block), so the ratios between them compare like with like
ROTATIONS = (("infer", "onnx"), ("train", *RUN_MODES))
RATIOS = {"onnx": ("infer",), "e2e": ("train", "step")}  # a row's <mode>_over_<other> columns


class OnnxRunner(Runner):
    """The net in eval mode exported to ONNX (checked against torch, ablate.export) and run by onnxruntime's CPU
    provider with the bench's threads, in fp32 (the precision its rows name)."""

    def __init__(self, model: Net, bench: BenchConfig, device: torch.device, batch: int):
        import onnxruntime

        from .export import export_onnx
        self.bench, self.device, self.mode, self.batch, self.net = bench, device, "onnx", batch, None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format),  # infer runs the
                        Path(tmp) / "net.onnx", bench.image_size, name=type(model).__name__)   # model itself
            self.session = onnxruntime.InferenceSession(str(Path(tmp) / "net.onnx"), options,
                                                        providers=["CPUExecutionProvider"])
        size = bench.image_size
        self.x = torch.randn(batch, 3, size, size).numpy()

    def step(self) -> None:
        self.session.run(None, {self.session.get_inputs()[0].name: self.x})


class EndToEndRunner(Runner):
    """The run's own training step (ablate.engine.train_step) at the bench's batch, fed by its own data loader
    (e2e) or repeating one batch (step)."""

    def __init__(self, cfg, mode: str, bench: BenchConfig, device: torch.device, batch: int):
        run = run_config(cfg)  # its train.* is job_settings(cfg): the same settings as the job's other modes
        self.bench, self.device, self.batch = bench, device, batch
        self.mode = mode
        self.training = build_training(run, device, World(), batch)
        self.net = self.training.net
        self.state = TrainingState()
        self.epoch = 0
        self.batches = self._batches()
        self.fixed = next(self.batches) if mode == "step" else None

    def _batches(self):
        while True:  # epoch after epoch, as training reads them
            self.training.data.train.set_epoch(self.epoch)
            self.training.sampler.epoch = self.epoch
            yield from self.training.loader
            self.epoch += 1

    def step(self) -> None:
        self.training.model.train()
        x, y = self.fixed if self.fixed is not None else next(self.batches)
        train_step(self.training, self.state, x, y, last_micro=True)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e)


def make_runner(model, mode, bench, device, cfg) -> Runner:
    """A runner at the largest batch <= bench.batch_size that fits (halving on out-of-memory, as timm's
    benchmark decays the batch), after its first warm-up. `setup_s` is the wall time from building it to the end
    of that warm-up: the layer-form trials, and compilation with train.compile=true, which happens there."""
    batch = bench.batch_size
    while True:
        try:
            start = time.perf_counter()
            if mode in RUN_MODES:
                runner = EndToEndRunner(cfg, mode, bench, device, batch)
            elif mode == "onnx":
                runner = OnnxRunner(model, bench, device, batch)
            else:
                runner = Runner(model, mode, bench, device, batch, job_settings(cfg))
            runner.block(bench.warmup)
            runner.setup_s = time.perf_counter() - start
            return runner
        except (RuntimeError, torch.OutOfMemoryError) as e:
            if not _is_oom(e) or batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()


def measure(models: dict, bench: BenchConfig, device: torch.device, modes: dict, configs: dict) -> dict:
    """Alternates all the (model, mode) pairs block by block, so a drift in machine speed hits every one alike;
    returns per-pair images/s of every block, the batch it ran, its peak memory (CUDA: its own, above what
    the other models held) and its layer forms. modes, configs: each key's mode and job config."""
    runners, memory = {}, {}
    for model in models.values():
        model.to("cpu")  # on the device only while its own runner is made: its memory is counted once
    for key, model in models.items():
        if device.type == "cuda":
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        runners[key] = make_runner(model, modes[key], bench, device, configs[key])
        memory[key] = ((torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda"
                       else float("nan"))
    speeds = {key: [] for key in models}
    for _ in range(bench.repeats):
        for key, runner in runners.items():
            speeds[key].append(runner.block(warmup=1))
    return {"speeds": speeds, "memory": memory, "batch": {k: r.batch for k, r in runners.items()},
            "forms": {k: _forms_used(r.net) for k, r in runners.items()},
            "setup_s": {k: r.setup_s for k, r in runners.items()}}


def bench_rows(configs: dict[str, DictConfig], bench: BenchConfig, device: torch.device) -> list[dict]:
    """Every job's net (and its timm reference, if compared) measured together, one rotation (ROTATIONS) at a
    time: onnx beside infer, e2e and step beside train (ours only), so their ratios compare like with like."""
    models = {(job, name): model for job, cfg in configs.items() for name, model in build_models(cfg, bench).items()}
    rotations = [[m for m in group if m in bench.modes] for group in ROTATIONS]
    rows = []
    for modes in filter(None, rotations):
        torch.manual_seed(0)
        keyed = {(*key, mode): model for mode in modes for key, model in models.items()
                 if mode not in OURS_ONLY or key[1] == "ours"}
        result = measure(keyed, bench, device, {k: k[2] for k in keyed}, {k: configs[k[0]] for k in keyed})
        for mode in modes:
            per_mode = {k: {key[:2]: v for key, v in d.items() if key[2] == mode} for k, d in result.items()}
            for job, cfg in configs.items():
                rows.append(_row(job, cfg, bench, device, mode, per_mode))
                for other in (o for o in RATIOS.get(mode, ()) if o in modes):
                    rows[-1].update(_ratio(f"{mode}_over_{other}", per_mode["speeds"][job, "ours"],
                                           result["speeds"][job, "ours", other]))
                print(_line(rows[-1]), flush=True)
    return rows


def _ratio(name: str, a: list[float], b: list[float]) -> dict:
    """Median and range of the block-by-block ratio a/b (blocks alternate, so drifts cancel)."""
    ratios = [x / y for x, y in zip(a, b)]
    return {name: statistics.median(ratios), f"{name}_min": min(ratios), f"{name}_max": max(ratios)}


def _row(job: str, cfg, bench: BenchConfig, device: torch.device, mode: str, result: dict) -> dict:
    ours = result["speeds"][job, "ours"]
    settings = job_settings(cfg)
    deployed = mode == "onnx"  # onnxruntime: fp32, its own layout, no torch.compile
    row = {"regime": cfg.regime.name, "step": cfg.step.name, "job": job, "step_index": cfg.step.index,
           "adopted": cfg.step.adopted, "mode": mode, "device": describe_device(device),
           "runtime": f"onnxruntime {_onnxruntime_version()}" if deployed else f"torch {torch.__version__}",
           "precision": "fp32" if deployed else settings.precision,
           "channels_last": False if deployed else settings.channels_last,
           "compile": False if deployed else settings.compile,
           **{f"{kind}_form": "" if deployed else form for kind, form in settings.forms.items()},
           "forms": result["forms"][job, "ours"],
           "image_size": bench.image_size, "batch_size": result["batch"][job, "ours"],
           "width_multiplier": net_config(cfg).width_multiplier, "repeats": bench.repeats, "iters": bench.iters,
           "img_s": statistics.median(ours), "img_s_min": min(ours), "img_s_max": max(ours),
           "setup_s": result["setup_s"][job, "ours"], "peak_mem_mib": result["memory"][job, "ours"]}
    for (other_job, name), ref in result["speeds"].items():
        if other_job == job and name != "ours":  # at most one: the step's timm reference
            row.update({"timm_model": name, "timm_channels_last": bench.timm_channels_last,
                        "timm_img_s": statistics.median(ref), "timm_peak_mem_mib": result["memory"][job, name],
                        **_ratio("ratio", ours, ref)})
    return row


def _onnxruntime_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


def _forms_used(model: nn.Module | None) -> str:
    """The layout and forms our net ran in, e.g. `layout: channels_last; pointwise: conv 4, linear 32; layer_norm:
    permute 23`."""
    if model is None:
        return ""
    layout = "channels_last" if model.memory_format == torch.channels_last else "contiguous"
    return "; ".join([f"layout: {layout}", *(f"{kind}: " + ", ".join(f"{form} {n}" for form, n in sorted(counts.items()))
                                             for kind, counts in forms_in_use(model).items())])


def _line(row: dict) -> str:
    text = (f"{row['job']:>22} {row['mode']:>5} {row['image_size']}px b{row['batch_size']}: "
            f"{row['img_s']:8.1f} img/s")
    for other in RATIOS.get(row["mode"], ()):
        key = f"{row['mode']}_over_{other}"
        if key in row:
            text += f" | {row['mode']}/{other} {row[key]:.3f} [{row[key + '_min']:.3f}, {row[key + '_max']:.3f}]"
    if "ratio" in row:
        text += f" | {row['timm_model']} {row['timm_img_s']:8.1f} img/s | ours/timm {row['ratio']:.3f} " \
                f"[{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]"
    return text


def run(bench: BenchConfig, overrides: list[str]) -> pd.DataFrame:
    configs = compose_bench(overrides)
    for cfg in configs.values():  # the sizes training accepts, and no other; every job's settings, before any runs
        check_top_level_keys(cfg)
        net_config(cfg).check_input_size(bench.image_size, key="image_size")
        job_settings(cfg)
    first = next(iter(configs.values()))
    if bench.compare == "timm" and not any(cfg.step.name in cfg.regime.timm for cfg in configs.values()):
        raise ConfigError(f"compare=timm: no step here ({', '.join(configs)}) has a timm model; steps with one: "
                          f"{', '.join(first.regime.timm)} (regime={first.regime.name})")
    if any(job_settings(cfg).compile for cfg in configs.values()):
        # every job's net is compiled in this one process: more graphs than dynamo keeps by default (8), past which
        # it would silently run the rest eagerly
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 8 * len(configs))
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 16 * len(configs))
    device = pick_device(bench.device, key="device")
    if "onnx" in bench.modes and device.type != "cpu":
        raise ConfigError(f"modes=[onnx] runs onnxruntime's CPU provider, but device={bench.device} is "
                          f"{device.type}; set device=cpu")
    with torch_threads(bench.threads):
        table = pd.DataFrame(bench_rows(configs, bench, device))
    write_csv(table, bench.out, "bench")
    return table


COMMAND = Command(
    "python -m ablate.bench", "Inference and training images/s (and CUDA peak memory) of each step's network, "
    "optionally beside timm's endpoint models, interleaved in one process.", BenchConfig, overrides=True,
    examples=("python -m ablate.bench +step=baseline,separate_downsampling compare=timm batch_size=16",
              "python -m ablate.bench +sweep=roadmap image_size=32 batch_size=128 budget.width_multiplier=0.25"))


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
