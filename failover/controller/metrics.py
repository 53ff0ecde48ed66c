"""The controller's Prometheus metrics, in a registry of its own (tests run several controllers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

VERDICT_VALUES = {"DOWN": 0, "SUSPECT": 1, "UP": 2}


class Metrics:
    def __init__(self, region: str) -> None:
        self.registry = CollectorRegistry()
        self.region = region
        self.probe_latency = Histogram(
            "failover_probe_latency_seconds", "Probe latency by target region, check and result",
            ["target", "check", "ok"], registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.probe_state = Gauge(
            "failover_probe_healthy", "1 when a check is healthy, 0 unhealthy, -1 unknown",
            ["target", "check"], registry=self.registry,
        )
        self.region_verdict = Gauge(
            "failover_region_verdict", "The fleet verdict on a region: 0 DOWN, 1 SUSPECT, 2 UP",
            ["target"], registry=self.registry,
        )
        self.writer = Gauge(
            "failover_service_writer", "1 for the region that holds the service's writer",
            ["service", "writer"], registry=self.registry,
        )
        self.epoch = Gauge("failover_service_epoch", "The service's epoch (fencing token)",
                           ["service"], registry=self.registry)
        self.paused = Gauge("failover_service_paused", "1 when automatic action is paused",
                            ["service"], registry=self.registry)
        self.lag_bytes = Gauge("failover_replication_lag_bytes", "Subscriber lag in bytes",
                               ["service", "region"], registry=self.registry)
        self.lag_seconds = Gauge("failover_replication_lag_seconds",
                                 "Subscriber lag in seconds, from the replicated heartbeat",
                                 ["service", "region"], registry=self.registry)
        self.failovers = Counter("failover_plans_total", "Plans executed, by outcome",
                                 ["service", "outcome"], registry=self.registry)
        self.step_duration = Histogram(
            "failover_plan_step_seconds", "Duration of plan steps", ["step", "outcome"],
            registry=self.registry, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.rejected = Counter("failover_peer_requests_rejected_total",
                                "Signed requests refused, by reason", ["reason"],
                                registry=self.registry)
        self.exchange_errors = Counter("failover_peer_exchange_errors_total",
                                       "Failed exchanges with a peer", ["peer"],
                                       registry=self.registry)
        self.has_quorum = Gauge("failover_sees_quorum", "1 when this controller hears a quorum",
                                registry=self.registry)
        # labels() looks its child up under a lock; a thousand probes a second reuse theirs.
        self._latency_children: dict[tuple[str, str, bool], Histogram] = {}

    def probe_done(self, target: str, check: str, ok: bool, latency_s: float) -> None:
        key = (target, check, ok)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.probe_latency.labels(
                target=target, check=check, ok="true" if ok else "false")
        child.observe(latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
