"""A run's directory: the lock, checkpoints and resume (as pycls keeps `checkpoint.py`); its files and its record
are named and defined in ablate.record. Every file is written atomically by the one process that holds the
directory's lock."""
from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import stat
from pathlib import Path

import torch

from stages.forms import EVAL_ONLY, FORMS

from .io import atomic_write_bytes, atomic_write_text, clean_partial_writes
from .record import BEST, LAST, LOCK, METRICS, RESULT, RUN_FILES, RunRecord, read_record

# train.* settings that change a run's numerics; a resume under other values is refused unless asked
NUMERIC_SETTINGS = ("precision", "channels_last", *(f"{kind}_form" for kind in FORMS if kind not in EVAL_ONLY))


class RunDirConflict(RuntimeError):
    """The run directory holds a different run, or another process is using it; nothing is overwritten."""


def atomic_torch_save(path, obj) -> Path:
    """Serialised in memory first: torch's zip writer turns a failed write (a full disk) into a RuntimeError that
    names no cause; a plain write raises the OSError that does."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def _os_reason(e: OSError) -> str:
    return "a symbolic link" if e.errno == errno.ELOOP else (e.strerror or type(e).__name__)


class RunDirLock:
    """An exclusive lock on a run directory for the life of a run (flock: released when the process dies)."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.file = None

    def __enter__(self) -> "RunDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a link planted in its place, never anything but a regular file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            raise RunDirConflict(f"{self.path} cannot be the run's lock ({_os_reason(e)}); remove it") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirConflict(f"{self.path} cannot be the run's lock (not a regular file); remove it")
        self.file = os.fdopen(fd, "r+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunDirConflict(f"{self.path.parent} is in use by PID {holder}; wait for it or stop it") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()
        clean_partial_writes(self.path.parent)  # left by a process killed mid-write; only the holder may
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def check_run_dir(out: Path, identity_hash: str, identity: dict, overwrite: bool) -> RunRecord | None:
    """The finished record to reuse, or None to (re)start. Raises on a different run in the directory."""
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        return None
    result_path = out / RESULT
    if not result_path.exists():
        if (out / LAST).exists():
            load_checkpoint(out, identity_hash, "cpu")  # names a damaged or foreign last.pt now
        return None
    try:
        previous = read_record(result_path)
    except (ValueError, OSError) as e:
        raise RunDirConflict(f"{result_path} is not a readable run record ({e}); move it away or pass "
                             "train.overwrite=true to replace the run") from e
    if previous.current_identity_hash != identity_hash:
        diff = _diff(previous.identity or {}, identity)
        raise RunDirConflict(f"{out} holds a different run (differs at: {', '.join(diff[:8]) or 'unknown'}); "
                             "use another hydra.run.dir, or train.overwrite=true to replace it")
    return previous if previous.finished else None


def _diff(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def load_checkpoint(out: Path, identity_hash: str, device) -> dict | None:
    """last.pt of this run, or None if there is none; RunDirConflict if it is damaged or another run's."""
    path = out / LAST
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise RunDirConflict(f"{path} is damaged ({type(e).__name__}); move it away to restart the run, or "
                             "pass train.overwrite=true") from e
    if not isinstance(ckpt, dict) or ckpt.get("identity_hash") != identity_hash:
        raise RunDirConflict(f"{path} belongs to a different run; use train.overwrite=true to replace it")
    return ckpt


def check_best(out: Path, identity_hash: str) -> None:
    """On resume, best.pt must be this run's and readable: a damaged one would otherwise survive to the end of the
    run (it is rewritten only when a later epoch beats it)."""
    path = out / BEST
    if not path.exists():
        return
    try:
        best = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # as load_checkpoint: several types for a truncated or foreign file
        raise RunDirConflict(f"{path} is damaged ({type(e).__name__}); move it away to resume without it, or pass "
                             "train.overwrite=true") from e
    if not isinstance(best, dict) or best.get("identity_hash") != identity_hash:
        raise RunDirConflict(f"{path} belongs to a different run; move it away to resume without it, or pass "
                             "train.overwrite=true")


def check_resume_settings(segments: list[dict], train: dict, world_size: int, allow_change: bool) -> None:
    """Refuse to continue a run under another precision, layout, layer form or process count unless
    train.allow_setting_change=true (each changes the numerics: the process count splits BatchNorm's batch and
    the per-process random draws)."""
    if not segments or allow_change:
        return
    before = segments[-1]
    changed = [f"train.{k}: {before['train'].get(k)!r} -> {train.get(k)!r}" for k in NUMERIC_SETTINGS
               if before["train"].get(k) != train.get(k)]
    if before.get("world_size", 1) != world_size:
        changed.append(f"processes: {before.get('world_size', 1)} -> {world_size}")
    if changed:
        raise RunDirConflict(f"resuming would change {', '.join(changed)} mid-run; pass the earlier value(s), "
                             "or train.allow_setting_change=true to continue and record both segments")


def save_checkpoint(out: Path, state: dict, history_lines: list[dict], best: dict | None) -> None:
    atomic_torch_save(out / LAST, state)
    if best is not None:
        atomic_torch_save(out / BEST, best)
    atomic_write_text(out / METRICS, "".join(json.dumps(h) + "\n" for h in history_lines))
