"""Experiment trackers (logger=tensorboard|wandb|mlflow): what each writes, each epoch once across a resume, and a
tracker that fails costs one warning line, never the run or its identity."""
import json
import sys

import pytest

import ablate.train
from ablate import CONF_DIR
from ablate.config import LOGGERS, compose_config, dirname_exclude_keys, run_config
from ablate.errors import ConfigError
from ablate.record import RESULT
from ablate.report import report
from ablate.trackers import Tracker, open_tracker, scalars
from ablate.train import train

from helpers import TINY_RUN

EPOCHS = 3


def tiny(*extra: str):
    return run_config(compose_config(["+step=layer_norm", *TINY_RUN, f"budget.epochs={EPOCHS}", *extra]))


def warnings_of(captured) -> list[str]:
    return [line for line in captured.err.splitlines() if line.startswith("warning: logger=")]


def test_every_logger_has_its_config_file():
    assert sorted(p.stem for p in (CONF_DIR / "logger").glob("*.yaml")) == sorted(LOGGERS)


def test_the_logger_is_neither_identity_nor_directory_name():
    plain, logged = tiny(), tiny("logger=wandb", "logger.project=x")
    assert plain.identity_hash == logged.identity_hash and "logger" not in logged.identity
    assert {"logger", "logger.name", "logger.project", "logger.mode", "logger.tracking_uri"} <= set(
        dirname_exclude_keys())


def test_a_bad_logger_value_is_one_line():
    with pytest.raises(ConfigError, match=r"^logger.mode='live' is not allowed; choose one of: offline, online$"):
        tiny("logger=wandb", "logger.mode=live")


def test_history_entries_become_tracker_scalars():
    entry = {"epoch": 2, "update": 8, "lr": 0.1, "train_loss": 2.0, "val_top1": 40.0, "val_top1_ema": 41.0}
    assert scalars(entry) == {"update": 8.0, "lr": 0.1, "train/loss": 2.0, "val/top1": 40.0, "val/top1_ema": 41.0}


def test_only_the_main_process_tracks(tmp_path):
    cfg = tiny("logger=tensorboard")
    tracker = open_tracker(cfg.logger, cfg.identity, cfg.identity_hash, tmp_path, None, 0, is_main=False)
    assert type(tracker) is Tracker and not (tmp_path / "tensorboard").exists()


def _stop_before_epoch(monkeypatch, stop_at: int):
    """The run stops (as Ctrl-C stops it) before epoch `stop_at` trains: the epochs before it are checkpointed."""
    epoch = ablate.train._epoch

    def stopping(t, state, i, out):
        if i + 1 == stop_at:
            raise KeyboardInterrupt
        return epoch(t, state, i, out)
    monkeypatch.setattr(ablate.train, "_epoch", stopping)


def test_tensorboard_holds_each_epoch_once_across_a_resume(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tiny("logger=tensorboard")
    with monkeypatch.context() as m:
        _stop_before_epoch(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train(run, tmp_path)
    result = train(run, tmp_path)
    assert result["resumed_from_epoch"] == [1]
    events = EventAccumulator(str(tmp_path / "tensorboard" / run.identity_hash))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"val/top1", "val/loss", "train/loss", "train/images_per_s", "lr", "final/top1"} <= tags
    assert [e.step for e in events.Scalars("val/top1")] == list(range(1, EPOCHS + 1))
    assert [e.value for e in events.Scalars("val/top1")] == pytest.approx([h["val_top1"] for h in result["epochs"]])
    assert events.Scalars("final/top1")[-1].value == pytest.approx(result["final"]["top1"])


@pytest.mark.slow
def test_wandb_offline_writes_its_run_folder(tmp_path):
    train(tiny("logger=wandb"), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


@pytest.mark.slow
def test_mlflow_keeps_one_run_per_directory_in_the_sweeps_store(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    run, sweep = tiny("logger=mlflow"), tmp_path / "sweep"
    with monkeypatch.context() as m:
        _stop_before_epoch(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train(run, sweep / "job", sweep_dir=sweep)
    result = train(run, sweep / "job", sweep_dir=sweep)
    client = MlflowClient(tracking_uri=(sweep / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("ablate").experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == run.identity_hash
    assert found.data.params["net.kernel_size"] == "7"
    history = client.get_metric_history(found.info.run_id, "val/top1")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    assert found.data.metrics["final/top1"] == pytest.approx(result["final"]["top1"])


def test_a_logger_that_cannot_be_imported_is_one_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    result = train(tiny("logger=wandb"), tmp_path)
    assert result["status"] == "finished" and not (tmp_path / "wandb").exists()
    (line,) = warnings_of(capsys.readouterr())
    assert line.startswith("warning: logger=wandb: cannot import it (") and "pip install 'ablate[wandb]'" in line
    assert line.endswith("; the run goes on without it")


def test_a_logger_whose_writes_fail_is_one_warning(tmp_path, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    result = train(tiny("logger=tensorboard"), tmp_path)
    assert result["status"] == "finished" and len(result["epochs"]) == EPOCHS
    (line,) = warnings_of(capsys.readouterr())  # one line, though every epoch would have failed
    assert "OSError" in line and "No space left on device" in line
    assert json.loads((tmp_path / RESULT).read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_finished_run_is_reused_under_another_logger(tmp_path, capsys):
    train(tiny(), tmp_path)
    before = (tmp_path / RESULT).read_text()
    train(tiny("logger=tensorboard"), tmp_path)
    assert "finished run found" in capsys.readouterr().out and (tmp_path / RESULT).read_text() == before


@pytest.mark.slow
def test_the_report_shows_its_figures_and_summary_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train(tiny(), tmp_path / "runs" / "a")
    report(tmp_path / "runs", tmp_path / "report", logger=run_config(compose_config(["logger=tensorboard"])).logger)
    events = EventAccumulator(str(tmp_path / "report" / "tensorboard" / "report"), size_guidance={"images": 0})
    events.Reload()
    assert {"roadmap", "trajectory"} <= set(events.Tags()["images"])
    assert "summary/text_summary" in events.Tags()["tensors"]
