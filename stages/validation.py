"""Typed, validated config dataclasses: a bad value fails when the config is built, naming its key.

Every config class (the network's and the toolkit's) derives from `Validated`: the type of every field is
checked from its annotation (an int is not a bool, a float field takes ints, Optional, Literal choices, fixed or
variable-length tuples), and then the class's own `check()` tests ranges. No class can skip the type checks:
`Validated.__init_subclass__` refuses a subclass that defines its own `__post_init__`.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints


class Validated:
    """Base of a frozen config dataclass. Subclasses set PREFIX (the key prefix in messages) and ERROR."""
    PREFIX: ClassVar[str] = ""
    ERROR: ClassVar[type[Exception]] = ValueError
    # fields added after runs were recorded: at their default a run config leaves them out of its identity, so
    # every run recorded before a field existed is still the same run
    ADDED_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def added_defaults(cls) -> dict:
        """{added field: its default} (ADDED_FIELDS)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name in cls.ADDED_FIELDS}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__post_init__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} defines __post_init__; put range checks in check() so the type "
                            "checks of Validated always run")

    def __post_init__(self):
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(getattr(self, f.name), hints[f.name], self.key(f.name), self.ERROR)
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Range checks of the subclass; raise self.fail(...) on a bad value."""

    def key(self, name: str) -> str:
        return f"{self.PREFIX}.{name}" if self.PREFIX else name

    def require(self, ok: bool, name: str, allowed: str) -> None:
        if not ok:
            raise self.ERROR(f"{self.key(name)}={_show(getattr(self, name))} is not allowed; expected {allowed}")

    @classmethod
    def from_dict(cls, values: dict):
        """cls(**values), where an unknown key, or a missing one that has no default, is an error naming it."""
        fields = dataclasses.fields(cls)
        known = [f.name for f in fields]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise cls.ERROR(f"unknown key(s) {', '.join(cls.PREFIX + '.' + k for k in unknown)}; "
                            f"allowed keys: {', '.join(sorted(known))}")
        missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            keys = ", ".join(cls.PREFIX + "." + k if cls.PREFIX else k for k in missing)
            raise cls.ERROR(f"missing key(s) {keys}: the config group that sets them lacks them; add them to its "
                            "file (or +KEY=VALUE on the command line)")
        return cls(**values)


def _show(value) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _describe(hint) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        parts = [" or ".join(map(str, get_args(a))) if get_origin(a) is Literal else _describe(a) for a in inner]
        return " or ".join(parts) + (" or null" if len(inner) < len(args) else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_PLURAL.get(args[0], _describe(args[0]))}"
        return f"a list of {len(args)} {' and '.join(_describe(a) for a in args)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _coerce(value, hint, key: str, error) -> Any:
    """`value` as `hint` asks (ints widened to float, lists to tuples), or `error` naming the key."""
    ok, out = _match(value, hint)
    if not ok:
        if get_origin(hint) is Literal:
            raise error(f"{key}={_show(value)} is not allowed; choose one of: {', '.join(map(str, get_args(hint)))}")
        raise error(f"{key}={_show(value)} is not allowed; expected {_describe(hint)}")
    return out


def _match(value, hint) -> tuple[bool, Any]:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True, value
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin in (Union, types.UnionType):
        for a in args:
            ok, out = (value is None, None) if a is type(None) else _match(value, a)
            if ok:
                return True, out
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_match(v, args[0]) for v in value]
        elif len(value) == len(args):
            items = [_match(v, a) for v, a in zip(value, args)]
        else:
            return False, value
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if origin is dict or hint is dict:
        return isinstance(value, dict), value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    return isinstance(value, hint), value
