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
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, TypeVar

T = TypeVar("T")


_ELEMENTS = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _element_ok(value: Any, element: Any) -> bool:
    """``value`` is of type ``element`` (an int is a number, a bool is not an int; a
    ``tuple[X, ...]`` element is a list of X)."""
    if typing.get_origin(element) is tuple:
        inner = typing.get_args(element)[0]
        return isinstance(value, (list, tuple)) and all(_element_ok(v, inner) for v in value)
    if element is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if element is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, element)


def _as_element(value: Any, element: Any) -> Any:
    if typing.get_origin(element) is tuple:
        return tuple(_as_element(v, typing.get_args(element)[0]) for v in value)
    return float(value) if element is float else value


def coerce(key: str, value: Any, default: Any, element: Any = int) -> Any:
    """``value`` checked to have the type of ``default`` (ints pass where floats are expected,
    lists where a tuple is: lists of ``element``, ints unless the field's type says
    ``tuple[float, ...]``, ``tuple[str, ...]`` or ``tuple[tuple[int, ...], ...]``); returns the
    value in the default's type."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(_element_ok(v, element) for v in value):
            inner = typing.get_args(element)[0] if typing.get_origin(element) is tuple else None
            what = f"lists of {_ELEMENTS[inner]}" if inner else _ELEMENTS.get(element, element)
            raise ValueError(f"{key} must be a list of {what}, got {value!r}")
        return tuple(_as_element(v, element) for v in value)
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


def _element_of(cls: type, key: str) -> Any:
    """X of the field's ``tuple[X, ...]`` annotation (int when it says less)."""
    args = typing.get_args(typing.get_type_hints(cls)[key])
    return args[0] if args else int


def build(cls: type[T], raw: Mapping[str, Any], prefix: str, base: T | None = None) -> T:
    """``cls`` (a frozen dataclass) from ``raw``: ``base`` (or the defaults) with the keys of
    ``raw`` replaced, each coerced to its default's type (a list to the field's
    ``tuple[X, ...]``; a field whose default is a dataclass is built from its own table); an
    unknown key is refused by name. ``prefix`` "" names top-level keys as they are."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"[{prefix}] must be a table, got {raw!r}")
    base = cls() if base is None else base
    known = [f.name for f in fields(cls)]
    changes = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in known:
            raise ValueError(f"unknown key {dotted} (known: {', '.join(known)})")
        default = getattr(base, key)
        if is_dataclass(default):
            changes[key] = build(type(default), value, dotted, default)
        else:
            element = _element_of(cls, key) if isinstance(default, tuple) else int
            changes[key] = coerce(dotted, value, default, element)
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
