"""The controller's metrics after the events that set them, read back as Prometheus scrapes
them: verdicts and probe states one series per state, lag from what the checks saw,
degraded with its reasons, failover time, build info, and plan steps by bounded kind."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from failover import installed_version
from failover.controller.acting import PlanRunner
from failover.controller.api import build_app
from failover.controller.journal import PLAN, STEP, Journal
from failover.controller.metrics import Metrics
from failover.controller.observing import replication_of
from failover.controller.reporting import DecisionReport
from failover.controller.status import Coordination, ServiceRuntime, status_view
from failover.controller.steps import Bounded, BuiltPlan, CallStep, StepFactory, StepKind
from failover.coordination.base import Coordinator, ServiceRecord
from failover.coordination.signing import Verifier
from failover.engine import (
    Decision,
    FenceRegion,
    Health,
    Observation,
    PromoteSubscriber,
    SetDnsWriter,
    SetSyncStandbys,
    SyncStandbys,
    decide,
)
from failover.engine.model import ClusterState
from failover.engine.policy import policy_from_topology
from failover.errors import SafetyRefusal
from failover.health.probe import ProbeResult
from failover.health.scheduler import Transition
from failover.health.thresholds import HealthState
from failover.topology import Topology, load_topology
from tests.support.api import View

ROOT = Path(__file__).resolve().parents[2]
EAST, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"
NOW = 1_700_000_000.0
REGIONS = (EAST, WEST, EU)


def series(metrics: Metrics, name: str) -> dict[tuple[str, ...], float]:
    """One metric's samples as a scrape reads them, keyed by their label values in the
    order the exposition writes them: by label name."""
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sample.labels.values())] = sample.value
    return found


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def writer_details(wal_lsn: int, heartbeat_at: float) -> dict[str, Any]:
    return {"role": "primary", "epoch": 3, "wal_lsn_bytes": wal_lsn, "lag_bytes": 0,
            "lag_seconds": 0.0, "heartbeat_at": iso(heartbeat_at)}


def subscriber_details(applied: int | None, lag_bytes: int | None, lag_seconds: float | None,
                       heartbeat_at: float | None) -> dict[str, Any]:
    return {"role": "subscriber", "epoch": 3, "remote_lsn_bytes": applied, "lag_bytes": lag_bytes,
            "lag_seconds": lag_seconds, "subscription_enabled": True,
            "heartbeat_at": None if heartbeat_at is None else iso(heartbeat_at)}


def observations(health: dict[str, Health], seen: dict[str, dict[str, Any]], *,
                 observers: Sequence[str] = REGIONS, at: float = NOW) -> list[Observation]:
    """Every observer's view of every region; the postgres details as the checks report them
    (the same parsing as the controller's)."""
    return [Observation(observer, target, health[target], 3, at,
                        (replication_of("app", seen[target], ready=True),) if target in seen
                        else ())
            for observer in observers for target in REGIONS]


@pytest.fixture
def topo() -> Topology:
    return load_topology(ROOT / "regions" / "example")


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal.db", source=WEST)


def decided(topo: Topology, seen: list[Observation], records: dict[str, ServiceRecord],
            known: Decision | None = None) -> Decision:
    state = ClusterState(tuple(record.to_state() for record in records.values()))
    return decide(seen, state, policy_from_topology(topo), NOW, WEST,
                  known_positions=known.positions if known else None)


def test_verdicts_are_one_series_per_state(topo: Topology, journal: Journal) -> None:
    metrics = Metrics(WEST)
    report = DecisionReport(journal, metrics, topo, {"app": ServiceRuntime()})
    records = {"app": ServiceRecord("app", EAST, 3)}
    health = {EAST: Health.UNHEALTHY, WEST: Health.HEALTHY, EU: Health.UNKNOWN}
    seen = observations(health, {})
    report.decision(decided(topo, seen, records), records, seen, None)
    assert series(metrics, "failover_region_verdict") == {
        (EAST, "UP"): 0, (EAST, "DOWN"): 1, (EAST, "SUSPECT"): 0,
        (WEST, "UP"): 1, (WEST, "DOWN"): 0, (WEST, "SUSPECT"): 0,
        (EU, "UP"): 0, (EU, "DOWN"): 0, (EU, "SUSPECT"): 1,
    }
    assert series(metrics, "failover_sees_quorum") == {(): 1}


def test_probe_states_start_unknown_and_follow_transitions(topo: Topology,
                                                           journal: Journal) -> None:
    metrics = Metrics(WEST)
    report = DecisionReport(journal, metrics, topo, {"app": ServiceRuntime()})
    states = series(metrics, "failover_probe_state")
    checks = {(region, check.name) for region in REGIONS for check in topo.regions[region].checks}
    assert states == {(check, state, region): int(state == "unknown")
                      for region, check in checks
                      for state in ("unknown", "healthy", "unhealthy")}
    report.threshold(Transition(EAST, "postgres", "liveness", HealthState.UNKNOWN,
                                HealthState.UNHEALTHY, 3, ProbeResult(False, 0.5, "timeout"), NOW))
    states = series(metrics, "failover_probe_state")
    assert [state for (check, state, region), value in states.items()
            if (region, check) == (EAST, "postgres") and value] == ["unhealthy"]
    assert sum(states.values()) == len(checks)  # one state each


def test_lag_is_measured_against_the_writer_and_leaves_with_the_subscriber(
        topo: Topology, journal: Journal) -> None:
    metrics = Metrics(WEST)
    report = DecisionReport(journal, metrics, topo, {"app": ServiceRuntime()})
    records = {"app": ServiceRecord("app", EAST, 3)}
    up = dict.fromkeys(REGIONS, Health.HEALTHY)
    # West applied up to 1000 and says it is 10 bytes and 0.5 s behind; the writer is at
    # 5000 with a heartbeat 2 s newer than west's: west is 4000 bytes and 2 s behind.
    # Europe's own figures are unknown, so its lag is too.
    seen = observations(up, {EAST: writer_details(5000, NOW - 1),
                             WEST: subscriber_details(1000, 10, 0.5, NOW - 3),
                             EU: subscriber_details(None, None, None, None)})
    first = decided(topo, seen, records)
    report.decision(first, records, seen, None)
    assert series(metrics, "failover_replication_lag_bytes") == {(WEST, "app"): 4000}
    assert series(metrics, "failover_replication_lag_seconds") == {(WEST, "app"): 2.0}

    # The writer's region is lost: its last known position still counts. Europe now
    # reports its own lag, larger than its distance to that position.
    down = {**up, EAST: Health.UNHEALTHY}
    seen = observations(down, {WEST: subscriber_details(1000, 10, 0.5, NOW - 3),
                               EU: subscriber_details(4900, 7000, 9.0, NOW - 1.5)})
    second = decided(topo, seen, records, known=first)
    report.decision(second, records, seen, None)
    assert series(metrics, "failover_replication_lag_bytes") == {(WEST, "app"): 4000,
                                                                 (EU, "app"): 7000}
    assert series(metrics, "failover_replication_lag_seconds") == {(WEST, "app"): 2.0,
                                                                   (EU, "app"): 9.0}

    # West was promoted: a writer has no lag series, and Europe follows the new writer.
    promoted = {"app": ServiceRecord("app", WEST, 4, last_failover_at=NOW - 5)}
    seen = observations(down, {WEST: writer_details(1200, NOW - 0.5),
                               EU: subscriber_details(1100, 100, 0.8, NOW - 1.25)})
    report.decision(decided(topo, seen, promoted, known=second), promoted, seen, None)
    assert series(metrics, "failover_replication_lag_bytes") == {(EU, "app"): 100}
    assert series(metrics, "failover_replication_lag_seconds") == {(EU, "app"): 0.8}
    assert series(metrics, "failover_last_failover_timestamp_seconds") == {("app",): NOW - 5}
    assert series(metrics, "failover_service_writer") == {("app", EAST): 0, ("app", WEST): 1,
                                                          ("app", EU): 0}


def test_only_this_controllers_own_checks_report_lag(topo: Topology, journal: Journal) -> None:
    metrics = Metrics(WEST)
    report = DecisionReport(journal, metrics, topo, {"app": ServiceRuntime()})
    records = {"app": ServiceRecord("app", EAST, 3)}
    seen = observations(dict.fromkeys(REGIONS, Health.HEALTHY),
                        {EU: subscriber_details(900, 5, 0.2, NOW - 1)}, observers=(EAST, EU))
    report.decision(decided(topo, seen, records), records, seen, None)
    assert series(metrics, "failover_replication_lag_bytes") == {}


def degraded(metrics: Metrics) -> set[str]:
    states = series(metrics, "failover_degraded")
    assert set(states) == {("no_quorum",), ("coordination",), ("topology",), ("writer_record",),
                           ("no_writer",), ("durability",)}
    return {reason for (reason,), value in states.items() if value}


def test_degraded_names_each_reason_that_holds(topo: Topology, journal: Journal) -> None:
    metrics = Metrics(WEST)
    runtime = {"app": ServiceRuntime()}
    report = DecisionReport(journal, metrics, topo, runtime)
    assert degraded(metrics) == set()
    records = {"app": ServiceRecord("app", EAST, 3)}
    up = dict.fromkeys(REGIONS, Health.HEALTHY)
    seen = observations(up, {})
    report.decision(decided(topo, seen, records), records, seen, None)
    assert degraded(metrics) == set()

    # The writer's region is DOWN: the service has no writer until a failover.
    seen = observations({**up, EAST: Health.UNHEALTHY}, {})
    report.decision(decided(topo, seen, records), records, seen, None)
    assert degraded(metrics) == {"no_writer"}

    # No record at all is no writer too; alone, this controller hears no quorum; the
    # backend has a problem; a writer record awaits repair.
    runtime["app"].degraded = "database promoted in us-west-2 but the writer record ..."
    alone = observations(up, {}, observers=(WEST,))
    report.decision(decided(topo, alone, {}), {}, alone, "etcd: no quorum of members")
    assert degraded(metrics) == {"no_writer", "no_quorum", "coordination", "writer_record"}

    runtime["app"].degraded = None
    seen = observations(up, {})
    report.decision(decided(topo, seen, records), records, seen, None)
    assert degraded(metrics) == set()


def test_a_controller_that_runs_other_topology_files_is_named_in_status_and_degraded(
        topo: Topology, journal: Journal) -> None:
    """Each controller reports its topology fingerprint with its observations; one that
    differs (an older release reports none) is flagged, by its newest observation."""
    metrics = Metrics(WEST)
    runtime = {"app": ServiceRuntime()}
    report = DecisionReport(journal, metrics, topo, runtime)
    records = {"app": ServiceRecord("app", EAST, 3)}
    up = dict.fromkeys(REGIONS, Health.HEALTHY)
    same = [replace(o, topology=topo.fingerprint) for o in observations(up, {})]
    other = [replace(o, topology="0123456789abcdef") if o.observer == EAST else o for o in same]
    older = [replace(o, topology=None) if o.observer == EU else o for o in same]
    seen_later = [replace(o, observed_at=NOW + 1) for o in same if o.observer == EAST]

    def view(seen: list[Observation]) -> dict[str, Any]:
        report.decision(decided(topo, seen, records), records, seen, None)
        return status_view(WEST, NOW, None, records=records, services=topo.services,
                           observations=seen, runtime=runtime,
                           coordination=Coordination("peers", None), lease_ttl=2.0,
                           topology=topo.fingerprint)

    assert view(same)["topology_differs"] == {} and degraded(metrics) == set()
    assert view(older)["topology_differs"] == {} and degraded(metrics) == set()
    flagged = view(other)
    assert flagged["topology"] == topo.fingerprint
    assert flagged["topology_differs"] == {EAST: "0123456789abcdef"}
    assert degraded(metrics) == {"topology"}
    assert view(other + seen_later)["topology_differs"] == {}  # EAST runs ours again
    assert degraded(metrics) == set()


def test_a_degraded_sync_service_says_so_in_a_metric_status_and_degraded(
        topo: Topology, journal: Journal) -> None:
    fleet = topo.fleet.model_copy(update={"services": [
        service.model_copy(update={"durability": "sync", "sync_count": 2})
        for service in topo.fleet.services]})
    sync = Topology(path=topo.path, fleet=fleet, regions=topo.regions,
                    region_files=topo.region_files)
    metrics = Metrics(WEST)
    runtime = {"app": ServiceRuntime()}
    report = DecisionReport(journal, metrics, sync, runtime)
    assert series(metrics, "failover_service_durability") == {}
    records = {"app": ServiceRecord("app", EAST, 3)}
    both = 'ANY 2 ("failover_app_eu_west_1", "failover_app_us_west_2")'
    seen = observations({EAST: Health.HEALTHY, WEST: Health.HEALTHY, EU: Health.UNHEALTHY}, {
        EAST: {**writer_details(5000, NOW), "synchronous_standby_names": both},
        WEST: subscriber_details(5000, 0, 0.2, NOW), EU: subscriber_details(5000, 0, 0.2, NOW)})
    decision = decide(seen, ClusterState(tuple(r.to_state() for r in records.values())),
                      policy_from_topology(sync), NOW, WEST)
    report.decision(decision, records, seen, None)
    assert series(metrics, "failover_service_durability") == {
        ("app", "async"): 0, ("app", "sync"): 0, ("app", "waiting"): 0, ("app", "degraded"): 1,
        ("app", "unknown"): 0}
    assert degraded(metrics) == {"durability"}
    view = status_view(WEST, NOW, decision, records=records, services=sync.services,
                       observations=seen, runtime=runtime,
                       coordination=Coordination("peers", None), lease_ttl=2.5,
                       topology=sync.fingerprint)
    app = view["services"]["app"]
    assert app["durability"] == "degraded"
    # Degraded to async, a cut-off writer may again take writes no subscriber receives.
    assert app["isolation_loss_bound_s"] == 2.5
    assert app["degraded"].startswith("DEGRADED to asynchronous commits: only 1 of the 2 "
                                      "subscribers needed are healthy (eu-west-1 DOWN)")


def test_build_info_names_the_installed_version() -> None:
    assert series(Metrics(WEST), "failover_build_info") == {(installed_version(),): 1}


class Steps:
    """A step factory whose plans are given steps (PlanRunner asks it to build each plan)."""

    def __init__(self, steps: list[Bounded]) -> None:
        self.steps = steps
        self.hooks: object = None

    def build(self, actions: object, decided_at: float = 0.0) -> BuiltPlan:
        return BuiltPlan(list(self.steps))


def fails() -> str:
    raise SafetyRefusal("the writer record moved elsewhere")


def test_plan_steps_are_timed_by_kind_not_by_name(journal: Journal) -> None:
    metrics = Metrics(WEST)
    steps = [Bounded(CallStep(f"bump the epoch to 4 and make {WEST} writable", lambda: "done"),
                     StepKind.PROMOTE, 15.0, lambda: None),
             Bounded(CallStep(f"record {WEST} as the writer of app", lambda: "done"),
                     StepKind.RECORD_WRITER, 15.0, lambda: None),
             Bounded(CallStep(f"point app.example.test. at {WEST}", fails),
                     StepKind.DNS_WRITER, 15.0, lambda: None)]
    runner = PlanRunner(journal, metrics, cast(Coordinator, None),
                        cast(StepFactory, Steps(steps)), {"app": ServiceRuntime()},
                        quorum=2, lease_ttl=5.0)
    actions = [PromoteSubscriber("app", 4, WEST, EAST, "east is DOWN"),
               SetDnsWriter("app", 4, EAST, WEST, "point the writer record at west")]
    outcome = asyncio.run(runner.run_actions("app", actions, NOW))
    assert outcome.outcome == "failed"
    counts = series(metrics, "failover_plan_step_seconds_count")
    assert counts == {("promote", "ok"): 1, ("record_writer", "ok"): 1, ("dns_writer", "failed"): 1}
    assert series(metrics, "failover_plans_total") == {("failed", "app"): 1}

    # A plan resumed after a crash skips the steps that ended before it: not timed again.
    journal.append(PLAN, event="start", plan_id="resumed", epoch=4, service="app", steps=[])
    for index in (0, 1):
        journal.append(STEP, event="end", plan_id="resumed", index=index, outcome="ok")
    asyncio.run(runner.run_actions("app", actions, NOW, plan_id="resumed"))
    counts = series(metrics, "failover_plan_step_seconds_count")
    assert counts == {("promote", "ok"): 1, ("record_writer", "ok"): 1, ("dns_writer", "failed"): 2}


def test_a_built_plan_tags_every_step_with_its_kind(topo: Topology) -> None:
    factory = StepFactory(topo, None)
    built = factory.build([
        FenceRegion("app", 4, EAST, "stale primary", best_effort=True),
        SetDnsWriter("app", 4, EAST, WEST, "point the writer record at west"),
        SetSyncStandbys("app", 4, WEST, SyncStandbys(("failover_app_eu_west_1",), 1), "sync"),
    ])
    try:
        assert [step.kind for step in built.steps] == (
            [StepKind.FENCE] * 4 + [StepKind.DNS_WRITER, StepKind.SYNC_STANDBYS])
        assert built.steps[-2].name == f"point app.example.test. at {WEST}"  # names keep detail
        assert built.steps[-1].name == (f"make commits on {WEST} wait for "
                                        "ANY 1 (failover_app_eu_west_1)")
    finally:
        built.close()


def test_the_metrics_endpoint_serves_the_registry(topo: Topology, journal: Journal) -> None:
    metrics = Metrics(WEST)
    report = DecisionReport(journal, metrics, topo, {"app": ServiceRuntime()})
    records = {"app": ServiceRecord("app", EAST, 3)}
    seen = observations({**dict.fromkeys(REGIONS, Health.HEALTHY), EAST: Health.UNHEALTHY}, {})
    report.decision(decided(topo, seen, records), records, seen, None)

    async def scrape() -> tuple[int, str]:
        app = build_app(View(journal, metrics), Verifier(b"k" * 32, 30.0))
        async with TestClient(TestServer(app)) as client:
            reply = await client.get("/metrics")
            return reply.status, await reply.text()

    status, text = asyncio.run(scrape())
    assert status == 200
    assert f'failover_region_verdict{{target="{EAST}",verdict="DOWN"}} 1.0' in text
    assert 'failover_degraded{reason="no_writer"} 1.0' in text
    assert f'failover_build_info{{version="{installed_version()}"}} 1.0' in text
