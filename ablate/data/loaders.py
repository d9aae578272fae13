"""The order of the data: the global batches every process and accumulation step slices, the val shards, and the
processes a split's loader uses (each dataset kind makes its own loader: `dataset.loader(...)`)."""
from __future__ import annotations

import os

import numpy as np

from torch.utils.data import Sampler

from ..config import DataConfig
from ..distributed import World
from ..seeding import generator


class GlobalBatchSampler(Sampler):
    """Each optimizer step takes the next `batch` samples of a (seed, epoch) permutation; every
    accumulation step and process takes its own contiguous slice. One process with accumulation and
    several processes therefore see exactly the same global batches. The last partial batch is dropped.

    With `repeats` > 1 (repeated augmentation, Hoffer et al. 2020; ResNet strikes back A1/A2) each image of the
    permutation comes `repeats` times in a row and an epoch keeps its length, so it holds about n / repeats distinct
    images, each augmented `repeats` times in one global batch. Copy c of image i is yielded as the draw index
    c * n + i: the datasets read image i and draw copy c's own augmentation (copy 0 is the image's only draw
    without repeats). timm's RepeatAugSampler does this only in distributed mode and spreads an image's copies over
    the processes; here the order is the same for any process count (a process may hold several copies of one
    image)."""

    def __init__(self, n: int, batch: int, accum: int, world: World, seed: int, repeats: int = 1):
        self.n, self.batch, self.accum, self.world, self.seed, self.epoch = n, batch, accum, world, seed, 0
        self.repeats = repeats
        self.micro = batch // (accum * world.size)

    def __len__(self) -> int:  # samples this process yields per epoch
        return self.n // self.batch * self.batch // self.world.size

    def __iter__(self):
        perm = generator(self.seed, "order", self.epoch).permutation(self.n)
        if self.repeats > 1:
            perm = (np.tile(np.arange(self.repeats), self.n) * self.n + perm.repeat(self.repeats))[:self.n]
        perm = perm.tolist()
        for start in range(0, self.n // self.batch * self.batch, self.batch):
            for a in range(self.accum):
                chunk = start + a * self.micro * self.world.size + self.world.rank * self.micro
                yield from perm[chunk:chunk + self.micro]


def shard(n: int, world: World) -> list[int]:
    return list(range(world.rank, n, world.size))


def default_workers(data: DataConfig) -> int:
    """DataLoader processes when train.workers is unset: none for in-memory data, else up to 8."""
    if data.kind == "synthetic" or data.in_memory:
        return 0
    return min(8, os.cpu_count() or 1)
