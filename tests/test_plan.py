"""ablate.plan: measures each distinct job once, predicts by the model its docstring states, and sets finished
runs' wall times beside the prediction."""
import json
import math

import pandas as pd
import pytest

from ablate.complexity import run_complexity
from ablate.config import compose_config, net_config, run_config
from ablate.plan import COMMAND, PlanOptions, estimate, run
from ablate.train import RESULT, train

from helpers import SMOKE, TINY_PLAN



def plan(*argv: str) -> pd.DataFrame:
    """python -m ablate.plan ARGV, in this process."""
    _, options, overrides = COMMAND.parse(list(argv))
    return run(options, overrides)


@pytest.mark.slow  # trains a run, then measures two steps end to end
def test_plan_measures_each_step_once_and_sets_finished_runs_beside_it(tmp_path):
    runs = tmp_path / "runs"
    finished = train(run_config(compose_config(["+step=baseline", *SMOKE])), runs / "baseline")
    table = plan("+step=baseline,kernel", "seed=0,1", *SMOKE, *TINY_PLAN, f"measured={runs}", f"out={tmp_path / 'p.csv'}")
    assert [(r.step, r.seed) for r in table.itertuples()] == [("baseline", 0), ("baseline", 1), ("kernel", 0),
                                                              ("kernel", 1)]
    speeds = ["train_img_s", "data_img_s", "eval_img_s"]
    assert (table[speeds] > 0).all().all()
    assert table.loc[0, speeds].tolist() == table.loc[1, speeds].tolist()  # seeds share one measurement
    # the plan's schedule is the run's own
    assert table.loc[0, "updates"] == finished["updates_planned"] and table.loc[0, "epochs"] == finished["epochs_planned"]
    assert table.loc[0, "params"] == finished["params"] and table.loc[0, "gflops"] == finished["gflops"]
    assert table.loc[0, "measured_s"] == finished["wall_time_s"]  # seed 0 of baseline is the run trained above
    assert table.loc[1:, "measured_s"].isna().all()
    assert table.loc[0, "predicted_over_measured"] == table.loc[0, "job_s"] / finished["wall_time_s"]
    assert table.loc[0, "identity_hash"] == json.loads((runs / "baseline" / RESULT).read_text())["identity_hash"]
    written = pd.read_csv(tmp_path / "p.csv", comment="#")
    assert len(written) == 4 and (tmp_path / "p.csv").read_text().startswith("# command:")


def test_estimate_follows_the_stated_model(tmp_path):
    # the estimate reads no image: an empty ImageFolder root stands in for CIFAR-10, which a clone lacks
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
    run = run_config(compose_config(["+experiment=cifar10_proxy", f"data.root={tmp_path}", "budget.epochs=8",
                                     "eval.corruptions=cifar10c"]))
    m = {"train_img_s": 1000.0, "data_img_s": 4000.0, "eval_img_s": 5000.0, "workers": 0, "ema": False,
         "train_images": 50000, "val_images": 10000}
    one = estimate(run, m, PlanOptions())
    assert one["updates"] == 8 * 390 and one["epochs"] == 8
    images = 8 * 390 * 128
    assert math.isclose(one["train_s"], images / 1000 + images / 4000)  # data made in the training process
    assert math.isclose(one["eval_s"], 8 * 10000 / 5000)
    assert math.isclose(one["robustness_s"], 2000 * (1 + 14 * 5) / 5000)  # 14 corruptions, 5 severities
    assert one["job_s"] == one["train_s"] + one["eval_s"] + one["robustness_s"]
    workers = estimate(run, {**m, "workers": 2, "data_img_s": 500.0}, PlanOptions(devices=2))
    assert workers["data_bound"] and workers["workers_needed"] == 4  # data at half the net's speed
    assert math.isclose(workers["train_s"], images / 2 / 500)  # the slower of the two, per device
    assert math.isclose(workers["device_hours"], workers["job_s"] * 2 / 3600)
    assert estimate(run, {**m, "ema": True}, PlanOptions())["eval_s"] == 2 * one["eval_s"]
    assert estimate(run, m, PlanOptions(train_images=100000))["updates"] == 8 * 781


def test_bad_plan_input_is_one_line(tmp_path):
    with pytest.raises(Exception, match=r"^devices=0 is not allowed; expected a positive integer$"):
        plan("devices=0")
    with pytest.raises(FileNotFoundError, match="measured=.*: no such directory"):
        plan(*SMOKE, *TINY_PLAN, f"measured={tmp_path / 'none'}", f"out={tmp_path / 'p.csv'}")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_plan_of_the_paper_budget_uses_each_recipes_batch_and_epochs(tmp_path):
    """The embedded data standing in for ImageNet: the endpoints (classic and modern recipe) at the paper's nets,
    batches and epochs, none trained. (results/plan/ holds the whole roadmap's plan.)"""
    table = plan("+step=baseline,separate_downsampling", "budget=paper", "max_batch=2", *TINY_PLAN, "train_images=1281167",
                 "val_images=50000", "devices=8", f"out={tmp_path / 'p.csv'}")
    assert list(table.step) == ["baseline", "separate_downsampling"]
    assert list(table.per_device_batch) == [256 // 8, 4096 // 8] and list(table.epochs) == [90, 300]
    assert list(table.updates) == [90 * (1281167 // 256), 300 * (1281167 // 4096)]
    assert (table.measured_batch == 2).all() and table.fits.all()
    assert (table.device_hours > 0).all() and table.peak_mem_mib.isna().all()  # CPU: memory is not measured
    convnext_t = run_complexity(net_config(compose_config(["+step=separate_downsampling", "budget=paper"])), 32)
    assert table.loc[1, "gflops"] == convnext_t["gflops"]  # the paper-convention FLOPs of ablate.complexity
    assert not list(tmp_path.glob("**/result.json"))
