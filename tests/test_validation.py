"""The one validation style: typed sections from TOML and constraint tables."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from splitnet.validation import Each, Interval, OneOf, build, check


@dataclass(frozen=True)
class Section:
    width: int = 4
    rate: float = 0.5
    kind: str = "a"
    sizes: tuple[int, ...] = (1, 2)


TABLE = {
    "width": Interval(1),
    "rate": Interval(0, 1, "neither"),
    "kind": OneOf(("a", "b")),
    "sizes": Each(Interval(1)),
}


@pytest.mark.parametrize(
    "closed, inside, outside",
    [
        ("both", [0, 0.5, 1], [-0.1, 1.1]),
        ("left", [0, 0.5], [1, -0.1]),
        ("right", [0.5, 1], [0, 1.1]),
        ("neither", [0.5], [0, 1]),
    ],
)
def test_interval_bounds_as_python_comparisons(closed, inside, outside):
    c = Interval(0, 1, closed)
    assert all(c.holds(v) for v in inside)
    assert not any(c.holds(v) for v in outside)
    assert not c.holds(math.nan) and not c.holds(math.inf)


def test_build_coerces_types_and_refuses_unknown_keys():
    s = build(Section, {"rate": 1, "sizes": [3, 4]}, "sec")
    assert s == Section(rate=1.0, sizes=(3, 4)) and isinstance(s.rate, float)
    with pytest.raises(ValueError, match=r"unknown key sec.nope \(known: width, rate"):
        build(Section, {"nope": 1}, "sec")
    with pytest.raises(ValueError, match="sec.width must be of type int, got 1.5"):
        build(Section, {"width": 1.5}, "sec")
    with pytest.raises(ValueError, match=r"\[sec\] must be a table"):
        build(Section, 3, "sec")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"width": 0}, "sec.width=0 must be >= 1"),
        ({"rate": 1.0}, r"sec.rate=1.0 must lie in \(0, 1\)"),
        ({"rate": math.nan}, r"sec.rate=nan must lie in \(0, 1\)"),
        ({"kind": "c"}, "sec.kind='c' is not one of a, b"),
        ({"sizes": (2, 0)}, r"sec.sizes\[1\]=0 must be >= 1 \(sec.sizes=\[2, 0\]\)"),
    ],
)
def test_check_names_the_key_and_the_value(changes, message):
    check(Section(), TABLE, "sec")  # the defaults pass
    with pytest.raises(ValueError, match=message):
        check(Section(**changes), TABLE, "sec")


def test_float_messages_say_finite():
    with pytest.raises(ValueError, match="lr=-1.0 must be a finite number > 0"):
        check(type("S", (), {"lr": -1.0})(), {"lr": Interval(0, None, "neither")}, "")
