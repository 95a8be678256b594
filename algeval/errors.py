"""The one error type for user mistakes.

A :class:`ParameterError` carries a single line that names the parameter, the
value it was given and the limit it broke, e.g.::

    max_lookahead=9: needs 2*max_lookahead+1 <= max_vertices=16

The CLI prints that line on stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

from typing import Any


class ParameterError(ValueError):
    """A bad user-supplied parameter: ``name=value: limit``."""

    def __init__(self, name: str, value: Any, limit: str):
        self.name, self.value, self.limit = name, value, limit
        super().__init__(f"{name}={value!r}: {limit}")


def check(cond: bool, name: str, value: Any, limit: str) -> None:
    """Raise :class:`ParameterError` unless ``cond`` holds."""
    if not cond:
        raise ParameterError(name, value, limit)


def check_int_range(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` as an int if ``lo <= value <= hi``; else raise a :class:`ParameterError`."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ParameterError(name, value, "must be an integer")
    v = int(value)
    if lo is not None and v < lo:
        raise ParameterError(name, value, f"must be >= {lo}")
    if hi is not None and v > hi:
        raise ParameterError(name, value, f"must be <= {hi}")
    return v
