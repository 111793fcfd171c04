"""Settings from prefixed environment variables: one parser, one rule for empty values, one error.

The rule for empty values: a variable that is unset, empty or only blanks means "use the default",
for every type, so `FOO_PORT=` in a compose file or a shell never turns into a surprise.
"""

from __future__ import annotations

import builtins
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
N = TypeVar("N", int, float)

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A setting has a bad value; the message names the variable and what it must be."""


class Env:
    """Reads `<PREFIX>_<KEY>` variables from a mapping (os.environ unless given)."""

    def __init__(self, prefix: str, environ: Mapping[str, str] | None = None) -> None:
        self.prefix = prefix.rstrip("_").upper()
        self.environ = os.environ if environ is None else environ

    def name(self, key: str) -> str:
        """The variable that holds `key`."""
        return f"{self.prefix}_{key.upper()}"

    def raw(self, key: str) -> str | None:
        """The stripped value, or None when unset or blank."""
        value = self.environ.get(self.name(key), "").strip()
        return value or None

    def _read(self, key: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self.raw(key)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError as err:
            raise ConfigError(f"{self.name(key)}={raw!r}: {err}") from None

    def str(self, key: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        """A string; with `choices`, one of them (compared without case)."""
        if choices is None:
            return self._read(key, default, lambda s: s)

        def pick(s: str) -> str:
            for choice in choices:
                if s.lower() == choice.lower():
                    return choice
            raise ValueError(f"expected one of {', '.join(choices)}")

        return self._read(key, default, pick)

    # From here on the class's own str/int/float/bool shadow the builtins in signatures.
    def int(self, key: builtins.str, default: builtins.int, lo: builtins.int | None = None,
            hi: builtins.int | None = None) -> builtins.int:
        """An integer within [lo, hi]."""
        return self._read(key, default, lambda s: _bounded(_number(int, s, "an integer"), lo, hi))

    def float(self, key: builtins.str, default: builtins.float, lo: builtins.float | None = None,
              hi: builtins.float | None = None) -> builtins.float:
        """A finite number within [lo, hi]."""
        def parse(s: str) -> float:
            value = _number(float, s, "a number")
            if not math.isfinite(value):
                raise ValueError("expected a finite number")
            return _bounded(value, lo, hi)

        return self._read(key, default, parse)

    def bool(self, key: builtins.str, default: builtins.bool) -> builtins.bool:
        """true/false, yes/no, on/off or 1/0."""
        def parse(s: str) -> bool:
            if s.lower() in TRUE:
                return True
            if s.lower() in FALSE:
                return False
            raise ValueError("expected true or false")

        return self._read(key, default, parse)

    def path(self, key: builtins.str, default: Path) -> Path:
        """A file-system path, made absolute."""
        return self._read(key, default, lambda s: Path(s).expanduser()).resolve()

    def fill(self, cls: type[T], bounds: Mapping[builtins.str, tuple[Any, Any]] | None = None,
             choices: Mapping[builtins.str, tuple[builtins.str, ...]] | None = None) -> T:
        """An instance of a dataclass whose fields of type str, int, float, bool are each read as <PREFIX>_<FIELD>.

        The type comes from the field's default; `bounds` and `choices` constrain fields by name.
        """
        if not is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        bounds, choices = bounds or {}, choices or {}
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.default is MISSING or not f.init:
                continue
            default = f.default
            lo, hi = bounds.get(f.name, (None, None))
            if isinstance(default, bool):
                values[f.name] = self.bool(f.name, default)
            elif isinstance(default, int):
                values[f.name] = self.int(f.name, default, lo, hi)
            elif isinstance(default, float):
                values[f.name] = self.float(f.name, default, lo, hi)
            elif isinstance(default, str):
                values[f.name] = self.str(f.name, default, choices.get(f.name))
        return cls(**values)


def _number(kind: Callable[[str], N], raw: str, expected: str) -> N:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"expected {expected}") from None


def _bounded(value: N, lo: N | None, hi: N | None) -> N:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            raise ValueError(f"must be at least {lo:g}")
        if lo is None:
            raise ValueError(f"must be at most {hi:g}")
        raise ValueError(f"must be between {lo:g} and {hi:g}")
    return value
