"""The report: every run under a directory as one tidy table (collect), a summary per step with its statistics
(statistics), the figures (figures), and the command that writes them all (command: python -m ablate.report)."""
from .collect import ROBUSTNESS, SETTING, Problem, collect, same_setting, sweep_jobs
from .command import COMMAND, main, read_bench, report, with_bench
from .figures import budget_figure, corruption_heatmap, roadmap_figure, trajectory_figure
from .statistics import (mean_corruption_error, missing_references, mixed_experiments, rank_agreement, step_reference,
                         summarize)

__all__ = ["ROBUSTNESS", "SETTING", "Problem", "collect", "same_setting", "sweep_jobs", "COMMAND", "main", "read_bench",
           "report", "with_bench", "budget_figure", "corruption_heatmap", "roadmap_figure", "trajectory_figure",
           "mean_corruption_error", "missing_references", "mixed_experiments", "rank_agreement", "step_reference",
           "summarize"]
