"""The controller's Prometheus metrics, in a registry of their own (tests run several controllers).

A state is one series per possible value, 1 for the current one and 0 for the others
(`failover_region_verdict{target="us-east-1", verdict="DOWN"} 1`), so that queries and
alerts name states instead of decoding numbers. Every label takes a bounded set of
values: regions, checks and services come from the topology, the rest from the code.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from failover import installed_version
from failover.engine import Durability, Verdict
from failover.health.thresholds import HealthState


class DegradedReason(StrEnum):
    """Why a controller reports `failover_degraded`: the fleet cannot keep every service
    written to, or this controller cannot act on its own."""

    NO_QUORUM = "no_quorum"  # it hears fewer controllers than the quorum: it never acts
    COORDINATION = "coordination"  # the coordination backend (etcd) has a problem: no action
    TOPOLOGY = "topology"  # another controller runs different topology files
    WRITER_RECORD = "writer_record"  # a writer DNS record differs from the fleet's writer
    NO_WRITER = "no_writer"  # a service has no writer recorded, or its writer's region is DOWN
    # a sync service's writer acknowledges commits without its subscribers (degraded), or
    # (strict) waits for subscribers that are not there, so its writes block
    DURABILITY = "durability"


@dataclass(frozen=True, slots=True)
class SubscriberLag:
    service: str
    region: str
    lag_bytes: float | None  # None: unknown
    lag_seconds: float | None


VERDICTS = tuple(verdict.name for verdict in Verdict)  # as status and the journal say them
DURABILITIES = tuple(durability.value for durability in Durability)
PROBE_STATES = tuple(state.value for state in HealthState)


class Metrics:
    def __init__(self, region: str) -> None:
        self.registry = CollectorRegistry()
        self.region = region
        self.build_info = Gauge("failover_build_info", "Always 1; the installed version",
                                ["version"], registry=self.registry)
        self.build_info.labels(version=installed_version()).set(1)
        self.probe_latency = Histogram(
            "failover_probe_latency_seconds", "Probe latency by target region, check and result",
            ["target", "check", "ok"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.probe_state = Gauge(
            "failover_probe_state",
            f"1 for the state a check is in, 0 for the others ({', '.join(PROBE_STATES)})",
            ["target", "check", "state"], registry=self.registry,
        )
        self.region_verdict = Gauge(
            "failover_region_verdict",
            f"1 for the fleet's verdict on a region, 0 for the others ({', '.join(VERDICTS)})",
            ["target", "verdict"], registry=self.registry,
        )
        self.writer = Gauge(
            "failover_service_writer", "1 for the region that holds the service's writer",
            ["service", "writer"], registry=self.registry,
        )
        self.epoch = Gauge("failover_service_epoch", "The service's epoch (fencing token)",
                           ["service"], registry=self.registry)
        self.paused = Gauge("failover_service_paused", "1 when automatic action is paused",
                            ["service"], registry=self.registry)
        self.last_failover = Gauge(
            "failover_last_failover_timestamp_seconds",
            "When the fleet's record says the service last failed over (epoch seconds)",
            ["service"], registry=self.registry)
        self.lag_bytes = Gauge(
            "failover_replication_lag_bytes",
            "A subscriber's lag in bytes, as this controller's checks see it, against the "
            "writer's last known WAL position too; absent while unknown",
            ["service", "region"], registry=self.registry)
        self.lag_seconds = Gauge(
            "failover_replication_lag_seconds",
            "A subscriber's lag in seconds: the age of its newest applied heartbeat, against "
            "the writer's last known heartbeat too; absent while unknown",
            ["service", "region"], registry=self.registry)
        self.degraded = Gauge(
            "failover_degraded",
            "1 while the reason holds: no_quorum (too few controllers heard), coordination "
            "(the backend has a problem), topology (another controller runs different "
            "topology files), writer_record (a writer DNS record awaits repair), "
            "no_writer (a service has no writer, or its writer's region is DOWN), durability "
            "(a sync service's writer degraded to asynchronous commits, or waits for "
            "subscribers that are not there)",
            ["reason"], registry=self.registry)
        self.durability = Gauge(
            "failover_service_durability",
            "1 for where the service stands on waiting for its subscribers, 0 for the others "
            f"({', '.join(DURABILITIES)}): degraded, its writer acknowledges commits no "
            "subscriber may have; waiting (sync_strict), its writes block until enough "
            "subscribers are healthy",
            ["service", "state"], registry=self.registry)
        self.failovers = Counter("failover_plans_total", "Plans executed, by outcome",
                                 ["service", "outcome"], registry=self.registry)
        self.step_duration = Histogram(
            "failover_plan_step_seconds",
            "Duration of plan steps, retries included, by kind of step and outcome (ok, failed)",
            ["kind", "outcome"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.rejected = Counter("failover_peer_requests_rejected_total",
                                "Signed requests refused, by reason", ["reason"],
                                registry=self.registry)
        self.exchange_errors = Counter("failover_peer_exchange_errors_total",
                                       "Failed exchanges with a peer", ["peer"],
                                       registry=self.registry)
        self.has_quorum = Gauge("failover_sees_quorum", "1 when this controller hears a quorum",
                                registry=self.registry)
        self.set_degraded(())
        # labels() looks its child up under a lock; a thousand probes a second reuse theirs.
        self._latency_children: dict[tuple[str, str, bool], Histogram] = {}

    def probe_done(self, target: str, check: str, ok: bool, latency_s: float) -> None:
        key = (target, check, ok)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.probe_latency.labels(
                target=target, check=check, ok="true" if ok else "false")
        child.observe(latency_s)

    def set_probe_state(self, target: str, check: str, state: HealthState) -> None:
        for value in PROBE_STATES:
            self.probe_state.labels(target=target, check=check, state=value).set(
                int(value == state.value))

    def set_verdict(self, target: str, verdict: Verdict) -> None:
        for name in VERDICTS:
            self.region_verdict.labels(target=target, verdict=name).set(int(name == verdict.name))

    def set_durability(self, service: str, durability: Durability) -> None:
        for value in DURABILITIES:
            self.durability.labels(service=service, state=value).set(
                int(value == durability.value))

    def set_degraded(self, reasons: Collection[DegradedReason]) -> None:
        for reason in DegradedReason:
            self.degraded.labels(reason=reason.value).set(int(reason in reasons))

    def set_lags(self, lags: Iterable[SubscriberLag]) -> None:
        """The lag of every subscriber seen now: the series of a region that is no longer
        one, or whose lag is unknown now, go away. (Scrapes are served on the event loop
        that calls this, so none sees the gauges cleared and not yet set.)"""
        self.lag_bytes.clear()
        self.lag_seconds.clear()
        for lag in lags:
            if lag.lag_bytes is not None:
                self.lag_bytes.labels(service=lag.service, region=lag.region).set(lag.lag_bytes)
            if lag.lag_seconds is not None:
                self.lag_seconds.labels(service=lag.service, region=lag.region).set(
                    lag.lag_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
