"""python -m ablate.report DIR [out=DIR] [bench=CSV]: every run under DIR as one tidy table, a summary per step, the
paper's Figure 2 beside ours, and a top-1 vs GFLOPs trajectory.

Writes to OUT (default DIR): runs.csv (a row per run), summary.csv (a row per step: mean/std top-1 over
seeds, params, GFLOPs, throughput, delta to its reference step, the paper's numbers), problems.csv (corrupt,
failed, unfinished and missing runs), roadmap.{png,svg} and trajectory.{png,svg}; one set per setting
(regime, data, budget) when DIR mixes several. bench=CSV (from ablate.bench) draws the figure's speed panel
from a benchmark instead of the training records.
"""
from __future__ import annotations

import json
import sys
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global state, any backend; notebooks display the figures
from omegaconf import OmegaConf

from .config import compose_config, expand_sweep, identity_hash
from .io import atomic_write_bytes, atomic_write_text
from .paper import paper_table
from .provenance import csv_header, provenance

SETTING = ["regime", "data", "image_size", "budget", "width_multiplier"]
# what a run measured; the rest of a row says which run it was and where it came from
TIMING = ["train_throughput", "wall_time_s"]


@dataclass(frozen=True)
class Problem:
    kind: str       # corrupt | failed | unfinished | missing
    path: str
    detail: str


# ------------------------------------------------------------------------------------------- collect
def _row(record: dict, path: Path, root: Path) -> dict:
    cfg, step = record["config"], record["step"]
    final = record.get("final") or {}
    return {
        "run_dir": str(path.parent.relative_to(root)), "status": record["status"],
        "regime": record["regime"], "data": cfg["data"]["name"], "image_size": cfg["data"]["image_size"],
        "budget": cfg["budget"]["name"], "width_multiplier": cfg["net"]["width_multiplier"],
        "recipe": cfg["recipe"]["name"], "step": step["name"], "step_index": step["index"],
        "adopted": step["adopted"], "reference": step.get("reference"), "seed": record["seed"],
        "top1": final.get("top1"), "top5": final.get("top5"), "best_top1": record.get("best_top1"),
        "params": record["params"], "gflops": record["gflops"], "gflops_at_input": record["gflops_at_input"],
        "epochs": len(record.get("epochs", [])), "train_throughput": record.get("train_throughput"),
        "wall_time_s": record.get("wall_time_s"), "identity_hash": record["identity_hash"],
        "git_revision": record["provenance"]["git_revision"], "date": record["provenance"]["date"],
    }


def collect(root: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Every result.json under root (a row each) and what is wrong: unreadable records, failed and unfinished
    runs, jobs a sweep launched without a record, and jobs its last launch planned that never ran."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report directory {root} does not exist")
    rows, problems, accounted = [], [], set()  # accounted: identities of jobs already listed
    for path in sorted(root.rglob("result.json")):
        try:
            record = json.loads(path.read_text())
            row = _row(record, path, root)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            problems.append(Problem("corrupt", str(path), f"unreadable record ({type(e).__name__}: {e}); "
                                    "rerun the job (train.overwrite=true) or move the file away"))
            accounted |= _job_identity(path.parent)
            continue
        rows.append(row)
        accounted.add(row["identity_hash"])
        if row["status"] == "failed":
            problems.append(Problem("failed", str(path), record.get("reason") or "failed"))
        elif row["status"] != "finished":
            problems.append(Problem("unfinished", str(path), f"stopped after epoch {row['epochs']} "
                                    "(killed or still running); rerun the same command to resume"))
    for job_cfg in sorted(root.rglob(".hydra/config.yaml")):
        job = job_cfg.parent.parent
        if not (job / "result.json").exists():
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
            "top1", "top5", "best_top1", "params", "gflops", "gflops_at_input", "epochs", *TIMING,
            "identity_hash", "git_revision", "date"]


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
def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """A row per setting and step over its finished seeds, in roadmap order, with the paper's numbers."""
    done = runs[runs.status == "finished"]
    keys = [*SETTING, "step"]
    summary = done.groupby(keys, sort=False).agg(
        step_index=("step_index", "first"), adopted=("adopted", "first"), reference=("reference", "first"),
        recipe=("recipe", "first"), seeds=("seed", "nunique"), top1_mean=("top1", "mean"),
        top1_std=("top1", "std"), top5_mean=("top5", "mean"), params=("params", "first"),
        gflops=("gflops", "first"), gflops_at_input=("gflops_at_input", "first"),
        train_throughput=("train_throughput", "mean")).reset_index()
    summary = summary.sort_values([*SETTING, "step_index", "adopted", "step"],
                                  ascending=[True] * len(SETTING) + [True, False, True], ignore_index=True)
    summary["reference"] = [_reference(summary, i) for i in range(len(summary))]
    rows = summary.to_dict("records")
    top1 = {(*(r[k] for k in SETTING), r["step"]): r["top1_mean"] for r in rows}
    summary["delta_top1"] = [r["top1_mean"] - top1.get((*(r[k] for k in SETTING), r["reference"]), float("nan"))
                             for r in rows]
    paper = paper_table()[["regime", "step", "top1", "gflops"]].rename(
        columns={"top1": "paper_top1", "gflops": "paper_gflops"})
    return summary.merge(paper, on=["regime", "step"], how="left")


def _reference(summary: pd.DataFrame, i: int):
    """What a step is compared with: its own `step.reference` (leave-one-out, add-one-in), else the closest
    earlier adopted step of the same setting (the previous roadmap step; move_up_dwconv for kernel branches)."""
    row = summary.iloc[i]
    if isinstance(row.reference, str):
        return row.reference
    same = (summary[SETTING] == row[SETTING]).all(axis=1)
    earlier = summary[same & summary.adopted & (summary.step_index < row.step_index)]
    return earlier.step.iloc[-1] if len(earlier) else None


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
    GFLOPs written on each, seed std as error bars, non-adopted branches hatched; a throughput panel when
    the runs measured it."""
    s = summary.iloc[::-1]  # barh draws bottom-up; the roadmap reads top-down
    labels = [f"{r.step}" + ("" if r.adopted else " *") for r in s.itertuples()]
    speed = "bench_img_s" if "bench_img_s" in s and s.bench_img_s.notna().any() else "train_throughput"
    panels = 3 if s[speed].notna().any() else 2
    fig = Figure(figsize=(5 * panels, 0.38 * len(s) + 1.6))
    axes = fig.subplots(1, panels, sharey=True)
    _bars(axes[0], labels, list(s.top1_mean), list(s.top1_std.fillna(0)),
          [f"{g:.2f} GF" for g in s.gflops], list(s.adopted), "tab:blue")
    seeds = f"{s.seeds.min()}" + (f"-{s.seeds.max()}" if s.seeds.max() != s.seeds.min() else "")
    axes[0].set_title(f"ours: top-1 (%), mean ± std over {seeds} seed(s)", fontsize=9)
    axes[0].set_xlabel("GFLOPs on the bars: at 224², at the trained width", fontsize=8)
    _bars(axes[1], labels, list(s.paper_top1), None,
          [f"{g:.2f} GF" if pd.notna(g) else "" for g in s.paper_gflops], list(s.adopted), "tab:gray")
    axes[1].set_title("paper (Tables 10/11): ImageNet-1K top-1 (%)", fontsize=9)
    axes[1].set_xlabel("GFLOPs on the bars: the paper's", fontsize=8)
    if panels == 3:
        _bars(axes[2], labels, list(s[speed]), None, [""] * len(s), list(s.adopted), "tab:green")
        if speed == "bench_img_s":
            axes[2].set_title(f"ours: {s.bench_mode.iloc[0]} images/s (ablate.bench)", fontsize=9)
            axes[2].set_xlabel(s.bench_setting.iloc[0], fontsize=8)
        else:
            axes[2].set_title("ours: training images/s", fontsize=9)
            axes[2].set_xlabel("as trained (batch, device and contention of each run)", fontsize=8)
        axes[2].set_xlim(left=0)
    fig.suptitle(title or _title(summary), fontsize=10)
    fig.text(0.01, 0.005, "* not adopted (a branch or an ablation)", fontsize=7)
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
    return f"{r.regime} roadmap on {r.data} ({r.image_size}px, budget {r.budget}, width x{r.width_multiplier})"


# ------------------------------------------------------------------------------------------- write
def _save_figure(fig, path: Path) -> None:
    for ext in ("png", "svg"):
        buf = BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        atomic_write_bytes(path.with_suffix(f".{ext}"), buf.getvalue())


def _write_csv(path: Path, table: pd.DataFrame, header: str) -> None:
    atomic_write_text(path, header + table.to_csv(index=False, float_format="%.6g"))


def with_bench(summary: pd.DataFrame, bench_csv: str | Path, mode: str = "train") -> pd.DataFrame:
    """Adds `ablate.bench` images/s (one mode) per step, for the figure's speed panel."""
    bench = pd.read_csv(bench_csv, comment="#")
    bench = bench[bench["mode"] == mode]
    if bench.empty:
        raise ValueError(f"{bench_csv} has no {mode!r} rows; run ablate.bench with modes=[{mode}]")
    setting = [f"{r.image_size}px, batch {r.batch_size}, width x{r.width_multiplier:g}, {r.device}, {r.precision}"
               for r in bench.itertuples()]
    bench = bench.assign(bench_img_s=bench.img_s, bench_mode=mode, bench_setting=setting)
    return summary.merge(bench[["regime", "step", "bench_img_s", "bench_mode", "bench_setting"]],
                         on=["regime", "step"], how="left")


def report(root: str | Path, out: str | Path | None = None, bench: str | Path | None = None) -> dict:
    """Writes every output; returns the runs, the summary and the problems."""
    runs, problems = collect(root)
    out = Path(out or root)
    out.mkdir(parents=True, exist_ok=True)
    header = csv_header(provenance())
    summary = summarize(runs)
    if bench is not None:
        summary = with_bench(summary, bench)
    _write_csv(out / "runs.csv", runs, header)
    _write_csv(out / "summary.csv", summary, header)
    _write_csv(out / "problems.csv", pd.DataFrame([p.__dict__ for p in problems], columns=["kind", "path", "detail"]),
               header)
    settings = list(summary.groupby(SETTING, sort=False))
    for key, part in settings:
        suffix = "" if len(settings) == 1 else "-" + "-".join(str(k) for k in key)
        _save_figure(roadmap_figure(part.reset_index(drop=True)), out / f"roadmap{suffix}")
        _save_figure(trajectory_figure(part.reset_index(drop=True)), out / f"trajectory{suffix}")
    return {"runs": runs, "summary": summary, "problems": problems, "out": out}


def main(argv: list[str]) -> int:
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    args = [a for a in argv if "=" not in a]
    if len(args) != 1 or set(options) - {"out", "bench"}:
        print("usage: python -m ablate.report DIR [out=DIR] [bench=ABLATE_BENCH.csv]", file=sys.stderr)
        return 2
    try:
        result = report(args[0], options.get("out"), options.get("bench"))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary, problems = result["summary"], result["problems"]
    cols = ["step", "seeds", "top1_mean", "top1_std", "delta_top1", "params", "gflops", "paper_top1"]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}") if len(summary) else "no finished runs")
    for p in problems:
        print(f"{p.kind}: {p.path}: {p.detail}", file=sys.stderr)
    print(f"{len(result['runs'])} runs, {len(problems)} problem(s) -> {result['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
