"""python -m ablate.report DIR [out=DIR] [bench=CSV]: every run under DIR as one tidy table, a summary per step,
the paper's Figure 2 beside ours, and a top-1 vs GFLOPs trajectory.

Writes to OUT (default DIR): runs.csv (a row per run), summary.csv (a row per step: mean/std top-1 over
seeds, params, GFLOPs, throughput, delta to its reference step, the paper's numbers), problems.csv (corrupt,
failed, unfinished and missing runs), roadmap.{png,svg} and trajectory.{png,svg}; one set per setting
(regime, data, budget) when DIR mixes several. bench=CSV (from ablate.bench) draws the figure's speed panel
from a benchmark instead of the training records.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal
from io import BytesIO
from pathlib import Path

import pandas as pd

from ..cli import Command, one_line
from ..config import LOGGERS, CommandOptions, LoggerConfig
from ..errors import ConfigError
from ..io import atomic_write_bytes, path_component
from ..provenance import provenance, write_csv
from .collect import SETTING, collect, same_setting
from .figures import budget_figure, corruption_heatmap, roadmap_figure, trajectory_figure
from .statistics import mixed_experiments, missing_references, rank_agreement, summarize


def _figure_suffix(key: tuple, keys: list[tuple]) -> str:
    """A setting's figure-name suffix: its readable values (regime, data, size, ...), one path component, and
    its setting hash (the last value) only where two settings read alike; empty for a report of one setting."""
    if len(keys) == 1:
        return ""
    readable = [k[:-1] for k in keys]
    parts = key if readable.count(key[:-1]) > 1 else key[:-1]
    return "-" + path_component("-".join(str(k) for k in parts))


def _save_figure(fig, path: Path) -> Path:
    """Writes the figure as PNG and SVG; returns the PNG's path."""
    for ext in ("png", "svg"):
        buf = BytesIO()
        fig.savefig(buf, format=ext, dpi=150, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else None)
        atomic_write_bytes(path.parent / f"{path.name}.{ext}", buf.getvalue())  # names may hold dots (x0.25)
    return path.parent / f"{path.name}.png"


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


def report(root: str | Path, out: str | Path | None = None, bench: str | Path | None = None,
           logger: LoggerConfig = LoggerConfig()) -> dict:
    """Writes every output (and shows the figures and tables in `logger`'s tracker); returns the runs, the summary
    and the problems."""
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
    figures = []
    for key, part in settings:
        suffix = _figure_suffix(key, [k for k, _ in settings])
        figures.append(_save_figure(roadmap_figure(part.reset_index(drop=True)), out / f"roadmap{suffix}"))
        figures.append(_save_figure(trajectory_figure(part.reset_index(drop=True)), out / f"trajectory{suffix}"))
        if part.mca_mean.notna().any():
            in_setting = runs[same_setting(runs, dict(zip(SETTING, key)))]
            figures.append(_save_figure(corruption_heatmap(in_setting, part.reset_index(drop=True)),
                                        out / f"corruptions{suffix}"))
    by_budget = [k for k in SETTING if k != "budget_epochs"]
    budget_settings = list(summary.groupby(by_budget, sort=False))
    for key, part in budget_settings:
        if part.budget_epochs.nunique() > 1:
            suffix = _figure_suffix(key, [k for k, _ in budget_settings])
            figures.append(_save_figure(budget_figure(part.reset_index(drop=True)), out / f"budgets{suffix}"))
    if logger.name != "none":
        from ..trackers import log_report  # the tracker's library (torch, for TensorBoard) only when asked for
        log_report(logger, out, figures, {"summary": summary, "problems": problem_table})
    agreement = {key: rank_agreement(part) for key, part in settings}
    return {"runs": runs, "summary": summary, "problems": problems, "out": out, "agreement": agreement}


@dataclass(frozen=True)
class ReportOptions(CommandOptions):
    out: str | None = None      # where the tables and figures go (default: DIR)
    bench: str | None = None    # an ablate.bench CSV for the figure's speed panel
    logger: Literal[LOGGERS] = "none"  # also show it there (one run per report)


COMMAND = Command(
    "python -m ablate.report", "Tables, problems and figures from every result.json under DIR.", ReportOptions,
    positional=("DIR",),
    examples=("python -m ablate.report multirun/r50",
              "python -m ablate.report multirun/cifar10_proxy/r50 out=results/cifar10_proxy",
              "python -m ablate.report multirun/r50 logger=tensorboard"))


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
    return COMMAND.main(argv, lambda root, options, _: _print_report(
        report(root, options.out, options.bench, LoggerConfig(name=options.logger))))
