"""A run's record (result.json): its schema, defined once as RunRecord, and the names of a run directory's files.
Every reader (report, plan, robustness, the notebook) reads a record through RunRecord; the writer (ablate.train)
builds it as a dict and write_record holds it to the same schema. Plain Python and JSON: no torch.

  result.json     the record: config, step, complexity, per-epoch metrics, final top-1/top-5, segments (one per
                  process that trained it), provenance, status
  metrics.jsonl   one line per finished epoch
  last.pt         everything needed to resume (after every epoch)
  best.pt         weights of the epoch with the best val top-1
  model.safetensors (and model_ema.safetensors)  the final weights
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stages import Validated

from .config import identity_hash
from .io import atomic_write_json

RESULT, LAST, BEST, METRICS, LOCK = "result.json", "last.pt", "best.pt", "metrics.jsonl", ".lock"
WEIGHTS, WEIGHTS_EMA = "model.safetensors", "model_ema.safetensors"
RUN_FILES = (RESULT, LAST, BEST, METRICS, WEIGHTS, WEIGHTS_EMA)

# when a field is in a record: every record since the first version (a reader may rely on it), every record of
# today's writer from its first epoch on, once the run has finished, or only when measured
ALWAYS, WRITTEN, FINISHED, MEASURED = "always", "written", "finished", "measured"


def _field(when: str):
    return dataclasses.field(default=None, metadata={"when": when})


@dataclass(frozen=True)
class RunRecord(Validated):
    status: Literal["running", "finished", "failed"]
    step: dict                          # the step's config: name, index, adopted, reference
    regime: str
    seed: int
    identity_hash: str                  # as its writer computed it (see current_identity_hash)
    config: dict                        # the resolved run config
    params: int
    gflops: float                       # the paper's convention at 224 px
    gflops_at_input: float              # the same at the run's resolution
    provenance: dict
    reason: str | None = _field(WRITTEN)  # why a run failed
    identity: dict | None = _field(WRITTEN)
    fvcore_gflops: float | None = _field(WRITTEN)
    lr: float | None = _field(WRITTEN)
    augmentation: dict | None = _field(WRITTEN)
    pipeline: str | None = _field(WRITTEN)
    epochs_planned: int | None = _field(WRITTEN)
    updates_planned: int | None = _field(WRITTEN)
    device: str | None = _field(WRITTEN)
    world_size: int | None = _field(WRITTEN)
    classes: tuple[str, ...] | None = _field(WRITTEN)
    train_images: int | None = _field(WRITTEN)
    val_images: int | None = _field(WRITTEN)
    data_fingerprint: str | None = _field(WRITTEN)
    epochs: tuple[dict, ...] | None = _field(WRITTEN)          # one per finished epoch
    segments: tuple[dict, ...] | None = _field(WRITTEN)        # one per process that trained it
    resumed_from_epoch: tuple[int, ...] | None = _field(WRITTEN)
    final: dict | None = _field(FINISHED)                      # top1, top5 (and the EMA's) on the val split
    best_top1: float | None = _field(FINISHED)
    wall_time_s: float | None = _field(FINISHED)
    replica_divergence: float | None = _field(FINISHED)        # 0 when every process holds the same weights
    train_time_s: float | None = _field(FINISHED)
    train_throughput: float | None = _field(FINISHED)
    robustness: dict | None = _field(MEASURED)                 # ablate.robustness.evaluate_robustness

    def check(self) -> None:
        self.require(self.status != "finished" or self.final is not None, "final", "a dict in a finished record")

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def top1(self) -> float | None:
        return (self.final or {}).get("top1")

    @property
    def current_identity_hash(self) -> str:
        """The record's identity as this code defines it (from the config it holds), so records written under an
        older definition are still found: identity_hash is what its writer computed."""
        return identity_hash(self.config)

    def to_dict(self) -> dict:
        """The record as written: the fields every record holds, null where an older record lacks one; finished and
        measured fields only where set."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None or f.metadata.get("when", ALWAYS) in (ALWAYS, WRITTEN)}


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def fields_when(*when: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunRecord) if f.metadata.get("when", ALWAYS) in when)


def read_record(path: Path) -> RunRecord:
    """A result.json as a RunRecord; ValueError naming the file if it is not a record. Fields the schema does not
    know (none written today) are ignored, so a record stays readable."""
    values = json.loads(Path(path).read_text())
    if not isinstance(values, dict):
        raise ValueError(f"{path} holds a JSON {type(values).__name__}, not a run record")
    _require(values, fields_when(ALWAYS), path)
    known = {f.name for f in dataclasses.fields(RunRecord)}
    try:
        return RunRecord(**{k: v for k, v in values.items() if k in known})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def write_record(out: Path, record: dict | RunRecord) -> None:
    """Writes result.json; a record short of the schema, or with a field it does not define, is a bug in its
    writer and is never written."""
    values = record.to_dict() if isinstance(record, RunRecord) else record
    path = out / RESULT
    _require(values, fields_when(ALWAYS, WRITTEN, *((FINISHED,) if values.get("status") == "finished" else ())), path)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(RunRecord)})
    if unknown:
        raise ValueError(f"{path}: field(s) {', '.join(unknown)} are not in the record's schema (ablate.record)")
    RunRecord(**values)  # the types, before anything is written
    atomic_write_json(path, values)


def _require(values: dict, fields: tuple[str, ...], path: Path) -> None:
    missing = [k for k in fields if k not in values]
    if missing:
        raise ValueError(f"{path} lacks the record field(s) {', '.join(missing)}")
