"""The report's rows: every run record under a directory as one tidy table, and what is wrong with the rest
(unreadable, failed, unfinished, missing and never-launched runs)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from ..config import (StepConfig, compose_config, expand_sweep, experiment_hash, identity_hash, regime_names,
                      setting_hash)
from ..corruption_suites import CORRUPTIONS
from ..record import RESULT, RunRecord, read_record

# a setting: what the steps compared in one figure share. `setting` (a hash of the rest of the identity but the
# step's own keys) keeps runs apart that differ in anything else, e.g. data.train_size or recipe.lr
SETTING = ["regime", "data", "image_size", "budget", "budget_epochs", "width_multiplier", "setting"]

ROBUSTNESS = ["mca", "relative_drop", "clean_subset_top1", *(f"corr_{name}" for name in CORRUPTIONS)]


TIMING = ["train_throughput", "wall_time_s"]


@dataclass(frozen=True)
class Problem:
    kind: str       # corrupt | duplicate | mixed | failed | unfinished | missing | no_reference
    path: str
    detail: str


def _row(record: RunRecord, path: Path, root: Path) -> dict:
    """A record's row (read_record checked the types of its fields); a final top-1 that is no number raises
    TypeError and a step or regime no config knows ValueError, so the record is listed as corrupt instead of
    breaking the report later."""
    cfg, step, final = record.config, record.step, record.final or {}
    StepConfig.from_dict(step)  # ConfigError is a ValueError
    if record.regime not in regime_names():
        raise ValueError(f"regime {record.regime!r} is none of {', '.join(regime_names())}")
    for key in ("top1", "top5"):
        if final.get(key) is not None and (isinstance(final[key], bool) or not isinstance(final[key], (int, float))):
            raise TypeError(f"final.{key}={final[key]!r} is not a number")
    return {
        "run_dir": str(path.parent.relative_to(root)), "status": record.status,
        "regime": record.regime, "data": cfg["data"]["name"], "image_size": cfg["data"]["image_size"],
        "budget": cfg["budget"]["name"], "budget_epochs": cfg["budget"]["epochs"],
        "width_multiplier": cfg["net"]["width_multiplier"],
        "recipe": cfg["recipe"]["name"], "step": step["name"], "step_index": step["index"],
        "adopted": step["adopted"], "reference": step.get("reference"), "seed": record.seed,
        "top1": final.get("top1"), "top5": final.get("top5"), "best_top1": record.best_top1,
        "params": record.params, "gflops": record.gflops, "gflops_at_input": record.gflops_at_input,
        "epochs": len(record.epochs or ()), "val_images": record.val_images,
        "train_throughput": record.train_throughput,
        "wall_time_s": record.wall_time_s, "identity_hash": record.current_identity_hash,
        "experiment": experiment_hash(cfg), "setting": setting_hash(cfg),
        "git_revision": record.provenance["git_revision"], "date": record.provenance["date"],
        **_robustness_columns(record.robustness),
    }


def _robustness_columns(robustness: dict | None) -> dict:
    """mean corruption top-1 (mca), its relative drop, clean top-1 on the same subset, and each corruption's
    top-1 averaged over severities (corr_NAME); empty for a record without them (an older run)."""
    columns = dict.fromkeys(ROBUSTNESS, float("nan"))
    if robustness:
        columns.update(mca=robustness["mean_corruption_top1"], relative_drop=robustness["relative_drop"],
                       clean_subset_top1=robustness["clean_top1"])
        columns.update({f"corr_{name}": sum(per.values()) / len(per) for name, per in robustness["top1"].items()})
    return columns


def collect(root: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Every result.json under root (a row each) and what is wrong: unreadable records, failed and unfinished
    runs, jobs a sweep launched without a record, and jobs its last launch planned that never ran."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report directory {root} does not exist (or is not a directory)")
    rows, problems, accounted = [], [], set()  # accounted: identities of jobs already listed
    first_dir = {}  # identity hash -> the run dir counted for it
    for path in sorted(root.rglob(RESULT)):
        try:
            record = read_record(path)
            row = _row(record, path, root)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            problems.append(Problem("corrupt", str(path), f"unreadable record ({type(e).__name__}: {e}); "
                                    "rerun the job (train.overwrite=true) or move the file away"))
            accounted |= _job_identity(path.parent)
            continue
        if row["identity_hash"] in first_dir:  # a copied run dir is the same run: count it once
            problems.append(Problem("duplicate", str(path), f"the same run as {first_dir[row['identity_hash']]} "
                                    f"(identity {row['identity_hash']}); counted once"))
            continue
        first_dir[row["identity_hash"]] = row["run_dir"]
        rows.append(row)
        accounted.add(row["identity_hash"])
        if row["status"] == "failed":
            problems.append(Problem("failed", str(path), record.reason or "failed"))
        elif row["status"] != "finished":
            problems.append(Problem("unfinished", str(path), f"stopped after epoch {row['epochs']} "
                                    "(killed or still running); rerun the same command to resume"))
    for job_cfg in sorted(root.rglob(".hydra/config.yaml")):
        job = job_cfg.parent.parent
        if not (job / RESULT).exists():
            problems.append(Problem("missing", str(job), "the job started but left no record "
                                    "(a config error, or killed before its first epoch)"))
            accounted |= _job_identity(job)
    problems += _never_launched(root, accounted)
    return pd.DataFrame(rows, columns=_row_columns()), problems


def _job_identity(job: Path) -> set[str]:
    """The identity of the job Hydra started in this directory (from the config it saved there), if any."""
    try:
        return {identity_hash(OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"), resolve=True))}
    except (OSError, ValueError):
        return set()


def _row_columns() -> list[str]:
    return ["run_dir", "status", *SETTING, "recipe", "step", "step_index", "adopted", "reference", "seed",
            "top1", "top5", "best_top1", "params", "gflops", "gflops_at_input", "epochs", "val_images", *TIMING,
            "identity_hash", "experiment", "git_revision", "date", *ROBUSTNESS]


def sweep_jobs(multirun_yaml: Path) -> list[list[str]]:
    """The overrides of every job a sweep's last launch planned (Hydra writes multirun.yaml at launch)."""
    hydra_cfg = OmegaConf.load(multirun_yaml).hydra
    return expand_sweep(hydra_cfg, list(hydra_cfg.overrides.task))


def _never_launched(root: Path, accounted: set[str]) -> list[Problem]:
    problems = []
    for multirun_yaml in sorted(root.rglob("multirun.yaml")):
        for job in sweep_jobs(multirun_yaml):
            if identity_hash(OmegaConf.to_container(compose_config(job), resolve=True)) not in accounted:
                problems.append(Problem("missing", " ".join(job), f"planned by {multirun_yaml} but never run; "
                                        "rerun the sweep to run it"))
    return problems


def same_setting(frame: pd.DataFrame, row: dict) -> pd.Series:
    """Rows of `frame` in the same setting (regime, data, size, budget, width) as `row`."""
    return (frame[SETTING] == pd.Series({k: row[k] for k in SETTING})).all(axis=1)
