"""Shared test helpers (imported by the tests; conftest.py holds only fixtures and markers)."""
import os
import subprocess
import sys

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from ablate import CONF_DIR, REPO_ROOT
from ablate.complexity import PAPER_NET
from ablate.config import compose_config, net_config, step_overrides
from ablate.roadmap import roadmap
from stages import build_net

ROOT = REPO_ROOT
STEPS = list(roadmap().steps)


def change_flags(step: str) -> set[str]:
    """The NetConfig fields a step's declaration may change: the net keys it sets, and those conf/net/parametric.yaml
    reads from a config group it chooses (the recipe's drop path, layer scale and init)."""
    effect = roadmap().steps[step].effect
    net = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "net" / "parametric.yaml"))
    read = {k for k, v in net.items() for group in effect.choices if f"${{{group}." in str(v)}
    return {k.removeprefix("net.") for k in effect.values if k.startswith("net.")} | read


CHANGE_FLAGS = {change: change_flags(change) for change in roadmap().changes()}
# a few seconds per run: quarter-width nets, 256 synthetic images, 2 epochs
SMOKE = ["budget=smoke", "data.train_size=256", "data.val_size=128"]
# a second or two per run: 64 synthetic images (2 updates an epoch)
TINY_RUN = ["budget=smoke", "data.train_size=64", "data.val_size=32"]
# the bench's and plan's own keys for the shortest measurement
TINY_BENCH = ["image_size=32", "batch_size=2", "iters=1", "repeats=2", "warmup=1", "threads=1"]
TINY_PLAN = ["warmup=0", "iters=1", "repeats=1", "data_batches=1", "train.threads=1"]


def step_net(step: str, regime: str = "r50", extra: list[str] = (), channels_last: bool = True):
    """The paper's network of a step (full width, 1000 classes) unless `extra` says otherwise."""
    cfg = net_config(compose_config(step_overrides(step, regime, [*PAPER_NET, *extra])))
    return build_net(cfg, channels_last=channels_last)


def cli(*args: str, env_extra: dict | None = None, module=("-m", "ablate"), cwd=ROOT) -> subprocess.CompletedProcess:
    """Runs `python -m ablate ARGS` (or another module) as a user would, capturing its output."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, *module, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def killed_after(epoch: int) -> dict:
    """env_extra for cli(): the run kills itself (SIGKILL) after this epoch's checkpoint."""
    from ablate.train import KILL_AFTER_EPOCH_ENV
    return {KILL_AFTER_EPOCH_ENV: str(epoch)}


def start_cli(*args: str, module=("-m", "ablate"), cwd=ROOT) -> subprocess.Popen:
    """`python -m ablate ARGS` started in the background."""
    return subprocess.Popen([sys.executable, *module, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def photo_folder(root, size=224, per_class=3, classes=("n01", "n02"), grey_first=True):
    """A small ImageFolder of 224 px images with real structure (gradients and noise), one grayscale."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                ramp = np.linspace(0, 255, size)[None, :, None] * (1 + k) / 2
                pixels = np.clip(ramp + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(pixels)
                if grey_first and i == 0 and split == "val":
                    img = img.convert("L")  # Imagenette holds 242 grayscale images
                img.save(root / split / c / f"{split}_{i}.JPEG", quality=90)
    return root


EXPERIMENTS = (None, "cifar10_proxy", "imagenette_proxy")


def identity_table() -> list[dict]:
    """The identity hash of every checkpoint's composition: each +step=, +undo= and +only= option, both regimes,
    alone and under each proxy experiment. A restructuring must leave every row as it was (tests/golden/identity.csv),
    so sweeps started before it resume after it. Computed from the composed config, as RunConfig does, without
    the data the experiments name."""
    from ablate.config import identity_hash
    road = roadmap()
    options = {"step": sorted(road.steps), **{g: sorted(road.derived_options(g)) for g in ("undo", "only")}}
    rows = []
    for regime in ("r50", "r200"):
        for experiment in EXPERIMENTS:
            for group, names in options.items():
                for name in names:
                    overrides = [f"+{group}={name}", f"regime={regime}"]
                    overrides += [f"+experiment={experiment}"] if experiment else []
                    raw = OmegaConf.to_container(compose_config(overrides), resolve=True)  # no data needed
                    raw.pop("hydra", None)
                    rows.append({"regime": regime, "experiment": experiment or "", "group": group, "name": name,
                                 "identity_hash": identity_hash(raw)})
    return rows
