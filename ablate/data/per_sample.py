"""The per-sample pipeline: timm's `create_transform` on one PIL image at a time, seeded per (seed, epoch, sample)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import transforms as T

from ..config import DataConfig, RecipeConfig
from ..seeding import derive_seed
from .sources import load_image


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

    Both dataset kinds (this and BatchedImages) show the toolkit one face: `labels`, `sources` (the file of each
    image, None for synthetic data), `eval_pixels(index)`, `eval_geometry(img)`, `geometry`, `set_epoch(epoch)`
    and `loader(indices, batch_size, workers)`."""

    def __init__(self, labels, transform: SeededTransform, images: np.ndarray | None = None, paths=None,
                 sources: list[Path] | None = None):
        self.labels, self.transform, self.images, self.paths = labels, transform, images, paths
        self.sources = sources if sources is not None else paths  # the file of each image (None: synthetic)

    def __len__(self) -> int:
        return len(self.labels)

    def _image(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i]) if self.images is not None else load_image(self.paths[i])

    def __getitem__(self, i: int):
        """Image i % n under draw i (a sampler's repeated-augmentation copy c of image j is i = c * n + j)."""
        image = i % len(self)
        return self.transform(self._image(image), i), int(self.labels[image])

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

    def loader(self, indices, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
        """Batches in the order of `indices` (a list, or a sampler: then the last partial batch is dropped), made
        by `workers` DataLoader processes."""
        if isinstance(indices, Sampler):
            return DataLoader(self, batch_size=batch_size, sampler=indices, num_workers=workers,
                              pin_memory=pin_memory, drop_last=True)
        return DataLoader(Subset(self, indices), batch_size=batch_size, num_workers=workers, pin_memory=pin_memory)


def build_transforms(data: DataConfig, recipe: RecipeConfig, seed: int,
                     train_size: int | None = None) -> tuple[SeededTransform, SeededTransform]:
    train = create_transform(
        train_size or data.image_size, is_training=True, scale=tuple(data.crop_scale), hflip=0.5,
        color_jitter=recipe.color_jitter, auto_augment=recipe.auto_augment, interpolation=recipe.interpolation,
        re_prob=recipe.random_erasing, re_mode="pixel", re_count=1)
    val = create_transform(data.image_size, is_training=False, crop_pct=data.eval_crop_pct,
                           interpolation=recipe.interpolation)
    return SeededTransform(train, seed), SeededTransform(val, seed)
