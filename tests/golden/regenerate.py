"""Regenerate the golden complexity table (exact params and multiply-adds of every step, both regimes):

    python tests/golden/regenerate.py

Run it only when a change to the network is meant to change its size, and say so in the commit: the test
`test_golden_params_and_flops` holds every later change to these exact numbers, and the paper's Tables 10/11
(`test_flops_match_the_paper_to_two_decimals`) still hold the GFLOPs whatever this file says.
"""
from pathlib import Path

import pandas as pd

from ablate.complexity import complexity_table

GOLDEN = Path(__file__).with_name("complexity.csv")

if __name__ == "__main__":
    table = pd.concat([complexity_table(regime).assign(regime=regime) for regime in ("r50", "r200")])
    table[["regime", "step", "params", "macs"]].to_csv(GOLDEN, index=False)
    print(f"wrote {GOLDEN} ({len(table)} steps)")
