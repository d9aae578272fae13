"""Predicted beside measured: joins a plan CSV (job_s per identity) with the finished records under a runs directory
(measured seconds as `python -m ablate.plan measured=DIR` counts them), prints the README's table rows and counts.

    python results/plan/compare.py results/plan/cifar10_proxy_8ep_cpu.csv results/cifar10_proxy_3seeds/runs/8ep
    python results/plan/compare.py results/imagenette_budget/plan.csv results/imagenette_proxy/runs/sweep \
        image_size=96 epochs=16

With COLUMN=VALUE filters, the plan rows they select are joined by step and seed instead of identity (for a plan
made before a change of the identity's definition, as the Imagenette one was).
"""
import sys
from pathlib import Path

import pandas as pd

from ablate.plan import measured_wall
from ablate.rundir import RESULT, read_record

plan_csv, runs, filters = sys.argv[1], Path(sys.argv[2]), dict(a.split("=", 1) for a in sys.argv[3:])
measured = measured_wall(runs)
jobs = pd.DataFrame([{"identity_hash": r.current_identity_hash, "written_hash": r.identity_hash, "step": r.step["name"],
                      "seed": r.seed, "measured_s": measured[r.current_identity_hash],
                      "start": r.segments[0]["provenance"]["date"], "segments": len(r.segments)}
                     for r in map(read_record, runs.rglob(RESULT)) if r.finished])
plan = pd.read_csv(plan_csv, comment="#").drop(columns=["measured_s", "predicted_over_measured"], errors="ignore")
for column, value in filters.items():
    plan = plan[plan[column].astype(str) == value]
if filters:
    table = plan.drop(columns="identity_hash").merge(jobs.drop(columns="written_hash"), on=["step", "seed"])
else:  # the plan's hash is the one its code computed: the record's as written, or today's
    by_hash = pd.concat([jobs.drop(columns="written_hash"),
                         jobs.drop(columns="identity_hash").rename(columns={"written_hash": "identity_hash"})])
    table = plan.merge(by_hash.drop(columns=["step", "seed"]).drop_duplicates("identity_hash"), on="identity_hash")
table["ratio"] = table.job_s / table.measured_s
print("| step | seed | predicted min | measured min | predicted / measured | started (UTC) | segments |")
print("|---|---|---|---|---|---|---|")
for r in table.sort_values("start").itertuples():
    print(f"| `{r.step}` | {r.seed} | {r.job_s / 60:.1f} | {r.measured_s / 60:.1f} | {r.ratio:.2f} | {r.start[11:16]} "
          f"| {r.segments} |")
off = (table.ratio - 1).abs()
print(f"{len(table)} jobs: within 25% {(off <= 0.25).sum()}, within 10% {(off <= 0.10).sum()}, "
      f"within 5% {(off <= 0.05).sum()}; measured {table.measured_s.sum() / 3600:.2f} job-hours")
