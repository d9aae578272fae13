"""Predicted beside measured: joins a plan CSV (job_s per identity) with the finished records under a runs directory
(measured seconds as `python -m ablate.plan measured=DIR` counts them), prints the README's table rows and counts.

    python results/plan/compare.py results/plan/cifar10_proxy_8ep_cpu.csv results/cifar10_proxy_3seeds/runs/8ep
"""
import sys
from pathlib import Path

import pandas as pd

from ablate.plan import measured_wall
from ablate.rundir import RESULT, read_record

plan_csv, runs = sys.argv[1], Path(sys.argv[2])
measured = measured_wall(runs)
started = {}  # identity_hash: (start of the first segment, number of segments)
for path in runs.rglob(RESULT):
    record = read_record(path)
    started[record["identity_hash"]] = (record["segments"][0]["provenance"]["date"], len(record["segments"]))
table = pd.read_csv(plan_csv, comment="#").drop(columns=["measured_s", "predicted_over_measured"], errors="ignore")
table = table[table.identity_hash.isin(measured)].copy()
table["measured_s"] = table.identity_hash.map(measured)
table["start"], table["segments"] = zip(*table.identity_hash.map(started))
table["ratio"] = table.job_s / table.measured_s
print("| step | seed | predicted min | measured min | predicted / measured | started (UTC) | segments |")
print("|---|---|---|---|---|---|---|")
for r in table.sort_values("start").itertuples():
    print(f"| `{r.step}` | {r.seed} | {r.job_s / 60:.1f} | {r.measured_s / 60:.1f} | {r.ratio:.2f} | {r.start[11:16]} "
          f"| {r.segments} |")
off = (table.ratio - 1).abs()
print(f"{len(table)} jobs: within 25% {(off <= 0.25).sum()}, within 10% {(off <= 0.10).sum()}, "
      f"within 5% {(off <= 0.05).sum()}; measured {table.measured_s.sum() / 3600:.2f} job-hours")
