"""Example tests for the decision engine, one rule each.

The builders at the top are shared with the property tests in
test_engine_invariants.py.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import replace

import pytest

from failover.engine import (
    AddReader,
    AfterPlan,
    ClusterState,
    ConfirmWriter,
    Durability,
    FenceRegion,
    Health,
    NoOp,
    Observation,
    Policy,
    PromoteSubscriber,
    RegionPolicy,
    RejoinRegion,
    RemoveReader,
    Replication,
    RepointSubscribers,
    Role,
    ServicePolicy,
    ServiceState,
    SetDnsWriter,
    SetSyncStandbys,
    StaleEpoch,
    SyncStandbys,
    UnfenceWriter,
    Verdict,
    apply_plan,
    decide,
    majority,
)
from failover.engine.actions import Plan
from failover.engine.planner import format_lsn
from failover.engine.serialize import action_as_dict, action_from_dict

NOW = 1_700_000_000.0
PRIORITIES = {"east": 30, "west": 20, "south": 10}
UP, DOWN = Health.HEALTHY, Health.UNHEALTHY


def make_policy(
    priorities: Mapping[str, int] = PRIORITIES,
    services: Iterable[str] = ("orders",),
    *,
    quorum: int | None = None,
    max_age: float = 10.0,
    self_fence_after: float = 5.0,
    max_lag_bytes: int = 1_000_000,
    max_lag_seconds: float = 30.0,
    cooldown: float = 300.0,
    force: bool = False,
) -> Policy:
    return Policy(
        regions=tuple(RegionPolicy(name, prio) for name, prio in priorities.items()),
        services=tuple(
            ServicePolicy(name, frozenset(priorities), max_lag_bytes, max_lag_seconds, cooldown,
                          force)
            for name in services
        ),
        quorum=quorum or majority(len(priorities)),
        observation_max_age=max_age,
        self_fence_after=self_fence_after,
    )


def sub(service: str = "orders", *, lsn: int | None = 1000, lag_bytes: int | None = 0,
        lag_seconds: float | None = 0.5, ready: bool = True, fenced: bool = False,
        epoch: int = 1) -> Replication:
    return Replication(service, Role.SUBSCRIBER, fenced, epoch, lsn, lag_bytes, lag_seconds, ready)


def primary(service: str = "orders", *, epoch: int = 1, fenced: bool = False) -> Replication:
    return Replication(service, Role.PRIMARY, fenced, epoch, None, 0, 0.0, True)


def reports(
    health: Mapping[str, Health],
    replication: Mapping[str, Iterable[Replication]] | None = None,
    *,
    observers: Iterable[str] = PRIORITIES,
    at: float = NOW - 1,
) -> list[Observation]:
    """Every observer reports every target in `health` with the same view."""
    replication = replication or {}
    return [
        Observation(observer, target, state, 3, at, tuple(replication.get(target, ())))
        for observer in observers
        for target, state in health.items()
    ]


def one_service(writer: str | None = "east", *, epoch: int = 1,
                readers: Iterable[str] = PRIORITIES, last_failover_at: float | None = None,
                paused: bool = False, service: str = "orders") -> ClusterState:
    return ClusterState((ServiceState(service, writer, epoch, last_failover_at, paused,
                                      frozenset(readers)),))


HEALTHY_FLEET = {"east": UP, "west": UP, "south": UP}
EAST_DOWN = {"east": DOWN, "west": UP, "south": UP}
ROLES = {"east": [primary()], "west": [sub(lsn=900)], "south": [sub(lsn=1000)]}


def kinds(plan: Plan) -> list[str]:
    return [type(action).__name__ for action in plan.actions]


# ---------------------------------------------------------------- verdicts


def test_a_region_is_up_down_or_suspect_by_quorum_of_fresh_votes() -> None:
    observations = (reports({"east": DOWN}, observers=["west", "south"])
                    + reports({"east": UP}, observers=["east"])
                    + reports({"west": UP}, observers=["west", "east"])
                    + reports({"west": DOWN}, observers=["south"])
                    + reports({"south": UP}, observers=["south"])
                    + reports({"south": DOWN}, observers=["east"]))
    decision = decide(observations, one_service(), make_policy(), NOW, "west")
    verdicts = {v.region: v for v in decision.verdicts}
    assert verdicts["east"].verdict is Verdict.DOWN
    assert (verdicts["east"].healthy, verdicts["east"].unhealthy) == (1, 2)
    assert verdicts["west"].verdict is Verdict.UP
    assert verdicts["south"].verdict is Verdict.SUSPECT
    assert "no quorum of 2" in verdicts["south"].reason


def test_stale_votes_are_listed_with_the_reason_and_never_count() -> None:
    fresh = reports({"east": DOWN}, observers=["west"])
    stale = reports({"east": DOWN}, observers=["south"], at=NOW - 11)
    decision = decide(fresh + stale + reports(HEALTHY_FLEET, observers=["east"]),
                      one_service(), make_policy(max_age=10), NOW, "west")
    east = decision.verdicts[0]
    assert east.region == "east"
    assert east.verdict is Verdict.SUSPECT
    south_vote = next(v for v in east.votes if v.observer == "south")
    assert not south_vote.counted
    assert south_vote.note == "stale: 11.0s old, max age 10s"
    assert all(isinstance(a, NoOp) for a in decision.plan.actions)


def test_an_observation_exactly_max_age_old_is_still_fresh() -> None:
    observations = reports(EAST_DOWN, ROLES, observers=["west", "south"], at=NOW - 10)
    decision = decide(observations, one_service(), make_policy(max_age=10), NOW, "west")
    assert decision.verdicts[0].verdict is Verdict.DOWN


def test_the_freshest_of_duplicate_observations_is_the_vote() -> None:
    older = reports({"east": DOWN}, observers=["west", "south"], at=NOW - 5)
    newer = reports({"east": UP}, observers=["west", "south"], at=NOW - 2)
    decision = decide(newer + older, one_service(), make_policy(), NOW, "west")
    assert decision.verdicts[0].verdict is Verdict.UP


def test_unknown_health_abstains() -> None:
    observations = reports({"east": Health.UNKNOWN}, observers=["west", "south"])
    east = decide(observations, one_service(), make_policy(), NOW, "west").verdicts[0]
    assert east.verdict is Verdict.SUSPECT
    assert all(v.counted for v in east.votes if v.observer != "east")
    assert "abstains" in east.votes[2].note


def test_observations_from_or_about_unconfigured_regions_are_ignored_and_reported() -> None:
    stray = [Observation("mars", "east", DOWN, 3, NOW - 1),
             Observation("west", "mars", DOWN, 3, NOW - 1)]
    decision = decide(stray + reports(HEALTHY_FLEET), one_service(), make_policy(), NOW, "west")
    assert [v.region for v in decision.verdicts] == ["east", "south", "west"]
    assert decision.ignored == (
        "observations from 'mars': not a configured observer",
        "observations of 'mars': not a configured region",
    )


def test_policy_rejects_a_quorum_that_is_not_a_strict_majority() -> None:
    with pytest.raises(ValueError, match="strict majority"):
        make_policy(quorum=1)


# ---------------------------------------------------------------- quorum and executor


def test_a_controller_that_hears_no_quorum_does_not_act() -> None:
    # west hears only itself, and it sees east DOWN: no failover.
    observations = reports(EAST_DOWN, ROLES, observers=["west"])
    decision = decide(observations, one_service(), make_policy(), NOW, "west")
    assert not decision.has_quorum
    assert decision.heard == ("west",)
    assert decision.executor is None
    assert kinds(decision.plan) == ["NoOp"]
    assert "west hears 1 of 3 observers (quorum 2): no quorum, not acting" in \
        decision.plan.actions[0].reason


def test_me_counts_itself_towards_the_quorum() -> None:
    # Only south's observations are in the snapshot, but west is alive: 2 of 3.
    observations = reports(EAST_DOWN, ROLES, observers=["south"])
    decision = decide(observations, one_service(), make_policy(), NOW, "west")
    assert decision.has_quorum
    assert decision.heard == ("south", "west")


def test_the_executor_is_the_highest_priority_heard_observer_outside_a_down_region() -> None:
    observations = reports(EAST_DOWN, ROLES, observers=["east", "west", "south"])
    for me in ("east", "west", "south"):
        decision = decide(observations, one_service(), make_policy(), NOW, me)
        assert decision.executor == "west", "east is DOWN, so west (20) beats south (10)"
        assert decision.executes is (me == "west")


def test_executor_ties_are_broken_by_name() -> None:
    policy = make_policy({"b": 5, "a": 5, "c": 1})
    observations = reports({"a": UP, "b": UP, "c": UP}, observers=["a", "b", "c"])
    decision = decide(observations, one_service("a", readers=["a"]), policy, NOW, "c")
    assert decision.executor == "a"


def test_a_cut_off_writer_fences_itself_after_self_fence_after() -> None:
    policy = make_policy(max_age=10, self_fence_after=5)
    own = reports({"east": UP}, {"east": [primary()]}, observers=["east"], at=NOW - 1)
    # Peers were last heard 13 s ago: the quorum was lost 3 s ago (13 - 10).
    peers = reports(HEALTHY_FLEET, ROLES, observers=["west", "south"], at=NOW - 13)
    early = decide(own + peers, one_service("east"), policy, NOW, "east")
    assert early.isolated_for == pytest.approx(3.0)
    assert kinds(early.plan) == ["NoOp"]
    assert "self-fence of the writer in 2.0s" in early.plan.actions[0].reason
    assert early.executor is None

    late = decide(own + peers, one_service("east"), policy, NOW + 2, "east")
    fence = late.plan.actions[0]
    assert isinstance(fence, FenceRegion)
    assert (fence.region, fence.epoch, fence.best_effort) == ("east", 1, False)
    assert late.executor == "east"
    assert late.executes


def test_a_cut_off_controller_that_never_heard_a_quorum_fences_its_writer() -> None:
    own = reports({"east": UP}, {"east": [primary()]}, observers=["east"])
    decision = decide(own, one_service("east"), make_policy(), NOW, "east")
    assert math.isinf(decision.isolated_for)
    assert isinstance(decision.plan.actions[0], FenceRegion)
    assert "cut off from the quorum for ever" in decision.plan.actions[0].reason


def test_a_cut_off_controller_without_the_writer_and_an_already_fenced_writer_stay_put() -> None:
    reader = decide(reports({"west": UP}, observers=["west"]), one_service("east"),
                    make_policy(), NOW, "west")
    assert kinds(reader.plan) == ["NoOp"]
    fenced = reports({"east": UP}, {"east": [primary(fenced=True)]}, observers=["east"])
    writer = decide(fenced, one_service("east"), make_policy(), NOW, "east")
    assert kinds(writer.plan) == ["NoOp"]
    assert "already fenced" in writer.plan.actions[0].reason


def test_a_paused_service_is_not_self_fenced() -> None:
    own = reports({"east": UP}, {"east": [primary()]}, observers=["east"])
    decision = decide(own, one_service("east", paused=True), make_policy(), NOW, "east")
    assert kinds(decision.plan) == ["NoOp"]


# ---------------------------------------------------------------- failover


def test_failover_plan_when_the_writer_is_down() -> None:
    observations = reports(EAST_DOWN, ROLES, observers=["west", "south"])
    decision = decide(observations, one_service("east", epoch=7), make_policy(), NOW, "west")
    assert kinds(decision.plan) == ["FenceRegion", "PromoteSubscriber", "RepointSubscribers",
                                    "SetDnsWriter", "RemoveReader"]
    fence, promote, repoint, dns, remove = decision.plan.actions
    assert isinstance(fence, FenceRegion) and fence.region == "east" and fence.best_effort
    assert isinstance(promote, PromoteSubscriber)
    assert (promote.region, promote.previous_writer, promote.epoch) == ("south", "east", 8)
    assert "applied 0/3E8" in promote.reason and "epoch 7 -> 8" in promote.reason
    assert isinstance(repoint, RepointSubscribers)
    assert (repoint.publisher, repoint.subscribers) == ("south", ("west",))
    assert isinstance(dns, SetDnsWriter) and (dns.from_region, dns.to_region) == ("east", "south")
    assert isinstance(remove, RemoveReader) and remove.region == "east"
    assert {a.epoch for a in decision.plan.actions} == {8}
    assert all(a.service == "orders" and a.reason for a in decision.plan.actions)


def test_a_cut_off_writer_is_replaced_at_once_the_promotion_waits_for_its_lease() -> None:
    # east's controller was last heard 3 s ago: its region may be cut off and still
    # running. The plan does not wait on when it was heard (a restarted controller never
    # heard it at all); the promotion's first step claims the epoch and waits until the
    # old writer's lease has surely ended (see engine/lease.py).
    policy = make_policy(max_age=2.0, self_fence_after=1.0)
    east_last_word = reports(HEALTHY_FLEET, ROLES, observers=["east"], at=NOW - 3)
    majority_view = reports(EAST_DOWN, ROLES, observers=["west", "south"])
    for observations in (east_last_word + majority_view, majority_view):
        decision = decide(observations, one_service("east"), policy, NOW, "west")
        assert any(isinstance(a, PromoteSubscriber) for a in decision.plan.actions)


def test_a_writer_whose_controller_is_heard_is_failed_over_without_waiting() -> None:
    # Only the database died: east's own controller still reports, so nothing to wait for.
    policy = make_policy(max_age=2.0, self_fence_after=1.0)
    decision = decide(reports(EAST_DOWN, ROLES), one_service("east"), policy, NOW, "west")
    assert any(isinstance(a, PromoteSubscriber) for a in decision.plan.actions)


@pytest.mark.parametrize(
    ("west", "south", "winner"),
    [
        (sub(lsn=2000, lag_seconds=9), sub(lsn=1000, lag_seconds=0), "west"),  # most data first
        (sub(lsn=1000, lag_seconds=2), sub(lsn=1000, lag_seconds=1), "south"),  # then heartbeat
        (sub(lsn=1000, lag_seconds=1), sub(lsn=1000, lag_seconds=1), "west"),  # then priority
        (sub(lsn=None), sub(lsn=1), "south"),  # an unknown position ranks last
    ],
)
def test_the_target_is_the_up_subscriber_with_the_least_lag(
    west: Replication, south: Replication, winner: str
) -> None:
    roles = {"east": [primary()], "west": [west], "south": [south]}
    plan = decide(reports(EAST_DOWN, roles), one_service(), make_policy(), NOW, "west").plan
    promote = plan.actions[1]
    assert isinstance(promote, PromoteSubscriber) and promote.region == winner


@pytest.mark.parametrize(
    ("west", "south", "winner"),
    [
        ((1000, NOW - 1, 0.9), (1000, NOW - 1, 0.2), "west"),  # the same heartbeat: priority
        ((1000, NOW - 2, 0.1), (1000, NOW - 1, 0.9), "south"),  # else the newer heartbeat
        ((1000, None, 0.1), (1000, NOW - 9, 0.9), "south"),  # a known one before a lag
    ],
)
def test_after_the_position_the_freshest_heartbeat_ranks_not_the_lag_in_seconds(
    west: tuple[int, float | None, float], south: tuple[int, float | None, float], winner: str
) -> None:
    """A dead writer's subscribers that applied the same data hold the same heartbeat, but
    each measures its lag up to when it last heard the writer: that noise must not outrank
    the priority the operator gave (west is preferred over south)."""
    def candidate(lsn: int, beat: float | None, lag: float) -> Replication:
        return replace(sub(lsn=lsn, lag_seconds=lag), heartbeat_at=beat)

    roles = {"east": [primary()], "west": [candidate(*west)], "south": [candidate(*south)]}
    plan = decide(reports(EAST_DOWN, roles), one_service(), make_policy(), NOW, "west").plan
    promote = plan.actions[1]
    assert isinstance(promote, PromoteSubscriber) and promote.region == winner


def test_equal_candidates_are_broken_by_name() -> None:
    policy = make_policy({"a": 1, "c": 5, "b": 5})
    roles = {"b": [sub()], "c": [sub()]}
    plan = decide(reports({"a": DOWN, "b": UP, "c": UP}, roles, observers=["a", "b", "c"]),
                  one_service("a", readers=["a"]), policy, NOW, "b").plan
    assert isinstance(plan.actions[1], PromoteSubscriber) and plan.actions[1].region == "b"


def test_the_target_is_one_the_executor_reaches_itself() -> None:
    """A partial partition: south is UP by the quorum and holds the most data, but the
    link between west (the executor) and south is cut. West cannot promote what it cannot
    reach, so it promotes itself; south, planning from its own view, would pick itself."""
    five = {"east": 50, "west": 40, "south": 30, "north": 20, "central": 10}
    health = {"east": DOWN, "west": UP, "south": UP, "north": UP, "central": UP}
    roles = {"east": [primary()], "west": [sub(lsn=900)], "south": [sub(lsn=1000)],
             "north": [sub(lsn=800)], "central": [sub(lsn=800)]}
    observations = [o for o in reports(health, roles, observers=five)
                    if {o.observer, o.target} != {"west", "south"}]
    observations += [Observation("west", "south", DOWN, 3, NOW - 1),
                     Observation("south", "west", DOWN, 3, NOW - 1)]
    policy = make_policy(five)
    decision = decide(observations, one_service(readers=five), policy, NOW, "west")
    assert decision.executes
    promote = decision.plan.actions[1]
    assert isinstance(promote, PromoteSubscriber) and promote.region == "west"
    from_south = decide(observations, one_service(readers=five), policy, NOW, "south").plan
    assert isinstance(from_south.actions[1], PromoteSubscriber)
    assert from_south.actions[1].region == "south"


def test_no_target_when_the_executor_reaches_no_up_subscriber() -> None:
    roles = {"east": [primary()], "west": [sub(lsn=900)], "south": [sub(lsn=1000)]}
    observations = [o for o in reports(EAST_DOWN, roles)
                    if not (o.observer == "south" and o.target in ("west", "south"))]
    observations += [Observation("south", "west", DOWN, 3, NOW - 1),
                     Observation("south", "south", Health.UNKNOWN, 3, NOW - 1)]
    plan = decide(observations, one_service(), make_policy(), NOW, "south").plan
    assert kinds(plan)[0] == "NoOp"
    assert "(south, west cannot be reached from here)" in plan.actions[0].reason


def test_only_up_unfenced_subscribers_are_targets() -> None:
    health = {"east": DOWN, "west": UP, "south": UP}
    roles = {"west": [sub(fenced=True)], "south": [primary()]}  # south: a stray second primary
    plan = decide(reports(health, roles), one_service(), make_policy(), NOW, "west").plan
    assert kinds(plan)[0] == "NoOp"
    assert "no UP region holds an unfenced subscriber; east keeps the writer role" in \
        plan.actions[0].reason


def test_a_suspect_subscriber_is_not_a_target_and_a_suspect_writer_is_not_failed_over() -> None:
    observations = (reports({"east": DOWN}, observers=["west", "south"])
                    + reports({"west": UP}, ROLES, observers=["west", "south"])
                    + reports({"south": UP}, ROLES, observers=["south"]))
    plan = decide(observations, one_service(), make_policy(), NOW, "west").plan
    promote = plan.actions[1]
    assert isinstance(promote, PromoteSubscriber) and promote.region == "west"
    assert "RepointSubscribers" in kinds(plan), "a SUSPECT subscriber is still re-pointed"

    suspect_writer = reports({"east": DOWN}, observers=["west"]) + reports(
        {"west": UP, "south": UP}, ROLES)
    plan = decide(suspect_writer, one_service(), make_policy(), NOW, "west").plan
    assert kinds(plan) == ["NoOp"]
    assert "writer east is SUSPECT" in plan.actions[0].reason


def test_the_last_up_region_keeps_the_writer_role() -> None:
    # Every other region is DOWN: nothing to fail over to, whatever happens to east.
    health = {"east": UP, "west": DOWN, "south": DOWN}
    plan = decide(reports(health, ROLES), one_service("east", readers=["east"]), make_policy(),
                  NOW, "east").plan
    assert kinds(plan) == ["NoOp"]
    assert "no change: writer east is UP" in plan.actions[0].reason
    plan = decide(reports({"east": DOWN, "west": DOWN, "south": DOWN}, ROLES),
                  one_service("east", readers=["east"]), make_policy(), NOW, "east").plan
    assert "PromoteSubscriber" not in kinds(plan)
    assert "east keeps the writer role" in plan.actions[0].reason


def test_down_subscribers_are_not_repointed() -> None:
    policy = make_policy({"a": 4, "b": 3, "c": 2, "d": 1, "e": 0})
    health = {"a": DOWN, "b": UP, "c": UP, "d": DOWN, "e": UP}
    roles = {"b": [sub(lsn=5)], "c": [sub(lsn=4)], "d": [sub(lsn=3)], "e": [sub(lsn=2)]}
    plan = decide(reports(health, roles, observers="abcde"), one_service("a", readers="abcde"),
                  policy, NOW, "b").plan
    repoint = plan.actions[2]
    assert isinstance(repoint, RepointSubscribers) and repoint.subscribers == ("c", "e")


@pytest.mark.parametrize(
    ("replication", "problem"),
    [
        (sub(lag_bytes=2_000_000), "lag 2000000 B > max_lag_bytes 1000000"),
        (sub(lag_seconds=31), "lag 31 s > max_lag_seconds 30"),
        (sub(lag_bytes=None), "lag in bytes unknown"),
        (sub(lag_seconds=None), "lag in seconds unknown"),
        (sub(ready=False), "not ready"),
    ],
)
def test_failover_is_refused_when_the_best_target_lags_unless_forced(
    replication: Replication, problem: str
) -> None:
    roles = {"west": [replication]}
    observations = reports(EAST_DOWN, roles)
    refused = decide(observations, one_service(), make_policy(), NOW, "west").plan
    assert kinds(refused) == ["NoOp", "RemoveReader"]
    assert "refusing to fail over to west" in refused.actions[0].reason
    assert problem in refused.actions[0].reason

    forced = decide(observations, one_service(), make_policy(force=True), NOW, "west").plan
    promote = forced.actions[1]
    assert isinstance(promote, PromoteSubscriber) and promote.region == "west"
    assert f"forced despite: {problem}" in promote.reason


def test_no_second_failover_within_the_cooldown() -> None:
    observations = reports(EAST_DOWN, ROLES)
    within = one_service("east", last_failover_at=NOW - 299)
    plan = decide(observations, within, make_policy(cooldown=300), NOW, "west").plan
    assert kinds(plan)[0] == "NoOp"
    assert "last failover was 299.0s ago, within the cooldown of 300s" in plan.actions[0].reason
    after = one_service("east", last_failover_at=NOW - 300)
    plan = decide(observations, after, make_policy(cooldown=300), NOW, "west").plan
    assert kinds(plan)[1] == "PromoteSubscriber"


def test_the_force_flag_does_not_bypass_the_cooldown() -> None:
    plan = decide(reports(EAST_DOWN, ROLES), one_service("east", last_failover_at=NOW - 1),
                  make_policy(force=True), NOW, "west").plan
    assert "cooldown" in plan.actions[0].reason


def test_a_paused_service_is_never_changed() -> None:
    plan = decide(reports(EAST_DOWN, ROLES), one_service(paused=True, readers=["east"]),
                  make_policy(), NOW, "west").plan
    assert kinds(plan) == ["NoOp"]
    assert plan.actions[0].reason.startswith("paused")


def test_a_service_without_a_recorded_writer_or_state_is_left_alone() -> None:
    policy = make_policy(services=["orders", "users"])
    decision = decide(reports(HEALTHY_FLEET, ROLES), one_service(None), policy, NOW, "west")
    assert kinds(decision.plan) == ["NoOp", "NoOp"]
    assert "no writer recorded" in decision.plan.actions[0].reason
    assert decision.plan.actions[1].service == "users"
    assert "no state recorded" in decision.plan.actions[1].reason


# ---------------------------------------------------------------- readers


def test_readers_gain_up_subscribers_and_the_writer_and_lose_down_regions() -> None:
    health = {"east": UP, "west": DOWN, "south": UP}
    plan = decide(reports(health, ROLES), one_service("east", readers=["west"]), make_policy(),
                  NOW, "east").plan
    assert [(type(a).__name__, getattr(a, "region", None)) for a in plan.actions] == [
        ("RemoveReader", "west"), ("AddReader", "east"), ("AddReader", "south")]


def test_suspect_readers_stay_and_non_subscribers_are_not_added() -> None:
    observations = reports({"east": UP}, ROLES) + reports({"west": DOWN}, observers=["east"])
    roles = {**ROLES, "south": [Replication("orders", Role.UNKNOWN)]}
    observations += reports({"south": UP}, roles)
    plan = decide(observations, one_service("east", readers=["east", "west"]), make_policy(), NOW,
                  "east").plan
    assert kinds(plan) == ["NoOp"]
    assert "no change: writer east is UP" in plan.actions[0].reason


def test_the_reader_record_is_never_emptied() -> None:
    health = {"east": UP, "west": DOWN, "south": DOWN}
    observations = reports(health, {"east": [Replication("orders", Role.UNKNOWN)]})
    plan = decide(observations, one_service("east", readers=["west", "south"]), make_policy(),
                  NOW, "east").plan
    # east is the writer and UP, so it joins; had it not, west/south would stay.
    assert [type(a).__name__ for a in plan.actions] == ["RemoveReader", "RemoveReader",
                                                        "AddReader"]
    state = one_service("west", readers=["west", "south"])
    plan = decide(reports({"east": DOWN, "west": DOWN, "south": DOWN}), state,
                  make_policy(), NOW, "east").plan
    assert kinds(plan) == ["NoOp", "NoOp"]
    assert "removing them would leave it empty" in plan.actions[1].reason


def test_readers_outside_the_service_are_removed() -> None:
    policy = make_policy()
    stray = ClusterState((ServiceState("orders", "east", 1, readers=frozenset({"east", "mars"})),))
    plan = decide(reports(HEALTHY_FLEET, ROLES), stray, policy, NOW, "east").plan
    assert isinstance(plan.actions[0], RemoveReader) and plan.actions[0].region == "mars"
    assert [a.region for a in plan.actions[1:] if isinstance(a, AddReader)] == ["south", "west"]


# ---------------------------------------------------------------- apply_plan, determinism


def test_apply_plan_moves_the_writer_bumps_the_epoch_and_records_the_failover() -> None:
    state = one_service("east", epoch=7)
    plan = decide(reports(EAST_DOWN, ROLES), state, make_policy(), NOW, "west").plan
    after = apply_plan(state, plan).services[0]
    assert (after.writer, after.epoch, after.last_failover_at) == ("south", 8, NOW)
    assert after.readers == {"west", "south"}
    # The same plan again would promote with an epoch already used.
    with pytest.raises(StaleEpoch, match="reuses epoch 8"):
        apply_plan(apply_plan(state, plan), plan)


def test_apply_plan_refuses_actions_with_an_older_epoch() -> None:
    plan = Plan(NOW, (AddReader("orders", 3, "west", "test"),))
    with pytest.raises(StaleEpoch, match="epoch 3 < recorded 4"):
        apply_plan(one_service(epoch=4), plan)


def test_shuffled_input_gives_the_same_decision() -> None:
    policy = make_policy(services=["orders", "users"])
    roles = {r: [*rs, sub("users", lsn=7)] for r, rs in ROLES.items()}
    observations = reports(EAST_DOWN, roles) + reports({"east": UP}, at=NOW - 30)
    state = ClusterState((ServiceState("users", "west", 2, readers=frozenset({"west"})),
                          ServiceState("orders", "east", 1, readers=frozenset(PRIORITIES))))
    expected = decide(observations, state, policy, NOW, "south")
    shuffler = random.Random(4)
    for _ in range(20):
        shuffled = observations[:]
        shuffler.shuffle(shuffled)
        reordered = make_policy(dict(reversed(PRIORITIES.items())), ["users", "orders"])
        assert decide(shuffled, ClusterState(state.services[::-1]), reordered, NOW,
                      "south") == expected


def test_format_lsn_matches_postgres() -> None:
    assert format_lsn(0x16B3748) == "0/16B3748"
    assert format_lsn((0x1 << 32) | 0xA0) == "1/A0"


def test_a_self_fenced_writer_heard_again_is_unfenced_at_the_same_epoch() -> None:
    roles = {"east": [primary(epoch=3, fenced=True)], "west": [sub()], "south": [sub()]}
    decision = decide(reports(HEALTHY_FLEET, roles), one_service("east", epoch=3), make_policy(),
                      NOW, "west")
    [unfence] = [a for a in decision.plan.actions if isinstance(a, UnfenceWriter)]
    assert (unfence.region, unfence.epoch) == ("east", 3)


def test_a_writer_left_below_a_stalled_claim_is_confirmed_at_the_next_epoch() -> None:
    """Epoch 4 was claimed for a promotion whose executor died before promoting (the state
    the engine gets is raised to it); the writer east is UP at its own epoch 3."""
    roles = {"east": [primary(epoch=3)], "west": [sub(epoch=3)], "south": [sub(epoch=3)]}
    plan = decide(reports(HEALTHY_FLEET, roles), one_service("east", epoch=4), make_policy(),
                  NOW, "west").plan
    [confirm] = [a for a in plan.actions if isinstance(a, ConfirmWriter)]
    assert (confirm.region, confirm.epoch) == ("east", 5)
    assert not any(isinstance(a, PromoteSubscriber | FenceRegion) for a in plan.actions)
    assert all(a.epoch == 5 for a in plan.changes())


@pytest.mark.parametrize("read", ["before", "after", "undated"])
def test_a_confirmation_is_not_planned_again_from_a_view_read_before_it_ended(read: str) -> None:
    """The confirmation at epoch 5 ended at NOW - 2; east's database, read at NOW - 3, still
    shows epoch 3 below the record's 5. Planned from that view, a second confirmation would
    claim epoch 6 and void the acceptors' word for east again: its lease would keep lapsing."""
    at = {"before": NOW - 3, "after": NOW - 1, "undated": None}[read]
    roles = {"east": [replace(primary(epoch=3), seen_at=at)], "west": [sub(epoch=3)],
             "south": [sub(epoch=3)]}
    after = {"orders": AfterPlan(NOW - 2, frozenset({"east"}))}
    plan = decide(reports(HEALTHY_FLEET, roles), one_service("east", epoch=5), make_policy(),
                  NOW, "west", after_plans=after).plan
    if read == "before":
        [wait] = plan.actions
        assert isinstance(wait, NoOp) and "waiting for a view of east" in wait.reason
    else:  # a view read since (or one that carries no date) is planned from as it is
        assert any(isinstance(a, ConfirmWriter) for a in plan.actions)


def test_a_rejoin_is_planned_once_views_read_after_it_show_the_region_fenced_still() -> None:
    policy = auto_rejoin(make_policy())
    after = {"orders": AfterPlan(NOW - 2, frozenset({"east"}))}

    def planned(east_read_at: float) -> list[str]:
        roles = {**FORMER_WRITER_BACK,
                 "east": [replace(primary(epoch=1, fenced=True), seen_at=east_read_at)]}
        return kinds(decide(reports(HEALTHY_FLEET, roles), one_service("west", epoch=2), policy,
                            NOW, "west", after_plans=after).plan)

    assert planned(NOW - 3) == ["NoOp"]  # the rejoin just ended: this view predates it
    assert "RejoinRegion" in planned(NOW - 1)  # read since, still fenced: it did not take
    other = {"orders": AfterPlan(NOW - 2, frozenset({"south"}))}
    roles = {**FORMER_WRITER_BACK, "east": [replace(primary(epoch=1, fenced=True),
                                                    seen_at=NOW - 3)]}
    assert "RejoinRegion" in kinds(decide(reports(HEALTHY_FLEET, roles),
                                          one_service("west", epoch=2), policy, NOW, "west",
                                          after_plans=other).plan)


@pytest.mark.parametrize("case", ["writer down", "same epoch", "paused"])
def test_no_confirmation_without_a_stalled_claim_under_an_up_writer(case: str) -> None:
    health = EAST_DOWN if case == "writer down" else HEALTHY_FLEET
    state = one_service("east", epoch=3 if case == "same epoch" else 4, paused=case == "paused")
    roles = {"east": [primary(epoch=3)], "west": [sub(epoch=3)], "south": [sub(epoch=3)]}
    plan = decide(reports(health, roles), state, make_policy(), NOW, "west").plan
    assert not any(isinstance(a, ConfirmWriter) for a in plan.actions)


@pytest.mark.parametrize("answered", [True, False])
def test_a_promotion_says_whether_the_old_writer_answered_the_deciders_own_probe(
        answered: bool) -> None:
    """A hung or cut-off old writer: the plan must not wait out a connection timeout on it."""
    silent = {**ROLES, "east": []}
    observations = [o for o in reports(EAST_DOWN, ROLES)
                    if not (o.observer == "west" and o.target == "east")]
    observations += reports({"east": DOWN}, ROLES if answered else silent, observers=["west"])
    plan = decide(observations, one_service(), make_policy(), NOW, "west").plan
    [promote] = [a for a in plan.actions if isinstance(a, PromoteSubscriber)]
    assert promote.old_writer_answered is answered


# east failed over to west and came back fenced.
FORMER_WRITER_BACK = {"east": [primary(epoch=1, fenced=True)], "west": [primary(epoch=2)],
                      "south": [sub(epoch=2)]}


def auto_rejoin(policy: Policy) -> Policy:
    return replace(policy, services=tuple(replace(s, auto_rejoin=True) for s in policy.services))


def test_a_fenced_former_writer_up_again_is_rejoined_when_the_service_says_auto() -> None:
    roles = FORMER_WRITER_BACK
    policy = make_policy()
    plan = decide(reports(HEALTHY_FLEET, roles), one_service("west", epoch=2), auto_rejoin(policy),
                  NOW, "west").plan
    [rejoin] = [a for a in plan.actions if isinstance(a, RejoinRegion)]
    assert (rejoin.region, rejoin.epoch, rejoin.serve_after) == ("east", 2, True)
    manual = decide(reports(HEALTHY_FLEET, roles), one_service("west", epoch=2), policy, NOW,
                    "west").plan
    assert not any(isinstance(a, RejoinRegion) for a in manual.actions)


def test_no_rejoin_while_the_writer_is_down_or_the_former_writer_is_not_reached() -> None:
    roles = FORMER_WRITER_BACK
    auto = auto_rejoin(make_policy())
    west_down = {"east": UP, "west": DOWN, "south": UP}
    plan = decide(reports(west_down, roles), one_service("west", epoch=2, last_failover_at=NOW),
                  auto, NOW, "south").plan
    assert not any(isinstance(a, RejoinRegion) for a in plan.actions)
    unreached = [o for o in reports(HEALTHY_FLEET, roles)
                 if not (o.observer == "west" and o.target == "east")]
    unreached.append(Observation("west", "east", DOWN, 3, NOW - 1))
    plan = decide(unreached, one_service("west", epoch=2), auto, NOW, "west").plan
    assert not any(isinstance(a, RejoinRegion) for a in plan.actions)


def test_a_subscriber_still_copying_is_not_added_to_the_readers() -> None:
    roles = {"east": [primary()], "west": [sub(ready=False)], "south": [sub()]}
    plan = decide(reports(HEALTHY_FLEET, roles), one_service(readers=["east"]), make_policy(),
                  NOW, "west").plan
    assert {a.region for a in plan.actions if isinstance(a, AddReader)} == {"south"}


@pytest.mark.parametrize("case", ["newer epoch elsewhere", "paused", "not a primary"])
def test_a_fence_is_not_lifted_when_the_fleet_cannot_confirm_the_writer(case: str) -> None:
    east = {"newer epoch elsewhere": primary(epoch=2, fenced=True),
            "paused": primary(epoch=3, fenced=True),
            "not a primary": sub(epoch=3, fenced=True)}[case]
    roles = {"east": [east], "west": [sub()], "south": [sub()]}
    state = one_service("east", epoch=3, paused=case == "paused")
    decision = decide(reports(HEALTHY_FLEET, roles), state, make_policy(), NOW, "west")
    assert not any(isinstance(a, UnfenceWriter) for a in decision.plan.actions)


def test_a_subscriber_that_looks_fresh_is_measured_against_the_writers_last_known_position(
) -> None:
    """The publisher is gone and west's own figures look fresh (they stopped when its apply
    worker did, long before): what the fleet last saw of the writer shows it far behind."""
    policy = make_policy()
    alive = replace(primary(), wal_lsn=50_000_000, heartbeat_at=NOW - 600)
    stale = replace(sub(lsn=1000, lag_bytes=0, lag_seconds=0.5), heartbeat_at=NOW - 4000)
    earlier = decide(reports(HEALTHY_FLEET, {"east": [alive], "west": [stale]}, at=NOW - 600),
                     one_service(), policy, NOW - 600, "west")
    # Now east is unreachable: the newest observations say nothing of its position.
    observations = reports(EAST_DOWN, {"west": [stale], "south": [stale]})
    refused = decide(observations, one_service(), policy, NOW, "west",
                     known_positions=earlier.positions).plan
    assert kinds(refused)[0] == "NoOp"
    assert "lag 49999000 B > max_lag_bytes" in refused.actions[0].reason
    assert "lag 3400 s > max_lag_seconds" in refused.actions[0].reason
    # Without what the fleet remembered, the subscriber's own figures would have passed.
    assert "PromoteSubscriber" in kinds(decide(observations, one_service(), policy, NOW,
                                               "west").plan)

    caught_up = replace(stale, applied_lsn=50_000_000, heartbeat_at=NOW - 600)
    observations = reports(EAST_DOWN, {"west": [caught_up]})
    assert "PromoteSubscriber" in kinds(decide(observations, one_service(), policy, NOW, "west",
                                               known_positions=earlier.positions).plan)


def test_a_disabled_subscription_is_not_a_target_unless_forced() -> None:
    disabled = replace(sub(), subscription_enabled=False)
    observations = reports(EAST_DOWN, {"west": [disabled], "south": [disabled]})
    refused = decide(observations, one_service(), make_policy(), NOW, "west").plan
    assert "its subscription is disabled" in refused.actions[0].reason
    forced = decide(observations, one_service(), make_policy(force=True), NOW, "west").plan
    assert "PromoteSubscriber" in kinds(forced)


# ---------------------------------------------------------------- durability "sync"


def standby(region: str) -> str:
    return f"failover_orders_{region}"


def waits_for(*regions: str, count: int = 1) -> SyncStandbys:
    return SyncStandbys(tuple(sorted(standby(region) for region in regions)), count)


def sync_policy(count: int = 1, *, strict: bool = False, force: bool = False) -> Policy:
    policy = make_policy(force=force)
    return replace(policy, services=tuple(
        replace(s, sync_count=count, sync_strict=strict,
                standby_names=tuple((region, standby(region)) for region in PRIORITIES))
        for s in policy.services))


def writer_waiting_for(standbys: SyncStandbys, **kwargs: int) -> Replication:
    return replace(primary(**kwargs), sync_standbys=standbys)


def sync_changes(plan: Plan) -> list[tuple[str, SyncStandbys]]:
    return [(a.region, a.standbys) for a in plan.actions if isinstance(a, SetSyncStandbys)]


def test_a_sync_writer_is_made_to_wait_for_its_healthy_subscribers() -> None:
    roles = {"east": [writer_waiting_for(SyncStandbys())], "west": [sub()], "south": [sub()]}
    decision = decide(reports(HEALTHY_FLEET, roles), one_service(), sync_policy(), NOW, "west")
    assert sync_changes(decision.plan) == [("east", waits_for("south", "west"))]
    assert decision.durability["orders"].durability is Durability.SYNC
    # Once the writer reports it, nothing changes any more.
    roles["east"] = [writer_waiting_for(waits_for("south", "west"))]
    decision = decide(reports(HEALTHY_FLEET, roles), one_service(), sync_policy(), NOW, "west")
    assert kinds(decision.plan) == ["NoOp"]
    assert "no change" in decision.plan.actions[0].reason


@pytest.mark.parametrize("south", ["DOWN", "not ready", "fenced", "disabled"])
def test_only_up_ready_unfenced_applying_subscribers_are_waited_for(south: str) -> None:
    view = {"DOWN": sub(), "not ready": sub(ready=False), "fenced": sub(fenced=True),
            "disabled": replace(sub(), subscription_enabled=False)}[south]
    health = {**HEALTHY_FLEET, "south": DOWN} if south == "DOWN" else HEALTHY_FLEET
    roles = {"east": [writer_waiting_for(waits_for("south", "west"))], "west": [sub()],
             "south": [view]}
    decision = decide(reports(health, roles), one_service(), sync_policy(), NOW, "west")
    [(region, standbys)] = sync_changes(decision.plan)
    assert (region, standbys) == ("east", waits_for("west"))
    assert decision.durability["orders"].durability is Durability.SYNC


def test_too_few_healthy_subscribers_degrade_to_asynchronous_commits_loudly() -> None:
    health = {**HEALTHY_FLEET, "south": DOWN}
    roles = {"east": [writer_waiting_for(waits_for("south", "west", count=2))],
             "west": [sub()], "south": [sub()]}
    decision = decide(reports(health, roles), one_service(), sync_policy(2), NOW, "west")
    [change] = [a for a in decision.plan.actions if isinstance(a, SetSyncStandbys)]
    assert change.standbys == SyncStandbys()
    assert "DEGRADED to asynchronous commits: only 1 of the 2 subscribers needed are healthy " \
           "(south DOWN)" in change.reason
    assert decision.durability["orders"].durability is Durability.DEGRADED
    # Degraded already: said again in a NoOp (the journal keeps it while it lasts).
    roles["east"] = [writer_waiting_for(SyncStandbys())]
    decision = decide(reports(health, roles), one_service(), sync_policy(2), NOW, "west")
    assert sync_changes(decision.plan) == []
    assert any(isinstance(a, NoOp) and a.reason.startswith("DEGRADED")
               for a in decision.plan.actions)
    # Back to synchronous once enough are healthy.
    decision = decide(reports(HEALTHY_FLEET, roles), one_service(), sync_policy(2), NOW, "west")
    assert sync_changes(decision.plan) == [("east", waits_for("south", "west", count=2))]


def test_strict_keeps_waiting_rather_than_degrade() -> None:
    health = {**HEALTHY_FLEET, "south": DOWN}
    roles = {"east": [writer_waiting_for(waits_for("south", "west", count=2))],
             "west": [sub()], "south": [sub()]}
    decision = decide(reports(health, roles), one_service(), sync_policy(2, strict=True), NOW,
                      "west")
    assert sync_changes(decision.plan) == []
    assert decision.durability["orders"].durability is Durability.WAITING
    [noop] = [a for a in decision.plan.actions if isinstance(a, NoOp)]
    assert "strict: only 1 of the 2 subscribers needed are healthy (south DOWN); keeping " \
           "ANY 2 (failover_orders_south, failover_orders_west)" in noop.reason
    # A writer that waits for nobody yet (just promoted) is made to wait for the
    # subscribers that may come back: never a DOWN one.
    roles["east"] = [writer_waiting_for(SyncStandbys())]
    decision = decide(reports(health, roles), one_service(), sync_policy(2, strict=True), NOW,
                      "west")
    assert sync_changes(decision.plan) == [("east", waits_for("west", count=2))]


def test_a_new_writer_never_keeps_standbys_that_name_itself() -> None:
    """west was the writer once and still names east and itself; now it is the writer."""
    leftover = waits_for("east", "west")
    health = {"east": DOWN, "west": UP, "south": UP}
    roles = {"west": [writer_waiting_for(leftover, epoch=2)], "south": [sub(epoch=2)]}
    for strict in (False, True):
        plan = decide(reports(health, roles), one_service("west", epoch=2, last_failover_at=NOW),
                      sync_policy(strict=strict), NOW, "south").plan
        assert sync_changes(plan) == [("west", waits_for("south"))]


def test_async_services_clear_only_the_standbys_failover_named() -> None:
    ours = {"east": [writer_waiting_for(waits_for("west"))], "west": [sub()], "south": [sub()]}
    plan = decide(reports(HEALTHY_FLEET, ours), one_service(), make_policy(), NOW, "west").plan
    assert sync_changes(plan) == []  # no standby names known: nothing is recognised as ours
    policy = replace(sync_policy(), services=tuple(replace(s, sync_count=0)
                                                   for s in sync_policy().services))
    plan = decide(reports(HEALTHY_FLEET, ours), one_service(), policy, NOW, "west").plan
    assert sync_changes(plan) == [("east", SyncStandbys())]
    by_hand = {**ours, "east": [writer_waiting_for(SyncStandbys(("physical_1",), 1))]}
    decision = decide(reports(HEALTHY_FLEET, by_hand), one_service(), policy, NOW, "west")
    assert sync_changes(decision.plan) == []
    assert decision.durability["orders"].durability is Durability.ASYNC


def test_a_subscriber_that_still_names_the_services_standbys_stops_waiting() -> None:
    """A former writer subscribes now: its apply worker's commits would wait for standbys
    that never connect to it."""
    roles = {"east": [writer_waiting_for(waits_for("south", "west"))], "west": [sub()],
             "south": [replace(sub(), sync_standbys=waits_for("east", "west"))]}
    plan = decide(reports(HEALTHY_FLEET, roles), one_service(), sync_policy(), NOW, "west").plan
    assert sync_changes(plan) == [("south", SyncStandbys())]


def sync_failover(roles: Mapping[str, Iterable[Replication]], *, health: Mapping[str, Health]
                  = EAST_DOWN, before: Mapping[str, Iterable[Replication]] | None = None,
                  policy: Policy | None = None) -> Plan:
    """east, the writer, was seen waiting for `before`'s standbys, then went DOWN."""
    policy = policy or sync_policy()
    known = None
    if before is not None:
        known = decide(reports(HEALTHY_FLEET, before, at=NOW - 30), one_service(), policy,
                       NOW - 30, "west").positions
    return decide(reports(health, roles), one_service(), policy, NOW, "west",
                  known_positions=known).plan


def test_a_sync_failover_promotes_the_most_advanced_of_n_minus_k_plus_1_standbys() -> None:
    before = {"east": [writer_waiting_for(waits_for("south", "west"))]}
    plan = sync_failover({"west": [sub(lsn=900)], "south": [sub(lsn=1000)]}, before=before)
    [promote] = [a for a in plan.actions if isinstance(a, PromoteSubscriber)]
    assert promote.region == "south"
    assert promote.sync_standbys == waits_for("south", "west")
    assert "it holds every commit east acknowledged" in promote.reason


def test_a_sync_failover_waits_for_enough_standbys_to_prove_no_loss() -> None:
    before = {"east": [writer_waiting_for(waits_for("south", "west"))]}
    roles = {"west": [sub(lsn=1000)], "south": [sub(lsn=None)]}
    plan = sync_failover(roles, before=before)
    [noop] = [a for a in plan.actions if isinstance(a, NoOp)]
    assert "proving which subscriber holds every acknowledged commit needs the applied " \
           "positions of 2 of those 2 standbys, and 1 are reachable (west 0/3E8)" in noop.reason
    assert "`failover promote --allow-data-loss`" in noop.reason
    # With k = 2 of the same two, one position proves it.
    before = {"east": [writer_waiting_for(waits_for("south", "west", count=2))]}
    assert "PromoteSubscriber" in kinds(sync_failover(roles, before=before))
    # An operator's force promotes anyway, saying what it gave up.
    forced = sync_failover(roles, before={"east": [writer_waiting_for(waits_for("south",
                                                                                 "west"))]},
                           policy=sync_policy(force=True))
    [promote] = [a for a in forced.actions if isinstance(a, PromoteSubscriber)]
    assert "forced despite: durability sync" in promote.reason


def test_a_sync_failover_refuses_a_target_behind_a_standby_it_cannot_promote() -> None:
    before = {"east": [writer_waiting_for(waits_for("south", "west"))]}
    health = {"east": DOWN, "west": UP, "south": Health.UNKNOWN}  # SUSPECT, still answers
    plan = sync_failover({"west": [sub(lsn=900)], "south": [sub(lsn=1000)]}, health=health,
                         before=before)
    [noop] = [a for a in plan.actions if isinstance(a, NoOp)]
    assert "south applied 0/3E8, more than west, and is no region this controller can " \
           "promote" in noop.reason


def test_a_sync_failover_without_the_writers_standbys_assumes_every_other_region() -> None:
    plan = sync_failover({"west": [sub(lsn=900)], "south": [sub(lsn=None)]})
    assert "every other region (what it waited for was never seen)" in plan.actions[0].reason
    plan = sync_failover({"west": [sub(lsn=900)], "south": [sub(lsn=800)]})
    [promote] = [a for a in plan.actions if isinstance(a, PromoteSubscriber)]
    assert (promote.region, promote.sync_standbys) == ("west", waits_for("south", "west"))


def test_a_writer_that_last_waited_for_no_standby_fails_over_on_the_lag_limits() -> None:
    before = {"east": [writer_waiting_for(SyncStandbys())]}
    plan = sync_failover({"west": [sub(lsn=900)], "south": [sub(lsn=None)]}, before=before)
    [promote] = [a for a in plan.actions if isinstance(a, PromoteSubscriber)]
    assert (promote.region, promote.sync_standbys) == ("west", SyncStandbys())


def test_sync_actions_read_back_from_the_journal_the_same() -> None:
    """A plan resumed after a crash is rebuilt from its JSON: the standbys must survive."""
    actions = [SetSyncStandbys("orders", 3, "east", waits_for("south", "west"), "why"),
               PromoteSubscriber("orders", 4, "west", "east", "why",
                                 sync_standbys=waits_for("south", "west", count=2))]
    for action in actions:
        assert action_from_dict(json.loads(json.dumps(action_as_dict(action)))) == action
