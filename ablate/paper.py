"""The paper's own per-step numbers (Tables 10 and 11), read from results/paper/roadmap.csv."""
from __future__ import annotations


import pandas as pd

from . import REPO_ROOT

PAPER_CSV = REPO_ROOT / "results" / "paper" / "roadmap.csv"


def paper_table(regime: str | None = None) -> pd.DataFrame:
    """One row per step in roadmap order (kernel branches beside the adopted kernel step)."""
    table = pd.read_csv(PAPER_CSV, comment="#")
    if regime is None:
        return table
    if regime not in set(table.regime):
        raise ValueError(f"regime={regime!r} is not allowed; choose one of: {', '.join(sorted(set(table.regime)))}")
    return table[table.regime == regime].reset_index(drop=True)


def roadmap_steps(regime: str = "r50", adopted_only: bool = False) -> list[str]:
    table = paper_table(regime)
    return list(table[table.adopted].step if adopted_only else table.step)
