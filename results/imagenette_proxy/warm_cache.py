# From the sweep's frozen work tree: cd /work/sweep-wt && taskset -c 1 python /path/to/warm_cache.py
# Makes the ImageNet-C cache of the sweep's val subset (500 images, 96 px eval geometry) once, so the jobs' own
# robustness time is evaluation only. The model does not enter the cache key; a tiny one stands in.
import time

import torch

from ablate.config import compose_config, run_config
from ablate.data import build_datasets
from ablate.robustness import evaluate_robustness
torch.set_num_threads(1)
run = run_config(compose_config(["+experiment=imagenette_proxy", "+step=recipe", "seed=0",
                                 "eval.corruptions=imagenet_c", "eval.subset=500"]))
data = build_datasets(run.data, run.augment, run.seed)
net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10))
t = time.perf_counter()
r = evaluate_robustness(net, data.val, run.eval, torch.device("cpu"))
print(f"cache made in {time.perf_counter() - t:.0f} s; subset {r['subset']}, corruptions {len(r['corruptions'])}")
