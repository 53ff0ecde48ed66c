"""Each operation of the etcd coordinator against a real three-member etcd cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
from etcd3gw.lease import Lease
from pydantic import ValidationError

from failover.coordination.base import ServiceRecord
from failover.coordination.etcd import EtcdCoordinator
from failover.engine import Health, Observation
from failover.errors import ConflictError, UserError
from failover.lab.etcd import EtcdCluster
from failover.topology import EtcdSettings
from tests.support.etcd import (
    LEASE_TTL,
    OBSERVERS,
    admin_client,
    coordinator,
    failover_decision,
    new_prefix,
)

pytestmark = pytest.mark.integration


def observation(observer: str, target: str, health: Health = Health.HEALTHY) -> Observation:
    return Observation(observer, target, health, consecutive=3, observed_at=time.time())


def leader_key_revision(cluster: EtcdCluster, prefix: str) -> int | None:
    found = admin_client(cluster).get(f"{prefix}/leader", metadata=True)
    return int(found[0][1]["create_revision"]) if found else None


def test_each_controller_sees_every_controllers_observations(etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()

    async def scenario() -> tuple[list[Observation], list[Observation]]:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            await a.exchange([observation("a", "c", Health.UNHEALTHY)])
            await b.exchange([replace(observation("b", "c"), topology="b-topology")])
            await a.exchange([])
            return a.observations(), b.observations()
        finally:
            await a.close()
            await b.close()

    seen_by_a, seen_by_b = asyncio.run(scenario())
    assert {(o.observer, o.target, o.health, o.topology) for o in seen_by_a} == {
        ("a", "c", Health.UNHEALTHY, None), ("b", "c", Health.HEALTHY, "b-topology")}
    # b exchanged before a's second round: it has a's first observation, and its own.
    assert {(o.observer, o.health) for o in seen_by_b} == {("a", Health.UNHEALTHY),
                                                           ("b", Health.HEALTHY)}


def test_a_peers_changed_verdict_reaches_a_following_controller_between_its_exchanges(
        etcd_cluster: EtcdCluster) -> None:
    """The peer exchange pushes news; with etcd, a reads it within its poll interval."""
    prefix = new_prefix()

    async def scenario() -> tuple[list[Observation], int]:
        news = asyncio.Event()
        calls = 0

        def on_news() -> None:
            nonlocal calls
            calls += 1
            news.set()

        a = EtcdCoordinator("a", settings_with_poll(etcd_cluster, prefix), timeout=0.75,
                            on_news=on_news, observers=OBSERVERS, quorum=2)
        b = coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            await a.exchange([observation("a", "c")])
            await b.exchange([observation("b", "c")])
            await asyncio.wait_for(news.wait(), 5)  # b's first view is news to a
            news.clear()
            await b.exchange([observation("b", "c")])  # the same health again: no news
            await asyncio.sleep(0.5)
            quiet_calls = calls
            await b.exchange([observation("b", "c", Health.UNHEALTHY)])
            await asyncio.wait_for(news.wait(), 5)
            return a.observations(), calls - quiet_calls
        finally:
            await a.close()
            await b.close()

    seen, news_calls = asyncio.run(scenario())
    assert ("b", "c", Health.UNHEALTHY) in {(o.observer, o.target, o.health) for o in seen}
    # a never exchanged after b's change: only its follower can have read it.
    assert news_calls == 1, "an unchanged view is not news; a changed one is, once"


def settings_with_poll(cluster: EtcdCluster, prefix: str) -> EtcdSettings:
    return EtcdSettings(endpoints=cluster.endpoints, prefix=prefix, lease_ttl=LEASE_TTL,
                        poll_interval=0.1)


_DYING_CONTROLLER = textwrap.dedent("""
    import asyncio, sys, time
    from failover.coordination.etcd import EtcdCoordinator
    from failover.engine import Health, Observation
    from failover.topology import EtcdSettings

    async def main():
        settings = EtcdSettings(endpoints=sys.argv[1].split(","), prefix=sys.argv[2],
                                lease_ttl=float(sys.argv[3]))
        a = EtcdCoordinator("a", settings, timeout=0.75, observers=("a", "b", "c"), quorum=2)
        await a.start()
        await a.exchange([Observation("a", "c", Health.UNHEALTHY, 3, time.time())])
        assert a.problem() is None, a.problem()
        print("exchanged", flush=True)
        await asyncio.sleep(600)

    asyncio.run(main())
""")


def test_a_dead_controllers_observations_expire_with_its_lease(etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING_CONTROLLER, ",".join(etcd_cluster.endpoints), prefix,
         str(LEASE_TTL)], stdout=subprocess.PIPE, text=True)
    try:
        assert dying.stdout is not None and dying.stdout.readline().strip() == "exchanged"

        async def scenario() -> None:
            b = coordinator(etcd_cluster, "b", prefix)
            await b.start()
            try:
                await b.exchange([observation("b", "c")])
                assert {o.observer for o in b.observations()} == {"a", "b"}
                os.kill(dying.pid, signal.SIGKILL)  # no revoke: only the lease can clean up

                async def votes_of_a() -> int:
                    await b.exchange([])
                    return sum(o.observer == "a" for o in b.observations())

                deadline = time.monotonic() + 10 * LEASE_TTL
                while await votes_of_a() and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert await votes_of_a() == 0, "a's votes outlived its lease"
                assert b.problem() is None
            finally:
                await b.close()

        asyncio.run(scenario())
    finally:
        dying.kill()
        dying.wait(timeout=10)


def test_a_cleanly_stopped_controller_withdraws_its_votes_at_once(
        etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()

    async def scenario() -> list[str]:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            await a.exchange([observation("a", "c")])
            await a.close()
            await b.exchange([])
            return [o.observer for o in b.observations()]
        finally:
            await b.close()

    assert asyncio.run(scenario()) == []


def test_exactly_one_of_concurrent_campaigners_wins(etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()
    names = ["a", "b", "c", "d", "e"]

    async def scenario() -> tuple[list[tuple[str, int | None]], int | None]:
        controllers = [coordinator(etcd_cluster, name, prefix) for name in names]
        for c in controllers:
            await c.start()
        try:
            won = await asyncio.gather(*(c.lead(failover_decision(c.me)) for c in controllers))
            outcome = [(c.me, w.token if w else None)
                       for c, w in zip(controllers, won, strict=True)]
            return outcome, leader_key_revision(etcd_cluster, prefix)
        finally:
            for c in controllers:
                await c.close()

    outcome, stored_token = asyncio.run(scenario())
    winners = [token for _, token in outcome if token is not None]
    assert winners == [stored_token], outcome


def test_the_token_is_the_leader_keys_revision_and_a_deposed_leader_stops(
        etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            first = await a.lead(failover_decision("a"))
            assert first is not None and first.holder == "a"
            assert first.token == leader_key_revision(etcd_cluster, prefix)
            assert await b.lead(failover_decision("b")) is None
            assert await a.still_leading(first)

            # a's lease ends as if a had been cut off from etcd for a whole TTL.
            assert a._lease is not None
            Lease(a._lease, admin_client(etcd_cluster)).revoke()
            second = await b.lead(failover_decision("b"))
            assert second is not None and second.token > first.token
            assert second.token == leader_key_revision(etcd_cluster, prefix)
            assert not await a.still_leading(first)
            assert await b.still_leading(second)
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_controller_the_engine_does_not_choose_gives_the_leader_key_back(
        etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            held = await a.lead(failover_decision("a"))
            assert held is not None
            assert await a.lead(failover_decision("a", executes=False)) is None
            assert not await a.still_leading(held)
            assert await b.lead(failover_decision("b")) is not None
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_leadership_outlives_exchanges_during_the_plan_and_ends_with_resign(
        etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            held = await a.lead(failover_decision("a"))
            assert held is not None
            # The controller keeps exchanging while it executes, to stay heard.
            await a.exchange([observation("a", "c")])
            assert await a.still_leading(held)
            assert await b.lead(failover_decision("b")) is None
            await a.resign()
            assert not await a.still_leading(held)
            assert await b.lead(failover_decision("b")) is not None
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_a_campaign_on_records_that_changed_since_they_were_read_fails(
        etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            await a.put_record(ServiceRecord("app", writer="a", epoch=1))
            await b.exchange([])
            # a fails the service over and records it before b's decision reaches etcd.
            await a.put_record(ServiceRecord("app", writer="b", epoch=2))
            assert await b.lead(failover_decision("b")) is None
            assert leader_key_revision(etcd_cluster, prefix) is None
            await b.exchange([])
            assert b.records()["app"].epoch == 2
            assert await b.lead(failover_decision("b", epoch=3)) is not None
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_record_writes_are_compare_and_swap(etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()
    first = ServiceRecord("app", writer="a", epoch=1)
    failed_over = ServiceRecord("app", writer="b", epoch=2, last_failover_at=100.0)
    paused = first.bumped(paused=True)

    async def scenario() -> None:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            await a.put_record(first)
            await b.exchange([])
            assert b.records() == {"app": first}
            await a.put_record(failed_over)
            # b read the record before a's failover: its write must not land.
            with pytest.raises(ConflictError, match="changed since this controller read it"):
                await b.put_record(paused)
            assert b.records() == {"app": failed_over}  # the conflict tells b what is stored
            with pytest.raises(ConflictError, match="not older"):
                await b.put_record(paused)
            resumed = failed_over.bumped(paused=True)
            await b.put_record(resumed)
            await a.exchange([])
            assert a.records() == {"app": resumed}
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
    stored = admin_client(etcd_cluster).get(f"{prefix}/records/app")
    assert b'"writer":"b"' in stored[0] and b'"paused":true' in stored[0]


def test_a_controller_cut_off_from_the_fleet_may_fence_its_own_region(
        etcd_cluster: EtcdCluster) -> None:
    prefix = new_prefix()

    async def scenario() -> None:
        a = coordinator(etcd_cluster, "a", prefix)
        await a.start()
        try:
            fence = await a.lead(failover_decision("a", has_quorum=False, epoch=5))
            assert fence is not None and not fence.needs_quorum and fence.token == 5
            assert await a.still_leading(fence)
            assert leader_key_revision(etcd_cluster, prefix) is None  # no etcd leadership taken
        finally:
            await a.close()

    asyncio.run(scenario())


def test_bad_endpoints_and_a_missing_password_are_reported_with_the_field(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An endpoint that is not a URL never reaches the coordinator: the topology refuses it
    # (the loader names the file and field; see tests/unit/test_strict_input.py).
    with pytest.raises(ValidationError, match="expected an http:// or https:// URL"):
        EtcdSettings(endpoints=["127.0.0.1:2379"])
    monkeypatch.delenv("FAILOVER_TEST_ETCD_PASSWORD", raising=False)
    with pytest.raises(UserError, match="password_env names FAILOVER_TEST_ETCD_PASSWORD"):
        EtcdCoordinator("a", EtcdSettings(endpoints=["http://127.0.0.1:2379"], user="failover",
                                          password_env="FAILOVER_TEST_ETCD_PASSWORD"),
                        observers=OBSERVERS, quorum=2)


def test_an_epoch_is_claimed_once_and_voids_the_old_writers_vouchers(
        etcd_cluster: EtcdCluster) -> None:
    """On a real cluster: one claimant per epoch (again for the same one), and once a higher
    epoch is claimed the old writer's controller counts nobody's word for its lease."""
    prefix = new_prefix()
    ttl = 2.0

    async def scenario() -> None:
        a, b = coordinator(etcd_cluster, "a", prefix), coordinator(etcd_cluster, "b", prefix)
        await a.start()
        await b.start()
        try:
            vouched_at = time.time() - 5
            for me in (a, b):
                await me.exchange([Observation(me.me, "c", Health.HEALTHY, 3, time.time(),
                                               last_ok_at=vouched_at)])
            await a.exchange([])
            observations, void = a.vouching("svc", 1)
            assert void == frozenset() and len(observations) == 2

            won = await a.claim("svc", 2, "a", "c", ttl)
            assert won.granted, won.reason
            # Both observers last vouched for c five seconds ago: its lease has ended.
            assert won.old_lease_ends_by == pytest.approx(vouched_at + ttl)
            again = await a.claim("svc", 2, "a", "c", ttl)  # a resumed plan
            assert again.granted
            lost = await b.claim("svc", 2, "b", "c", ttl)
            assert not lost.granted and "claimed by a" in lost.reason
            higher = await b.claim("svc", 3, "b", "c", ttl)
            assert higher.granted and b.highest_claimed("svc") == 3
            # a may have promoted itself at epoch 2 meanwhile: b's wait covers a's lease too,
            # whose last vouching (a's own, written just now) is recent.
            assert higher.old_lease_ends_by > time.time()

            await a.exchange([])
            _, void = a.vouching("svc", 2)
            assert void >= {"a", "b", "c"}
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
