"""A run's directory: its files, the record's schema, the lock, checkpoints and resume (as pycls keeps
`checkpoint.py`). Every file is written atomically by the one process that holds the directory's lock.

  result.json     the record (RECORD_FIELDS): config, step, complexity, per-epoch metrics, final top-1/top-5,
                  segments (one per process that trained it), provenance, status
  metrics.jsonl   one line per finished epoch
  last.pt         everything needed to resume (after every epoch)
  best.pt         weights of the epoch with the best val top-1
  model.safetensors (and model_ema.safetensors)  the final weights
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path

import torch

from stages.forms import EVAL_ONLY, FORMS

from .config import record_identity_hash
from .io import atomic_torch_save, atomic_write_json, atomic_write_text, clean_partial_writes

RESULT, LAST, BEST, METRICS, LOCK = "result.json", "last.pt", "best.pt", "metrics.jsonl", ".lock"
WEIGHTS, WEIGHTS_EMA = "model.safetensors", "model_ema.safetensors"
RUN_FILES = (RESULT, LAST, BEST, METRICS, WEIGHTS, WEIGHTS_EMA)

# The record's schema, defined once. A writer writes every field of RECORD_FIELDS (and FINISHED_FIELDS once the
# run has finished); OPTIONAL_FIELDS only when measured. A reader may rely on REQUIRED_FIELDS (and "final" in a
# finished record): every record since the first version holds them, so older runs stay readable.
RECORD_FIELDS = ("status", "reason", "step", "regime", "seed", "identity_hash", "identity", "config", "params",
                 "gflops", "fvcore_gflops", "gflops_at_input", "lr", "augmentation", "pipeline", "epochs_planned",
                 "updates_planned", "device", "world_size", "provenance", "classes", "train_images",
                 "val_images", "data_fingerprint", "epochs", "segments", "resumed_from_epoch")
FINISHED_FIELDS = ("final", "best_top1", "wall_time_s", "train_time_s", "train_throughput")
OPTIONAL_FIELDS = ("robustness",)
REQUIRED_FIELDS = ("status", "step", "regime", "seed", "identity_hash", "config", "params", "gflops",
                   "gflops_at_input", "provenance")
# train.* settings that change a run's numerics; a resume under other values is refused unless asked
NUMERIC_SETTINGS = ("precision", "channels_last", *(f"{kind}_form" for kind in FORMS if kind not in EVAL_ONLY))


class RunDirConflict(RuntimeError):
    """The run directory holds a different run, or another process is using it; nothing is overwritten."""


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


def read_record(path: Path) -> dict:
    """A result.json as a dict; ValueError naming the file if it is not a record."""
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds a JSON {type(record).__name__}, not a run record")
    _require(record, REQUIRED_FIELDS + (("final",) if record.get("status") == "finished" else ()), path)
    return record


def _require(record: dict, fields: tuple[str, ...], path: Path) -> None:
    missing = [k for k in fields if k not in record]
    if missing:
        raise ValueError(f"{path} lacks the record field(s) {', '.join(missing)}")


def check_run_dir(out: Path, identity_hash: str, identity: dict, overwrite: bool) -> dict | None:
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
    if record_identity_hash(previous) != identity_hash:
        diff = _diff(previous.get("identity", {}), identity)
        raise RunDirConflict(f"{out} holds a different run (differs at: {', '.join(diff[:8]) or 'unknown'}); "
                             "use another hydra.run.dir, or train.overwrite=true to replace it")
    return previous if previous.get("status") == "finished" else None


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


def write_record(out: Path, record: dict) -> None:
    """Writes result.json; a record short of the schema is a bug in its writer and is never written."""
    _require(record, RECORD_FIELDS + (FINISHED_FIELDS if record.get("status") == "finished" else ()), out / RESULT)
    atomic_write_json(out / RESULT, record)
