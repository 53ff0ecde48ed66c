"""What the controller tells the journal, the log and Prometheus about what it sees.

The journal keeps changes, not repetitions: a verdict or a reason for doing
nothing is written when it changes, so that `failover history` reads as a
timeline. Gauges are set every decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict

from failover.controller.journal import DECISION, THRESHOLD, VERDICT, Journal
from failover.controller.metrics import DegradedReason, Metrics, SubscriberLag
from failover.controller.status import ServiceRuntime, differing_topologies
from failover.coordination.base import ServiceRecord
from failover.engine import Decision, Durability, NoOp, Observation, Role, Verdict
from failover.engine.planner import Positions, WriterPosition, subscriber_lag
from failover.health.scheduler import Transition
from failover.health.thresholds import HealthState
from failover.topology import Topology

log = logging.getLogger("failover.controller")


def subscriber_lags(me: str, observations: Iterable[Observation],
                    records: Mapping[str, ServiceRecord],
                    positions: Positions) -> list[SubscriberLag]:
    """The lag of every subscriber this controller's own checks see, measured as the engine
    measures a failover target's: against the recorded writer's last known position too."""
    lags = []
    for observation in observations:
        if observation.observer != me:
            continue
        for replication in observation.services:
            if replication.role is not Role.SUBSCRIBER:
                continue
            record = records.get(replication.service)
            writer = positions.get((record.writer, replication.service), WriterPosition()) \
                if record is not None and record.writer is not None else WriterPosition()
            lag_bytes, lag_seconds = subscriber_lag(replication, writer)
            lags.append(SubscriberLag(replication.service, observation.target,
                                      lag_bytes, lag_seconds))
    return lags


def degraded_reasons(decision: Decision, records: Mapping[str, ServiceRecord],
                     services: Iterable[str], runtime: Mapping[str, ServiceRuntime],
                     coordination_problem: str | None, *, topology_differs: bool = False
                     ) -> set[DegradedReason]:
    """What keeps the fleet from serving every service a writer, or this controller from
    acting: the same facts `failover status` shows as NO quorum, "no automatic action",
    DEGRADED (a writer record awaiting repair), and a writer that is missing or DOWN."""
    reasons = set()
    if not decision.has_quorum:
        reasons.add(DegradedReason.NO_QUORUM)
    if coordination_problem is not None:
        reasons.add(DegradedReason.COORDINATION)
    if topology_differs:
        reasons.add(DegradedReason.TOPOLOGY)
    if any(state.degraded is not None for state in runtime.values()):
        reasons.add(DegradedReason.WRITER_RECORD)
    if any(state.durability in (Durability.DEGRADED, Durability.WAITING)
           for state in decision.durability.values()):
        reasons.add(DegradedReason.DURABILITY)
    down = {v.region for v in decision.verdicts if v.verdict is Verdict.DOWN}
    for service in services:
        record = records.get(service)
        if record is None or record.writer is None or record.writer in down:
            reasons.add(DegradedReason.NO_WRITER)
    return reasons


class DecisionReport:
    def __init__(self, journal: Journal, metrics: Metrics, topo: Topology,
                 runtime: Mapping[str, ServiceRuntime]) -> None:
        self.journal = journal
        self.metrics = metrics
        self.topo = topo
        self.runtime = runtime
        self._verdicts: dict[str, str] = {}
        self._idle_reasons: dict[str, str] = {}
        # Every check starts unknown (the scheduler's first state), reported before the
        # first threshold crossing so that a check that never settles is visible too.
        for name, region in topo.regions.items():
            for check in region.checks:
                metrics.set_probe_state(name, check.name, HealthState.UNKNOWN)

    def threshold(self, change: Transition) -> None:
        self.journal.append(THRESHOLD, target=change.region, check=change.check,
                            purpose=change.purpose, previous=change.previous.value,
                            current=change.current.value, consecutive=change.consecutive,
                            reason=change.result.reason, latency=change.result.latency_s)
        log.info("check %s/%s: %s -> %s (%s)", change.region, change.check,
                 change.previous.value, change.current.value, change.result.reason)
        self.metrics.set_probe_state(change.region, change.check, change.current)

    def decision(self, decision: Decision, records: Mapping[str, ServiceRecord],
                 observations: Iterable[Observation], coordination_problem: str | None) -> None:
        observations = list(observations)
        self.metrics.has_quorum.set(1 if decision.has_quorum else 0)
        differs = differing_topologies(observations, decision.me, self.topo.fingerprint)
        self.metrics.set_degraded(degraded_reasons(decision, records, self.topo.services,
                                                   self.runtime, coordination_problem,
                                                   topology_differs=bool(differs)))
        self.metrics.set_lags(subscriber_lags(decision.me, observations, records,
                                              decision.positions))
        for verdict in decision.verdicts:
            value = verdict.verdict.name
            self.metrics.set_verdict(verdict.region, verdict.verdict)
            if self._verdicts.get(verdict.region) != value:
                self._verdicts[verdict.region] = value
                self.journal.append(VERDICT, target=verdict.region, verdict=value,
                                    votes=[asdict(v) for v in verdict.votes],
                                    reason=verdict.reason)
                log.info("region %s is %s (%s)", verdict.region, value, verdict.reason)
        # Only "why nothing happened" is kept, when it changes: plans have their own entries.
        idle: dict[str, list[str]] = {name: [] for name in self.topo.services}
        for action in decision.plan.actions:
            if isinstance(action, NoOp):
                idle.setdefault(action.service, []).append(action.reason)
        for service, reasons in idle.items():
            reason = "; ".join(reasons)
            if self._idle_reasons.get(service) != reason:
                self._idle_reasons[service] = reason
                if reason:
                    self.journal.append(DECISION, service=service, reason=reason)
                    log.info("%s: %s", service, reason)
        for service in self.topo.services:
            known = decision.durability.get(service)
            self.metrics.set_durability(service, known.durability if known is not None
                                        else Durability.UNKNOWN)
        for record in records.values():
            self.metrics.epoch.labels(service=record.service).set(record.epoch)
            self.metrics.paused.labels(service=record.service).set(int(record.paused))
            for region in self.topo.regions:
                self.metrics.writer.labels(service=record.service, writer=region).set(
                    int(region == record.writer))
            if record.last_failover_at is not None:
                self.metrics.last_failover.labels(service=record.service).set(
                    record.last_failover_at)
