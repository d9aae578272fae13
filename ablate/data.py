"""Data: an embedded procedural dataset, and any ImageFolder root, streamed or decoded into memory.

Two pipelines draw the same augmentations, seeded per (seed, epoch, sample), so a run's data are the same
whatever the worker count, the number of processes or an interruption:
- per_sample: timm's `create_transform` (random-resized crop, flip, RandAugment, random erasing) on one PIL image
  at a time, for streamed folders and the full recipe;
- batched: images held as one uint8 tensor, and random-resized crop + flip (the light augmentation) applied to
  whole batches with tensor ops, as the fast CIFAR trainers do (airbench, hlb-CIFAR10). Same crop distribution
  as torchvision's RandomResizedCrop (integer boxes, 10 tries, centre-crop fallback).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.transforms import functional as TF
from tqdm import tqdm

from .distributed import World
from .io import atomic_write_json
from .seeding import derive_seed, generator

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
    """(path, class index) of every image under split_dir/<class>/, classes sorted as torchvision does.

    Refused, naming the folder: a hidden class folder (`.ipynb_checkpoints/`), a class with no image, and any
    image reached twice (a class folder that links back into the split would relabel every image under it)."""
    if not split_dir.is_dir():
        raise DataError(f"data folder {split_dir} does not exist; an ImageFolder root needs train/ and val/ "
                        "with one sub-folder per class")
    class_dirs = sorted((d for d in split_dir.iterdir() if d.is_dir()), key=lambda d: d.name)
    hidden = [d.name for d in class_dirs if d.name.startswith(".")]
    if hidden:
        raise DataError(f"data folder {split_dir} holds hidden folder(s) {', '.join(hidden)}: a class folder may "
                        "not start with '.'; move them out of the split")
    classes = [d.name for d in class_dirs]
    samples, seen = [], {}
    for i, d in enumerate(class_dirs):
        files = [p for p in sorted(d.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            raise DataError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "remove it or add its images")
        for p in files:
            real = p.resolve()
            if real in seen:
                raise DataError(f"image {real} is reached twice, as {seen[real]} and as {p}: "
                                "a class folder may not link to another or back into its split")
            seen[real] = p
            samples.append((p, i))
    if not samples:
        raise DataError(f"data folder {split_dir} holds no class sub-folders with images")
    return samples, classes


def load_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def eval_resize(data) -> int:
    """The shorter side the eval transform resizes to before its centre crop (timm: floor(size / crop_pct))."""
    return math.floor(data.image_size / data.eval_crop_pct)


def resize_shorter(img: Image.Image, short: int, interpolation: str) -> Image.Image:
    """The eval transform's resize: the shorter side to `short` (torchvision's Resize of the PIL image)."""
    if min(img.size) == short:
        return img
    return TF.resize(img, short, interpolation=TF.InterpolationMode(interpolation))


def decode_all(samples: list[tuple[Path, int]], desc: str, short: int | None = None,
               interpolation: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Decode every image once into one uint8 array (all must share a size, e.g. CIFAR's 32x32). With `short`,
    each image's shorter side is first resized to `short` exactly as the eval transform resizes it (torchvision's
    Resize on the PIL image), so the in-memory copy is as small as the run needs and evaluating it is a centre
    crop that equals the per-sample eval transform's output."""
    def decode(path: Path) -> np.ndarray:
        img = load_image(path)
        return np.asarray(img if short is None else resize_shorter(img, short, interpolation))

    first = decode(samples[0][0])
    images = np.empty((len(samples), *first.shape), np.uint8)
    for i, (path, _) in enumerate(tqdm(samples, desc=desc, unit="img", mininterval=2, leave=False)):
        a = decode(path)
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
        s = derive_seed(self.seed, "augment", self.epoch, index)
        py, npy, pt = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(s), np.random.seed(s), torch.manual_seed(s)
        try:
            return self.transform(img)
        finally:
            random.setstate(py), np.random.set_state(npy), torch.set_rng_state(pt)


class ImageDataset(Dataset):
    """Images held decoded in memory (`images` array) or read from disk (`paths`), with labels, transformed one
    PIL image at a time.

    Both dataset kinds (this and BatchedImages) show evaluators one face: `labels`, `sources` (the file of each
    image, None for synthetic data), `eval_pixels(index)`, `eval_geometry(img)` and `geometry`."""

    def __init__(self, labels, transform: SeededTransform, images: np.ndarray | None = None, paths=None,
                 sources: list[Path] | None = None):
        self.labels, self.transform, self.images, self.paths = labels, transform, images, paths
        self.sources = sources if sources is not None else paths  # the file of each image (None: synthetic)

    def __len__(self) -> int:
        return len(self.labels)

    def _image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i]) if self.images is not None else load_image(self.paths[i])

    def __getitem__(self, i: int):
        return self.transform(self._image(i), i), int(self.labels[i])

    @property
    def _geometry(self) -> list:
        """The eval transform's resize and centre crop (its normalisation left out)."""
        return [t for t in self.transform.transform.transforms if isinstance(t, (T.Resize, T.CenterCrop))]

    @property
    def geometry(self) -> str:
        """What eval_geometry does, as a key (for caches of images made through it)."""
        return repr(self._geometry)

    def eval_geometry(self, img: Image.Image) -> Image.Image:
        """One image through the eval transform's resize and centre crop."""
        for t in self._geometry:
            img = t(img)
        return img

    def eval_pixels(self, index) -> torch.Tensor:
        """Float pixels (n, 3, H, W) of the evaluated images at `index`: resized and centre-cropped, not normalised."""
        return torch.stack([torch.from_numpy(np.asarray(self.eval_geometry(self._image(int(i))))).permute(2, 0, 1)
                            for i in index]).float()

    def set_epoch(self, epoch: int) -> None:
        self.transform.epoch = epoch


CROP_TRIES = 10  # torchvision RandomResizedCrop.get_params


def random_resized_crop_boxes(u: np.ndarray, height: int, width: int, scale, ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params for many samples at once: (n, 4) integer boxes (top, left,
    h, w). `u` (n, 4 * CROP_TRIES) holds uniform draws in [0, 1): area, log-ratio, top, left of each try."""
    area_u, ratio_u, top_u, left_u = np.split(u, 4, axis=1)
    target_area = height * width * (scale[0] + (scale[1] - scale[0]) * area_u)
    log_r = np.log(ratio)
    aspect = np.exp(log_r[0] + (log_r[1] - log_r[0]) * ratio_u)
    w = np.rint(np.sqrt(target_area * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target_area / aspect)).astype(np.int64)
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    top = np.floor(top_u * (height - h + 1)).astype(np.int64)
    left = np.floor(left_u * (width - w + 1)).astype(np.int64)
    first = ok.argmax(1)
    rows = np.arange(len(u))
    boxes = np.stack([top[rows, first], left[rows, first], h[rows, first], w[rows, first]], 1)
    # no try fits: torchvision's fallback, a centre crop at the aspect ratio clamped to `ratio`
    in_ratio = width / height
    fw, fh = width, height
    if in_ratio < min(ratio):
        fh = int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw = int(round(height * max(ratio)))
    boxes[~ok.any(1)] = ((height - fh) // 2, (width - fw) // 2, fh, fw)
    return boxes


PIL_SUPPORT = {"box": 0.5, "bilinear": 1.0, "bicubic": 2.0}


def _pil_filter(d: torch.Tensor, mode: str) -> torch.Tensor:
    """PIL's resampling kernels: box, triangle (bilinear) and Keys cubic with a = -0.5 (bicubic)."""
    if mode == "box":
        return ((d >= -0.5) & (d < 0.5)).to(d.dtype)
    d = d.abs()
    if mode == "bilinear":
        return (1 - d).clamp(min=0)
    a = -0.5
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = (((d - 5) * d + 8) * d - 4) * a
    return torch.where(d < 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def resample_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, mode: str) -> torch.Tensor:
    """(n, out_size, in_size) weights that resize each sample's span [start, start + length) of an axis to
    out_size pixels as PIL's `crop(...).resize(...)` does: pixel-centre sampling, the kernel widened by the
    scale when shrinking (antialias), and taps outside the span dropped with the weights renormalised."""
    scale = length.float() / out_size                                     # (n,)
    filterscale = scale.clamp(min=1.0)[:, None, None]
    centre = (torch.arange(out_size, dtype=torch.float32) + 0.5) * scale[:, None]          # (n, out)
    r = torch.arange(in_size, dtype=torch.float32) - start.float()[:, None]                # (n, in)
    d = (r[:, None, :] + 0.5 - centre[:, :, None]) / filterscale                           # (n, out, in)
    inside = (r >= 0) & (r < length.float()[:, None])
    w = _pil_filter(d, mode) * ((d.abs() < PIL_SUPPORT[mode]) & inside[:, None, :])
    return w / w.sum(-1, keepdim=True)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized to size x size and flipped where `flip`, as torchvision's
    resized_crop + hflip on a PIL image (two batched matrix products). images: (n, c, H, W) float in [0, 255]."""
    _, _, height, width = images.shape
    top, left, h, w = boxes.unbind(1)
    rows = resample_matrix(top, h, height, size, mode)                     # (n, size, H)
    cols = resample_matrix(left, w, width, size, mode)                     # (n, size, W)
    cols = torch.where(flip[:, None, None], cols.flip(1), cols)
    # PIL resizes horizontally, then vertically, clipping to the pixel range after each pass
    x = (images @ cols.transpose(1, 2)[:, None]).clamp(0, 255)
    return (rows[:, None] @ x).clamp(0, 255)


class BatchedImages:
    """A split held as one uint8 tensor (n, 3, H, W), augmented a whole batch at a time.

    Training: random-resized crop + horizontal flip, drawn for every sample of an epoch at once from the
    (seed, epoch) stream, so sample i of epoch e gets the same crop whatever the batch it falls in, the process
    count or an interruption. Evaluation: resize the shorter side to image_size / eval_crop_pct, centre crop."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, data, interpolation: str, train: bool, seed: int,
                 sources: list[Path] | None = None):
        self.sources = sources  # the file each image was decoded from (None: synthetic)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.size, self.scale = data.image_size, tuple(data.crop_scale)
        self.short = eval_resize(data)  # the eval transform's shorter side (crop_pct's only use)
        self.mode, self.train, self.seed, self.epoch = interpolation, train, seed, 0
        self.normalize = self.normalizer()
        self._draws: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes, flips) of every sample for the current epoch."""
        if self._draws is None or self._draws[0] != self.epoch:
            u = generator(self.seed, "augment", self.epoch).random((len(self), 4 * CROP_TRIES + 1))
            _, _, height, width = self.images.shape
            boxes = random_resized_crop_boxes(u[:, :-1], height, width, self.scale)
            self._draws = (self.epoch, torch.from_numpy(boxes), torch.from_numpy(u[:, -1] < 0.5))
        return self._draws[1], self._draws[2]

    @staticmethod
    def normalizer():
        """float pixels in [0, 255] -> the network's input (timm's ImageNet mean and std, as create_transform)."""
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) * 255
        return lambda x: (x - mean) / std

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.train:
            boxes, flips = self.epoch_draws()
            x = crop_resize(self.images[index].float(), boxes[index], flips[index], self.size, self.mode)
        else:
            x = self.eval_pixels(index)
        return self.normalize(x), self.labels[index]

    def eval_pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Float pixels of the evaluated images: resized and centre-cropped, not normalised."""
        return self._resize_centre_crop(self.images[index].float())

    @property
    def geometry(self) -> str:
        return f"resize {self.short} {self.mode}, centre crop {self.size}"

    def eval_geometry(self, img: Image.Image) -> Image.Image:
        """One image (e.g. a source file) through the eval transform its in-memory copy was decoded and cropped
        by: torchvision's Resize of the PIL image to the shorter side image_size / eval_crop_pct, then CenterCrop."""
        return TF.center_crop(resize_shorter(img, self.short, self.mode), self.size)

    def _resize_centre_crop(self, x: torch.Tensor) -> torch.Tensor:
        """timm's eval transform: shorter side to image_size / eval_crop_pct, then the centre image_size."""
        n, _, height, width = x.shape
        short = self.short
        if min(height, width) == short:
            resized = x
        else:
            scale = short / min(height, width)
            out_h, out_w = round(height * scale), round(width * scale)
            zero = torch.zeros(n, dtype=torch.int64)
            rows = resample_matrix(zero, torch.full((n,), height), height, out_h, self.mode)
            cols = resample_matrix(zero, torch.full((n,), width), width, out_w, self.mode)
            resized = (rows[:, None] @ (x @ cols.transpose(1, 2)[:, None]).clamp(0, 255)).clamp(0, 255)
        # torchvision's CenterCrop offsets (round half to even), so a decoded-at-size image crops as it would
        top, left = (int(round((d - self.size) / 2.0)) for d in resized.shape[-2:])
        return resized[..., top:top + self.size, left:left + self.size]


class BatchedLoader:
    """Yields (images, labels) batches of a BatchedImages split in the order of `indices` (a sampler)."""

    def __init__(self, dataset: BatchedImages, indices, batch_size: int):
        self.dataset, self.indices, self.batch_size = dataset, indices, batch_size

    def __len__(self) -> int:
        return len(self.indices) // self.batch_size

    def __iter__(self):
        order = torch.as_tensor(list(self.indices), dtype=torch.int64)
        for start in range(0, len(order), self.batch_size):
            yield self.dataset.batch(order[start:start + self.batch_size])


# ------------------------------------------------------------------------------------------ data order
class GlobalBatchSampler(Sampler):
    """Each optimizer step takes the next `batch` samples of a (seed, epoch) permutation; every
    accumulation step and process takes its own contiguous slice. One process with accumulation and
    several processes therefore see exactly the same global batches. The last partial batch is dropped."""

    def __init__(self, n: int, batch: int, accum: int, world: World, seed: int):
        self.n, self.batch, self.accum, self.world, self.seed, self.epoch = n, batch, accum, world, seed, 0
        self.micro = batch // (accum * world.size)

    def __len__(self) -> int:  # samples this process yields per epoch
        return self.n // self.batch * self.batch // self.world.size

    def __iter__(self):
        perm = generator(self.seed, "order", self.epoch).permutation(self.n).tolist()
        for start in range(0, self.n // self.batch * self.batch, self.batch):
            for a in range(self.accum):
                chunk = start + a * self.micro * self.world.size + self.world.rank * self.micro
                yield from perm[chunk:chunk + self.micro]


def shard(n: int, world: World) -> list[int]:
    return list(range(world.rank, n, world.size))


def make_loader(dataset, indices, batch_size: int, workers: int, pin_memory: bool = False):
    """Batches of `dataset` in the order of `indices` (a list or a sampler): tensor ops for a batched split,
    a DataLoader with `workers` processes for a per-sample one."""
    if isinstance(dataset, BatchedImages):
        return BatchedLoader(dataset, indices, batch_size)
    if isinstance(indices, Sampler):
        return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=workers,
                          pin_memory=pin_memory, drop_last=True)
    return DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, num_workers=workers,
                      pin_memory=pin_memory)


# --------------------------------------------------------------------------------------------- datasets
@dataclass
class Splits:
    train: ImageDataset | BatchedImages
    val: ImageDataset | BatchedImages
    classes: list[str]
    pipeline: str                       # batched | per_sample, as resolved from data.pipeline
    fingerprint: str                    # what the data are (data_fingerprint): runs on other copies differ


def build_transforms(data, recipe, seed: int) -> tuple[SeededTransform, SeededTransform]:
    train = create_transform(
        data.image_size, is_training=True, scale=tuple(data.crop_scale), hflip=0.5,
        color_jitter=recipe.color_jitter, auto_augment=recipe.auto_augment, interpolation=recipe.interpolation,
        re_prob=recipe.random_erasing, re_mode="pixel", re_count=1)
    val = create_transform(data.image_size, is_training=False, crop_pct=data.eval_crop_pct,
                           interpolation=recipe.interpolation)
    return SeededTransform(train, seed), SeededTransform(val, seed)


def batched_pipeline_blocker(data, recipe) -> str | None:
    """Why the batched pipeline cannot serve this data and augmentation, or None if it can."""
    if data.kind == "folder" and not data.in_memory:
        return "the images are streamed from disk (data.in_memory=false)"
    extras = [k for k in ("auto_augment", "random_erasing", "color_jitter") if getattr(recipe, k)]
    if extras:
        return f"the augmentation has {', '.join(extras)} (the batched pipeline does crop + flip only)"
    return None


def resolve_pipeline(data, recipe) -> str:
    blocker = batched_pipeline_blocker(data, recipe)
    if data.pipeline == "batched" and blocker:
        raise DataError(f"data.pipeline=batched is not possible: {blocker}; use data.pipeline=auto or per_sample")
    if data.pipeline == "auto":
        return "per_sample" if blocker else "batched"
    return data.pipeline


def _subset(n: int, keep: int | None, seed: int) -> np.ndarray:
    """A fixed class-agnostic random subset of `keep` of `n` indices (all if keep is None)."""
    if keep is None or keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


def build_datasets(data, recipe, seed: int) -> Splits:
    """The train and val splits of `data`, with `recipe`'s augmentation, in the pipeline data.pipeline picks."""
    pipeline = resolve_pipeline(data, recipe)
    if data.kind == "synthetic":
        # the data seed is fixed (not the run seed): every run sees the same dataset
        xs, ys = _synthetic_dataset(data.train_size + data.val_size, data.image_size, data.num_classes, data.seed)
        train = _subset(data.train_size, data.train_subset, data.seed)
        val = data.train_size + _subset(data.val_size, data.val_subset, data.seed)
        arrays = {"train": (xs[train], ys[train]), "val": (xs[val], ys[val])}
        classes = synthetic_class_names(data.num_classes)
        fingerprint, sources = synthetic_fingerprint(data), {}
    else:
        arrays, classes, fingerprint, sources = _scan_folder_splits(data, recipe.interpolation)
    if pipeline == "batched":
        splits = {k: BatchedImages(x, y, data, recipe.interpolation, train=k == "train", seed=seed,
                                   sources=sources.get(k)) for k, (x, y) in arrays.items()}
    else:
        transforms = dict(zip(("train", "val"), build_transforms(data, recipe, seed)))
        splits = {k: ImageDataset(y, transforms[k], images=x, sources=sources.get(k)) if isinstance(x, np.ndarray)
                  else ImageDataset(y, transforms[k], paths=x) for k, (x, y) in arrays.items()}
    return Splits(splits["train"], splits["val"], classes, pipeline, fingerprint)


_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


@functools.lru_cache(maxsize=1)
def _synthetic_dataset(n: int, size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """synthetic_images, made once per process for a sweep's jobs (at 224 px, a minute each); callers index
    copies out of it and never write to it."""
    return synthetic_images(n, size, num_classes, seed)


def _scan_folder_splits(data, interpolation: str) -> tuple[dict, list[str], str, dict]:
    """{split: (decoded uint8 images or paths, labels)} of an ImageFolder root, its classes, fingerprint and
    {split: the file of each image}. In-memory data are decoded at the size the run needs (decode_all's `short`),
    once per process."""
    root = Path(data.root).expanduser()
    arrays, classes, files, sources = {}, None, {}, {}
    for split, keep in (("train", data.train_subset), ("val", data.val_subset)):
        samples, split_classes = scan_image_folder(root / split)
        if classes is not None and split_classes != classes:
            raise DataError(f"{root}/train and {root}/val have different class folders")
        classes = split_classes
        files[split] = samples
        samples = [samples[i] for i in _subset(len(samples), keep, data.seed)]
        sources[split] = [p for p, _ in samples]
        if data.in_memory:
            short = eval_resize(data)
            key = (str(root.resolve()), split, keep, data.seed, short, interpolation)
            if key not in _DECODED:  # a sweep (or bench rotation) in one process decodes each split once
                _DECODED[key] = decode_all(samples, f"decoding {root / split}", short, interpolation)
            arrays[split] = _DECODED[key]
        else:
            if data.verify:
                verify_images(samples, f"checking {root / split}")
            arrays[split] = ([p for p, _ in samples], np.array([y for _, y in samples], np.int64))
    _check_held_out(files["train"], files["val"], root)
    if len(classes) != data.num_classes:
        raise DataError(f"data.num_classes={data.num_classes} but {root}/train has {len(classes)} class folders; "
                        f"set data.num_classes={len(classes)}")
    return arrays, classes, folder_fingerprint(root, files, contents=data.in_memory), sources


FINGERPRINT_CACHE = Path("~/.cache/ablate/fingerprints.json")


def folder_fingerprint(root: Path, files: dict[str, list[tuple[Path, int]]], contents: bool) -> str:
    """A digest of an ImageFolder root's file list (split/class/name) and every file's bytes (`sha256:`), so runs
    on different copies of a data set are told apart. Reading the bytes costs a pass over the files, so the digest
    is cached per root, keyed by the list's names, sizes and modification times. Streamed data (contents=False:
    ImageNet's 140 GB would take a long first pass) are digested by their list and sizes only (`sha256-list:`)."""
    listing = [(split, str(p.relative_to(root / split)), p.stat().st_size, p.stat().st_mtime_ns)
               for split, samples in files.items() for p, _ in samples]
    stat_key = f"{root.resolve()}:{contents}:{hashlib.sha256(json.dumps(listing).encode()).hexdigest()}"
    cache_path = FINGERPRINT_CACHE.expanduser()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(stat_key), str):
        return cache[stat_key]
    digest = hashlib.sha256()
    for split, samples in files.items():
        for p, _ in samples:
            digest.update(f"{split}/{p.relative_to(root / split)}\0".encode())
            digest.update(hashlib.sha256(p.read_bytes()).digest() if contents else str(p.stat().st_size).encode())
    fingerprint = ("sha256:" if contents else "sha256-list:") + digest.hexdigest()[:32]
    try:  # a cache that cannot be written costs a pass over the files next time, nothing else
        atomic_write_json(cache_path, {**(cache if isinstance(cache, dict) else {}), stat_key: fingerprint})
    except OSError:
        pass
    return fingerprint


def synthetic_fingerprint(data) -> str:
    """The embedded data are a function of their generator's arguments."""
    spec = [data.train_size + data.val_size, data.image_size, data.num_classes, data.seed]
    return "synthetic:" + hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:32]


def _check_held_out(train: list[tuple[Path, int]], val: list[tuple[Path, int]], root: Path) -> None:
    """Refuses a val split that shares a file with train (val a link to train, or hard links of its files):
    its top-1 would be training accuracy."""
    def inode(path: Path) -> tuple[int, int]:
        st = path.stat()
        return st.st_dev, st.st_ino
    seen = {inode(p): p for p, _ in train}
    for p, _ in val:
        if inode(p) in seen:
            shared = sum(inode(q) in seen for q, _ in val)
            raise DataError(f"{root}/val shares {shared} of its {len(val)} files with train (e.g. {p} is "
                            f"{seen[inode(p)]}): val must hold images the net never trains on")


def verify_images(samples: list[tuple[Path, int]], desc: str) -> None:
    """Open every image once at start-up (data.verify=true), so that a bad file fails now, not mid-epoch."""
    for path, _ in tqdm(samples, desc=desc, unit="img", mininterval=2, leave=False):
        try:
            with Image.open(path) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {path}: {e}") from e


def default_workers(data) -> int:
    """DataLoader processes when train.workers is unset: none for in-memory data, else up to 8."""
    if data.kind == "synthetic" or data.in_memory:
        return 0
    return min(8, os.cpu_count() or 1)
