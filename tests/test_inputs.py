"""Bad input: every case ends in one line that names the key or file and what is allowed, before any work,
and leaves what was already in the run directory as it was. (The silent cases each trained the wrong
experiment, or a nonsense one, and recorded it as finished before these checks.)"""
import dataclasses
import importlib

import pandas as pd
import pytest
import torch
from hydra.errors import ConfigCompositionException

from ablate.cli import one_line
from ablate.config import compose_config, run_config
from ablate.errors import ConfigError, DataError
from ablate.rundir import RunDirConflict, check_run_dir, load_checkpoint
from stages import NetConfigError

from helpers import SMOKE, cli

ERRORS = (ConfigError, NetConfigError, DataError)

# (overrides, what the one-line message must contain)
BAD_RUN_CONFIGS = [
    # silent before: a misspelt +group trained the baseline
    (["+steps=kernel"], "unknown top-level key(s) steps (a misspelt +KEY=?); allowed: +step=, +undo=, +only="),
    (["+stpe=kernel"], "unknown top-level key(s) stpe"),
    (["+und=gelu"], "unknown top-level key(s) und"),
    # silent before: values that type-checked by accident
    (["net.kernel_size=true"], "net.kernel_size=True is not allowed; expected an integer"),
    (["net.depths=[1,true,1,1]"], "net.depths=[1, True, 1, 1] is not allowed; expected a list of integers"),
    (["seed=1.5"], "seed=1.5 is not allowed; expected an integer in [0, 4294967296)"),
    (["budget.lr_multiplier=0"], "budget.lr_multiplier=0.0 is not allowed; expected a positive number"),
    (["data.crop_scale=[2.0,0.1]"], "data.crop_scale=[2.0, 0.1] is not allowed; expected [min, max] with 0 < min"),
    (["data.eval_crop_pct=0"], "data.eval_crop_pct=0.0 is not allowed; expected a fraction in (0, 1]"),
    (["net.width_multiplier=0.001"], "net.width_multiplier=0.001 is not allowed; expected a positive float that "
                                     "leaves the stem and every stage >= 8 channels"),
    # tracebacks before
    (["train.precision=fp8"], "train.precision='fp8' is not allowed; choose one of: fp32, bf16, fp16"),
    (["train.device=gpu"], "train.device='gpu' is not allowed; choose one of: auto, cpu, cuda"),
    (["seed=abc"], "seed='abc' is not allowed; expected an integer in [0, 4294967296)"),
    (["budget.epochs=abc"], "budget.epochs='abc' is not allowed; expected a number"),
    (["budget.batch_size=16.0"], "budget.batch_size=16.0 is not allowed; expected an integer"),
    (["budget.lr_multiplier=-1"], "budget.lr_multiplier=-1.0 is not allowed; expected a positive number"),
    (["train.threads=-1"], "train.threads=-1 is not allowed; expected null or a positive integer"),
    (["train.workers=-1"], "train.workers=-1 is not allowed; expected null (auto) or an integer >= 0"),
    (["recipe.auto_augment=garbage"], "recipe.auto_augment='garbage' is not allowed; expected null or a timm policy"),
    (["data=folder", "data.root=tests"], "data.num_classes has no value; set data.num_classes=VALUE"),
    (["data=folder", "data.num_classes=3"], "data.root has no value; set data.root=VALUE"),
    (["data=folder", "data.root=pyproject.toml", "data.num_classes=3"],
     "data.root='pyproject.toml' is not allowed; expected an ImageFolder root folder with train/ and val/ ("),
    (["data.val_subset=0"], "data.val_subset=0 is not allowed; expected null (all) or a positive integer"),
    # more of our own
    (["budget.accum_steps=0"], "budget.accum_steps=0 is not allowed; expected a positive integer"),
    (["recipe.label_smoothing=1.5"], "recipe.label_smoothing=1.5 is not allowed; expected a probability in [0, 1)"),
    (["recipe.mixup=-1"], "recipe.mixup=-1.0 is not allowed; expected a number >= 0"),
    (["net.act=swish"], "net.act='swish' is not allowed; choose one of: relu, gelu"),
    (["train.channels_last=maybe"], "train.channels_last='maybe' is not allowed; expected true or false or auto"),
    (["eval.severities=[0,6]"], "eval.severities=[0, 6] is not allowed; expected a list of severities in 1..5"),
    (["eval.corruptions=[fog,mud]"], "eval.corruptions=['fog', 'mud'] is not allowed; expected cifar10c or imagenet_c or a list"),
    (["eval.corruptions=frost"], "(frost needs the reference's frost photographs, which no dependency ships)"),
    (["data.pipeline=fast"], "data.pipeline='fast' is not allowed; choose one of: auto, batched, per_sample"),
    (["data.image_size=48", "+step=patchify_stem"], "data.image_size=48 does not fit the net"),
]


@pytest.mark.parametrize("overrides,message", BAD_RUN_CONFIGS, ids=[" ".join(o) for o, _ in BAD_RUN_CONFIGS])
def test_bad_run_config_is_refused_naming_key_and_allowed(overrides, message):
    with pytest.raises(ERRORS) as err:
        run_config(compose_config(overrides))
    line = one_line(err.value)
    assert message in line and "\n" not in line


def test_unknown_key_and_removed_key_are_refused_by_hydra():
    for override, key in (("data.workers=2", "data.workers"), ("net.kernal_size=7", "net.kernal_size")):
        with pytest.raises(ConfigCompositionException) as err:
            compose_config([override])
        assert key in str(err.value) + str(err.value.__cause__)


def test_batched_pipeline_refuses_what_it_cannot_do(tmp_path):
    from ablate.data import build_datasets
    run = run_config(compose_config(["+step=recipe", "budget.augmentation=recipe", "data.pipeline=batched"]))
    with pytest.raises(DataError, match="data.pipeline=batched is not possible: the augmentation has auto_augment"):
        build_datasets(run.data, run.augment, run.seed)


# ------------------------------------------------------------------------------------- the run directory
def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.parametrize("content,message", [
    ("[]", "is not a readable run record (", ),
    ('{"status": "finished"', "is not a readable run record ("),
])
def test_unreadable_record_is_refused_and_kept(tmp_path, content, message):
    (tmp_path / "result.json").write_text(content)
    before = _snapshot(tmp_path)
    with pytest.raises(RunDirConflict, match="train.overwrite=true") as err:
        check_run_dir(tmp_path, "abc", {}, overwrite=False)
    assert message in str(err.value) and _snapshot(tmp_path) == before


def test_damaged_checkpoint_is_refused_and_kept(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    before = _snapshot(tmp_path)
    with pytest.raises(RunDirConflict, match=r"last.pt is damaged \(.*\); move it away to restart"):
        load_checkpoint(tmp_path, "abc", "cpu")
    torch.save({"identity_hash": "other"}, tmp_path / "last.pt")
    before = _snapshot(tmp_path)
    with pytest.raises(RunDirConflict, match="belongs to a different run"):
        check_run_dir(tmp_path, "abc", {}, overwrite=False)
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------- other entry points
def test_report_refuses_a_file_as_out(tmp_path):
    from ablate.report import main
    (tmp_path / "a_file").write_text("keep me")
    assert main([str(tmp_path), f"out={tmp_path / 'a_file'}"]) == 2
    assert (tmp_path / "a_file").read_text() == "keep me"


@pytest.mark.parametrize("rows,message", [
    ([("baseline", "infer")], "has no 'train' rows; run ablate.bench with modes=[train]"),
    ([("baseline", "train"), ("baseline", "train")], "has several 'train' jobs of baseline; give the report a CSV "
                                                      "with one job per step"),
])
def test_report_refuses_a_bench_csv_it_cannot_read_one_number_per_step_from(tmp_path, capsys, rows, message):
    from ablate.report import main
    bench = tmp_path / "bench.csv"
    pd.DataFrame([{"regime": "r50", "step": s, "mode": m, "img_s": 1.0} for s, m in rows]).to_csv(bench, index=False)
    assert main([str(tmp_path), f"bench={bench}"]) == 2
    err = capsys.readouterr().err
    assert f"error: bench={bench} {message}" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv"]  # refused before writing anything


def test_report_reads_a_directory_whose_name_holds_equals_signs(tmp_path):
    from ablate.report import COMMAND
    run_dir = tmp_path / "baseline" / "budget.epochs=2,seed=0"
    run_dir.mkdir(parents=True)
    positional, options, _ = COMMAND.parse([str(run_dir), "out=x"])
    assert positional == [str(run_dir)] and options.out == "x"


@pytest.mark.parametrize("argv,message", [
    (["batch_size=abc"], "batch_size='abc' is not allowed; expected an integer"),
    (["+step=patchify_stem", "image_size=100"], "image_size=100 does not fit the net"),
    (["train.precision=fp8"], "train.precision='fp8' is not allowed; choose one of: fp32, bf16, fp16"),
    (["train.pointwise_form=fast"], "train.pointwise_form='fast' is not allowed; choose one of: auto, conv, linear"),
])
def test_bench_bad_input(argv, message, capsys):
    from ablate.bench import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("module", ["report", "bench", "complexity", "robustness", "plan"])
def test_every_command_lists_its_keys_and_an_example(module, capsys):
    command = importlib.import_module(f"ablate.{module}")
    with pytest.raises(SystemExit) as stop:
        command.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m ablate.{module}") and "examples:\n  python -m ablate." in out
    assert all(f"  {f.name}=" in out for f in dataclasses.fields(command.COMMAND.options))


def test_complexity_bad_input(capsys):
    from ablate.complexity import main
    assert main(["regime=r100"]) == 2
    assert "regime='r100' is not allowed; choose one of: r50, r200" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- end to end (CLI)
@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["+steps=kernel"], "unknown top-level key(s) steps"),
    (["train.precision=fp8"], "train.precision='fp8' is not allowed"),
    (["data=folder", "data.num_classes=3"], "data.root has no value"),
])
def test_cli_bad_input_is_one_line_and_changes_nothing(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "note.txt").write_text("already here")
    done = cli(*overrides, f"hydra.run.dir={run_dir}")
    assert done.returncode != 0
    assert done.stderr.strip() == f"error: {done.stderr.strip()[7:]}" and message in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".hydra") == ["note.txt"]
    assert not (run_dir / "result.json").exists()


@pytest.mark.slow
def test_cli_misspelt_plus_key_in_a_sweep_stops_it(tmp_path):
    done = cli("-m", "+stpe=kernel,gelu", *SMOKE, f"hydra.sweep.dir={tmp_path}")
    assert done.returncode != 0 and "unknown top-level key(s) stpe" in done.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_a_batch_larger_than_the_data_is_named_before_training(tmp_path):
    from ablate.plan import main
    from ablate.train import train
    with pytest.raises(ConfigError, match=r"^budget.batch_size=512 exceeds the 256 training images; choose a smaller"):
        train(run_config(compose_config([*SMOKE, "budget.batch_size=512"])), tmp_path)
    assert not (tmp_path / "result.json").exists()
    assert main([*SMOKE, "train_images=16", f"out={tmp_path / 'p.csv'}"]) == 2  # fewer images than one batch
    assert not (tmp_path / "p.csv").exists()
