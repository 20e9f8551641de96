"""One validation style for every config section: typed fields from TOML, a constraint table.

In the spirit of scikit-learn's parameter validation, a section is a frozen dataclass whose
defaults fix the types, and a table names what each value must satisfy::

    MODEL = {"hidden": Each(Interval(1)), "activation": OneOf(ACTIVATIONS)}
    section = build(ModelConfig, raw["model"], "model")     # unknown key / wrong type: refused
    check(section, MODEL, "model")                          # model.hidden[1]=0 must be >= 1 ...

Every refusal is a ``ValueError`` whose message starts with the dotted key and the offending
value (``split.groups=0 must be >= 1``), so a command line can print it as it is (exit 2).
Rules that tie two keys together stay as plain code after the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

T = TypeVar("T")


def coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` checked to have the type of ``default`` (ints pass where floats are expected,
    lists of ints where a tuple is); returns the value in the default's type."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(f"{key} must be a list of integers, got {value!r}")
        return tuple(value)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{key} must be of type {type(default).__name__}, got {value!r}")
    return value


def build(cls: type[T], raw: Mapping[str, Any], prefix: str, base: T | None = None) -> T:
    """``cls`` (a frozen dataclass) from ``raw``: ``base`` (or the defaults) with the keys of
    ``raw`` replaced, each coerced to its default's type; an unknown key is refused by name."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"[{prefix}] must be a table, got {raw!r}")
    base = cls() if base is None else base
    known = [f.name for f in fields(cls)]
    changes = {}
    for key, value in raw.items():
        if key not in known:
            raise ValueError(f"unknown key {prefix}.{key} (known: {', '.join(known)})")
        changes[key] = coerce(f"{prefix}.{key}", value, getattr(base, key))
    return replace(base, **changes)


@dataclass(frozen=True)
class OneOf:
    """The value is one of ``choices``."""

    choices: tuple

    def holds(self, v: Any) -> bool:
        return v in self.choices

    def fails(self, key: str, v: Any) -> str:
        return f"{key}={v!r} is not one of {', '.join(map(str, self.choices))}"


@dataclass(frozen=True)
class Interval:
    """A finite number with ``lo`` / ``hi`` bounds (None: unbounded), closed where it says."""

    lo: float | None = None
    hi: float | None = None
    closed: str = "left"  # "both" | "left" | "right" | "neither"

    def holds(self, v: Any) -> bool:
        if not math.isfinite(v):
            return False
        closed_lo, closed_hi = self.closed in ("both", "left"), self.closed in ("both", "right")
        lo_ok = self.lo is None or (v >= self.lo if closed_lo else v > self.lo)
        hi_ok = self.hi is None or (v <= self.hi if closed_hi else v < self.hi)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        if self.lo is not None and self.hi is not None:
            return f"lie in {left}{self.lo}, {self.hi}{right}"
        if self.lo is not None:
            return f"be {'>=' if left == '[' else '>'} {self.lo}"
        return f"be {'<=' if right == ']' else '<'} {self.hi}"

    def fails(self, key: str, v: Any) -> str:
        what = str(self) if isinstance(v, int) else str(self).replace("be ", "be a finite number ")
        return f"{key}={v!r} must {what}"


@dataclass(frozen=True)
class Each:
    """Every element of a list satisfies ``inner``; the message names the element's index."""

    inner: OneOf | Interval

    def holds(self, v: Any) -> bool:
        return all(self.inner.holds(x) for x in v)

    def fails(self, key: str, v: Any) -> str:
        i, x = next((i, x) for i, x in enumerate(v) if not self.inner.holds(x))
        return f"{self.inner.fails(f'{key}[{i}]', x)} ({key}={list(v)})"


Constraint = OneOf | Interval | Each


def check(section: Any, table: Mapping[str, Constraint], prefix: str) -> None:
    """Every key of ``table`` satisfies its constraint, else ``ValueError`` naming key and value."""
    for key, constraint in table.items():
        value = getattr(section, key)
        if not constraint.holds(value):
            raise ValueError(constraint.fails(f"{prefix}.{key}" if prefix else key, value))
