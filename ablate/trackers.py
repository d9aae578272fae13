"""Experiment trackers (`logger=tensorboard|wandb|mlflow`, conf/logger/): a run's per-epoch metrics and final
numbers, and a report's figures and summary table, also shown where researchers watch training.

result.json stays the record; a tracker is a view of it. So a tracker never decides what a run is (the logger group
is outside the identity and the directory name), runs on the main process only, and never stops a run: its first
import or write failure is one warning line, and the run goes on without it. The tracker's step is the epoch, and
an epoch is logged once its checkpoint is written, so a resumed run continues the same tracker run and logs each
epoch once."""
from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from .cli import one_line
from .config import LoggerConfig, dotted

MLFLOW_PARAMS_PER_CALL = 100  # MLflow's limit on the params of one log_batch


def scalars(metrics: dict) -> dict[str, float]:
    """An epoch of the record's history as tracker scalars: train_loss -> train/loss, val_top1 -> val/top1, lr."""
    out = {}
    for key, value in metrics.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        split, _, name = key.partition("_")
        out[f"{split}/{name}" if split in ("train", "val") and name else key] = float(value)
    return out


def flat(tree: dict) -> dict[str, str | int | float | bool]:
    """A nested config as dotted keys with plain values (lists and null as text), as trackers take hyperparameters."""
    return {k: v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in dotted(tree).items()}


class Tracker:
    """No tracker (logger=none, and every process but the main one): each call does nothing."""

    def epoch(self, metrics: dict) -> None:
        """One finished epoch (an entry of the record's history)."""

    def finish(self, final: dict[str, float]) -> None:
        """The run's final numbers; the tracker run is marked finished."""

    def close(self) -> None:
        """Flushes and lets go (also after a failed run)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Guarded(Tracker):
    """A tracker backend whose first failure (its import included) is one warning line; then it is dropped."""

    def __init__(self, name: str, open_backend):
        self.name, self.backend = name, None
        self._call(lambda: setattr(self, "backend", open_backend()))

    def _call(self, fn) -> None:
        if self.name is None:
            return
        try:
            fn()
        except ImportError as e:
            self._drop(f"cannot import it ({one_line(e)}); pip install 'ablate[{self.name}]'")
        except Exception as e:  # a tracker is never worth a run: whatever it raises
            self._drop(f"{type(e).__name__}: {one_line(e)}")

    def _drop(self, why: str) -> None:
        print(f"warning: logger={self.name}: {why}; the run goes on without it", file=sys.stderr)
        self.name = None

    def epoch(self, metrics: dict) -> None:
        self._call(lambda: self.backend.epoch(metrics["epoch"], scalars(metrics)))

    def finish(self, final: dict[str, float]) -> None:
        self._call(lambda: self.backend.finish(final))

    def close(self) -> None:
        self._call(lambda: self.backend.close())


def open_tracker(cfg: LoggerConfig, identity: dict, identity_hash: str, out: Path, sweep_dir: Path | None,
                 resumed_epoch: int, is_main: bool) -> Tracker:
    """The run's tracker: `out` is its run directory, `sweep_dir` the multirun's directory (None for a single
    run), `resumed_epoch` the epochs already logged."""
    if cfg.name == "none" or not is_main:
        return Tracker()
    backend = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}[cfg.name]
    return _Guarded(cfg.name, lambda: backend(cfg, identity, identity_hash, Path(out), sweep_dir or Path(out),
                                              resumed_epoch))


def _run_id(*parts) -> str:
    """A tracker run id for one run directory (a rerun of an identity elsewhere is another tracker run)."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


class _TensorBoard:
    def __init__(self, cfg, identity, identity_hash, out, sweep_dir, resumed_epoch):
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: anything an earlier segment logged past its last checkpoint is dropped on reading
        self.writer = SummaryWriter(str(out / "tensorboard" / identity_hash),
                                    purge_step=resumed_epoch + 1 if resumed_epoch else None)
        self.hparams = flat(identity)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()  # a killed run keeps what it logged

    def finish(self, final: dict[str, float]) -> None:
        self.writer.add_hparams(self.hparams, {f"final/{k}": v for k, v in final.items()}, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, cfg, identity, identity_hash, out, sweep_dir, resumed_epoch):
        self.run = _wandb_run(cfg, out, identity_hash, _run_id(identity_hash, out.resolve()), config=identity)

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log({**values, "epoch": epoch}, step=epoch)

    def finish(self, final: dict[str, float]) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in final.items()})
        self.run.finish()

    def close(self) -> None:
        self.run.finish()  # a no-op once finished


def _wandb_run(cfg: LoggerConfig, out: Path, name: str, run_id: str, **kwargs):
    """The W&B run `run_id` in logger.project (resumed if it exists), its files under `out`, its console left alone."""
    import wandb
    return wandb.init(project=cfg.project, mode=cfg.mode, dir=str(out), name=name, id=run_id, resume="allow",
                      settings=wandb.Settings(console="off", silent=True), **kwargs)


class _MLflow:
    """One MLflow run per run directory (found again by its tag when the run resumes)."""

    def __init__(self, cfg, identity, identity_hash, out, sweep_dir, resumed_epoch):
        from mlflow.entities import Param
        self.client, self.run_id, found = _mlflow_run(cfg, sweep_dir, "run_dir", out, identity_hash,
                                                      {"identity_hash": identity_hash})
        if found:
            self.client.update_run(self.run_id, status="RUNNING")
            return
        params = [Param(k, str(v)) for k, v in flat(identity).items()]
        for i in range(0, len(params), MLFLOW_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i:i + MLFLOW_PARAMS_PER_CALL])

    def epoch(self, epoch: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in values.items()])

    def finish(self, final: dict[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"final/{k}", v, now, 0) for k, v in final.items()])
        self.client.set_terminated(self.run_id)

    def close(self) -> None:
        pass  # every call above is written through


def _mlflow_run(cfg: LoggerConfig, root: Path, tag: str, directory: Path, name: str, tags: dict | None = None):
    """(client, run id, found) of the MLflow run tagged `tag`=`directory` in logger.project, created if none is
    (the tracking store's default: a local file store root/mlruns)."""
    # MLflow 3 keeps the file store in maintenance mode behind this switch; a local file store is what it is for here
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=cfg.tracking_uri or (root / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(cfg.project)
    experiment = experiment.experiment_id if experiment else client.create_experiment(cfg.project)
    where = str(directory.resolve())
    found = client.search_runs([experiment], filter_string=f"tags.{tag} = '{_quoted(where)}'", max_results=1)
    if found:
        return client, found[0].info.run_id, True
    return client, client.create_run(experiment, run_name=name, tags={tag: where, **(tags or {})}).info.run_id, False


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


# ------------------------------------------------------------------------------------------------ reports
def log_report(cfg: LoggerConfig, out: Path, figures: list[Path], tables: dict) -> None:
    """A report's figures (PNG files) and tables (name -> DataFrame) as one tracker run per report directory
    (the same run again when the report is redrawn); a failure is one warning line, the report stands."""
    _Guarded(cfg.name, lambda: {"tensorboard": _report_tensorboard, "wandb": _report_wandb,
                                "mlflow": _report_mlflow}[cfg.name](cfg, Path(out), figures, tables))


def _report_tensorboard(cfg, out, figures, tables):
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(out / "tensorboard" / "report")) as writer:
        for path in figures:
            writer.add_image(path.stem, imread(path)[..., :3], dataformats="HWC")
        for name, table in tables.items():  # four leading spaces: a Markdown code block keeps the columns
            writer.add_text(name, "\n".join("    " + line for line in table.to_string(index=False).splitlines()))


def _report_wandb(cfg, out, figures, tables):
    import wandb
    run = _wandb_run(cfg, out, f"report {out.name}", _run_id("report", out.resolve()), job_type="report")
    run.log({**{p.stem: wandb.Image(str(p)) for p in figures},
             **{name: wandb.Table(dataframe=t.astype(str)) for name, t in tables.items()}})
    run.finish()


def _report_mlflow(cfg, out, figures, tables):
    client, run_id, _ = _mlflow_run(cfg, out, "report_dir", out, f"report {out.name}")
    for path in [*figures, *(out / f"{name}.csv" for name in tables)]:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
