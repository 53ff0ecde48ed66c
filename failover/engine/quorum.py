"""From observations to per-region verdicts, and who may act on them.

A vote counts only when it is fresh (observed_at >= now - observation_max_age);
each observer has at most one vote per target, its freshest observation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from failover.engine.model import Health, Observation, Policy


class Verdict(StrEnum):
    UP = "up"
    DOWN = "down"
    SUSPECT = "suspect"


@dataclass(frozen=True, slots=True)
class Vote:
    observer: str
    health: Health | None  # None: this observer sent nothing about the target
    observed_at: float | None
    counted: bool
    note: str  # why the vote does not count, or what it means; "" for a plain vote


@dataclass(frozen=True, slots=True)
class RegionVerdict:
    region: str
    verdict: Verdict
    healthy: int
    unhealthy: int
    quorum: int
    votes: tuple[Vote, ...]  # one per configured observer, by observer name
    reason: str


Pair = tuple[str, str]  # (observer, target)


def _precedence(observation: Observation) -> tuple[float, int, str]:
    # Freshest wins; for two observations stamped with the same instant the
    # choice must still not depend on input order.
    return (observation.observed_at, observation.consecutive, observation.health.value)


def latest_observations(
    observations: Iterable[Observation], policy: Policy
) -> tuple[dict[Pair, Observation], tuple[str, ...]]:
    """The freshest observation per (observer, target), and notes on what was ignored."""
    known = policy.priority
    latest: dict[Pair, Observation] = {}
    ignored: set[str] = set()
    for observation in observations:
        if observation.observer not in known:
            ignored.add(f"observations from {observation.observer!r}: not a configured observer")
            continue
        if observation.target not in known:
            ignored.add(f"observations of {observation.target!r}: not a configured region")
            continue
        pair = (observation.observer, observation.target)
        current = latest.get(pair)
        if current is None or _precedence(observation) > _precedence(current):
            latest[pair] = observation
    return latest, tuple(sorted(ignored))


def region_verdicts(
    latest: dict[Pair, Observation], policy: Policy, now: float
) -> dict[str, RegionVerdict]:
    cutoff = now - policy.observation_max_age
    observers = sorted(policy.priority)
    verdicts: dict[str, RegionVerdict] = {}
    for target in observers:
        votes = []
        healthy = unhealthy = 0
        for observer in observers:
            observation = latest.get((observer, target))
            if observation is None:
                votes.append(Vote(observer, None, None, counted=False, note="no observation"))
                continue
            if observation.observed_at < cutoff:
                age = now - observation.observed_at
                votes.append(Vote(
                    observer, observation.health, observation.observed_at, counted=False,
                    note=f"stale: {age:.1f}s old, max age {policy.observation_max_age:g}s",
                ))
                continue
            if observation.health is Health.HEALTHY:
                healthy += 1
            elif observation.health is Health.UNHEALTHY:
                unhealthy += 1
            note = "abstains: health unknown" if observation.health is Health.UNKNOWN else ""
            votes.append(Vote(observer, observation.health, observation.observed_at,
                              counted=True, note=note))
        # A strict-majority quorum (Policy enforces it) cannot be reached by
        # both sides at once, so the order of these tests does not matter.
        if unhealthy >= policy.quorum:
            verdict = Verdict.DOWN
            reason = f"{unhealthy} of {len(observers)} observers report it unhealthy"
        elif healthy >= policy.quorum:
            verdict = Verdict.UP
            reason = f"{healthy} of {len(observers)} observers report it healthy"
        else:
            verdict = Verdict.SUSPECT
            reason = (f"no quorum of {policy.quorum}: {healthy} healthy, {unhealthy} unhealthy "
                      "fresh votes")
        verdicts[target] = RegionVerdict(target, verdict, healthy, unhealthy, policy.quorum,
                                         tuple(votes), reason)
    return verdicts


def fresh_observers(latest: dict[Pair, Observation], policy: Policy, now: float) -> frozenset[str]:
    """Observers with at least one fresh observation: the ones known to be alive and heard."""
    cutoff = now - policy.observation_max_age
    return frozenset(observer for (observer, _), observation in latest.items()
                     if observation.observed_at >= cutoff)


def sees_quorum(fresh: frozenset[str], policy: Policy, me: str) -> bool:
    """Whether `me`, counting itself, hears from a quorum of observers."""
    return len(fresh | ({me} & policy.observers)) >= policy.quorum


def choose_executor(
    fresh: frozenset[str], verdicts: dict[str, RegionVerdict], policy: Policy
) -> str | None:
    """The observer that executes the plan: every controller computes the same one.

    The highest-priority observer that is heard (fresh) and whose own region is
    not DOWN, ties broken by name; None when there is no such observer.
    """
    candidates = [name for name in fresh if verdicts[name].verdict is not Verdict.DOWN]
    if not candidates:
        return None
    return min(candidates, key=lambda name: (-policy.priority[name], name))


def isolated_for(latest: dict[Pair, Observation], policy: Policy, now: float, me: str) -> float:
    """Seconds since `me` last heard a quorum; 0 while it does, inf if it never did.

    `me` counts itself, so it needs quorum - 1 peers: the quorum was lost when
    the (quorum - 1)-th freshest peer went stale.
    """
    needed = policy.quorum - (1 if me in policy.priority else 0)
    if needed <= 0:
        return 0.0
    last_heard: dict[str, float] = {}
    for (observer, _), observation in latest.items():
        if observer != me:
            last_heard[observer] = max(last_heard.get(observer, -math.inf),
                                       observation.observed_at)
    if len(last_heard) < needed:
        return math.inf
    lost_at = sorted(last_heard.values(), reverse=True)[needed - 1] + policy.observation_max_age
    return max(0.0, now - lost_at)
