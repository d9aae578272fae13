"""Atomic writes: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a teammate reads results as any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_torch_save(path, obj) -> Path:
    return _atomic(path, lambda f: torch.save(obj, f))


def clean_partial_writes(directory: Path) -> list[Path]:
    """Remove the temporary files of atomic writes that a killed process left in `directory`."""
    removed = sorted(Path(directory).glob(f".*{TMP_SUFFIX}"))
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    return removed
