"""The controller's status view (`GET /v1/status`, `failover status`): pure.

Verdicts and the plan use the engine's own serialization, so that `status`
and `plan --json` describe a decision in the same words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from failover.coordination.base import ServiceRecord
from failover.engine import (
    AddReader,
    Decision,
    Durability,
    Observation,
    RemoveReader,
    SetDnsWriter,
    isolation_loss_bound,
)
from failover.engine.serialize import action_as_dict, verdict_as_dict


@dataclass
class ServiceRuntime:
    """What the controller tracks per service beyond the fleet's record."""

    last_plan: dict[str, Any] | None = None
    degraded: str | None = None
    dns_pending: SetDnsWriter | None = None  # a writer record move that failed, retried
    # Moves that put the reader record back to the fleet's readers, retried likewise.
    readers_pending: tuple[AddReader | RemoveReader, ...] = ()
    dns_retry_at: float = 0.0

    def dns_moves(self) -> list[SetDnsWriter | AddReader | RemoveReader]:
        """The DNS moves waiting for a retry, the writer's first."""
        return [*([self.dns_pending] if self.dns_pending else []), *self.readers_pending]

    def dns_due(self, now: float) -> bool:
        return bool(self.dns_moves()) and now >= self.dns_retry_at


@dataclass(frozen=True)
class Coordination:
    backend: str
    problem: str | None


def replication_seen(observations: Iterable[Observation], me: str,
                     service: str) -> dict[str, dict[str, Any]]:
    """What this controller's own checks saw of `service` in every region."""
    seen = {}
    for observation in observations:
        if observation.observer != me:
            continue
        replication = observation.by_service.get(service)
        if replication is not None:
            seen[observation.target] = {
                "role": replication.role.value, "fenced": replication.fenced,
                "epoch": replication.epoch, "lag_bytes": replication.lag_bytes,
                "lag_seconds": replication.lag_seconds, "ready": replication.ready}
    return seen


def differing_topologies(observations: Iterable[Observation], me: str, mine: str
                         ) -> dict[str, str]:
    """The other controllers whose newest observation reports another topology fingerprint
    than `mine`, with theirs (one that reports none, from an older release, is left out)."""
    newest: dict[str, Observation] = {}
    for observation in observations:
        known = newest.get(observation.observer)
        if observation.observer != me and (known is None
                                           or observation.observed_at > known.observed_at):
            newest[observation.observer] = observation
    return {name: observation.topology for name, observation in sorted(newest.items())
            if observation.topology is not None and observation.topology != mine}


def status_view(me: str, now: float, decision: Decision | None, *,
                records: Mapping[str, ServiceRecord], services: Iterable[str],
                observations: list[Observation], runtime: Mapping[str, ServiceRuntime],
                coordination: Coordination, lease_ttl: float, topology: str
                ) -> dict[str, Any]:
    by_service = {}
    for name in services:
        record = records.get(name)
        durability = decision.durability.get(name) if decision else None
        # A writer record awaiting repair, and a writer that no longer waits for its
        # subscribers (or whose writes wait for subscribers that are not there).
        problems = [problem for problem in (
            runtime[name].degraded,
            durability.reason if durability is not None and durability.durability in (
                Durability.DEGRADED, Durability.WAITING) else None) if problem]
        by_service[name] = {
            "writer": record.writer if record else None,
            "epoch": record.epoch if record else None,
            "paused": record.paused if record else False,
            "last_failover_at": record.last_failover_at if record else None,
            "readers": list(record.readers) if record else [],
            "replication": replication_seen(observations, me, name),
            "last_plan": runtime[name].last_plan,
            "durability": durability.durability.value if durability else Durability.UNKNOWN.value,
            "durability_reason": durability.reason if durability else None,
            "isolation_loss_bound_s": isolation_loss_bound(
                durability.durability if durability else Durability.UNKNOWN, lease_ttl),
            "degraded": "; ".join(problems) or None,
        }
    return {
        "region": me,
        "time": now,
        "coordination": coordination.backend,
        "coordination_problem": coordination.problem,
        "topology": topology,
        "topology_differs": differing_topologies(observations, me, topology),
        "has_quorum": decision.has_quorum if decision else False,
        "heard": list(decision.heard) if decision else [],
        "executor": decision.executor if decision else None,
        "executor_reason": decision.executor_reason if decision else None,
        "verdicts": {v.region: verdict_as_dict(v) for v in (decision.verdicts if decision else ())},
        "plan": [action_as_dict(a) for a in decision.plan.actions] if decision else [],
        "services": by_service,
    }


def local_role(observations: Iterable[Observation], me: str, service: str) -> str | None:
    """The role of this region's own database as its own controller last saw it."""
    for observation in observations:
        if observation.observer == me and observation.target == me:
            replication = observation.by_service.get(service)
            if replication is not None and replication.role.value != "unknown":
                return "fenced" if replication.fenced else replication.role.value
    return None
