"""Data: an embedded procedural dataset, and any ImageFolder root, streamed or decoded into memory.

Augmentations are timm's (`create_transform`: random-resized crop, flip, RandAugment, random erasing) and are
seeded per (seed, epoch, sample), so a run's data are the same whatever the worker count, the number of
processes or an interruption.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform
from torch.utils.data import Dataset
from tqdm import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DataError(ValueError):
    """A data root, folder or file cannot be used."""


# ---------------------------------------------------------------------------------------------- sources
ORIENTATIONS = 5  # stripe angles 0, +-22.5, +-45, +-67.5, 90 degrees: a horizontal flip keeps the class
FREQUENCIES = (3.0, 6.0)  # stripe pairs across the image: coarse, fine (2x apart, beyond crop-zoom jitter)


def synthetic_class_names(num_classes: int) -> list[str]:
    return [f"{90 / (ORIENTATIONS - 1) * (c % ORIENTATIONS):g}deg-{'fine' if c >= ORIENTATIONS else 'coarse'}"
            for c in range(num_classes)]


def synthetic_images(n: int, size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` RGB uint8 images (n, size, size, 3): a striped shape on a noisy background.

    The class is the stripes' texture: orientation (|angle| of 5) x frequency (coarse, fine); the angle's sign is
    random, so the horizontal flip of standard augmentation never changes a label. Shape (disk, square,
    diamond), position, size, colours, phase and noise are random nuisances, so a convnet must learn oriented
    texture filters. Deterministic in (n, size, num_classes, seed).
    """
    if not 2 <= num_classes <= ORIENTATIONS * len(FREQUENCIES):
        raise DataError(f"data.num_classes={num_classes} is not allowed for synthetic data; "
                        f"choose 2 to {ORIENTATIONS * len(FREQUENCIES)}")
    g = torch.Generator().manual_seed(seed)
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = coords[None, :, None], coords[None, None, :]
    col = lambda v: v[:, None, None]  # noqa: E731
    dx, dy = xx - col(0.35 + 0.3 * u(n)), yy - col(0.35 + 0.3 * u(n))
    radius = col(0.25 + 0.15 * u(n))
    shape = torch.randint(0, 3, (n,), generator=g)
    masks = torch.stack([dx**2 + dy**2 < radius**2, torch.maximum(dx.abs(), dy.abs()) < radius * 0.85,
                         dx.abs() + dy.abs() < radius * 1.2], 1)
    mask = masks[torch.arange(n), shape].float()[:, None]
    sign = torch.where(u(n) < 0.5, -1.0, 1.0)
    angle = col(sign * math.pi / 2 * (labels % ORIENTATIONS).float() / (ORIENTATIONS - 1) + 0.05 * (u(n) - 0.5))
    freq = col(torch.tensor(FREQUENCIES)[labels // ORIENTATIONS] * (0.9 + 0.2 * u(n)))
    phase = col(2 * math.pi * u(n))
    stripes = (torch.sin(2 * math.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase) > 0).float()
    c1, c2, bg = u(n, 3, 1, 1), u(n, 3, 1, 1), u(n, 3, 1, 1)
    fg = c1 * stripes[:, None] + c2 * (1 - stripes[:, None])
    img = bg * (1 - mask) + fg * mask + 0.08 * torch.randn(n, 3, size, size, generator=g)
    img = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return img.numpy(), labels.numpy()


def scan_image_folder(split_dir: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) of every image under split_dir/<class>/, classes sorted as torchvision does."""
    if not split_dir.is_dir():
        raise DataError(f"data folder {split_dir} does not exist; an ImageFolder root needs train/ and val/ "
                        "with one sub-folder per class")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    samples = [(p, i) for i, c in enumerate(classes) for p in sorted((split_dir / c).rglob("*"))
               if p.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        raise DataError(f"data folder {split_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}) in class sub-folders")
    return samples, classes


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def decode_all(samples: list[tuple[Path, int]], desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once into one uint8 array (all must share a size, e.g. CIFAR's 32x32)."""
    first = np.asarray(load_image(samples[0][0]))
    images = np.empty((len(samples), *first.shape), np.uint8)
    for i, (path, _) in enumerate(tqdm(samples, desc=desc, unit="img", mininterval=2, leave=False)):
        a = np.asarray(load_image(path))
        if a.shape != first.shape:
            raise DataError(f"image {path} is {a.shape[1]}x{a.shape[0]}, others {first.shape[1]}x{first.shape[0]}: "
                            "data.in_memory needs one image size; set data.in_memory=false")
        images[i] = a
    return images, np.array([y for _, y in samples], np.int64)


# --------------------------------------------------------------------------------------------- datasets
class SeededTransform:
    """Applies a random transform with RNGs seeded by (seed, epoch, index), leaving global RNGs untouched."""

    def __init__(self, transform, seed: int):
        self.transform, self.seed, self.epoch = transform, seed, 0

    def __call__(self, img: Image.Image, index: int) -> torch.Tensor:
        s = hash((self.seed, self.epoch, index)) & 0xFFFFFFFF
        py, npy, pt = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(s), np.random.seed(s), torch.manual_seed(s)
        try:
            return self.transform(img)
        finally:
            random.setstate(py), np.random.set_state(npy), torch.set_rng_state(pt)


class ImageDataset(Dataset):
    """Images held decoded in memory (`images` array) or read from disk (`paths`), with labels."""

    def __init__(self, labels, transform: SeededTransform, images: np.ndarray | None = None, paths=None):
        self.labels, self.transform, self.images, self.paths = labels, transform, images, paths

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i]) if self.images is not None else load_image(self.paths[i])
        return self.transform(img, i), int(self.labels[i])

    def set_epoch(self, epoch: int) -> None:
        self.transform.epoch = epoch


@dataclass
class Splits:
    train: ImageDataset
    val: ImageDataset
    classes: list[str]


def build_transforms(data, recipe, seed: int) -> tuple[SeededTransform, SeededTransform]:
    train = create_transform(
        data.image_size, is_training=True, scale=tuple(data.crop_scale), hflip=0.5,
        color_jitter=recipe.color_jitter, auto_augment=recipe.auto_augment, interpolation=recipe.interpolation,
        re_prob=recipe.random_erasing, re_mode="pixel", re_count=1)
    val = create_transform(data.image_size, is_training=False, crop_pct=data.eval_crop_pct,
                           interpolation=recipe.interpolation)
    return SeededTransform(train, seed), SeededTransform(val, seed)


def _subset(n: int, keep: int | None, seed: int) -> np.ndarray:
    """A fixed class-agnostic random subset of `keep` of `n` indices (all if keep is None)."""
    if keep is None or keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


def build_datasets(data, recipe, seed: int) -> Splits:
    train_tf, val_tf = build_transforms(data, recipe, seed)
    if data.kind == "synthetic":
        # the data seed is fixed (not the run seed): every run sees the same dataset
        xs, ys = synthetic_images(data.train_size + data.val_size, data.image_size, data.num_classes, data.seed)
        t = slice(0, data.train_size)
        v = slice(data.train_size, None)
        classes = synthetic_class_names(data.num_classes)
        return Splits(ImageDataset(ys[t], train_tf, xs[t]), ImageDataset(ys[v], val_tf, xs[v]), classes)

    root = Path(data.root).expanduser()
    splits, classes = {}, None
    for split, tf, keep in (("train", train_tf, data.train_subset), ("val", val_tf, data.val_subset)):
        samples, split_classes = scan_image_folder(root / split)
        if classes is not None and split_classes != classes:
            raise DataError(f"{root}/train and {root}/val have different class folders")
        classes = split_classes
        samples = [samples[i] for i in _subset(len(samples), keep, data.seed)]
        if data.in_memory:
            images, labels = decode_all(samples, f"decoding {root / split}")
            splits[split] = ImageDataset(labels, tf, images=images)
        else:
            splits[split] = ImageDataset(np.array([y for _, y in samples]), tf, paths=[p for p, _ in samples])
    if len(classes) != data.num_classes:
        raise DataError(f"data.num_classes={data.num_classes} but {root}/train has {len(classes)} class folders; "
                        f"set data.num_classes={len(classes)}")
    return Splits(splits["train"], splits["val"], classes)
