"""Where a number came from: command, git revision, machine, library versions, date."""
from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from contextvars import ContextVar
import functools
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import REPO_ROOT
from .io import atomic_write_text

LIBRARIES = ("torch", "torchvision", "timm", "hydra-core", "fvcore", "pandas", "numpy")


@functools.cache
def git_revision() -> str:
    """The commit, with '-dirty' when tracked files outside results/ differ from it (a run that rewrites a
    committed result, as reproducing one does, leaves the code it ran as committed). Read once per process:
    a sweep's later jobs run the code imported at its start, whatever the checkout holds by then."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch  # here, not at the top: the report imports this module and needs torch for nothing else
    info = {"cpu": cpu_model(), "cpu_count": torch.get_num_threads(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def library_versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


_COMMAND: ContextVar[str | None] = ContextVar("command", default=None)


@contextmanager
def command_as_typed(command: str):
    """Within this block, records name `command` (an entry point called in-process, e.g. from a notebook)."""
    token = _COMMAND.set(command)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def typed_command() -> str:
    """The command as a user types it: `python -m ablate ...`, not the interpreter's absolute path."""
    if _COMMAND.get() is not None:
        return _COMMAND.get()
    argv = list(sys.orig_argv)
    if argv and Path(argv[0]).name.startswith("python"):
        argv[0] = "python"
    return shlex.join(argv)


def provenance(command: str | None = None) -> dict:
    return {
        "command": command or typed_command(),  # as typed, `-m module` included
        "git_revision": git_revision(),
        "machine": machine(),
        "versions": library_versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_csv(table, out: str | Path | None, command: str = "", float_format: str = "%.4g",
              prov: dict | None = None) -> Path:
    """A table as CSV, opened by the provenance of the command that made it (`prov`: one shared by several
    tables), written atomically; with no `out`, a new file outputs/COMMAND/DATE_TIME.csv. Prints and returns
    the path."""
    path = Path(out or f"outputs/{command}/{dt.datetime.now():%Y-%m-%d_%H-%M-%S}.csv")
    atomic_write_text(path, csv_header(prov or provenance()) + table.to_csv(index=False, float_format=float_format))
    print(f"-> {path}")
    return path


def csv_header(prov: dict) -> str:
    """Provenance as '# key: value' lines to open a CSV (pandas reads it with comment='#')."""
    lines = [f"# command: {prov['command']}", f"# git_revision: {prov['git_revision']}",
             f"# machine: {', '.join(f'{k}={v}' for k, v in prov['machine'].items())}",
             f"# versions: {', '.join(f'{k}={v}' for k, v in prov['versions'].items())}",
             f"# date: {prov['date']}"]
    return "\n".join(lines) + "\n"
