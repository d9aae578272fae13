"""The training step of every proxy net as the engine ran it before revision b216114 against today's defaults, in
one rotation. Before b216114 the engine built its net with NHWC activations but left the 4-d weights NCHW (only the
bench converted them, so `python -m ablate.bench` timed a faster net than training ran); the old defaults were
also conv 1x1 layers and a fixed NHWC layout. Three nets per step, the bench's bare training step (random input,
cross-entropy, SGD), blocks interleaved:

  engine_before   conv 1x1 layers, NHWC activations, NCHW weights (training before b216114, old defaults)
  bench_before    conv 1x1 layers, NHWC activations and weights (what the bench timed for the old defaults)
  now             the defaults: auto forms, channels_last=auto (weights follow the layout)

    PYTHONPATH=. taskset -c 0 python results/bench/engine_weights_layout.py OUT.csv OVERRIDE...
    # e.g. +experiment=cifar10_proxy +sweep=roadmap image_size=32 batch_size=128 budget.width_multiplier=0.25
    #      train.forms_cache=/work/bench_forms_32.json   (image_size/batch_size are read for the bench too)
"""
import statistics
import sys

import pandas as pd
import torch

from ablate.bench import BenchConfig, build_models, compose_bench, make_runner
from ablate.device import torch_threads
from ablate.provenance import write_csv

VARIANTS = {"engine_before": ["train.pointwise_form=conv", "train.channels_last=true"],
            "bench_before": ["train.pointwise_form=conv", "train.channels_last=true"],
            "now": []}


def main(out: str, overrides: list[str]) -> None:
    given = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("+"))
    bench = BenchConfig(image_size=int(given["image_size"]), batch_size=int(given["batch_size"]), num_classes=10,
                        modes=("train",), warmup=1, iters=int(given.get("iters", 3)),
                        repeats=int(given.get("repeats", 5)), threads=1)
    net_overrides = [o for o in overrides if o.split("=", 1)[0] not in ("image_size", "batch_size", "iters", "repeats")]
    device = torch.device("cpu")
    with torch_threads(1):
        runners = {}
        for variant, extra in VARIANTS.items():
            for job, cfg in compose_bench([*net_overrides, *extra]).items():
                torch.manual_seed(0)
                runner = make_runner(build_models(cfg, bench)["ours"], "train", bench, device, cfg)
                if variant == "engine_before":  # weights back to NCHW, activations still NHWC
                    runner.model.to(memory_format=torch.contiguous_format)
                    runner.model.memory_format = torch.channels_last
                runners[cfg.step.name, variant] = runner
        speeds = {key: [] for key in runners}
        for _ in range(bench.repeats):
            for key, runner in runners.items():
                speeds[key].append(runner.block(warmup=1))
    rows = []
    for step in dict.fromkeys(s for s, _ in runners):
        row = {"step": step, "image_size": bench.image_size, "batch_size": bench.batch_size}
        for variant in VARIANTS:
            row[f"{variant}_img_s"] = statistics.median(speeds[step, variant])
        for variant in ("engine_before", "bench_before"):
            ratios = [n / b for n, b in zip(speeds[step, "now"], speeds[step, variant])]
            row[f"now_over_{variant}"] = statistics.median(ratios)
            row[f"now_over_{variant}_min"], row[f"now_over_{variant}_max"] = min(ratios), max(ratios)
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    for variant in ("engine_before", "bench_before"):  # summed step time (1 / img/s), before over now
        print(f"summed step time, {variant} / now: "
              f"{(1 / table[f'{variant}_img_s']).sum() / (1 / table['now_img_s']).sum():.3f}")
    write_csv(table, out, "engine_weights_layout")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
