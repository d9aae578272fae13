"""Applies the committed rule (README.md) to the plan and, once they exist, to the curves' records: which
(resolution, epochs) the 3-seed sweep can afford, which curves to train, and the choice.

    python results/imagenette_budget/apply_rule.py results/imagenette_budget/plan.csv [CURVES_DIR]
"""
import sys
from pathlib import Path

import pandas as pd

CAP_JOB_HOURS = 16.0   # rule 1
PLATEAU_POINTS = 2.0   # rule 3
MAX_EPOCHS = 32        # rule 2


def feasible(plan: pd.DataFrame) -> pd.DataFrame:
    """Planned one-thread job-hours of the 42-job sweep per (resolution, epochs), and whether it fits the cap."""
    total = plan.groupby(["image_size", "epochs"]).agg(jobs=("job_s", "size"), job_hours=("job_s", "sum"))
    total["job_hours"] /= 3600
    total["feasible"] = total.job_hours <= CAP_JOB_HOURS
    return total.reset_index()


def e_max(total: pd.DataFrame) -> dict[int, int]:
    ok = total[total.feasible]
    return {int(r): int(part.epochs.max()) for r, part in ok.groupby("image_size")}


def curve_epochs(emax: int) -> list[int]:
    epochs, e = [], 2
    while e <= min(MAX_EPOCHS, 2 * emax):
        epochs.append(e)
        e *= 2
    return epochs


def choose(curves: pd.DataFrame, emax: dict[int, int]) -> tuple[int, int, str]:
    """Rules 3-5 on the modern recipe's (step `recipe`) seed-0 top-1 per (image_size, epochs)."""
    top1 = {(int(r.image_size), int(r.budget_epochs)): r.top1 for r in curves[curves.step == "recipe"].itertuples()}
    def plateau(r, e):
        return (r, 2 * e) in top1 and (r, e) in top1 and top1[r, 2 * e] - top1[r, e] <= PLATEAU_POINTS
    at_plateau = [r for r, e in emax.items() if plateau(r, e)]
    if at_plateau:
        r, why = max(at_plateau), "the highest resolution whose largest affordable budget is on the plateau"
    else:
        r = max(emax, key=lambda r: (top1.get((r, emax[r]), float("-inf")), r))
        why = "no resolution reaches its plateau within the cap: the best modern-recipe top-1 at e_max"
    on = [e for e in curve_epochs(emax[r]) if e <= emax[r] and plateau(r, e)]
    e = min(on) if on else emax[r]
    return r, e, why + ("; the shortest budget on the plateau" if on else "; e_max (no budget on the plateau)")


if __name__ == "__main__":
    plan = pd.read_csv(sys.argv[1], comment="#")
    total = feasible(plan)
    print(total.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    emax = e_max(total)
    print("e_max:", emax, "| curves:", {r: curve_epochs(e) for r, e in emax.items()})
    if len(sys.argv) > 2:
        from ablate.report import collect
        runs, _ = collect(Path(sys.argv[2]))
        done = runs[runs.status == "finished"]
        print(done.pivot_table(index="budget_epochs", columns=["image_size", "step"], values="top1").to_string())
        recipe = done[done.step == "recipe"].set_index(["image_size", "budget_epochs"]).top1
        for (r, e), v in recipe.items():  # rule 3's test at every cell that has its doubled budget
            if (r, 2 * e) in recipe:
                gain = recipe[r, 2 * e] - v
                print(f"plateau test {r} px, {e} -> {2 * e} epochs: +{gain:.2f} points "
                      f"({'on' if gain <= PLATEAU_POINTS else 'off'} the plateau)")
        print("choice (resolution, epochs, why):", choose(done, emax))
