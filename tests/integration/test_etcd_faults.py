"""Faults of the etcd cluster during a failover: the plan still runs exactly once.

Three simulated controllers each believe they must run the same failover (the
worst case: their engines disagree), each with its own journal and the real
executor. They act as the controller does: exchange, campaign, execute with
`still_leading` checked before every step through the event loop, record the
new epoch. Mid-plan an etcd member is killed, partitioned or hung. Each step
appends a line to a shared file and is deliberately not idempotent, so a step
run twice anywhere shows as a duplicate line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from failover.controller.executor import Executor, PlanRun
from failover.controller.journal import Journal
from failover.coordination.base import ServiceRecord
from failover.coordination.etcd import EtcdCoordinator
from failover.engine import Health, Observation
from failover.lab.etcd import EtcdCluster, EtcdMember
from failover.topology import EtcdSettings
from tests.support.etcd import (
    LEASE_TTL,
    OBSERVERS,
    REQUEST_TIMEOUT,
    admin_client,
    coordinator,
    failover_decision,
    new_prefix,
)

pytestmark = pytest.mark.integration

STEPS = 5
FAULT_AFTER_STEP = 1
BEFORE = ServiceRecord("app", writer="a", epoch=1)
AFTER = ServiceRecord("app", writer="b", epoch=2, last_failover_at=1.0)


@dataclass
class LoggedStep:
    """Appends one line per run: a second run of the same step shows as a duplicate."""

    name: str
    log: Path
    by: str

    def run(self) -> str:
        time.sleep(0.2)  # long enough for the fault to land between steps
        with self.log.open("a") as handle:
            handle.write(f"{self.name} {self.by}\n")
        return "appended"


class SimulatedController:
    def __init__(self, me: str, coordination: EtcdCoordinator, journal: Journal, log: Path,
                 on_progress: Callable[[str, int, str, dict[str, Any]], None]) -> None:
        self.me = me
        self.coordinator = coordination
        self.journal = journal
        self.log = log
        self.on_progress = on_progress
        self.attempts = 0

    async def stay_heard(self) -> None:
        """The controller keeps exchanging while it executes a plan."""
        while True:
            await asyncio.sleep(0.2)
            await self.coordinator.exchange([])

    async def act(self, *, within: float = 90.0) -> str:
        """Loop as the controller does until the failover is recorded; how it ended for us."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            await self.coordinator.exchange([])
            record = self.coordinator.records().get("app")
            if record is not None and record.epoch >= AFTER.epoch:
                return "saw it done"
            leadership = await self.coordinator.lead(failover_decision(self.me))
            if leadership is None:
                await asyncio.sleep(0.1)
                continue

            def still_leading(held: Any = leadership) -> bool:
                check = self.coordinator.still_leading(held)
                return asyncio.run_coroutine_threadsafe(check, loop).result(timeout=30)

            self.attempts += 1
            executor = Executor(self.journal, on_progress=self.on_progress,
                                still_leading=still_leading, max_backoff=0.05)
            steps = [LoggedStep(f"step-{i}", self.log, self.me) for i in range(STEPS)]
            exchanging = asyncio.create_task(self.stay_heard())
            try:
                outcome = await asyncio.to_thread(executor.execute, PlanRun(
                    f"app-e2-{self.me}-{self.attempts}", 2, "app", steps))
                if outcome.ok:
                    await self.coordinator.put_record(AFTER)
                    return "executed"
            finally:
                exchanging.cancel()
                await self.coordinator.resign()
        return "gave up"


def run_failover(cluster: EtcdCluster, tmp_path: Path, fault: Callable[[], None]) -> None:
    prefix = new_prefix()
    log = tmp_path / "steps.log"
    faulted: list[str] = []

    def inject(event: str, index: int, name: str, fields: dict[str, Any]) -> None:
        if event == "ok" and index == FAULT_AFTER_STEP and not faulted:
            faulted.append(name)
            fault()

    async def scenario() -> list[tuple[str, str]]:
        controllers = [
            SimulatedController(name, coordinator(cluster, name, prefix),
                                Journal(tmp_path / f"{name}.jsonl", source=name), log, inject)
            for name in ("a", "b", "c")
        ]
        for c in controllers:
            await c.coordinator.start()
        try:
            await controllers[0].coordinator.put_record(BEFORE)
            outcomes = await asyncio.gather(*(c.act() for c in controllers))
            return [(c.me, outcome) for c, outcome in zip(controllers, outcomes, strict=True)]
        finally:
            for c in controllers:
                await c.coordinator.close()

    outcomes = asyncio.run(scenario())
    assert faulted, "the fault was never injected"
    executed = [name for name, outcome in outcomes if outcome == "executed"]
    assert len(executed) == 1, outcomes
    assert sorted(outcome for _, outcome in outcomes) == ["executed", "saw it done", "saw it done"]
    (winner,) = executed
    assert log.read_text().splitlines() == [f"step-{i} {winner}" for i in range(STEPS)]
    plans = [e for e in Journal(tmp_path / f"{winner}.jsonl", source=winner).entries()
             if e["kind"] == "plan"]
    assert [(e["event"], e.get("outcome")) for e in plans] == [("start", None), ("end", "ok")]


def _leader(cluster: EtcdCluster) -> EtcdMember:
    return cluster.leader(timeout=10)


@pytest.mark.parametrize("fault", ["kill", "pause", "partition"])
def test_a_fault_of_the_etcd_leader_mid_plan_still_runs_the_plan_once(
        fresh_etcd_cluster: EtcdCluster, tmp_path: Path, fault: str) -> None:
    def hurt_the_leader() -> None:
        leader = _leader(fresh_etcd_cluster)
        {"kill": leader.kill, "pause": leader.pause, "partition": leader.partition}[fault]()

    run_failover(fresh_etcd_cluster, tmp_path, hurt_the_leader)


def test_losing_the_etcd_quorum_stops_automatic_action_and_keeps_old_observations(
        fresh_etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()
    seen_at = time.time() - 1.0
    b_saw = Observation("b", "a", Health.UNHEALTHY, consecutive=3, observed_at=seen_at)

    async def scenario() -> None:
        a, b = (coordinator(fresh_etcd_cluster, "a", prefix),
                coordinator(fresh_etcd_cluster, "b", prefix))
        await a.start()
        await b.start()
        try:
            await b.exchange([b_saw])
            await a.exchange([])
            assert a.problem() is None

            leader = _leader(fresh_etcd_cluster)
            other = next(m for m in fresh_etcd_cluster.members if m is not leader)
            leader.kill()
            other.kill()
            now = time.time()
            await a.exchange([Observation("a", "a", Health.HEALTHY, 1, now)])
            assert a.problem() is not None and "etcd" in a.problem()
            assert await a.lead(failover_decision("a")) is None
            # b's vote is kept as last read, with its own time: the engine ages it out.
            assert [o for o in a.observations() if o.observer == "b"] == [b_saw]
            # Cut off, a may still fence its own region.
            fence = await a.lead(failover_decision("a", has_quorum=False))
            assert fence is not None and await a.still_leading(fence)

            leader.start()
            other.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await a.exchange([])
                if a.problem() is None:
                    break
                await asyncio.sleep(0.2)
            assert a.problem() is None
            assert await a.lead(failover_decision("a")) is not None
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_leader_whose_etcd_member_is_cut_off_from_its_cluster_stops(
        fresh_etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()
    cut_off = next(m for m in fresh_etcd_cluster.members if m is not _leader(fresh_etcd_cluster))

    async def scenario() -> None:
        # a reaches etcd only through the member that will be cut off from its peers,
        # as a controller on the minority side of a network split would.
        a = EtcdCoordinator("a", EtcdSettings(endpoints=[cut_off.client_url], prefix=prefix,
                                              lease_ttl=LEASE_TTL), timeout=REQUEST_TIMEOUT,
                            observers=OBSERVERS, quorum=2)
        b = coordinator(fresh_etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            held = await a.lead(failover_decision("a"))
            assert held is not None and await a.still_leading(held)
            cut_off.partition(from_clients=False)
            # The majority takes the key away while a's lease has time left (an operator
            # clearing a stuck leader): the cut-off member's own copy still shows it.
            assert admin_client(fresh_etcd_cluster).delete(f"{prefix}/leader")
            assert not await a.still_leading(held)
            assert await b.lead(failover_decision("b")) is not None
        finally:
            cut_off.heal()
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_member_back_from_a_partition_does_not_depose_the_leader(
        fresh_etcd_cluster: EtcdCluster) -> None:
    """Cut off from its peers for several election timeouts, a follower campaigns; back, it
    must not force an election (pre-vote): every heal of an isolated region cost the fleet
    its coordination store for seconds without it."""
    leader = _leader(fresh_etcd_cluster)
    before = leader.status()
    assert before is not None
    follower = next(m for m in fresh_etcd_cluster.members if m is not leader)
    follower.partition(from_clients=False)
    try:
        time.sleep(3.5)
    finally:
        follower.heal()
    time.sleep(2.0)
    after = leader.status()
    assert _leader(fresh_etcd_cluster) is leader
    assert after is not None and after["term"] == before["term"], (before, after)
