"""Predicted beside measured: joins a plan CSV (job_s per identity) with the finished records under a runs directory.

    python results/plan/compare.py results/plan/cifar10_proxy_8ep_cpu.csv results/cifar10_proxy_3seeds/runs/8ep
"""
import json, sys
from pathlib import Path
import pandas as pd
plan = pd.read_csv(sys.argv[1], comment="#")
rows = []
for p in Path(sys.argv[2]).rglob("result.json"):
    r = json.loads(p.read_text())
    if r["status"] == "finished":
        rows.append({"identity_hash": r["identity_hash"], "measured_s": r["wall_time_s"] + (r.get("robustness") or {}).get("time_s", 0),
                     "start": r["segments"][0]["provenance"]["date"], "segments": len(r["segments"])})
m = plan.drop(columns=["measured_s", "predicted_over_measured"], errors="ignore").merge(pd.DataFrame(rows), on="identity_hash")
m["ratio"] = m.job_s / m.measured_s
for r in m.sort_values("start").itertuples():
    print(f"| `{r.step}` | {r.seed} | {r.job_s/60:.1f} | {r.measured_s/60:.1f} | {r.ratio:.2f} | {r.start[11:16]} | {r.segments} |")
print(len(m), (abs(m.ratio-1)<=0.25).sum(), (abs(m.ratio-1)<=0.05).sum(), (abs(m.ratio-1)<=0.10).sum())
print("sum measured h", m.measured_s.sum()/3600)
