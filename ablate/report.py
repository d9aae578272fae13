"""python -m ablate.report DIR [out=DIR] [bench=CSV]: every run under DIR as one tidy table, a summary per step, the
paper's Figure 2 beside ours, and a top-1 vs GFLOPs trajectory.

Writes to OUT (default DIR): runs.csv (a row per run), summary.csv (a row per step: mean/std top-1 over
seeds, params, GFLOPs, throughput, delta to its reference step, the paper's numbers), problems.csv (corrupt,
failed, unfinished and missing runs), roadmap.{png,svg} and trajectory.{png,svg}; one set per setting
(regime, data, budget) when DIR mixes several. bench=CSV (from ablate.bench) draws the figure's speed panel
from a benchmark instead of the training records.
"""
from __future__ import annotations

import sys
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure  # no pyplot: no global state, any backend; notebooks display the figures
from omegaconf import OmegaConf


from .cli import Command, one_line
from .config import (CommandOptions, ConfigError, StepConfig, compose_config, experiment_hash, expand_sweep,
                     identity_hash, record_identity_hash, regime_names, setting_hash)
from .corruptions import CORRUPTIONS
from .io import atomic_write_bytes, path_component
from .paper import paper_table
from .provenance import provenance, write_csv
from .rundir import RESULT, read_record
from .stats import (benjamini_hochberg, binomial_se, equal_variance_p, holm, mean_ci, paired_delta, pooled_ci,
                    resolved, sign_agreement_p, spearman_with_uncertainty, t_975)

# a setting: what the steps compared in one figure share. `setting` (a hash of the rest of the identity but the
# step's own keys) keeps runs apart that differ in anything else, e.g. data.train_size or recipe.lr
SETTING = ["regime", "data", "image_size", "budget", "budget_epochs", "width_multiplier", "setting"]
ROBUSTNESS = ["mca", "relative_drop", "clean_subset_top1", *(f"corr_{name}" for name in CORRUPTIONS)]
# what a run measured; the rest of a row says which run it was and where it came from
TIMING = ["train_throughput", "wall_time_s"]


@dataclass(frozen=True)
class Problem:
    kind: str       # corrupt | duplicate | mixed | failed | unfinished | missing | no_reference
    path: str
    detail: str


# ------------------------------------------------------------------------------------------- collect
def _row(record: dict, path: Path, root: Path) -> dict:
    """A record's row; a field of the wrong type raises TypeError and a step or regime no config knows ValueError,
    so the record is listed as corrupt instead of breaking the report later."""
    cfg, step = record["config"], record["step"]
    final = record.get("final") or {}
    StepConfig.from_dict(step)  # ConfigError is a ValueError
    if record["regime"] not in regime_names():
        raise ValueError(f"regime {record['regime']!r} is none of {', '.join(regime_names())}")
    for key, value in (("seed", record["seed"]), ("params", record["params"])):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key}={value!r} is not an integer")
    for key in ("top1", "top5"):
        if final.get(key) is not None and (isinstance(final[key], bool) or not isinstance(final[key], (int, float))):
            raise TypeError(f"final.{key}={final[key]!r} is not a number")
    return {
        "run_dir": str(path.parent.relative_to(root)), "status": record["status"],
        "regime": record["regime"], "data": cfg["data"]["name"], "image_size": cfg["data"]["image_size"],
        "budget": cfg["budget"]["name"], "budget_epochs": cfg["budget"]["epochs"],
        "width_multiplier": cfg["net"]["width_multiplier"],
        "recipe": cfg["recipe"]["name"], "step": step["name"], "step_index": step["index"],
        "adopted": step["adopted"], "reference": step.get("reference"), "seed": record["seed"],
        "top1": final.get("top1"), "top5": final.get("top5"), "best_top1": record.get("best_top1"),
        "params": record["params"], "gflops": record["gflops"], "gflops_at_input": record["gflops_at_input"],
        "epochs": len(record.get("epochs", [])), "val_images": record.get("val_images"),
        "train_throughput": record.get("train_throughput"),
        "wall_time_s": record.get("wall_time_s"), "identity_hash": record_identity_hash(record),
        "experiment": experiment_hash(cfg), "setting": setting_hash(cfg),
        "git_revision": record["provenance"]["git_revision"], "date": record["provenance"]["date"],
        **_robustness_columns(record.get("robustness")),
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
            problems.append(Problem("failed", str(path), record.get("reason") or "failed"))
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


# ------------------------------------------------------------------------------------------ summarize
def step_reference(regime: str, index: int, explicit) -> str | None:
    """What a step is compared with: its own `step.reference` (leave-one-out, add-one-in), else the adopted
    step just before it in the paper's roadmap (move_up_dwconv for the kernel branches); never a step further
    back, so a missing reference leaves the delta empty rather than spanning several steps."""
    if isinstance(explicit, str):
        return explicit
    table = paper_table(regime)
    before = table[table.adopted & (table["index"] == index - 1)]
    return before.step.iloc[0] if len(before) else None


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """A row per setting and step over its finished seeds, in roadmap order: mean, std and CI of top-1, the
    paired delta to its reference with a 95% CI over seeds (`resolved` when the CI excludes zero), whether its
    sign agrees with the paper's delta, and the paper's numbers."""
    done = runs[runs.status == "finished"].reindex(columns=list(dict.fromkeys([*runs.columns, *ROBUSTNESS])))
    keys = [*SETTING, "step", "experiment"]
    summary = done.groupby(keys, sort=False).agg(
        step_index=("step_index", "first"), adopted=("adopted", "first"), reference=("reference", "first"),
        recipe=("recipe", "first"), seeds=("seed", "nunique"), top1_mean=("top1", "mean"),
        top1_std=("top1", "std"), top5_mean=("top5", "mean"), params=("params", "first"),
        gflops=("gflops", "first"), gflops_at_input=("gflops_at_input", "first"),
        train_throughput=("train_throughput", "mean")).reset_index()
    summary = summary.sort_values([*SETTING, "step_index", "adopted", "step"],
                                  ascending=[True] * len(SETTING) + [True, False, True], ignore_index=True)
    records = summary.to_dict("records")
    summary["top1_ci"] = [mean_ci(done[done.experiment == r["experiment"]].top1)[1] for r in records]
    summary["reference"] = [step_reference(r["regime"], r["step_index"], r["reference"]) for r in records]
    paper = paper_table()[["regime", "step", "top1", "gflops"]].rename(
        columns={"top1": "paper_top1", "gflops": "paper_gflops"})
    summary = summary.merge(paper, on=["regime", "step"], how="left")
    paper_top1 = {(r.regime, r.step): r.paper_top1 for r in paper.itertuples()}
    rows = []
    for r in summary.to_dict("records"):
        same = done[_same(done, r)]
        mine = same[same.experiment == r["experiment"]]
        ref = same[same.step == r["reference"]] if r["reference"] else same.iloc[:0]
        if ref.experiment.nunique() > 1:  # which of them? (listed as `mixed`); no delta rather than a pooled one
            ref = ref.iloc[:0]
        none = {"delta": float("nan"), "ci": float("nan"), "p": float("nan"), "paired_seeds": 0, "var": float("nan"),
            "diffs": []}
        d = paired_delta(mine, ref) if len(ref) else none
        paper_delta = paper_top1.get((r["regime"], r["step"]), float("nan")) - \
            paper_top1.get((r["regime"], r["reference"]), float("nan"))
        rob = paired_delta(mine, ref, "mca") if len(ref) else none
        # the drop relative to clean top-1 separates robustness from accuracy: mca rises with any clean gain
        drop = paired_delta(mine, ref, "relative_drop") if len(ref) else none
        rows.append({
            "mca_mean": mine.mca.mean(), "mca_ci": mean_ci(mine.mca)[1], "relative_drop": mine.relative_drop.mean(),
            "delta_mca": rob["delta"], "delta_mca_ci": rob["ci"],
            "mca_resolved": resolved(rob["delta"], rob["ci"]),
            "delta_relative_drop": drop["delta"], "delta_relative_drop_ci": drop["ci"],
            "drop_resolved": resolved(drop["delta"], drop["ci"]),
            "mce": mean_corruption_error(same[(same.step != r["step"]) | (same.experiment == r["experiment"])],
                                         r["step"]),
            "delta_top1": d["delta"], "delta_top1_ci": d["ci"], "paired_seeds": d["paired_seeds"],
            "resolved": resolved(d["delta"], d["ci"]), "delta_top1_p": d.get("p", float("nan")),
            "delta_top1_var": d.get("var", float("nan")), "_diffs": d.get("diffs", []),
            # one run's own sampling error on its val set, beside the spread over seeds
            "top1_binomial_se": (mine.apply(lambda x: binomial_se(x.top1, x.val_images), axis=1).mean()
                                 if len(mine) and "val_images" in mine and mine.val_images.notna().all()
                                 else float("nan")),
            # add-one-in and leave-one-out nets may cost far more than their reference: show it beside the delta
            "params_vs_reference": r["params"] / ref.params.iloc[0] if len(ref) else float("nan"),
            "gflops_vs_reference": r["gflops"] / ref.gflops.iloc[0] if len(ref) else float("nan"),
            "paper_delta_top1": paper_delta,
            "sign_agrees": (bool((d["delta"] > 0) == (paper_delta > 0))
                            if pd.notna(d["delta"]) and pd.notna(paper_delta) and paper_delta != 0 else None)})
    summary = pd.concat([summary, pd.DataFrame(rows, index=summary.index)], axis=1)
    return _multiple_steps(summary)


def _multiple_steps(summary: pd.DataFrame) -> pd.DataFrame:
    """Per setting (one sweep), what its deltas carry together: Holm and Benjamini-Hochberg verdicts over its
    tested steps, and a second, pooled-variance interval, with the Brown-Forsythe test of the equal variances it
    assumes."""
    for column in ("resolved_holm", "resolved_bh"):
        summary[column] = False
    for column in ("delta_top1_ci_pooled", "equal_variance_p"):
        summary[column] = float("nan")
    for _, part in summary.groupby(SETTING, sort=False):
        idx = part.index
        summary.loc[idx, "resolved_holm"] = holm(part.delta_top1_p)
        summary.loc[idx, "resolved_bh"] = benjamini_hochberg(part.delta_top1_p)
        half, _, df = pooled_ci(part.delta_top1_var, part.paired_seeds)
        summary.loc[idx, "delta_top1_ci_pooled"] = half
        summary.loc[idx, "equal_variance_p"] = equal_variance_p([np.asarray(d) for d in part._diffs])
    return summary.drop(columns=["_diffs", "delta_top1_var"])


def mean_corruption_error(done: pd.DataFrame, step: str, baseline: str = "baseline") -> float:
    """mCE as ImageNet-C defines it, relative to the baseline step (ResNet-50) of the same setting: for each
    corruption, the step's error summed over severities over the baseline's, averaged over corruptions, x100.
    Errors are averaged over each step's seeds first."""
    cols = [c for c in done.columns if c.startswith("corr_")]
    mine = 100 - done[done.step == step][cols].mean()
    base = 100 - done[done.step == baseline][cols].mean()
    ratios = (mine / base).dropna()
    return float(100 * ratios.mean()) if len(ratios) else float("nan")


def _same(frame: pd.DataFrame, row: dict) -> pd.Series:
    """Rows of `frame` in the same setting (regime, data, size, budget, width) as `row`."""
    return (frame[SETTING] == pd.Series({k: row[k] for k in SETTING})).all(axis=1)


def mixed_experiments(summary: pd.DataFrame, runs: pd.DataFrame) -> list[Problem]:
    """Steps with runs of more than one experiment in one setting (e.g. two recipe.lr values): each is summarised
    on its own, and nothing is paired with such a step as a reference."""
    problems = []
    for (*_, step), part in summary.groupby([*SETTING, "step"], sort=False):
        if len(part) > 1:
            dirs = [runs[runs.experiment == e].run_dir.iloc[0] for e in part.experiment]
            problems.append(Problem("mixed", step, f"{len(part)} different configs of {step} in one setting "
                                    f"(e.g. {', '.join(dirs)}): summarised apart, not averaged; no delta uses "
                                    "them as a reference"))
    return problems


def missing_references(summary: pd.DataFrame) -> list[Problem]:
    """Steps whose delta is empty because their reference has no finished run."""
    have = set(zip(*(summary[k] for k in SETTING), summary.step))
    return [Problem("no_reference", r.step, f"delta_top1 is empty: its reference {r.reference} has no finished "
                    "run in this setting; run it to get the delta")
            for r in summary.itertuples()
            if isinstance(r.reference, str) and (*(getattr(r, k) for k in SETTING), r.reference) not in have]


def rank_agreement(summary: pd.DataFrame) -> dict:
    """Spearman rank correlation of the adopted steps' deltas with the paper's (Tables 10/11), with its bootstrap
    95% CI over steps and permutation p; how many have the paper's sign, with the binomial p of that many by chance;
    and how many deltas each verdict resolves."""
    adopted = summary[summary.adopted & summary.delta_top1.notna() & summary.paper_delta_top1.notna()]
    agree = int(adopted.sign_agrees.fillna(False).sum())
    signed = int(adopted.sign_agrees.notna().sum())
    return {"steps": len(adopted), **spearman_with_uncertainty(adopted.delta_top1.values,
                                                               adopted.paper_delta_top1.values),
            "sign_agrees": agree, "signed": signed, "sign_p": sign_agreement_p(agree, signed),
            "resolved": int(adopted.resolved.sum()), "resolved_holm": int(adopted.resolved_holm.sum()),
            "resolved_bh": int(adopted.resolved_bh.sum()),
            "equal_variance_p": float(adopted.equal_variance_p.iloc[0]) if len(adopted) else float("nan")}


# ------------------------------------------------------------------------------------------- figures
def _bars(ax, labels, values, errors, notes, adopted, color):
    y = range(len(labels))
    ax.barh(y, values, xerr=errors, color=[color if a else "white" for a in adopted], edgecolor=color,
            hatch=[None if a else "//" for a in adopted], error_kw={"capsize": 3, "elinewidth": 1})
    ax.set_yticks(list(y), labels)
    shown = [v for v in values if pd.notna(v)]
    if shown:
        lo, hi = min(shown), max(shown)
        pad = max(hi - lo, 1.0)
        ax.set_xlim(lo - 0.6 * pad, hi + 0.35 * pad)  # zoomed like Figure 2: differences, not bar lengths
    for yi, v, e, note in zip(y, values, errors if errors is not None else [0] * len(values), notes):
        if pd.notna(v):
            ax.text(v + e, yi, f" {v:.1f}  {note}", va="center", fontsize=7)


def roadmap_figure(summary: pd.DataFrame, title: str | None = None):
    """Figure 2 of the paper, ours beside the paper's: a bar per step in roadmap order (top to bottom), the
    GFLOPs written on each, non-adopted branches hatched; ours with 95% CIs over seeds (where there are two or
    more); a panel of each step's delta to its reference, ours (with CI) against the paper's; with robustness,
    mean corruption top-1 and the delta of the relative corruption drop (with CI); a throughput panel when the
    runs measured it."""
    s = summary.iloc[::-1]  # barh draws bottom-up; the roadmap reads top-down
    labels = [f"{r.step}" + ("" if r.adopted else " *") for r in s.itertuples()]
    speed = "bench_img_s" if "bench_img_s" in s and s.bench_img_s.notna().any() else "train_throughput"
    robust = "mca_mean" in s and s.mca_mean.notna().any()
    panels = 3 + bool(s[speed].notna().any()) + 2 * robust
    fig = Figure(figsize=(4.4 * panels, 0.38 * len(s) + 1.6))
    axes = fig.subplots(1, panels, sharey=True)
    _bars(axes[0], labels, list(s.top1_mean), list(s.top1_ci.fillna(0)),
          [f"{g:.2f} GF" for g in s.gflops], list(s.adopted), "tab:blue")
    seeds = f"{s.seeds.min()}" + (f"-{s.seeds.max()}" if s.seeds.max() != s.seeds.min() else "")
    axes[0].set_title(f"ours: top-1 (%), mean, 95% CI over {seeds} seed(s)", fontsize=9)
    axes[0].set_xlabel("GFLOPs on the bars: at 224², at the trained width", fontsize=8)
    _bars(axes[1], labels, list(s.paper_top1), None,
          [f"{g:.2f} GF" if pd.notna(g) else "" for g in s.paper_gflops], list(s.adopted), "tab:gray")
    axes[1].set_title("paper (Tables 10/11): ImageNet-1K top-1 (%)", fontsize=9)
    axes[1].set_xlabel("GFLOPs on the bars: the paper's", fontsize=8)
    _delta_panel(axes[2], s, "delta_top1", "delta_top1_ci", "paper_delta_top1")
    axes[2].set_title("delta to the reference step (points)", fontsize=9)
    if robust:
        _bars(axes[3], labels, list(s.mca_mean), list(s.mca_ci.fillna(0)),
              [f"mCE {m:.0f}" if pd.notna(m) else "" for m in s.mce], list(s.adopted), "tab:purple")
        axes[3].set_title("ours: mean corruption top-1 (%), 95% CI", fontsize=9)
        axes[3].set_xlabel("mCE relative to ResNet-50 (baseline = 100) on the bars", fontsize=8)
        drop = s.assign(drop=100 * s.delta_relative_drop, drop_ci=100 * s.delta_relative_drop_ci)
        _delta_panel(axes[4], drop, "drop", "drop_ci", None)
        axes[4].set_title("delta of the relative corruption drop (% of clean top-1)", fontsize=9)
        axes[4].set_xlabel("< 0: loses less of its accuracy to corruptions than its reference", fontsize=8)
    if s[speed].notna().any():
        ax = axes[-1]
        _bars(ax, labels, list(s[speed]), None, [""] * len(s), list(s.adopted), "tab:green")
        if speed == "bench_img_s":
            ax.set_title(f"ours: {s.bench_mode.iloc[0]} images/s (ablate.bench)", fontsize=9)
            ax.set_xlabel(s.bench_setting.iloc[0], fontsize=8)
        else:
            ax.set_title("ours: training images/s", fontsize=9)
            ax.set_xlabel("as trained (batch, device and contention of each run)", fontsize=8)
        ax.set_xlim(left=0)
    fig.suptitle(title or _title(summary), fontsize=10)
    fig.text(0.01, 0.005, "* not adopted (a branch or an ablation)", fontsize=7)
    fig.tight_layout()
    return fig


def _delta_panel(ax, s: pd.DataFrame, delta: str, ci: str, paper: str | None) -> None:
    """Ours as points with 95% CI bars (filled where the CI excludes zero), the paper's as grey diamonds."""
    y = list(range(len(s)))
    resolved = (s[delta].abs() > s[ci]).fillna(False).tolist()
    ax.errorbar(s[delta], y, xerr=s[ci].fillna(0), fmt="none", ecolor="tab:blue", elinewidth=1, capsize=3)
    ax.scatter(s[delta], y, color=["tab:blue" if r else "white" for r in resolved], edgecolors="tab:blue",
               zorder=3, label="ours (filled: CI excludes 0)")
    if paper is not None:
        ax.scatter(s[paper], y, marker="D", color="tab:gray", s=18, zorder=3, label="paper")
    ax.axvline(0, color="black", lw=0.8)
    ax.legend(fontsize=7, loc="best", framealpha=0.6)
    ax.grid(axis="x", alpha=0.3)


def corruption_heatmap(runs: pd.DataFrame, summary: pd.DataFrame, title: str | None = None):
    """Steps (roadmap order) x corruptions: top-1 averaged over severities and seeds, each cell written."""
    cols = [c for c in runs.columns if c.startswith("corr_") and runs[c].notna().any()]
    done = runs[runs.status == "finished"]
    table = done.groupby("step")[cols].mean().reindex(summary.step)
    fig = Figure(figsize=(1.0 + 0.62 * len(cols), 0.36 * len(table) + 2.0))
    ax = fig.subplots()
    image = ax.imshow(table.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), [c[5:] for c in cols], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(table)), list(table.index), fontsize=7)
    for (i, j), v in pd.DataFrame(table.to_numpy(dtype=float)).stack().items():
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white" if v < table.mean().mean() else "black")
    fig.colorbar(image, ax=ax, label="top-1 (%), mean over severities 1-5 and seeds")
    ax.set_title(title or _title(summary), fontsize=9)
    fig.tight_layout()
    return fig


def budget_figure(summary: pd.DataFrame, title: str | None = None):
    """The same steps at several budgets (epochs): top-1 against epochs per step, and each step's delta to its
    reference at every budget beside the paper's, to see which effects grow, shrink or flip with training."""
    budgets = sorted(summary.budget_epochs.unique())
    steps = list(dict.fromkeys(summary.sort_values("step_index", kind="stable").step))
    fig = Figure(figsize=(12, 0.32 * len(steps) + 3))
    left, right = fig.subplots(1, 2)
    left.set_prop_cycle(color=colormaps["tab20"].colors)  # 14 steps: no colour used twice
    for step, part in summary.groupby("step", sort=False):
        part = part.sort_values("budget_epochs")
        left.errorbar(part.budget_epochs, part.top1_mean, yerr=part.top1_ci.fillna(0), marker="o", ms=3,
                      capsize=2, label=step)
    left.set_xscale("log", base=2)
    left.set_xticks(budgets, [f"{b:g}" for b in budgets])
    left.set(xlabel="epochs", ylabel="top-1 (%)")
    left.legend(fontsize=6, ncol=2)
    left.grid(alpha=0.3)
    y = {step: i for i, step in enumerate(reversed(steps))}
    width = 0.8 / (len(budgets) + 1)
    for k, b in enumerate(budgets):
        part = summary[summary.budget_epochs == b]
        ys = [y[st] + (k - len(budgets) / 2) * width for st in part.step]
        right.errorbar(part.delta_top1, ys, xerr=part.delta_top1_ci.fillna(0), fmt="o", ms=3, capsize=2,
                       label=f"ours, {b:g} epochs")
    paper = summary.drop_duplicates("step")
    right.scatter(paper.paper_delta_top1, [y[st] + len(budgets) / 2 * width for st in paper.step], marker="D",
                  color="tab:gray", s=14, label="paper (ImageNet, 300 epochs)")
    right.set_yticks(list(y.values()), list(y.keys()), fontsize=7)
    right.axvline(0, color="black", lw=0.8)
    right.set(xlabel="delta top-1 to the reference step (points), 95% CI over seeds")
    right.legend(fontsize=7)
    right.grid(axis="x", alpha=0.3)
    r = summary.iloc[0]
    fig.suptitle(title or f"{r.regime} on {r.data} ({r.image_size}px, width x{r.width_multiplier}) at "
                 f"{', '.join(f'{b:g}' for b in budgets)} epochs", fontsize=10)
    fig.tight_layout()
    return fig


def trajectory_figure(summary: pd.DataFrame, title: str | None = None):
    """Top-1 against GFLOPs along the adopted steps (the walk from ResNet to ConvNeXt), ours beside the paper's;
    non-adopted points hollow."""
    fig = Figure(figsize=(11, 4.6))
    axes = fig.subplots(1, 2)
    for ax, top1, gflops, name in ((axes[0], "top1_mean", "gflops", "ours"),
                                   (axes[1], "paper_top1", "paper_gflops", "paper")):
        s = summary.dropna(subset=[top1, gflops])
        path = s[s.adopted]
        ax.plot(path[gflops], path[top1], "-o", color="tab:blue" if name == "ours" else "tab:gray", ms=4)
        branch = s[~s.adopted]
        ax.plot(branch[gflops], branch[top1], "o", mfc="none", color="tab:orange", ms=5)
        for r in s.itertuples():
            ax.annotate(r.step, (getattr(r, gflops), getattr(r, top1)), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        ax.set_xlabel("GFLOPs (224²)" + (", as trained" if name == "ours" else ""))
        ax.set_ylabel("top-1 (%)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title or _title(summary), fontsize=10)
    fig.tight_layout()
    return fig


def _title(summary: pd.DataFrame) -> str:
    r = summary.iloc[0]
    return (f"{r.regime} roadmap on {r.data} ({r.image_size}px, budget {r.budget}: {r.budget_epochs:g} epochs, "
            f"width x{r.width_multiplier})")


# ------------------------------------------------------------------------------------------- write
def _figure_suffix(key: tuple, keys: list[tuple]) -> str:
    """A setting's figure-name suffix: its readable values (regime, data, size, ...), one path component, and
    its setting hash (the last value) only where two settings read alike; empty for a report of one setting."""
    if len(keys) == 1:
        return ""
    readable = [k[:-1] for k in keys]
    parts = key if readable.count(key[:-1]) > 1 else key[:-1]
    return "-" + path_component("-".join(str(k) for k in parts))


def _save_figure(fig, path: Path) -> None:
    for ext in ("png", "svg"):
        buf = BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        atomic_write_bytes(path.parent / f"{path.name}.{ext}", buf.getvalue())  # names may hold dots (x0.25)


def read_bench(bench_csv: str | Path, mode: str = "train") -> pd.DataFrame:
    """The rows of one mode of an `ablate.bench` CSV, one per step, or an error naming the file."""
    if not Path(bench_csv).is_file():
        raise FileNotFoundError(f"bench={bench_csv} does not exist; expected a CSV written by python -m ablate.bench")
    try:
        bench = pd.read_csv(bench_csv, comment="#")
        bench = bench[bench["mode"] == mode]
    except (ValueError, KeyError, pd.errors.ParserError) as e:  # not a CSV, or not the bench's columns
        raise ConfigError(f"bench={bench_csv} is not an ablate.bench CSV ({type(e).__name__}: {one_line(e)})") from None
    if bench.empty:
        raise ConfigError(f"bench={bench_csv} has no {mode!r} rows; run ablate.bench with modes=[{mode}]")
    doubled = sorted(set(bench.step[bench.duplicated(["regime", "step"])]))
    if doubled:
        raise ConfigError(f"bench={bench_csv} has several {mode!r} jobs of {', '.join(doubled)}; give the report a "
                          "CSV with one job per step")
    return bench


def with_bench(summary: pd.DataFrame, bench: pd.DataFrame) -> pd.DataFrame:
    """Adds `ablate.bench` images/s (rows of `read_bench`) per step, for the figure's speed panel."""
    setting = [f"{r.image_size}px, batch {r.batch_size}, width x{r.width_multiplier:g}, {r.device}, {r.precision}"
               for r in bench.itertuples()]
    bench = bench.assign(bench_img_s=bench.img_s, bench_mode=bench["mode"], bench_setting=setting)
    return summary.merge(bench[["regime", "step", "bench_img_s", "bench_mode", "bench_setting"]],
                         on=["regime", "step"], how="left")


def report(root: str | Path, out: str | Path | None = None, bench: str | Path | None = None) -> dict:
    """Writes every output; returns the runs, the summary and the problems."""
    if not Path(root).is_dir():
        what = "is a file" if Path(root).exists() else "does not exist"
        raise NotADirectoryError(f"report directory {root} {what}; expected a directory holding run records")
    out = Path(out or root)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out={out} is a file; expected a directory for the report")
    bench = read_bench(bench) if bench is not None else None  # refused before any work
    runs, problems = collect(root)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance()  # one for the three tables
    summary = summarize(runs)
    problems += mixed_experiments(summary, runs) + missing_references(summary)
    if bench is not None:
        summary = with_bench(summary, bench)
    problem_table = pd.DataFrame([p.__dict__ for p in problems], columns=["kind", "path", "detail"])
    for name, table in (("runs", runs), ("summary", summary), ("problems", problem_table)):
        write_csv(table, out / f"{name}.csv", float_format="%.6g", prov=prov)
    settings = list(summary.groupby(SETTING, sort=False))
    for key, part in settings:
        suffix = _figure_suffix(key, [k for k, _ in settings])
        _save_figure(roadmap_figure(part.reset_index(drop=True)), out / f"roadmap{suffix}")
        _save_figure(trajectory_figure(part.reset_index(drop=True)), out / f"trajectory{suffix}")
        if part.mca_mean.notna().any():
            in_setting = runs[_same(runs, dict(zip(SETTING, key)))]
            _save_figure(corruption_heatmap(in_setting, part.reset_index(drop=True)), out / f"corruptions{suffix}")
    by_budget = [k for k in SETTING if k != "budget_epochs"]
    budget_settings = list(summary.groupby(by_budget, sort=False))
    for key, part in budget_settings:
        if part.budget_epochs.nunique() > 1:
            suffix = _figure_suffix(key, [k for k, _ in budget_settings])
            _save_figure(budget_figure(part.reset_index(drop=True)), out / f"budgets{suffix}")
    agreement = {key: rank_agreement(part) for key, part in settings}
    return {"runs": runs, "summary": summary, "problems": problems, "out": out, "agreement": agreement}


@dataclass(frozen=True)
class ReportOptions(CommandOptions):
    out: str | None = None      # where the tables and figures go (default: DIR)
    bench: str | None = None    # an ablate.bench CSV for the figure's speed panel


COMMAND = Command(
    "python -m ablate.report", "Tables, problems and figures from every result.json under DIR.", ReportOptions,
    positional=("DIR",),
    examples=("python -m ablate.report multirun/r50",
              "python -m ablate.report multirun/cifar10_proxy/r50 out=results/cifar10_proxy"))


def _print_report(result: dict) -> None:
    summary, problems = result["summary"], result["problems"]
    cols = ["step", "seeds", "top1_mean", "top1_std", "top1_binomial_se", "delta_top1", "delta_top1_ci",
            "delta_top1_ci_pooled", "delta_top1_p", "resolved", "resolved_holm", "resolved_bh", "paper_delta_top1",
            "sign_agrees", "params", "gflops", "paper_top1"]
    if summary.get("mca_mean", pd.Series(dtype=float)).notna().any():
        cols += ["mca_mean", "delta_mca", "delta_mca_ci", "mce", "relative_drop", "delta_relative_drop",
                 "delta_relative_drop_ci"]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}") if len(summary) else "no finished runs")
    for key, a in result["agreement"].items():
        low, high = a["spearman_ci"]
        print(f"{', '.join(map(str, key[:-1]))}: Spearman of {a['steps']} adopted deltas with the paper's "
              f"{a['spearman']:.2f} (95% bootstrap CI [{low:.2f}, {high:.2f}], permutation p {a['spearman_p']:.3f}); "
              f"{a['sign_agrees']} of {a['signed']} have the paper's sign (binomial p {a['sign_p']:.3f}); resolved: "
              f"{a['resolved']} uncorrected, {a['resolved_holm']} Holm, {a['resolved_bh']} Benjamini-Hochberg")
    for p in problems:
        print(f"{p.kind}: {p.path}: {p.detail}", file=sys.stderr)
    print(f"{len(result['runs'])} runs, {len(problems)} problem(s) -> {result['out']}")


def main(argv: list[str]) -> int:
    return COMMAND.main(argv, lambda root, options, _: _print_report(report(root, options.out, options.bench)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
