"""The papers' own per-step numbers, read from results/paper/*.csv (ConvNeXt's Tables 10 and 11 in roadmap.csv, ConvNeXt
V2's in convnext_v2.csv): numbers only, joined to the declared steps (ablate.roadmap) by (regime, step); a step no
paper measured has no row. `reference_top1`, where a paper gives it, is its own number for the step's reference."""
from __future__ import annotations


import pandas as pd

from . import REPO_ROOT

PAPER_DIR = REPO_ROOT / "results" / "paper"


def paper_table(regime: str | None = None) -> pd.DataFrame:
    """The rows of one regime (all regimes for None), each with its `source` (the file's name)."""
    table = pd.concat([pd.read_csv(path, comment="#").assign(source=path.stem)
                       for path in sorted(PAPER_DIR.glob("*.csv"))], ignore_index=True)
    if regime is None:
        return table
    if regime not in set(table.regime):
        raise ValueError(f"regime={regime!r} is not allowed; choose one of: {', '.join(sorted(set(table.regime)))}")
    return table[table.regime == regime].reset_index(drop=True)
