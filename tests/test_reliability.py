"""Nothing silent, round two: no mislabelled net, no pooled experiments, no val split that is the train split, no
path a config string or a planted file can steer. Each case failed (silently) before its fix."""
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from ablate.config import compose_config, compose_jobs, run_config
from ablate.data import build_datasets
from ablate.errors import ConfigError, DataError
from ablate.io import clean_partial_writes, path_component
from ablate.report import report
from ablate.rundir import RunDirConflict, RunDirLock
from ablate.train import train

from helpers import ROOT, SMOKE, TINY_RUN, cli, killed_after, start_cli

ONE_EPOCH = [*TINY_RUN, "budget.epochs=1"]


# ------------------------------------------------------------------------------- mislabelled nets
@pytest.mark.parametrize("overrides", [
    ["+undo=gelu", "+only=kernel"],
    ["+step=gelu", "+only=kernel"],
    ["+sweep=leave_one_out", "+step=gelu"],
    ["+sweep=roadmap", "+undo=gelu"],
])
def test_two_groups_choosing_the_checkpoint_are_refused(overrides):
    with pytest.raises(ConfigError, match="both choose the checkpoint; choose it with one of"):
        compose_jobs(overrides)


@pytest.mark.slow
def test_the_cli_refuses_two_checkpoint_groups_before_training(tmp_path):
    done = cli("+undo=gelu", "+only=kernel", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["error: +undo=gelu and +only=kernel both choose the checkpoint; "
                                                "choose it with one of +step=, +undo=, +only= (a +sweep= lists "
                                                "its own)"]
    assert not (tmp_path / "run" / "result.json").exists()
    swept = cli("-m", "+sweep=roadmap", "+undo=gelu", *SMOKE, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert swept.returncode != 0 and "both choose the checkpoint" in swept.stderr
    assert not list((tmp_path / "sweep").rglob("result.json"))


@pytest.mark.parametrize("override,message", [
    ("seed=4294967296", "seed=4294967296 is not allowed; expected an integer in [0, 4294967296)"),
    ("step.index=abc", "step.index='abc' is not allowed; expected an integer"),
    ("step.adopted=maybe", "step.adopted='maybe' is not allowed; expected true or false"),
    ("regime.name=r300", "regime.name='r300' is not allowed; choose a regime with regime=NAME, one of: r200, r50"),
])
def test_step_regime_and_seed_are_validated(override, message):
    with pytest.raises(ConfigError) as e:
        run_config(compose_config([override]))
    assert str(e.value) == message


# ------------------------------------------------------------------------------- pooled experiments
def _finished(tmp_path, name: str, *extra: str) -> Path:
    out = tmp_path / "sweep" / name
    train(run_config(compose_config(["+step=baseline", *ONE_EPOCH, *extra])), out)
    return out


def test_a_copied_run_dir_counts_once(tmp_path):
    run = _finished(tmp_path, "baseline")
    shutil.copytree(run, tmp_path / "sweep" / "baseline_backup")
    result = report(tmp_path / "sweep", out=tmp_path / "report")
    assert len(result["runs"]) == 1 and result["summary"].seeds.tolist() == [1]
    assert [(p.kind, Path(p.path).parent.name) for p in result["problems"]] == [("duplicate", "baseline_backup")]


@pytest.mark.parametrize("other", ["data.train_size=96", "recipe.lr=0.05"])
def test_runs_of_different_experiments_are_not_averaged(tmp_path, other):
    _finished(tmp_path, "a")
    _finished(tmp_path, "b", other)
    result = report(tmp_path / "sweep", out=tmp_path / "report")
    summary = result["summary"]
    assert len(summary) == 2 and summary.seeds.tolist() == [1, 1]  # two rows, not one mean of both
    kinds = [p.kind for p in result["problems"]]
    # recipe.lr is a step's own key: two configs of one step in one setting; data.train_size: two settings
    assert kinds == (["mixed"] if other.startswith("recipe") else [])


# ------------------------------------------------------------------------------- val is not train
def _image_folder(root: Path, n: int = 4) -> Path:
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 100 if c == "a" else 200, 0)).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_a_val_split_sharing_files_with_train_is_refused(tmp_path, how):
    root = _image_folder(tmp_path / "data")
    shutil.rmtree(root / "val")
    if how == "symlink":
        (root / "val").symlink_to(root / "train", target_is_directory=True)
    else:
        for f in (root / "train").rglob("*.png"):
            target = root / "val" / f.relative_to(root / "train")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, target)
    run = run_config(compose_config(["data=folder", f"data.root={root}", "data.num_classes=2",
                                     "budget=smoke"]))
    with pytest.raises(DataError, match=r"val shares 8 of its 8 files with train .* val must hold images the net "
                                        "never trains on"):
        build_datasets(run.data, run.augment, run.seed)


# ------------------------------------------------------------------------------- paths and planted files
def test_a_lock_planted_as_a_symlink_is_refused_and_the_victim_kept(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(RunDirConflict, match=r"\.lock cannot be the run's lock \(a symbolic link\); remove it"):
        with RunDirLock(run_dir):
            pass
    assert victim.read_text() == "precious"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_lock_that_is_not_a_file_is_one_line(tmp_path, kind):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").mkdir() if kind == "directory" else os.mkfifo(run_dir / ".lock")
    done = cli("+step=baseline", *ONE_EPOCH, f"hydra.run.dir={run_dir}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot be the run's lock" in done.stderr


def test_only_the_toolkits_own_partial_writes_are_cleaned(tmp_path):
    (tmp_path / ".notes.tmp").write_text("a user's file")
    (tmp_path / ".result.json.abc123.ablate.tmp").write_text("{")
    (tmp_path / ".odd.ablate.tmp").mkdir()
    assert [p.name for p in clean_partial_writes(tmp_path)] == [".result.json.abc123.ablate.tmp"]
    assert (tmp_path / ".notes.tmp").read_text() == "a user's file" and (tmp_path / ".odd.ablate.tmp").is_dir()


@pytest.mark.parametrize("value", ["../../../../X", "/../../X/evil", "..", ".", "", "a/b", "x" * 300])
def test_a_config_value_names_one_path_component(value):
    name = path_component(value)
    assert "/" not in name and name not in ("", ".", "..") and len(name.encode()) <= 120
    assert path_component(value) == name and (value == name) == (value == "x")


@pytest.mark.slow
def test_a_step_name_cannot_move_the_run_outside_outputs(tmp_path):
    done = cli("+step=baseline", "step.name=../../../../escaped", *ONE_EPOCH, cwd=tmp_path, env_extra={
        "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    records = list(tmp_path.rglob("result.json"))
    assert len(records) == 1 and records[0].is_relative_to(tmp_path / "outputs")
    assert not (tmp_path.parent / "escaped").exists()


def test_a_data_name_cannot_move_report_figures_outside_out(tmp_path):
    for name in ("a", "/../../evil"):
        _finished(tmp_path, name.strip("/."), f"data.name={name}")
    out = tmp_path / "report"
    report(tmp_path / "sweep", out=out)
    written = {p for p in tmp_path.rglob("*.png")}
    assert written and all(p.is_relative_to(out) for p in written)


# ------------------------------------------------------------------------------- stopping a run
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_says_where_in_one_line_and_resumes(tmp_path, signum):
    run_dir = tmp_path / "run"
    args = ["+step=baseline", *SMOKE, "budget.epochs=6", f"hydra.run.dir={run_dir}"]
    proc = start_cli(*args)
    deadline = time.time() + 120
    while time.time() < deadline and not _epochs_done(run_dir):
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err
    (line,) = [l for l in err.strip().splitlines() if not l.startswith(("epoch", "\r"))][-1:]
    assert line.startswith(f"interrupted: {run_dir} stopped after epoch ") and \
        line.endswith("(its last checkpoint); rerun the same command to resume it"), err[-500:]
    done = cli(*args)
    record = json.loads((run_dir / "result.json").read_text())
    assert done.returncode == 0 and record["status"] == "finished" and record["resumed_from_epoch"]


def _epochs_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "result.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("damage", [
    lambda r: r["step"].update(index="three"),
    lambda r: r.update(seed="0"),
    lambda r: r["final"].update(top1="high"),
    lambda r: r.update(regime="r300"),
])
def test_one_bad_record_is_listed_as_corrupt_and_the_rest_reported(tmp_path, damage):
    good = _finished(tmp_path, "good")
    bad = tmp_path / "sweep" / "bad"
    shutil.copytree(good, bad)
    record = json.loads((bad / "result.json").read_text())
    damage(record)
    record["identity_hash"] = "0" * 16  # not a copy of the good one
    (bad / "result.json").write_text(json.dumps(record))
    result = report(tmp_path / "sweep", out=tmp_path / "report")
    assert len(result["runs"]) == 1 and [p.kind for p in result["problems"]] == ["corrupt"]
    assert Path(result["problems"][0].path).parent.name == "bad"


# ------------------------------------------------------------------------------- late failures, made early
@pytest.mark.parametrize("mode", ["in_memory", "streamed", "verify"])
def test_a_decompression_bomb_is_one_data_error_naming_the_file(tmp_path, monkeypatch, mode):
    root = _image_folder(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # 8x8 images are 4x that: PIL refuses them as bombs
    extra = {"in_memory": ["data.in_memory=true"], "streamed": [], "verify": ["data.verify=true"]}[mode]
    run = run_config(compose_config(["data=folder", f"data.root={root}", "data.num_classes=2", "budget=smoke",
                                     *extra]))
    with pytest.raises(DataError, match=r"cannot read image .*\.png: Image size \(64 pixels\) exceeds limit"):
        splits = build_datasets(run.data, run.augment, run.seed)
        splits.train[0]  # a streamed image is opened when it is read


def test_a_file_as_the_corruption_cache_is_refused_at_start_up(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"eval.cache_dir=.* is not allowed; expected null or a directory"):
        run_config(compose_config([f"eval.cache_dir={tmp_path / 'file'}"]))


def test_a_malformed_bench_csv_is_one_line(tmp_path, capsys):
    from ablate.report import main
    (tmp_path / "runs").mkdir()
    bad = tmp_path / "bench.csv"
    bad.write_text('a,b\n1,"2\n')
    assert main([str(tmp_path / "runs"), f"bench={bad}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: bench={bad} is not an ablate.bench CSV") and err.count("\n") == 1


def test_the_report_reads_a_relative_run_path_holding_equals(tmp_path, monkeypatch, capsys):
    from ablate.report import main
    _finished(tmp_path, "budget.batch_size=32,seed=0")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep/budget.batch_size=32,seed=0", "out=report"]) == 0, capsys.readouterr().err
    assert (tmp_path / "report" / "runs.csv").exists()


def test_a_file_given_to_the_report_is_named_as_the_problem(tmp_path, capsys):
    from ablate.report import main
    (tmp_path / "notes.txt").write_text("hi")
    assert main([str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: report directory {tmp_path / 'notes.txt'} is a file; expected a directory holding run " \
                  "records\n"


def test_a_record_written_under_the_old_identity_is_still_the_same_run(tmp_path, capsys):
    """Records written before train.pointwise_form hold net.pointwise_impl in their config and a hash computed
    with it; the run is found (not retrained, not refused) and the report counts it as the job it is."""
    out = tmp_path / "sweep" / "run"
    run = run_config(compose_config(["+step=baseline", *ONE_EPOCH]))
    first = train(run, out)
    record = json.loads((out / "result.json").read_text())
    record["config"]["net"]["pointwise_impl"] = "auto"
    record["identity"]["net"]["pointwise_impl"] = "auto"
    record["identity_hash"] = "0123456789abcdef"  # what the old definition computed: not this one's
    (out / "result.json").write_text(json.dumps(record))
    again = train(run, out)
    assert again["final"] == first["final"] and "finished run found" in capsys.readouterr().out
    assert report(tmp_path / "sweep", out=tmp_path / "report")["runs"].identity_hash.tolist() == [run.identity_hash]


def test_commands_refuse_misspelt_groups_and_never_write_over_a_run(tmp_path, capsys):
    from ablate import bench, complexity
    assert bench.main(["+steps=kernel"]) == 2  # once benched the baseline under the name kernel
    assert "unknown top-level key(s) steps" in capsys.readouterr().err
    assert complexity.main(["+step=kernel,gelu"]) == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]] == ["kernel", "gelu"]
    run = _finished(tmp_path, "run")
    before = (run / "result.json").read_bytes()
    for out in (run / "result.json", run / "table.csv"):
        assert complexity.main([f"out={out}"]) == 2
        assert "would write over a run's files" in capsys.readouterr().err
    assert (run / "result.json").read_bytes() == before and not (run / "table.csv").exists()


# ------------------------------------------------------------------------------- sweeps, OS errors, resumes
@pytest.mark.slow
def test_a_bad_value_in_any_job_of_a_sweep_stops_it_before_the_first(tmp_path):
    sweep = tmp_path / "sweep"
    done = cli("-m", "seed=0,1,2,3,x", *SMOKE, f"hydra.sweep.dir={sweep}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: job seed=x {' '.join(SMOKE)}: seed='x' is not allowed; expected an integer in [0, 4294967296); "
        "nothing was trained"]
    assert not list(sweep.rglob("result.json"))


@pytest.mark.slow
def test_a_refused_command_leaves_the_finished_runs_hydra_files(tmp_path):
    run_dir = tmp_path / "run"
    assert cli(*ONE_EPOCH, f"hydra.run.dir={run_dir}").returncode == 0
    before = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    assert sorted(before) == ["config.yaml", "hydra.yaml", "overrides.yaml"] and b"seed: 0" in before["config.yaml"]
    refused = cli(*ONE_EPOCH, "seed=1", f"hydra.run.dir={run_dir}")
    assert refused.returncode != 0 and "holds a different run" in refused.stderr
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == before


@pytest.mark.slow
@pytest.mark.parametrize("where", ["too_long", "under_a_file"])
def test_a_run_dir_the_os_refuses_is_one_line_at_start_up(tmp_path, where):
    (tmp_path / "file").write_text("")
    run_dir = tmp_path / ("x" * 300) if where == "too_long" else tmp_path / "file" / "run"
    done = cli(*ONE_EPOCH, f"hydra.run.dir={run_dir}")
    why = "File name too long" if where == "too_long" else "Not a directory"
    assert done.returncode != 0 and done.stderr.strip().splitlines() == \
        [f"error: hydra.run.dir={run_dir} cannot be created ({why})"]


def _limit_file_size():  # a write past 1 MiB fails as on a full disk (EFBIG rather than ENOSPC)
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


@pytest.mark.slow
def test_a_failed_write_is_one_line_naming_the_file_and_the_run_resumes(tmp_path):
    import subprocess
    import sys
    run_dir = tmp_path / "run"
    args = [*ONE_EPOCH, f"hydra.run.dir={run_dir}", "train.forms_cache=null"]
    done = subprocess.run([sys.executable, "-m", "ablate", *args], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=_limit_file_size, timeout=600)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert last == f"error: {run_dir}: File too large on {run_dir / 'last.pt'}; files already written are " \
                   "unchanged; fix it and rerun the same command to resume"
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "failed" and record["reason"].startswith("OSError: [Errno 27] File too large")
    assert not list(run_dir.glob(".*.ablate.tmp"))
    assert cli(*args).returncode == 0
    assert json.loads((run_dir / "result.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_damaged_best_checkpoint_stops_the_resume(tmp_path):
    run_dir = tmp_path / "run"
    args = [*ONE_EPOCH, "budget.epochs=2", f"hydra.run.dir={run_dir}"]
    assert cli(*args, env_extra=killed_after(1)).returncode != 0
    (run_dir / "best.pt").write_bytes(b"not a checkpoint")
    last = (run_dir / "last.pt").read_bytes()
    done = cli(*args)
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == \
        f"error: {run_dir / 'best.pt'} is damaged (UnpicklingError); move it away to resume without it, or pass " \
        "train.overwrite=true"
    assert (run_dir / "last.pt").read_bytes() == last and (run_dir / "best.pt").read_bytes() == b"not a checkpoint"
    (run_dir / "best.pt").unlink()
    assert cli(*args).returncode == 0


@pytest.mark.parametrize("damage", ["weights", "shapes", "record", "lock"])
def test_robustness_names_a_damaged_run_and_evaluates_the_others(tmp_path, capsys, damage):
    from safetensors.torch import save_file

    from ablate.robustness import main
    good, bad = _finished(tmp_path, "a_good"), tmp_path / "sweep" / "b_bad"
    shutil.copytree(good, bad)
    record = json.loads((bad / "result.json").read_text())
    record["identity_hash"] = "0" * 16
    (bad / "result.json").write_text(json.dumps(record))
    holder = None
    if damage == "weights":
        (bad / "model.safetensors").write_bytes(b"garbage")
    elif damage == "shapes":
        import torch
        save_file({"head.fc.weight": torch.zeros(3, 3)}, bad / "model.safetensors")
    elif damage == "record":
        (bad / "result.json").write_text("{")
    else:
        holder = RunDirLock(bad).__enter__()  # another process would hold it
    try:
        code = main([str(tmp_path / "sweep"), "corruptions=[snow]", "severities=[1]", "subset=16", "cache_dir=null"])
    finally:
        if holder is not None:
            holder.__exit__(None, None, None)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 2 and errors[0].startswith(f"error: {bad}: "), errors
    assert errors[1] == f"error: 1 run(s) under {tmp_path / 'sweep'} were not evaluated (named above); " \
                                   "the others were"
    assert json.loads((good / "result.json").read_text())["robustness"]["corruptions"] == ["snow"]


@pytest.mark.slow
def test_a_recipe_file_missing_a_key_is_one_line_naming_it(tmp_path):
    (tmp_path / "recipe").mkdir()
    modern = (ROOT / "conf" / "recipe" / "modern.yaml").read_text()
    (tmp_path / "recipe" / "mine.yaml").write_text("".join(l for l in modern.splitlines(True)
                                                             if not l.startswith("lr:")))
    done = cli("recipe=mine", f"hydra.searchpath=[file://{tmp_path}]", *ONE_EPOCH, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        "error: missing key(s) recipe.lr: the config group that sets them lacks them; add them to its file (or "
        "+KEY=VALUE on the command line)"]
    assert not (tmp_path / "run" / "result.json").exists()
