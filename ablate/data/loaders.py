"""The order of the data: the global batches every process and accumulation step slices, the val shards, and the
processes a split's loader uses (each dataset kind makes its own loader: `dataset.loader(...)`)."""
from __future__ import annotations

import os

from torch.utils.data import Sampler

from ..config import DataConfig
from ..distributed import World
from ..seeding import generator


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


def default_workers(data: DataConfig) -> int:
    """DataLoader processes when train.workers is unset: none for in-memory data, else up to 8."""
    if data.kind == "synthetic" or data.in_memory:
        return 0
    return min(8, os.cpu_count() or 1)
