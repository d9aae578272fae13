"""Every random stream of a run, derived from the run's seed by numpy's SeedSequence.

Python's `hash()` of a tuple is not promised to stay the same across Python versions; SeedSequence is a
documented, stable function of its entropy words. Each stream has its own name, so two streams never share
draws even for equal (seed, epoch, ...) keys.
"""
from __future__ import annotations

import zlib

import numpy as np

STREAMS = ("order", "augment", "epoch", "init")
SEED_LIMIT = 2**32  # a run's seed is one 32-bit entropy word: seeds past it would repeat smaller ones


def derive_seed(seed: int, stream: str, *keys: int) -> int:
    """A 32-bit seed for `stream` at `keys` (e.g. epoch, sample or rank), stable across versions."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; one of {STREAMS}")
    entropy = [int(seed) % SEED_LIMIT, zlib.crc32(stream.encode()), *(int(k) & 0xFFFFFFFF for k in keys)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def generator(seed: int, stream: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, stream, *keys))
