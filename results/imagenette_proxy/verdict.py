# python results/imagenette_proxy/verdict.py
# The verdict table of README.md's rule (committed before the sweep): each step's CIFAR-32 delta (8 epochs, 3 seeds),
# Imagenette delta and the paper's; for each CIFAR disagreement and for move-up's size, whether it is the proxy's,
# holds, or is undecided; and ConvNeXt-T against the modern-recipe ResNet-50, seed-paired. Reads the committed
# summaries and runs only; writes verdict.csv here and prints the table as Markdown.
from pathlib import Path

import pandas as pd

from ablate.provenance import write_csv
from ablate.stats import paired_delta, resolved

HERE = Path(__file__).parent
CIFAR = HERE.parent / "cifar10_proxy_3seeds"
CIFAR_EPOCHS = 8
SEEDS = 3  # the rule reads its verdicts at 3 paired seeds
DISAGREEMENTS = ("patchify_stem", "gelu", "fewer_norms", "layer_norm")  # as the rule lists them
MOVE_UP = "move_up_dwconv"


def table(folder: Path, name: str, **where) -> pd.DataFrame:
    """A committed CSV of a results folder, its rows where every `column=value` of `where` holds."""
    rows = pd.read_csv(folder / name, comment="#")
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows


def waits(seeds: float) -> str:
    return f"waits ({seeds:.0f} of {SEEDS} seeds)"


def sign(x: float) -> int:
    return int(x > 0) - int(x < 0)


def disagreement_verdict(cifar: pd.Series, ours: pd.Series) -> str:
    if ours.paired_seeds < SEEDS:
        return waits(ours.paired_seeds)
    if not resolved(ours.delta_top1, ours.delta_top1_ci):
        return "undecided"
    if sign(ours.delta_top1) == sign(cifar.paper_delta_top1):
        return "the proxy's"
    return "holds" if sign(ours.delta_top1) == sign(cifar.delta_top1) else "undecided"


def move_up_verdict(cifar: pd.Series, ours: pd.Series) -> str:
    if ours.paired_seeds < SEEDS:
        return waits(ours.paired_seeds)
    low, high = ours.delta_top1 - ours.delta_top1_ci, ours.delta_top1 + ours.delta_top1_ci
    if low > cifar.delta_top1:
        return "the proxy's"
    contains = lambda x: low <= x <= high
    return "holds" if contains(cifar.delta_top1) and not contains(cifar.paper_delta_top1) else "undecided"


def endpoint_delta(folder: Path, **where) -> dict:
    """ConvNeXt-T's top-1 minus the modern-recipe ResNet-50's, paired over the seeds both have."""
    runs = table(folder, "runs.csv", status="finished", **where)
    return paired_delta(runs[runs.step == "separate_downsampling"], runs[runs.step == "recipe"])


def interval(delta: float, ci: float, seeds: float) -> str:
    if pd.isna(delta):
        return ""
    return f"{delta:+.2f} [±{ci:.2f}] ({seeds:.0f})" if pd.notna(ci) else f"{delta:+.2f} ({seeds:.0f})"


def main() -> None:
    cifar = table(CIFAR, "summary.csv", budget_epochs=CIFAR_EPOCHS).set_index("step")
    ours = table(HERE, "summary.csv").set_index("step")
    rows = []
    for step in ours.index[ours.reference.notna()]:
        c, o = cifar.loc[step], ours.loc[step]
        verdict = (disagreement_verdict(c, o) if step in DISAGREEMENTS else
                   move_up_verdict(c, o) if step == MOVE_UP else "")
        rows.append({"step": step, "cifar_delta": c.delta_top1, "cifar_ci": c.delta_top1_ci,
                     "cifar_seeds": c.paired_seeds, "imagenette_delta": o.delta_top1, "imagenette_ci": o.delta_top1_ci,
                     "imagenette_seeds": o.paired_seeds, "paper_delta": c.paper_delta_top1, "verdict": verdict})
    endpoint, cifar_endpoint = (endpoint_delta(HERE), endpoint_delta(CIFAR, budget_epochs=CIFAR_EPOCHS))
    rows.append({"step": "separate_downsampling vs recipe", "cifar_delta": cifar_endpoint["delta"],
                 "cifar_ci": cifar_endpoint["ci"], "cifar_seeds": cifar_endpoint["paired_seeds"],
                 "imagenette_delta": endpoint["delta"],
                 "imagenette_ci": endpoint["ci"], "imagenette_seeds": endpoint["paired_seeds"],
                 "verdict": ("beats" if endpoint["delta"] - endpoint["ci"] > 0 else "does not beat")
                 if endpoint["paired_seeds"] >= SEEDS else waits(endpoint["paired_seeds"])})
    verdicts = pd.DataFrame(rows)
    write_csv(verdicts, HERE / "verdict.csv", command="python results/imagenette_proxy/verdict.py")
    print("| step | CIFAR-32 delta [95% CI] (seeds) | Imagenette delta [95% CI] (seeds) | paper delta | verdict |")
    print("|---|---|---|---|---|")
    for r in verdicts.itertuples():
        print(f"| `{r.step}` | {interval(r.cifar_delta, r.cifar_ci, r.cifar_seeds)} | "
              f"{interval(r.imagenette_delta, r.imagenette_ci, r.imagenette_seeds)} | "
              f"{'' if pd.isna(r.paper_delta) else f'{r.paper_delta:+.2f}'} | {r.verdict} |")


if __name__ == "__main__":
    main()
