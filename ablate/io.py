"""How the toolkit writes files: atomically (a reader sees the old file or the new one, never half of one), never
through a link planted where a file should be, and under names that a config value cannot steer elsewhere."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

TMP_SUFFIX = ".ablate.tmp"  # the toolkit's own partial writes (a user's `.notes.tmp` is not one)
MAX_NAME = 120  # bytes of one path component the toolkit names; file systems allow 255


def path_component(value) -> str:
    """`value` as one path component, however it is spelt: `%` and `/` escaped (%25, %2F), `.` and `..` and the
    empty name escaped, and past MAX_NAME bytes its head plus a hash of the whole, so every config value that
    names a directory (step, regime, overrides, a report's setting) stays inside the directory it is put in."""
    name = str(value).replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if name in ("", ".", ".."):
        name = name.replace(".", "%2E") or "%00"
    if len(name.encode()) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return name.encode()[:MAX_NAME - 17].decode(errors="ignore") + "~" + digest


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name the one written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def clean_partial_writes(directory: Path) -> list[Path]:
    """Remove the temporary files of atomic writes that a killed process left in `directory`: the toolkit's own
    (TMP_SUFFIX), regular files only (a directory, FIFO or link of that name is left alone)."""
    removed = [p for p in sorted(Path(directory).glob(f".*{TMP_SUFFIX}")) if stat.S_ISREG(p.lstat().st_mode)]
    for tmp in removed:
        tmp.unlink(missing_ok=True)
    return removed
