"""Value checks for task settings: each is (what is allowed, in words; a predicate), so that every error names
what the key takes. Pure Python."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]
Spec = tuple[str, Check]  # (what is allowed, in words; the check)


def integer(lo: int = 0) -> tuple[str, Check]:
    return f"an integer >= {lo}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def number(lo: float = 0.0, hi: float = math.inf) -> tuple[str, Check]:
    return (
        f"a number in [{lo:g}, {hi:g}]",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi,
    )


def optional(spec: tuple[str, Check]) -> tuple[str, Check]:
    return f"{spec[0]} or null", lambda v: v is None or spec[1](v)


def one_of(options: tuple[str, ...]) -> tuple[str, Check]:
    return f"one of {', '.join(options)}", lambda v: v in options


def text() -> tuple[str, Check]:
    return "a string", lambda v: isinstance(v, str)


def boolean() -> tuple[str, Check]:
    return "true or false", lambda v: isinstance(v, bool)


def numbers() -> tuple[str, Check]:
    return (
        "a list of numbers",
        lambda v: (
            isinstance(v, list) and bool(v) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        ),
    )


def names_of(options: tuple[str, ...]) -> tuple[str, Check]:
    return (
        f"a non-empty list of {', '.join(options)}",
        lambda v: isinstance(v, list) and bool(v) and all(x in options for x in v),
    )


def pair(lo: float, hi: float) -> tuple[str, Check]:
    return (
        f"[low, high] with {lo:g} <= low <= high <= {hi:g}",
        lambda v: (
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and lo <= v[0] <= v[1] <= hi
        ),
    )


def auto_or_integer(lo: int = 1) -> tuple[str, Check]:
    return f"auto or an integer >= {lo}", lambda v: v == "auto" or integer(lo)[1](v)


def stop_rule() -> tuple[str, Check]:
    """A convergence rule: ``[tau, evaluations]``, a Kendall tau in [-1, 1] and a count of at least 1."""
    return (
        "null or [tau, evaluations] with tau in [-1, 1] and evaluations an integer >= 1",
        lambda v: (
            v is None or (isinstance(v, list) and len(v) == 2 and number(-1.0, 1.0)[1](v[0]) and integer(1)[1](v[1]))
        ),
    )
