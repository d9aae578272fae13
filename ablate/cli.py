"""One command-line style for the toolkit's commands (ablate.report, .bench, .complexity, .robustness, .plan):

    python -m ablate.COMMAND [POSITIONAL ...] [KEY=VALUE ...] [HYDRA_OVERRIDE ...] [--help]

Positional arguments are paths (a path may contain `=`, as run directories do). KEY=VALUE sets an option of the
command, typed as Hydra types override values and validated by the command's options class. Where the command
builds networks, every other override (`+step=`, `+sweep=`, `regime=`, `net.*`, ...) goes to Hydra's compose API,
exactly as `python -m ablate` reads it. `--help` lists the command's keys with their defaults and an example.
Every bad input ends in one line, `error: ...`, and exit code 2.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from stages import NetConfigError

from .errors import ConfigError, DataError
from .provenance import command_as_typed
from .record import RESULT, RUN_FILES

KEY = re.compile(r"^[+~]{0,2}[A-Za-z_][\w.@/-]*$")  # what Hydra accepts left of `=`, not a path


class SomeFailed(RuntimeError):
    """A command that goes through many runs could not do some of them (each already named); it did the rest."""


USER_ERRORS = (ConfigError, NetConfigError, DataError, HydraException, OmegaConfBaseException, FileNotFoundError,
               NotADirectoryError, FileExistsError, SomeFailed)


class UsageError(ValueError):
    """The command line itself is wrong (arguments, not values)."""


@dataclass(frozen=True)
class Command:
    prog: str                               # e.g. "python -m ablate.report"
    summary: str                            # one line: what it does
    options: type                           # a Validated dataclass whose fields all have defaults
    positional: tuple[str, ...] = ()        # names of the required positional arguments
    overrides: bool = False                 # other KEY=VALUE are Hydra overrides of the run config
    examples: tuple[str, ...] = ()

    def help(self) -> str:
        usage = " ".join([self.prog, *self.positional, *(f"[{f.name}=...]" for f in dataclasses.fields(self.options))])
        if self.overrides:
            usage += " [+step=NAME | +sweep=NAME] [HYDRA_OVERRIDE ...]"
        lines = [f"usage: {usage}", "", self.summary, "", "keys:"]
        for f in dataclasses.fields(self.options):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name}={_show(default)}")
        if self.overrides:
            lines.append("  (any other KEY=VALUE is a Hydra override of the run config, as for python -m ablate)")
        if self.examples:
            lines += ["", "examples:", *(f"  {e}" for e in self.examples)]
        return "\n".join(lines)

    def parse(self, argv: list[str]):
        """(positional values, options, Hydra overrides); --help prints help and exits 0."""
        if any(a in ("-h", "--help") for a in argv):
            print(self.help())
            raise SystemExit(0)
        known = {f.name for f in dataclasses.fields(self.options)}
        positional, values, overrides = [], {}, []
        for arg in argv:
            key, sep, _ = arg.partition("=")
            # a run directory's name holds `=` (outputs/r50/baseline/budget.batch_size=16): a path that exists is
            # a path, whatever it looks like
            if not sep or not KEY.match(key) or (self.positional and "/" in key and Path(arg).exists()):
                positional.append(arg)
            elif key in known:
                values[key] = _typed_value(arg)
            elif self.overrides:
                overrides.append(arg)
            else:
                raise UsageError(f"unknown key {key!r}; {self.prog} takes: {', '.join(sorted(known))}")
        if len(positional) != len(self.positional):
            want = " ".join(self.positional) or "no positional argument"
            raise UsageError(f"expected {want}, got {' '.join(positional) or 'none'}; see {self.prog} --help")
        _refuse_run_files(values.get("out"))
        return positional, self.options.from_dict(values), overrides

    def main(self, argv: list[str], run: Callable) -> int:
        """Parses argv and calls run(*positional, options, overrides); a user error is one line and exit 2."""
        try:
            positional, options, overrides = self.parse(argv)
            with command_as_typed(shlex.join([*self.prog.split(), *argv])):
                run(*positional, options, overrides)
        except (UsageError, *USER_ERRORS) as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        return 0


def _refuse_run_files(out) -> None:
    """A command's `out=` never replaces a run's own files (its record, checkpoints, weights)."""
    if out is None:
        return
    path = Path(str(out))
    if path.name in RUN_FILES or (path.parent / RESULT).exists():
        why = f"{path.name} is a run's file" if path.name in RUN_FILES else f"{path.parent} holds a run"
        raise UsageError(f"out={out} would write over a run's files ({why}); choose a path outside run directories")


def _typed_value(arg: str):
    """The value of KEY=VALUE typed as Hydra types it: 3 -> int, 0.5 -> float, true -> bool, [a,b] -> list."""
    try:
        return OverridesParser.create().parse_overrides([arg])[0].value()
    except HydraException as e:
        raise UsageError(f"cannot read {arg!r}: {one_line(e)}") from None


def _show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def one_line(e: BaseException) -> str:
    """The message of `e` on one line; for an error re-raised from a DataLoader worker, the original's own
    message rather than the worker's traceback."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())
