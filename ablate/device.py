"""The device a run or a benchmark uses: which one, how records name it, and its mixed-precision context."""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from .errors import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(requested: str, key: str = "train.device") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}=cuda but no CUDA device is visible; use {key}=auto or cpu")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


@contextmanager
def torch_threads(n: int | None):
    """torch's CPU threads set to n (None: unchanged) for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def describe_device(device: torch.device) -> str:
    """The device as records and benchmark CSVs name it."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} threads"


def autocast(device: torch.device, precision: str):
    """fp32: no autocast; bf16 / fp16: torch.autocast on the device (fp16 wants a GradScaler in training)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
