"""Corruption robustness of trained runs: top-1 under every corruption and severity of a fixed val subset.

A run evaluates it after its last epoch when `eval.corruptions` is set (a suite, `cifar10c` or `imagenet_c`, or a
list of the corruptions of ablate/corruption_suites.py under `eval.suite`'s parameters), and `python -m ablate.robustness
DIR` adds it to finished runs from their saved weights. Either way the record's `robustness` field holds top-1 per
(corruption, severity), clean top-1 on the same subset, the mean corruption top-1 and its relative drop. The subset
(eval.subset images, drawn once with a fixed seed) and the corrupted images (seeded per corruption and severity) are
the same for every run; within one process they are made once and reused. `cifar10c` corrupts the images as
evaluated; `imagenet_c` corrupts the 224 px val files, as ImageNet-C does, and then applies the run's eval transform.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchvision.transforms.functional as TF
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file

from stages import build_net

from .cli import Command, SomeFailed, one_line
from .config import EvalConfig, RunConfig, run_config
from .corruption_suites import NOT_MADE, SUITES, corruption_list
from .corruptions import corrupt
from .data import BatchedImages, build_datasets, load_image
from .device import pick_device, torch_threads
from .errors import DataError
from .io import atomic_write_bytes
from .record import RESULT, WEIGHTS, RunRecord, read_record, write_record
from .rundir import RunDirLock

SUBSET_SEED = 0  # the val subset is the same for every run and every seed
_CORRUPTED: dict[tuple[str, str, int], np.ndarray] = {}  # (clean subset digest, corruption, severity) -> images


def subset_indices(n: int, size: int) -> np.ndarray:
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:min(size, n)])


def val_subset(dataset, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed subset of the val split as evaluated (resized, centre-cropped), uint8 (n, H, W, 3), and labels."""
    idx = subset_indices(len(dataset), size)
    x = dataset.eval_pixels(torch.as_tensor(idx))
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), np.asarray(dataset.labels)[idx]


def source_subset(dataset, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The same subset as val_subset, read from its files at the suite's size (ImageNet-C: Resize(256) and
    CenterCrop(224) of any file that is not already side x side), uint8 (n, side, side, 3), and labels."""
    if dataset.sources is None:
        raise DataError(f"a suite made for {side} px images corrupts the val files; this data has none (synthetic): "
                        "use eval.suite=cifar10c")
    idx = subset_indices(len(dataset), size)
    images = []
    for i in idx:
        img = load_image(dataset.sources[i])
        if img.size != (side, side):
            img = TF.center_crop(TF.resize(img, round(side * 256 / 224)), side)
        images.append(np.asarray(img))
    return np.stack(images), np.asarray(dataset.labels)[idx]


def as_evaluated(dataset, images: np.ndarray) -> np.ndarray:
    """uint8 images (n, S, S, 3) at a suite's size through the val split's eval geometry."""
    return np.stack([np.asarray(dataset.eval_geometry(Image.fromarray(x))) for x in images])


def corrupted(clean: np.ndarray, name: str, severity: int, cache_dir: str | None, suite: str = "cifar10c",
              finish=None, finish_key: str = "") -> np.ndarray:
    """The corrupted subset, made once: kept in memory for this process and, with a cache_dir, on disk for
    later ones (keyed by the clean images' digest, and for a suite made at its own size by the suite and the
    eval geometry `finish` applies, so another subset, dataset or resolution never reads it)."""
    salt = b"" if suite == "cifar10c" else f"{suite}:{finish_key}".encode()  # cifar10c keeps its older keys
    digest = hashlib.sha256(clean.tobytes() + salt).hexdigest()[:16]
    key = (digest, name, severity)
    if key in _CORRUPTED:
        return _CORRUPTED[key]
    path = Path(cache_dir).expanduser() / digest / f"{name}-{severity}.npy" if cache_dir else None
    if path is not None and path.exists():
        images = np.load(path)
    else:
        images = corrupt(clean, name, severity, suite)
        if finish is not None:
            images = finish(images)
        if path is not None:
            buf = io.BytesIO()
            np.save(buf, images)
            atomic_write_bytes(path, buf.getvalue())
    _CORRUPTED[key] = images
    return images


@torch.no_grad()
def top1(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, normalize, device, batch: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start:start + batch]).permute(0, 3, 1, 2).float()
        logits = model(normalize(x).to(device))
        correct += (logits.argmax(1).cpu() == torch.from_numpy(labels[start:start + batch])).sum().item()
    return 100 * correct / len(images)


def evaluate_robustness(model: torch.nn.Module, val, eval_cfg: EvalConfig, device) -> dict:
    """The `robustness` field of a record: the model on every corruption and severity of the val subset."""
    start = time.perf_counter()
    suite = eval_cfg.suite_name
    side = SUITES[suite].source_size
    if side is None:  # corrupt the images as evaluated
        source, labels = val_subset(val, eval_cfg.subset)
        finish, finish_key, clean = None, "", source
    else:  # corrupt the files at the suite's size, then evaluate them as the val split is
        source, labels = source_subset(val, eval_cfg.subset, side)
        finish, finish_key = (lambda images: as_evaluated(val, images)), val.geometry
        clean = finish(source)
    normalize = BatchedImages.normalizer()
    clean_top1 = top1(model, clean, labels, normalize, device, eval_cfg.batch_size)
    table = {name: {str(s): top1(model, corrupted(source, name, s, eval_cfg.cache_dir, suite, finish, finish_key),
                                 labels, normalize, device, eval_cfg.batch_size)
                    for s in eval_cfg.severities}
             for name in corruption_list(eval_cfg.corruptions)}
    mean = float(np.mean([v for per in table.values() for v in per.values()]))
    return {"suite": suite, "corruptions": list(table), "severities": list(eval_cfg.severities),
            "subset": len(clean), "subset_seed": SUBSET_SEED, "not_made": sorted(NOT_MADE), "clean_top1": clean_top1,
            "top1": table,
            "mean_corruption_top1": mean, "relative_drop": (clean_top1 - mean) / clean_top1 if clean_top1 else None,
            "time_s": time.perf_counter() - start}


def wanted(record: RunRecord, eval_cfg: EvalConfig) -> bool:
    """Whether a finished record lacks the robustness that eval_cfg asks for (or holds another kind)."""
    if eval_cfg.corruptions is None:
        return False
    have = record.robustness or {}
    asked = (eval_cfg.suite_name, list(corruption_list(eval_cfg.corruptions)), list(eval_cfg.severities),
             min(eval_cfg.subset, record.val_images or eval_cfg.subset))
    # records from before suites were all cifar10c
    return (have.get("suite", "cifar10c"), have.get("corruptions"), have.get("severities"), have.get("subset")) != asked


def add_to_record(out: Path, run: RunConfig, device) -> RunRecord:
    """Evaluates a finished run's saved weights and writes the record's `robustness` field. The caller holds
    the run directory's lock."""
    record = read_record(out / RESULT)
    net = build_net(run.net, channels_last=run.train.starts_channels_last).to(device)
    net.load_state_dict(load_file(out / WEIGHTS))
    data = build_datasets(run.data, run.augment, run.seed)
    record = dataclasses.replace(record, robustness=evaluate_robustness(net, data.val, run.eval, device))
    write_record(out, record)
    return record


# ------------------------------------------------------------------------------------------------ command
@dataclass(frozen=True)
class RobustnessOptions(EvalConfig):
    """The command's keys: the run config's `eval.*` (named without the prefix) and where it evaluates."""
    PREFIX: ClassVar[str] = ""
    corruptions: str | tuple[str, ...] = "cifar10c"
    device: str = "auto"
    threads: int | None = None

    @property
    def eval(self) -> EvalConfig:
        return EvalConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EvalConfig)})


def run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"directory {root} does not exist")
    return sorted(p.parent for p in root.rglob(RESULT))


def add_to_runs(root: str, options: RobustnessOptions, overrides: list[str]) -> None:
    eval_cfg = options.eval
    device = pick_device(options.device, key="device")
    failed = []
    with torch_threads(options.threads):
        for out in run_dirs(Path(root)):
            try:
                add_to_run(out, eval_cfg, device)
            except Exception as e:  # a damaged run (weights, record, a held lock) is named; the others go on
                print(f"error: {out}: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
                failed.append(out)
    if failed:
        raise SomeFailed(f"{len(failed)} run(s) under {root} were not evaluated (named above); the others were")


def add_to_run(out: Path, eval_cfg: EvalConfig, device) -> None:
    """One run directory: skipped when unfinished, without weights, or already evaluated as asked."""
    record = read_record(out / RESULT)
    if not record.finished or not (out / WEIGHTS).exists():
        print(f"{out}: skipped ({record.status}{'' if (out / WEIGHTS).exists() else ', no weights'})")
        return
    if not wanted(record, eval_cfg):
        print(f"{out}: has it (mean corruption top-1 {record.robustness['mean_corruption_top1']:.2f})")
        return
    raw = {**record.config, "eval": json.loads(json.dumps(eval_cfg.__dict__, default=list))}
    run = run_config(OmegaConf.create(raw))
    with RunDirLock(out):
        r = add_to_record(out, run, device).robustness
    print(f"{out}: clean {r['clean_top1']:.2f}, mean corruption top-1 {r['mean_corruption_top1']:.2f} "
          f"({r['time_s']:.0f} s)")


COMMAND = Command(
    "python -m ablate.robustness", "Adds corruption robustness to every finished run under DIR, from its saved "
    "weights (the same fields a run with eval.corruptions=... records).", RobustnessOptions, positional=("DIR",),
    examples=("python -m ablate.robustness multirun/cifar10_proxy/r50",
              "python -m ablate.robustness outputs/r50 corruptions=[fog,snow] severities=[3,5] subset=500",
              "python -m ablate.robustness multirun/imagenette_proxy/r50 corruptions=imagenet_c subset=500"))


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, add_to_runs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
