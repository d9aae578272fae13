"""The report's figures: the paper's Figure 2 beside ours, the deltas, the corruption heat map, the budgets and the
top-1 vs GFLOPs trajectory. matplotlib's Figure, no pyplot: no global state, any backend; notebooks display them."""
from __future__ import annotations

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure



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
