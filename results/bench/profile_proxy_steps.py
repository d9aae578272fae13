"""Where the training step of each proxy net spends its time, with the defaults: torch.profiler's self CPU time of
the bench's bare step (random input, cross-entropy, SGD; one thread) in six groups: the depthwise convolutions'
backward (weight 4-d with one input channel per group), the other convolutions' backward, all convolutions'
forward, matrix products (the 1x1 layers in their Linear form, the head), BatchNorm (forward and backward), and the
rest (activations, elementwise, norms over channels, SGD), over two steps after three unprofiled ones. Says how
much of a step any change of layer forms could reach.

    PYTHONPATH=. taskset -c 0 python results/bench/profile_proxy_steps.py OUT.csv OVERRIDE...
    # e.g. +experiment=imagenette_proxy +sweep=roadmap image_size=96 batch_size=64 budget.width_multiplier=0.25
    #      train.forms_cache=/work/bench_forms_96.json   (image_size/batch_size are read for the bench)
"""
import sys
from collections import defaultdict

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from ablate.bench import BenchConfig, build_models, compose_bench, make_runner
from ablate.device import torch_threads
from ablate.provenance import write_csv

GROUPS = ("dwconv_backward", "conv_backward", "conv_forward", "matmul", "batch_norm", "other")
MATMUL = {"aten::mm", "aten::addmm", "aten::bmm"}
WARM_STEPS = 3


def group(event) -> str:
    """The group of one profiled op, from its name and (for convolutions) its weight's shape."""
    name = event.key
    if "convolution_backward" in name:
        weight = event.input_shapes[2] if len(event.input_shapes) > 2 else []
        return "dwconv_backward" if len(weight) == 4 and weight[1] == 1 else "conv_backward"
    if "convolution" in name:
        return "conv_forward"
    if name in MATMUL:
        return "matmul"
    if "batch_norm" in name:
        return "batch_norm"
    return "other"


def main(out: str, overrides: list[str]) -> None:
    given = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("+"))
    bench = BenchConfig(image_size=int(given["image_size"]), batch_size=int(given["batch_size"]), num_classes=10,
                        modes=("train",), warmup=1, iters=1, repeats=1, threads=1)
    net_overrides = [o for o in overrides if o.split("=", 1)[0] not in ("image_size", "batch_size")]
    rows = []
    with torch_threads(1):
        for job, cfg in compose_bench(net_overrides).items():
            torch.manual_seed(0)
            runner = make_runner(build_models(cfg, bench)["ours"], "train", bench, torch.device("cpu"), cfg)
            for _ in range(WARM_STEPS):  # oneDNN builds its kernels on the first calls: keep them out of the profile
                runner.step()
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(2):
                    runner.step()
            # self time of the ops at the top of each call chain: children's time is in their own rows
            ms = defaultdict(float)
            for event in prof.key_averages(group_by_input_shape=True):
                ms[group(event)] += event.self_cpu_time_total / 1e3 / 2
            total = sum(ms.values())
            row = {"step": cfg.step.name, "image_size": bench.image_size, "batch_size": bench.batch_size,
                   "step_ms": total, **{f"{g}_share": ms[g] / total for g in GROUPS}}
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    write_csv(pd.DataFrame(rows), out, "profile_proxy_steps")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
