"""What the controller tells the journal, the log and Prometheus about what it sees.

The journal keeps changes, not repetitions: a verdict or a reason for doing
nothing is written when it changes, so that `failover history` reads as a
timeline. Gauges are set every decision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict

from failover.controller.journal import DECISION, THRESHOLD, VERDICT, Journal
from failover.controller.metrics import VERDICT_VALUES, Metrics
from failover.coordination.base import ServiceRecord
from failover.engine import Decision, NoOp
from failover.health.scheduler import Transition
from failover.topology import Topology

log = logging.getLogger("failover.controller")


class DecisionReport:
    def __init__(self, journal: Journal, metrics: Metrics, topo: Topology) -> None:
        self.journal = journal
        self.metrics = metrics
        self.topo = topo
        self._verdicts: dict[str, str] = {}
        self._idle_reasons: dict[str, str] = {}

    def threshold(self, change: Transition) -> None:
        self.journal.append(THRESHOLD, target=change.region, check=change.check,
                            purpose=change.purpose, previous=change.previous.value,
                            current=change.current.value, consecutive=change.consecutive,
                            reason=change.result.reason, latency=change.result.latency_s)
        log.info("check %s/%s: %s -> %s (%s)", change.region, change.check,
                 change.previous.value, change.current.value, change.result.reason)
        self.metrics.probe_state.labels(target=change.region, check=change.check).set(
            {"healthy": 1, "unhealthy": 0}.get(change.current.value, -1))

    def decision(self, decision: Decision, records: Mapping[str, ServiceRecord]) -> None:
        self.metrics.has_quorum.set(1 if decision.has_quorum else 0)
        for verdict in decision.verdicts:
            value = verdict.verdict.value.upper()
            self.metrics.region_verdict.labels(target=verdict.region).set(VERDICT_VALUES[value])
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
        for record in records.values():
            self.metrics.epoch.labels(service=record.service).set(record.epoch)
            self.metrics.paused.labels(service=record.service).set(int(record.paused))
            for region in self.topo.regions:
                self.metrics.writer.labels(service=record.service, writer=region).set(
                    int(region == record.writer))
