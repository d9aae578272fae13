"""The batched pipeline: a split held as one uint8 tensor, cropped, flipped and resized a whole batch at a time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import functional as TF

from ..config import DataConfig
from ..seeding import generator
from .geometry import CROP_TRIES, crop_resize, eval_resize, random_resized_crop_boxes, resample_matrix, resize_shorter


class BatchedImages:
    """A split held as one uint8 tensor (n, 3, H, W), augmented a whole batch at a time.

    Training: random-resized crop + horizontal flip, drawn for every sample of an epoch at once from the
    (seed, epoch) stream, so sample i of epoch e gets the same crop whatever the batch it falls in, the process
    count or an interruption. Evaluation: resize the shorter side to image_size / eval_crop_pct, centre crop."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, data: DataConfig, interpolation: str, train: bool,
                 seed: int, sources: list[Path] | None = None, train_size: int | None = None):
        self.sources = sources  # the file each image was decoded from (None: synthetic)
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.size, self.scale = data.image_size, tuple(data.crop_scale)
        self.train_size = train_size or data.image_size  # the side of the training crops
        self.short = eval_resize(data)  # the eval transform's shorter side (crop_pct's only use)
        self.mode, self.train, self.seed, self.epoch = interpolation, train, seed, 0
        self.normalize = self.normalizer()
        self._draws: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def loader(self, indices, batch_size: int, workers: int = 0, pin_memory: bool = False) -> BatchedLoader:
        """Batches in the order of `indices` (a list or a sampler), made by tensor ops in this process (`workers`
        and `pin_memory` have nothing to do here)."""
        return BatchedLoader(self, indices, batch_size)

    def epoch_draws(self, copy: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes, flips) of every sample for the current epoch: its own draw, or with `copy` > 0 that of its
        repeated-augmentation copy (a stream of its own)."""
        if (self.epoch, copy) not in self._draws:
            self._draws = {k: v for k, v in self._draws.items() if k[0] == self.epoch}
            u = generator(self.seed, "augment", self.epoch, *([copy] if copy else [])).random(
                (len(self), 4 * CROP_TRIES + 1))
            _, _, height, width = self.images.shape
            boxes = random_resized_crop_boxes(u[:, :-1], height, width, self.scale)
            self._draws[self.epoch, copy] = (torch.from_numpy(boxes), torch.from_numpy(u[:, -1] < 0.5))
        return self._draws[self.epoch, copy]

    @staticmethod
    def normalizer():
        """float pixels in [0, 255] -> the network's input (timm's ImageNet mean and std, as create_transform)."""
        mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) * 255
        return lambda x: (x - mean) / std

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples at `index`: draw index c * n + i is image i under its copy c's augmentation (a sampler's
        repeated augmentation; c = 0 otherwise)."""
        image, copies = index % len(self), index // len(self)
        if self.train:
            boxes, flips = self.epoch_draws()
            boxes, flips = boxes[image], flips[image]
            for c in copies.unique().tolist():
                if c:
                    mine = copies == c
                    own_boxes, own_flips = self.epoch_draws(c)
                    boxes[mine], flips[mine] = own_boxes[image[mine]], own_flips[image[mine]]
            x = crop_resize(self.images[image].float(), boxes, flips, self.train_size, self.mode)
        else:
            x = self.eval_pixels(image)
        return self.normalize(x), self.labels[image]

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
