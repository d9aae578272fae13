"""The report's statistics: a row per setting and step over its seeds (means, intervals, seed-paired deltas to the
step's reference, multiple-comparison verdicts, robustness), and how the deltas agree with the paper's."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..paper import paper_table
from ..roadmap import roadmap
from ..stats import (benjamini_hochberg, binomial_se, equal_variance_p, holm, mean_ci, paired_delta, pooled_ci,
                     resolved, sign_agreement_p, spearman_with_uncertainty)
from .collect import ROBUSTNESS, SETTING, Problem, same_setting


def step_reference(step: str, explicit) -> str | None:
    """What a step is compared with: its own `step.reference` (leave-one-out, add-one-in), else the step its
    declaration builds on (move_up_dwconv for the kernel branches); never a step further back, so a missing
    reference leaves the delta empty rather than spanning several steps."""
    if isinstance(explicit, str):
        return explicit
    declared = roadmap().steps.get(step)
    return declared.builds_on if declared else None


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
    summary["reference"] = [step_reference(r["step"], r["reference"]) for r in records]
    paper = paper_table()[["regime", "step", "top1", "gflops", "reference_top1"]].rename(
        columns={"top1": "paper_top1", "gflops": "paper_gflops"})
    summary = summary.merge(paper.drop(columns="reference_top1"), on=["regime", "step"], how="left")
    paper_top1 = {(r.regime, r.step): r.paper_top1 for r in paper.itertuples()}
    # a paper's own number for the step's reference (ConvNeXt V2's V1-T), else the reference step's row
    paper_ref = {(r.regime, r.step): r.reference_top1 for r in paper.itertuples() if pd.notna(r.reference_top1)}
    rows = []
    for r in summary.to_dict("records"):
        same = done[same_setting(done, r)]
        mine = same[same.experiment == r["experiment"]]
        ref = same[same.step == r["reference"]] if r["reference"] else same.iloc[:0]
        if ref.experiment.nunique() > 1:  # which of them? (listed as `mixed`); no delta rather than a pooled one
            ref = ref.iloc[:0]
        top1 = _paired(mine, ref, "top1")
        paper_delta = paper_top1.get((r["regime"], r["step"]), NAN) - paper_ref.get(
            (r["regime"], r["step"]), paper_top1.get((r["regime"], r["reference"]), NAN))
        rows.append({**_robustness(mine, ref, same[(same.step != r["step"]) | (same.experiment == r["experiment"])],
                                   r["step"]),
                     **_accuracy(mine, top1), **_cost(r, ref), **_agreement(top1["delta"], paper_delta)})
    summary = pd.concat([summary, pd.DataFrame(rows, index=summary.index)], axis=1)
    return _multiple_steps(summary)


NAN = float("nan")
NO_DELTA = {"delta": NAN, "ci": NAN, "p": NAN, "paired_seeds": 0, "var": NAN, "diffs": []}


def _paired(mine: pd.DataFrame, ref: pd.DataFrame, column: str) -> dict:
    """The seed-paired delta of `column` to the reference's runs (NO_DELTA where the step has none)."""
    return paired_delta(mine, ref, column) if len(ref) else NO_DELTA


def _robustness(mine: pd.DataFrame, ref: pd.DataFrame, others: pd.DataFrame, step: str) -> dict:
    """Mean corruption top-1 and its delta; the drop relative to clean top-1 separates robustness from accuracy
    (mca rises with any clean gain); mCE against the setting's baseline (`others`: this step's runs and the
    other steps')."""
    mca, drop = _paired(mine, ref, "mca"), _paired(mine, ref, "relative_drop")
    return {"mca_mean": mine.mca.mean(), "mca_ci": mean_ci(mine.mca)[1], "relative_drop": mine.relative_drop.mean(),
            "delta_mca": mca["delta"], "delta_mca_ci": mca["ci"], "mca_resolved": resolved(mca["delta"], mca["ci"]),
            "delta_relative_drop": drop["delta"], "delta_relative_drop_ci": drop["ci"],
            "drop_resolved": resolved(drop["delta"], drop["ci"]), "mce": mean_corruption_error(others, step)}


def _accuracy(mine: pd.DataFrame, top1: dict) -> dict:
    """The top-1 delta, its interval and verdict, and one run's own sampling error on its val set beside the
    spread over seeds."""
    with_val = len(mine) and "val_images" in mine and mine.val_images.notna().all()
    return {"delta_top1": top1["delta"], "delta_top1_ci": top1["ci"], "paired_seeds": top1["paired_seeds"],
            "resolved": resolved(top1["delta"], top1["ci"]), "delta_top1_p": top1["p"],
            "delta_top1_var": top1["var"], "_diffs": top1["diffs"],
            "top1_binomial_se": (mine.apply(lambda x: binomial_se(x.top1, x.val_images), axis=1).mean()
                                 if with_val else NAN)}


def _cost(r: dict, ref: pd.DataFrame) -> dict:
    """Params and GFLOPs against the reference: add-one-in and leave-one-out nets may cost far more."""
    return {"params_vs_reference": r["params"] / ref.params.iloc[0] if len(ref) else NAN,
            "gflops_vs_reference": r["gflops"] / ref.gflops.iloc[0] if len(ref) else NAN}


def _agreement(delta: float, paper_delta: float) -> dict:
    return {"paper_delta_top1": paper_delta,
            "sign_agrees": (bool((delta > 0) == (paper_delta > 0))
                            if pd.notna(delta) and pd.notna(paper_delta) and paper_delta != 0 else None)}


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


def mean_corruption_error(done: pd.DataFrame, step: str, baseline: str | None = None) -> float:
    """mCE as ImageNet-C defines it, relative to the roadmap's start (ResNet-50) of the same setting: for each
    corruption, the step's error summed over severities over the baseline's, averaged over corruptions, x100.
    Errors are averaged over each step's seeds first."""
    cols = [c for c in done.columns if c.startswith("corr_")]
    mine = 100 - done[done.step == step][cols].mean()
    base = 100 - done[done.step == (baseline or roadmap().start)][cols].mean()
    ratios = (mine / base).dropna()
    return float(100 * ratios.mean()) if len(ratios) else float("nan")


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
