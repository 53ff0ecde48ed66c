"""A model of the fleet: several engines with partial views (random partitions, delays,
restarts) decide, and every one that would promote claims its epoch from the acceptors
it can reach. No schedule lets two claimants become writable at one epoch."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from failover.coordination.promises import Promise, may_promise
from failover.engine import (
    ClusterState,
    Health,
    Observation,
    Policy,
    PromoteSubscriber,
    RegionPolicy,
    Replication,
    Role,
    ServicePolicy,
    ServiceState,
    decide,
    majority,
)

NOW = 1_000.0
NAMES = ("r0", "r1", "r2", "r3", "r4")


def policy(names: tuple[str, ...]) -> Policy:
    return Policy(regions=tuple(RegionPolicy(n, len(names) - i) for i, n in enumerate(names)),
                  services=(ServicePolicy("svc", frozenset(names), 10**9, 10**9, cooldown=0.0),),
                  quorum=majority(len(names)), observation_max_age=10.0, self_fence_after=1.0)


def observation(observer: str, target: str, healthy: bool, writer: str, age: float
                ) -> Observation:
    role = Role.PRIMARY if target == writer else Role.SUBSCRIBER
    return Observation(observer, target, Health.HEALTHY if healthy else Health.UNHEALTHY, 3,
                       NOW - age, (Replication("svc", role, applied_lsn=1, lag_bytes=0,
                                               lag_seconds=0.0, ready=True),))


@settings(max_examples=1000, deadline=None)
@given(st.integers(3, 5), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_no_two_claimants_are_granted_one_epoch(n: int, seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    names = NAMES[:n]
    rules = policy(names)
    quorum = rules.quorum
    # Each controller's own copy of the record (they drift apart under partitions) and
    # each acceptor's promise, kept on disk (so a restart keeps it).
    records = {name: ServiceState("svc", "r0", 1) for name in names}
    promises: dict[str, Promise | None] = dict.fromkeys(names)
    granted: dict[int, set[str]] = {}
    for _ in range(rounds):
        # Who can reach whom this round (not symmetric), and what each saw of each region.
        # The writer's database dies more often than the rest: failovers are the point.
        reach = {a: {b for b in names if a == b or rng.random() < 0.5} for a in names}
        writers = {record.writer for record in records.values()}
        alive = {name: rng.random() < (0.2 if name in writers else 0.9) for name in names}
        claimants = []
        for me in names:
            heard = [observation(observer, target, alive[target] and target in reach[observer],
                                 records[observer].writer or "r0", rng.choice([0.0, 0.0, 2.0, 20.0]))
                     for observer in names if observer in reach[me] or observer == me
                     for target in names if rng.random() < 0.9]
            decision = decide(heard, ClusterState((records[me],)), rules, NOW, me)
            for action in decision.plan.actions:
                if decision.executes and isinstance(action, PromoteSubscriber):
                    claimants.append((me, action))
        rng.shuffle(claimants)
        for me, action in claimants:
            acceptors = [a for a in names if a in reach[me]]
            rng.shuffle(acceptors)  # promises arrive in any order, interleaved with others'
            yes = 0
            for acceptor in acceptors:
                if may_promise(promises[acceptor], action.epoch, me):
                    promises[acceptor] = (action.epoch, me)
                    yes += 1
            if yes >= quorum:
                granted.setdefault(action.epoch, set()).add(me)
                # The winner records the new writer; the others learn it only if they
                # hear it (records travel with the exchange).
                for name in names:
                    if name == me or name in reach[me]:
                        records[name] = ServiceState("svc", action.region, action.epoch)
    for epoch, winners in granted.items():
        assert len(winners) == 1, (epoch, winners)


def test_the_rule_itself() -> None:
    assert may_promise(None, 1, "a")
    assert may_promise((1, "a"), 1, "a")  # a resumed plan
    assert not may_promise((1, "a"), 1, "b")
    assert not may_promise((2, "a"), 1, "a")
    assert may_promise((2, "a"), 3, "b")
