"""The threshold state machine: turns a stream of probe results into a health state.

Seed semantics (as Route 53 and load balancers do): `healthy_threshold`
consecutive successes make a target healthy, `unhealthy_threshold`
consecutive failures make it unhealthy, and anything shorter leaves the state
where it was. A target nobody has judged yet is `unknown`, and stays so until
one of the two runs is long enough: a single blip neither condemns nor clears.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class HealthState(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class Thresholds:
    healthy: int
    unhealthy: int

    def __post_init__(self) -> None:
        if self.healthy < 1 or self.unhealthy < 1:
            raise ValueError(f"thresholds must be at least 1, got {self.healthy}/{self.unhealthy}")


@dataclass(frozen=True, slots=True)
class TargetHealth:
    state: HealthState = HealthState.UNKNOWN
    # Length of the current run of equal results; the sign says which:
    # positive counts successes, negative counts failures, 0 before any result.
    run: int = 0

    @property
    def consecutive(self) -> int:
        """How many results in a row agree with the latest one."""
        return abs(self.run)


def observe(current: TargetHealth, ok: bool, thresholds: Thresholds) -> TargetHealth:
    """The health after one more probe result."""
    if ok:
        run = current.run + 1 if current.run > 0 else 1
        state = HealthState.HEALTHY if run >= thresholds.healthy else current.state
    else:
        run = current.run - 1 if current.run < 0 else -1
        state = HealthState.UNHEALTHY if -run >= thresholds.unhealthy else current.state
    return TargetHealth(state, run)
