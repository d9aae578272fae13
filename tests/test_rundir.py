"""One identity, one writer, a faithful record: what names a run directory and what makes two runs the same
come from one definition; one process at a time trains a run; every segment of a resumed run is recorded."""
import dataclasses
import json
import os
import re
import time

import pytest
from omegaconf import OmegaConf

from ablate.config import (CONF_DIR, NOT_IDENTITY, NOT_IDENTITY_KEYS, EvalConfig, LoggerConfig, TrainConfig,
                           compose_config, run_config, run_dirname)
from ablate.io import atomic_write_text
from ablate.record import RESULT
from ablate.rundir import RunDirConflict, RunDirLock
from ablate.seeding import derive_seed
from ablate.train import train

from helpers import SMOKE, cli, killed_after, start_cli


def test_directory_name_leaves_out_exactly_what_identity_leaves_out():
    """Hydra's override_dirname must drop every key outside a run's identity (train.*, eval.*, logger) and keep
    every key inside it; the groups a run directory is already filed under (step, regime, ...) are dropped too."""
    excluded = set(OmegaConf.load(CONF_DIR / "config.yaml").hydra.job.config.override_dirname.exclude_keys)
    outside = {f"{cls.PREFIX}.{f.name}" for cls in (TrainConfig, EvalConfig, LoggerConfig)
               for f in dataclasses.fields(cls)}
    assert set(NOT_IDENTITY) == {"train", "eval", "logger", "hydra"}
    groups = {"step", "undo", "only", "regime", "experiment", "sweep", "launcher", "logger"}
    assert excluded == outside | groups | set(NOT_IDENTITY_KEYS) | {"hydra.run.dir", "hydra.sweep.dir"}


def test_how_to_run_settings_do_not_change_identity():
    base = run_config(compose_config(["+step=gelu"]))
    other = run_config(compose_config(["+step=gelu", "train.workers=3", "train.threads=1", "eval.corruptions=cifar10c"]))
    assert base.identity_hash == other.identity_hash
    assert base.identity_hash != run_config(compose_config(["+step=gelu", "seed=1"])).identity_hash
    # checking the files, or naming their folder with a trailing /, trains the same run
    root = ["data=folder", f"data.root={CONF_DIR}", "data.num_classes=2"]
    same = {run_config(compose_config([*root[:1], f"data.root={CONF_DIR}/", *root[2:], *extra])).identity_hash
            for extra in ([], ["data.verify=true"])}
    assert same == {run_config(compose_config(root)).identity_hash}


def test_long_and_path_like_override_values_make_one_safe_unique_directory():
    long = ",".join(f"net.depths=[{i},{i},{i},{i}]" for i in range(40))
    name = run_dirname(long)
    assert len(name.encode()) <= 120 and "/" not in name
    assert name != run_dirname(long.replace("[39,39", "[38,39"))  # the hash keeps them apart
    assert run_dirname("data.root=../data/x") == "data.root=..%2Fdata%2Fx"
    assert run_dirname("seed=1") == "seed=1"


def test_seeds_are_stable_numbers():
    """SeedSequence is documented and stable across Python versions; hash() of a tuple is not."""
    assert derive_seed(0, "order", 0) == derive_seed(0, "order", 0) != derive_seed(0, "order", 1)
    assert derive_seed(0, "order", 0) != derive_seed(0, "augment", 0)
    assert derive_seed(0, "order", 0) == 1_428_798_525  # golden: changes only if the derivation does


def test_lock_refuses_a_second_writer_and_cleans_partial_writes(tmp_path):
    (tmp_path / ".last.pt.abc.ablate.tmp").write_bytes(b"half a checkpoint")
    with RunDirLock(tmp_path):
        assert not (tmp_path / ".last.pt.abc.ablate.tmp").exists()
        with pytest.raises(RunDirConflict, match=rf"is in use by PID {os.getpid()}; wait for it or stop it"):
            with RunDirLock(tmp_path):
                pass
    with RunDirLock(tmp_path):  # released with its holder
        pass


def test_records_are_readable_by_the_group(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_resume_under_another_precision_is_refused_unless_asked(tmp_path):
    args = ["+step=baseline", *SMOKE, "budget.epochs=2"]
    killed = cli(*args, f"hydra.run.dir={tmp_path}", env_extra=killed_after(1))
    assert killed.returncode == -9
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}
    refused = cli(*args, f"hydra.run.dir={tmp_path}", "train.precision=bf16")
    assert refused.returncode != 0 and refused.stderr.strip().count("\n") == 0
    assert "resuming would change train.precision: 'fp32' -> 'bf16' mid-run" in refused.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"} == before
    resumed = cli(*args, f"hydra.run.dir={tmp_path}", "train.precision=bf16", "train.allow_setting_change=true")
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((tmp_path / RESULT).read_text())
    segments = record["segments"]
    assert [(s["from_epoch"], s["to_epoch"], s["train"]["precision"]) for s in segments] == [(0, 1, "fp32"), (1, 2, "bf16")]
    assert all(s["provenance"]["command"].startswith("python -m ablate +step=baseline") for s in segments)
    assert record["resumed_from_epoch"] == [1]


@pytest.mark.slow
def test_resume_on_another_process_count_is_refused_unless_asked(tmp_path):
    args = ["+step=baseline", *SMOKE, "budget.epochs=2", "train.threads=1", f"hydra.run.dir={tmp_path}"]
    assert cli(*args, env_extra=killed_after(1)).returncode == -9
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}
    refused = cli("--nproc_per_node=2", "--master_port=29537", "-m", "ablate", *args,
                  module=("-m", "torch.distributed.run"))
    assert refused.returncode != 0 and "resuming would change processes: 1 -> 2 mid-run" in refused.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"} == before


@pytest.mark.slow
def test_two_identical_commands_one_trains_the_other_is_refused(tmp_path):
    # long enough (about 20 s) that the second command starts while the first still trains
    args = ["+step=baseline", *SMOKE, "data.train_size=512", "budget.epochs=20", f"hydra.run.dir={tmp_path}"]
    first = start_cli(*args)
    deadline = time.time() + 120
    while not (tmp_path / ".lock").exists() or not (tmp_path / ".lock").read_text():
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.2)
    second = cli(*args)
    assert first.poll() is None, "the first run ended before the second started; lengthen it"
    assert second.returncode != 0
    assert re.search(rf"in use by PID {first.pid}; wait for it or stop it", second.stderr)
    assert first.wait(timeout=300) == 0
    record = json.loads((tmp_path / RESULT).read_text())
    assert record["status"] == "finished" and len(record["segments"]) == 1 and record["resumed_from_epoch"] == []


@pytest.mark.slow
def test_sweep_rerun_with_other_workers_skips_finished_jobs(tmp_path):
    args = ["-m", "+step=baseline,gelu", "budget=smoke", "data.train_size=64", "data.val_size=32",
            f"hydra.sweep.dir={tmp_path}"]
    assert cli(*args).returncode == 0
    again = cli(*args, "train.workers=1")
    assert again.returncode == 0 and again.stdout.count("not retrained") == 2, again.stderr


def test_nonfinite_loss_in_the_first_epoch_says_there_is_no_checkpoint(tmp_path):
    from ablate.train import TrainingFailed
    run = run_config(compose_config(["+step=baseline", *SMOKE, "recipe.lr=1e30", "recipe.weight_decay=0"]))
    with pytest.raises(TrainingFailed, match="no checkpoint was written"):
        train(run, tmp_path)
    assert json.loads((tmp_path / RESULT).read_text())["status"] == "failed"
    assert not (tmp_path / "last.pt").exists()


def test_record_schema_is_one_definition_for_writer_and_readers(tmp_path):
    """train writes every schema field; report reads any record holding the required ones (older runs too) and
    names what a record lacks or holds of the wrong type; a writer short of the schema, or beyond it, writes
    nothing."""
    from ablate.record import ALWAYS, FINISHED, WRITTEN, fields_when, write_record
    from ablate.report import collect
    record = train(run_config(compose_config(["+step=baseline", *SMOKE])), tmp_path / "runs" / "ok")
    assert set(fields_when(ALWAYS, WRITTEN, FINISHED)) <= set(record)
    old = {k: v for k, v in record.items() if k not in ("segments", "pipeline", "resumed_from_epoch")}
    old["seed"] = old["config"]["seed"] = 1  # another run (a copy of the same run would count once)
    (tmp_path / "runs" / "old").mkdir()
    (tmp_path / "runs" / "old" / RESULT).write_text(json.dumps(old))  # as written before those fields existed
    broken = {k: v for k, v in record.items() if k != "params"}
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / RESULT).write_text(json.dumps(broken))
    (tmp_path / "runs" / "typed").mkdir()
    (tmp_path / "runs" / "typed" / RESULT).write_text(json.dumps({**record, "seed": "2"}))
    rows, problems = collect(tmp_path / "runs")
    assert sorted(rows.run_dir) == ["ok", "old"]
    assert [(p.kind, p.path) for p in problems] == [("corrupt", str(tmp_path / "runs" / name / RESULT))
                                                    for name in ("broken", "typed")]
    assert "lacks the record field(s) params" in problems[0].detail
    assert "seed='2' is not allowed; expected an integer" in problems[1].detail
    with pytest.raises(ValueError, match=r"lacks the record field\(s\) final, best_top1"):
        write_record(tmp_path / "new", {k: v for k, v in record.items() if k not in ("final", "best_top1")})
    with pytest.raises(ValueError, match=r"field\(s\) best_top5 are not in the record's schema"):
        write_record(tmp_path / "new", {**record, "best_top5": 90.0})
    assert not (tmp_path / "new" / RESULT).exists()
