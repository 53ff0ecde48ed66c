"""One round of every check, all at once: what `failover check` shows.

A single round has no history, so it applies thresholds of 1: a check that
succeeds is healthy and one that fails is unhealthy (one that timed out
while this host was too busy to read the answer is unknown). The configured
`healthy_threshold` / `unhealthy_threshold` apply only to the scheduler,
which sees consecutive rounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from failover.health.probe import ProbeResult
from failover.health.targets import ProbeTarget
from failover.health.thresholds import HealthState, TargetHealth, Thresholds, observe

SINGLE_ROUND = Thresholds(healthy=1, unhealthy=1)


@dataclass(frozen=True, slots=True)
class RoundResult:
    target: ProbeTarget
    state: HealthState
    result: ProbeResult


async def run_round(targets: Sequence[ProbeTarget]) -> list[RoundResult]:
    """Every probe once, concurrently; each is bounded by its own timeout."""
    results = await asyncio.gather(*(target.probe.run() for target in targets))
    return [RoundResult(target, _state(result), result)
            for target, result in zip(targets, results, strict=True)]


def _state(result: ProbeResult) -> HealthState:
    if not result.conclusive:
        return HealthState.UNKNOWN  # this host was too busy to tell
    return observe(TargetHealth(), result.ok, SINGLE_ROUND).state
