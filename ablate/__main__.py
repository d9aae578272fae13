"""python -m ablate [+step=NAME] [regime=r50|r200] [budget=...] [data=...] [KEY=VALUE ...] [-m for sweeps]"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from stages import NetConfigError

from .cli import one_line
from .config import check_checkpoint_choice, os_error, run_config
from .errors import ConfigError, DataError
from .record import RESULT, read_record
from .rundir import RunDirConflict
from .train import TrainingFailed, train


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops a run as Ctrl-C does: where it is, resumable


def _stopped(out: str) -> str:
    """Where an interrupted run stopped, in one line."""
    try:
        done = len(read_record(Path(out) / RESULT).epochs or ())
        where = f"after epoch {done} (its last checkpoint)" if done else "before its first epoch ended"
    except (OSError, ValueError):
        where = "before its first record"
    return f"interrupted: {out} stopped {where}; rerun the same command to resume it"


def _hydra_files(cfg: DictConfig, hc) -> dict[str, str]:
    """What Hydra writes into `.hydra/` at job start (conf/config.yaml turns that off: it would rewrite a
    finished run's copy before the run directory is checked); train() writes it once the run is under way."""
    return {".hydra/config.yaml": OmegaConf.to_yaml(cfg), ".hydra/hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hc.overrides.task)}


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        check_checkpoint_choice(hc.overrides.task)
        run = run_config(cfg)  # every key validated before any work
        return train(run, hc.runtime.output_dir, job_files=_hydra_files(cfg, hc),
                     sweep_dir=hc.sweep.dir if sweep else None)
    except (ConfigError, NetConfigError, DataError, RunDirConflict) as e:
        if sweep and not isinstance(e, ConfigError):
            print(f"error in {hc.runtime.output_dir}: {one_line(e)}", file=sys.stderr)
            return None  # the sweep goes on; the report lists this job as missing
        sys.exit(f"error: {one_line(e)}")  # a bad value of the command is bad for every job: stop now
    except TrainingFailed as e:
        if sweep:
            print(f"run failed in {hc.runtime.output_dir}: {e}", file=sys.stderr)
            return None  # recorded as failed in its result.json
        sys.exit(f"run failed: {e}")
    except OSError as e:  # a full or read-only disk: every later job would fail the same way, so a sweep stops
        sys.exit(f"error: {hc.runtime.output_dir}: {os_error(e)}; files already written are unchanged; fix it and "
                 "rerun the same command to resume")
    except KeyboardInterrupt:
        sys.exit(_stopped(hc.runtime.output_dir))  # one line, not a traceback; a sweep stops here too


if __name__ == "__main__":
    main()
