"""Regenerate a golden table:

    python tests/golden/regenerate.py complexity   # exact params and multiply-adds of every step, both regimes
    python tests/golden/regenerate.py identity     # the run identity hash of every checkpoint's composition

Run it only when a change is meant to change what it holds, and say so in the commit. `test_golden_params_and_flops`
holds every later change to the complexity numbers (the paper's Tables 10/11 still hold the GFLOPs whatever this
file says); `test_every_checkpoint_keeps_its_run_identity` holds the identity hashes, so a restructuring that would
orphan the runs of a sweep started before it fails.
"""
import sys
from pathlib import Path

import pandas as pd

from ablate.complexity import complexity_table

GOLDEN = Path(__file__).with_name("complexity.csv")
IDENTITY = Path(__file__).with_name("identity.csv")

if __name__ == "__main__":
    which = sys.argv[1:] or ["complexity", "identity"]
    if "complexity" in which:
        table = pd.concat([complexity_table(regime).assign(regime=regime) for regime in ("r50", "r200")])
        table[["regime", "step", "params", "macs"]].to_csv(GOLDEN, index=False)
        print(f"wrote {GOLDEN} ({len(table)} steps)")
    if "identity" in which:
        sys.path.insert(0, str(Path(__file__).parents[1]))
        from helpers import identity_table
        rows = pd.DataFrame(identity_table())
        rows.to_csv(IDENTITY, index=False)
        print(f"wrote {IDENTITY} ({len(rows)} compositions)")
