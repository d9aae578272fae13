"""Named sweeps, resumable multirun, and the report: tables, problems and figures from the run records."""
import functools
import json
import shutil

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from ablate.config import CONF_DIR, compose_config, expand_sweep, net_config, run_config
from ablate.report import collect, sweep_jobs
from ablate.roadmap import roadmap
from stages import build_net

from helpers import CHANGE_FLAGS, TINY_RUN, cli, killed_after

SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
# ~1 s a job: quarter-width nets, 64 synthetic images, 2 epochs of 2 updates


def _jobs(sweep: str, *extra: str) -> list[list[str]]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+sweep={sweep}", *extra], return_hydra_config=True)
    return expand_sweep(cfg.hydra, [f"+sweep={sweep}", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_of_every_sweep_builds_and_runs_a_batch(sweep):
    """The smoke test of every experiment: each job composes, validates and its net trains a step."""
    names = []
    for job in _jobs(sweep):
        run = run_config(compose_config(job))
        names.append(run.step["name"])
        net = build_net(run.net)
        net(torch.randn(2, 3, 32, 32)).sum().backward()
    assert len(names) == len(set(names)) > 1  # every job its own run directory


def test_sweeps_cover_the_roadmap_and_its_ablations():
    road = roadmap()
    assert [job[0].split("=")[1] for job in _jobs("roadmap")] == road.adopted()
    kernels = [net_config(compose_config(job)).kernel_size for job in _jobs("kernels")]
    assert sorted(kernels) == [3, 5, 7, 9, 11, 13, 21, 31]  # the paper's study and RepLKNet's large kernels
    # every change of the endpoint's roadmap taken out of it; every change put alone into the start (grn too)
    assert [job[0] for job in _jobs("leave_one_out")] == [f"+undo={c}" for c in ["none", *road.adopted()[1:]]]
    assert [job[0] for job in _jobs("add_one_in")] == [f"+only={c}" for c in ["none", *road.changes()]]


def test_leave_one_out_recentres_on_a_chosen_endpoint_with_one_flag():
    """`reference=STEP` rebuilds the sweep on STEP: its own changes taken out, each named against it. On ConvNeXt
    V2-T that is ConvNeXt-T's 13 changes and GRN's; undoing GRN gives ConvNeXt-T's net back."""
    jobs = _jobs("leave_one_out", "reference=grn")
    assert [job[0] for job in jobs] == ["+undo=none", *(f"+undo={c}" for c in roadmap().adopted("grn")[1:])]
    assert len(jobs) == 1 + 14 and jobs[-1][0] == "+undo=grn"
    steps = [compose_config(job).step for job in jobs]
    assert steps[0].name == "grn" and {s.reference for s in steps[1:]} == {"grn"}
    assert net_config(compose_config(jobs[-1])) == net_config(compose_config(["+step=separate_downsampling"]))


@functools.cache
def _composed(*overrides: str):
    return compose_config(list(overrides))


@pytest.mark.parametrize("change", sorted(set(CHANGE_FLAGS) & set(roadmap().adopted())))
def test_leave_one_out_and_add_one_in_change_exactly_one_design_step(change):
    def net(*o):
        return net_config(_composed(*o)).to_dict()

    def diff(a, b):
        return {k for k in a if a[k] != b[k]}

    road = roadmap()
    convnext, resnet = net("+undo=none"), net("+only=none")
    assert convnext == net(f"+step={road.endpoint}") and resnet == net(f"+step={road.start}")
    assert diff(convnext, net(f"+undo={change}")) and diff(convnext, net(f"+undo={change}")) <= CHANGE_FLAGS[change]
    assert diff(resnet, net(f"+only={change}")) and diff(resnet, net(f"+only={change}")) <= CHANGE_FLAGS[change]
    recipes = _composed(f"+undo={change}").recipe.name, _composed(f"+only={change}").recipe.name
    assert recipes == (("classic", "modern") if change == "recipe" else ("modern", "classic"))


@pytest.mark.parametrize("launcher,target", [("slurm", "SlurmLauncher"), ("local_parallel", "JoblibLauncher")])
def test_launcher_configs_select_hydra_launchers(launcher, target):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"+launcher={launcher}", "+sweep=roadmap"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


# ------------------------------------------------------------------------------ end to end, on disk
def _sweep(out, *extra, env_extra=None):
    return cli("-m", "+sweep=roadmap", "seed=0,1", *TINY_RUN, f"hydra.sweep.dir={out}", *extra, env_extra=env_extra)


@pytest.fixture(scope="module")
def roadmap_sweep(tmp_path_factory):
    """A smoke-budget roadmap sweep on the embedded data, two seeds, run once without interruption."""
    out = tmp_path_factory.mktemp("roadmap")
    done = _sweep(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


MEASURED = ["step", "seed", "status", "top1", "top5", "best_top1", "params", "gflops", "gflops_at_input", "epochs",
            "identity_hash"]


@pytest.mark.slow
def test_roadmap_sweep_runs_every_step_and_the_report_draws_it(roadmap_sweep, tmp_path):
    done = cli(str(roadmap_sweep), f"out={tmp_path}", module=("-m", "ablate.report"))
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(tmp_path / "runs.csv", comment="#")
    steps = roadmap().adopted()
    assert len(runs) == 2 * len(steps) and set(runs.status) == {"finished"} and set(runs.seed) == {0, 1}
    summary = pd.read_csv(tmp_path / "summary.csv", comment="#")
    assert list(summary.step) == steps and set(summary.seeds) == {2}
    assert summary.top1_std.notna().all()
    assert summary.paper_top1.iloc[-1] == 81.97 and summary.paper_gflops.iloc[0] == 4.09
    first = summary.set_index("step")
    assert first.loc["recipe", "delta_top1"] == pytest.approx(first.loc["recipe", "top1_mean"]
                                                              - first.loc["baseline", "top1_mean"])
    assert pd.read_csv(tmp_path / "problems.csv", comment="#").empty
    header = (tmp_path / "summary.csv").read_text().splitlines()[:5]
    assert header[0].startswith("# command:") and "ablate.report" in header[0]
    for name in ("roadmap.png", "roadmap.svg", "trajectory.png", "trajectory.svg"):
        assert (tmp_path / name).stat().st_size > 10_000, name


def _two_step_sweep(out, steps="baseline,recipe", env_extra=None):
    return cli("-m", f"+step={steps}", "seed=0,1", *TINY_RUN, f"hydra.sweep.dir={out}", env_extra=env_extra)


@pytest.mark.slow
def test_interrupted_sweep_resumes_to_the_same_records(roadmap_sweep, tmp_path):
    """Two steps x two seeds (the roadmap sweep's first four jobs), killed in the 3rd job (recipe, seed 0) after that
    job's first epoch, rerun: the same records as the roadmap sweep that ran without a stop."""
    assert _two_step_sweep(tmp_path, "baseline").returncode == 0  # jobs 1-2 finish
    baseline = sorted(tmp_path.glob("baseline/*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in baseline]
    killed = _two_step_sweep(tmp_path, env_extra=killed_after(1))
    assert killed.returncode != 0

    runs, problems = collect(tmp_path)
    kinds = [p.kind for p in problems]
    assert kinds.count("unfinished") == 1 and "recipe" in problems[kinds.index("unfinished")].path
    assert kinds.count("missing") == 1  # recipe seed 1: planned by the sweep, never launched

    resumed = _two_step_sweep(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("not retrained") == 2
    assert [p.stat().st_mtime_ns for p in baseline] == stamps  # finished jobs untouched
    recipe = json.loads(next(tmp_path.glob("recipe/*seed=0/result.json")).read_text())
    assert recipe["resumed_from_epoch"] == [1]

    ours, reference = collect(tmp_path), collect(roadmap_sweep)
    assert ours[1] == [] and reference[1] == []
    key = ["step", "seed"]
    a = ours[0][MEASURED].sort_values(key, ignore_index=True)
    b = reference[0][MEASURED]
    b = b[b.step.isin(["baseline", "recipe"])].sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_report_names_a_corrupt_record_and_reports_the_rest(roadmap_sweep, tmp_path):
    shutil.copytree(roadmap_sweep, tmp_path / "runs")
    broken = next((tmp_path / "runs").glob("gelu/*seed=1/result.json"))
    broken.write_text(broken.read_text()[:500])  # half-written
    done = cli(str(tmp_path / "runs"), f"out={tmp_path}", module=("-m", "ablate.report"))
    assert done.returncode == 0 and str(broken) in done.stderr
    problems = pd.read_csv(tmp_path / "problems.csv", comment="#")
    assert list(problems.kind) == ["corrupt"] and problems.path[0] == str(broken)
    summary = pd.read_csv(tmp_path / "summary.csv", comment="#").set_index("step")
    assert len(summary) == 14 and summary.loc["gelu", "seeds"] == 1 and summary.loc["kernel", "seeds"] == 2


@pytest.mark.slow
def test_report_of_a_missing_directory_is_a_clear_error(tmp_path):
    done = cli(str(tmp_path / "nope"), module=("-m", "ablate.report"))
    assert done.returncode == 2 and "nope" in done.stderr and "does not exist" in done.stderr


@pytest.mark.slow
def test_sweep_jobs_expands_like_hydra(roadmap_sweep):
    jobs = sweep_jobs(roadmap_sweep / "multirun.yaml")
    assert len(jobs) == 28 and jobs[0][:3] == ["+step=baseline", "+sweep=roadmap", "seed=0"]
    assert jobs[1][:3] == ["+step=baseline", "+sweep=roadmap", "seed=1"]


def _runs(rows):
    """A runs table as collect() makes it, from (step, index, seed, top1) rows."""
    base = {"status": "finished", "regime": "r50", "data": "cifar10", "image_size": 32, "budget": "b", "budget_epochs": 8,
            "width_multiplier": 0.25, "recipe": "modern", "adopted": True, "reference": None, "top5": 90.0,
            "params": 1e6, "gflops": 0.3, "gflops_at_input": 0.01, "train_throughput": 1.0, "setting": "one"}
    return pd.DataFrame([{**base, "step": s, "step_index": i, "seed": seed, "top1": t, "experiment": f"{s}-exp"}
                         for s, i, seed, t in rows])


def test_delta_is_against_its_own_reference_or_empty():
    """inverted_bottleneck's reference is width; with width missing its delta is empty (not a delta to
    patchify_stem, three steps back) and the problems say why."""
    from ablate.report import missing_references, summarize
    runs = _runs([("patchify_stem", 3, s, 50 + s) for s in range(3)] + [("depthwise", 4, s, 52 + 2 * s) for s in range(3)]
                 + [("inverted_bottleneck", 6, s, 60.0) for s in range(3)])
    summary = summarize(runs).set_index("step")
    assert summary.loc["inverted_bottleneck", "reference"] == "width"
    assert pd.isna(summary.loc["inverted_bottleneck", "delta_top1"])
    problems = missing_references(summary.reset_index())
    assert [(p.kind, p.path) for p in problems] == [("no_reference", "patchify_stem"), ("no_reference", "inverted_bottleneck")]
    # depthwise - patchify_stem per seed: 2, 3, 4 -> mean 3, CI 4.303 * 1 / sqrt(3)
    row = summary.loc["depthwise"]
    assert row.delta_top1 == pytest.approx(3.0) and row.delta_top1_ci == pytest.approx(4.303 / 3 ** 0.5, rel=1e-3)
    assert row.resolved and row.paired_seeds == 3
    assert row.paper_delta_top1 == pytest.approx(78.28 - 79.51)
    assert row.sign_agrees is not None and not row.sign_agrees  # ours +3, the paper -1.23


def test_confidence_intervals_use_students_t():
    from ablate.stats import t_975
    # scipy.stats.t.ppf(0.975, df) for df = 1, 2, 11, 29, 40, 120
    exact = {1: 12.7062, 2: 4.3027, 11: 2.2010, 29: 2.0452, 40: 2.0211, 120: 1.9799}
    assert all(t_975(df) == pytest.approx(t, abs=2e-3) for df, t in exact.items())


def test_robustness_deltas_are_paired_over_seeds_like_top1():
    """mca tracks clean accuracy; the relative drop separates robustness from it. Both get a paired delta and CI."""
    from ablate.report import summarize
    runs = _runs([("patchify_stem", 3, s, 50.0 + s) for s in range(3)] + [("depthwise", 4, s, 52.0 + s) for s in range(3)])
    runs["mca"] = runs.top1 - 5 + [0, 0, 0, 1, 2, 3]
    runs["relative_drop"] = (runs.top1 - runs.mca) / runs.top1
    row = summarize(runs).set_index("step").loc["depthwise"]
    # mca per seed: depthwise 48, 50, 52 against patchify_stem 45, 46, 47: differences 3, 4, 5
    assert row.delta_mca == pytest.approx(4.0) and row.delta_mca_ci == pytest.approx(4.303 / 3 ** 0.5, rel=1e-3)
    assert row.mca_resolved
    drops = [(4 / 52 - 5 / 50), (3 / 53 - 5 / 51), (2 / 54 - 5 / 52)]
    assert row.delta_relative_drop == pytest.approx(sum(drops) / 3)  # -0.041, seed spread 0.018
    assert row.delta_relative_drop_ci == pytest.approx(0.0447, abs=1e-3) and not row.drop_resolved
