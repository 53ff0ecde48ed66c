"""Durations, one syntax for the whole product: topology fields and command-line flags alike.

A number of seconds (5, 2.5, "30") or a number with a unit: "500ms", "5s", "2m", "1h".
Never negative, never NaN or infinite, and never zero unless zero means something
for that value (no cooldown, no lag accepted).
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# The sign is matched only to say that a negative duration is refused, rather than unreadable.
_PATTERN = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_EXAMPLES = "5, \"500ms\", \"5s\", \"2m\" or \"1h\""


def input_error(message: str) -> ValueError:
    """A ValueError whose message pydantic (and so Typer, which parses flags with pydantic)
    shows as it is, without a "Value error, " in front."""
    return PydanticCustomError("input", message)


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds from a number or a string with a unit; the ValueError says what is accepted."""
    if isinstance(value, bool):
        raise input_error(f"expected a duration such as {_EXAMPLES}, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value) if abs(value) < 1e300 else math.inf  # float(10**400) raises
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise input_error(f"expected a duration such as {_EXAMPLES}, got {value!r}")
    if not math.isfinite(seconds):
        raise input_error(f"expected a finite duration such as {_EXAMPLES}, got {value!r}")
    if seconds < 0:
        raise input_error(f"a duration cannot be negative, got {value!r}")
    if seconds == 0 and not allow_zero:
        raise input_error(f"must be longer than 0 (a duration such as {_EXAMPLES}), got {value!r}")
    return seconds


def _duration_or_zero(value: object) -> float:
    return parse_duration(value, allow_zero=True)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A topology field that must be longer than 0: every interval, timeout and TTL."""

DurationOrZero = Annotated[float, BeforeValidator(_duration_or_zero)]
"""A topology field where 0 means something: no cooldown, no lag accepted."""
