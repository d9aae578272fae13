"""Fixtures only; shared helpers live in tests/helpers.py, the `slow` marker in pyproject.toml."""
import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (`-n N`), each worker takes its share of the cores, for torch and for the subprocesses its
    tests start, so N workers do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
