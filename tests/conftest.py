"""Fixtures only; shared helpers live in tests/helpers.py, the `slow` marker in pyproject.toml."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
