"""The engine's safety rules as properties over generated fleets.

Each property re-derives what it checks from the raw observations (an oracle
independent of the engine's code), so that a broken rule in the engine fails
here rather than agreeing with itself. Scenarios hold at most one observation
per (observer, target), which keeps the oracle simple; duplicates are covered
by the stale-observation property and by test_engine.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from failover.engine import (
    AfterPlan,
    ClusterState,
    ConfirmWriter,
    Decision,
    FenceRegion,
    Health,
    NoOp,
    Observation,
    Policy,
    PromoteSubscriber,
    RegionPolicy,
    RejoinRegion,
    Replication,
    Role,
    ServicePolicy,
    ServiceState,
    SetDnsWriter,
    SetSyncStandbys,
    SyncStandbys,
    apply_plan,
    decide,
    majority,
)

NOW = 1_700_000_000.0
MAX_AGE = 10.0
MAX_LAG_BYTES = 1000
MAX_LAG_SECONDS = 5.0
REGION_NAMES = ("ash", "birch", "cedar", "dogwood", "elm")
SERVICE_NAMES = ("billing", "orders", "users")
# Ages around the freshness boundary matter most.
FRESH_AGES = (0.0, 1.0, 4.0, 9.999, MAX_AGE)
STALE_AGES = (MAX_AGE + 0.001, 12.0, 60.0)
LAG_BYTES_OK = (0, MAX_LAG_BYTES // 2, MAX_LAG_BYTES)
LAG_BYTES_BAD = (MAX_LAG_BYTES + 1, None)
LAG_SECONDS_OK = (0.0, 1.0, MAX_LAG_SECONDS)
LAG_SECONDS_BAD = (MAX_LAG_SECONDS + 0.5, None)


@dataclass(frozen=True)
class Scenario:
    policy: Policy
    observations: tuple[Observation, ...]
    state: ClusterState
    me: str

    def decide(self) -> Decision:
        return decide(self.observations, self.state, self.policy, NOW, self.me)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    # Hypothesis picks the shape; a Random seeded by hypothesis fills in the
    # bulk (up to 25 observations of 3 services), because drawing every field
    # through hypothesis costs a minute per run. Failures replay from the seed.
    names = REGION_NAMES[: draw(st.integers(2, 5))]
    services = SERVICE_NAMES[: draw(st.integers(1, 3))]
    quorum = draw(st.integers(majority(len(names)), len(names)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    members = {service: frozenset(rng.sample(names, rng.randint(2, len(names))))
               for service in services}
    policy = Policy(
        regions=tuple(RegionPolicy(name, rng.randint(0, 2)) for name in names),  # ties on purpose
        services=tuple(
            ServicePolicy(service, members[service], MAX_LAG_BYTES, MAX_LAG_SECONDS,
                          cooldown=rng.choice([0.0, 60.0]), force=rng.random() < 0.3,
                          auto_rejoin=rng.random() < 0.5,
                          sync_count=min(rng.choice([0, 1, 1, 2]), len(members[service]) - 1),
                          sync_strict=rng.random() < 0.5,
                          standby_names=tuple((region, _standby(service, region))
                                              for region in sorted(members[service])))
            for service in services
        ),
        quorum=quorum,
        observation_max_age=MAX_AGE,
        self_fence_after=rng.choice([0.0, 3.0, 50.0]),
    )
    states = tuple(
        ServiceState(
            service,
            writer=rng.choice([*sorted(members[service]), None]),
            epoch=rng.randint(0, 5),
            last_failover_at=rng.choice([None, None, NOW - 30, NOW - 90]),
            paused=rng.random() < 0.1,
            readers=frozenset(rng.sample(names, rng.randint(0, len(names)))),
        )
        for service in services
    )
    writers = {s.service: s.writer for s in states}
    epochs = {s.service: s.epoch for s in states}

    # Per scenario how often a vote is stale (from a healthy fleet to a
    # partition), and per region whether it is alive and keeps up.
    stale_rate = rng.choice([0.0, 0.1, 0.3, 0.8])
    # Writers die more often than the rest: failovers are what this is about.
    alive = {name: rng.random() < (0.4 if name in writers.values() else 0.8) for name in names}
    keeps_up = {name: rng.random() < 0.7 for name in names}
    observations = []
    for observer in names:
        for target in names:
            if rng.random() < 0.1:
                continue  # this observer sent nothing about this target
            if rng.random() < 0.9:
                health = Health.HEALTHY if alive[target] else Health.UNHEALTHY
            else:
                health = rng.choice(list(Health))
            replications = []
            for service in services:
                if target not in members[service]:
                    continue
                role = Role.PRIMARY if writers[service] == target else Role.SUBSCRIBER
                if rng.random() < 0.05:
                    role = rng.choice(list(Role))
                lag_ok = keeps_up[target] or rng.random() < 0.2
                replications.append(Replication(
                    service, role, fenced=rng.random() < 0.05,
                    # Below the state's epoch: a claim above the writer's own never finished.
                    epoch=rng.choice([None, epochs[service], epochs[service],
                                      max(0, epochs[service] - 1)]),
                    applied_lsn=rng.choice([None, 0, 1, 2, 3]),
                    lag_bytes=rng.choice(LAG_BYTES_OK if lag_ok else LAG_BYTES_BAD),
                    lag_seconds=rng.choice(LAG_SECONDS_OK if lag_ok else LAG_SECONDS_BAD),
                    ready=rng.random() < 0.9,
                    subscription_enabled=rng.choice([None, True, True, False]),
                    sync_standbys=_some_standbys(rng, service, members[service]),
                ))
            age = rng.choice(STALE_AGES if rng.random() < stale_rate else FRESH_AGES)
            observations.append(Observation(
                observer, target, health, consecutive=rng.randint(1, 5),
                observed_at=NOW - age, services=tuple(replications),
            ))
    me = rng.choice(names)
    return Scenario(policy, tuple(observations), ClusterState(states), me)


def _standby(service: str, region: str) -> str:
    return f"failover_{service}_{region}"


def _some_standbys(rng: random.Random, service: str, members: frozenset[str]
                   ) -> SyncStandbys | None:
    """What a server's synchronous_standby_names may say: unknown, nothing, some of the
    service's standbys (the writer's own name included), or one set by hand."""
    choice = rng.random()
    if choice < 0.2:
        return None
    if choice < 0.4:
        return SyncStandbys()
    if choice < 0.45:
        return SyncStandbys(("physical_1",), 1)
    named = rng.sample(sorted(members), rng.randint(1, len(members)))
    return SyncStandbys(tuple(sorted(_standby(service, r) for r in named)), rng.randint(1, 2))


# ---------------------------------------------------------------- the oracle


def _fresh(observation: Observation) -> bool:
    return observation.observed_at >= NOW - MAX_AGE


def _fresh_votes(scenario: Scenario, target: str, health: Health) -> int:
    return sum(1 for o in scenario.observations
               if o.target == target and o.health is health and _fresh(o))


def _hears_quorum(scenario: Scenario) -> bool:
    heard = {o.observer for o in scenario.observations if _fresh(o)} | {scenario.me}
    return len(heard) >= scenario.policy.quorum


def _view(scenario: Scenario, region: str, service: str) -> Replication | None:
    """The freshest fresh replication report with a known role, observer name breaking ties."""
    known = [(o.observed_at, o.observer, r) for o in scenario.observations
             if o.target == region and _fresh(o) for r in o.services
             if r.service == service and r.role is not Role.UNKNOWN]
    if not known:
        return None
    newest = max(at for at, _, _ in known)
    return min((observer, r) for at, observer, r in known if at == newest)[1]


def _promotions(decision: Decision) -> dict[str, PromoteSubscriber]:
    found: dict[str, PromoteSubscriber] = {}
    for action in decision.plan.actions:
        if isinstance(action, PromoteSubscriber):
            assert action.service not in found, f"two promotions for {action.service}"
            found[action.service] = action
    return found


# ---------------------------------------------------------------- properties

PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(scenarios())
def test_a_no_change_unless_me_hears_a_quorum(scenario: Scenario) -> None:
    decision = scenario.decide()
    assert decision.has_quorum is _hears_quorum(scenario)
    if decision.has_quorum:
        return
    for action in decision.plan.actions:
        # The only thing a cut-off controller may do is fence its own region.
        assert isinstance(action, NoOp) or (
            isinstance(action, FenceRegion) and action.region == scenario.me
        ), action


@PROPERTY
@given(scenarios())
def test_b_every_service_keeps_exactly_one_writer(scenario: Scenario) -> None:
    decision = scenario.decide()
    promotions = _promotions(decision)
    after = apply_plan(scenario.state, decision.plan).by_service()
    for before in scenario.state.services:
        dns_moves = [a for a in decision.plan.actions
                     if isinstance(a, SetDnsWriter) and a.service == before.service]
        if before.service in promotions:
            promoted = promotions[before.service].region
            assert [(m.from_region, m.to_region) for m in dns_moves] == [(before.writer, promoted)]
            assert after[before.service].writer == promoted
        else:
            assert dns_moves == []
            assert after[before.service].writer == before.writer


@PROPERTY
@given(scenarios())
def test_c_the_writer_moves_only_on_a_quorum_down_verdict(scenario: Scenario) -> None:
    after = apply_plan(scenario.state, scenario.decide().plan).by_service()
    for before in scenario.state.services:
        if after[before.service].writer != before.writer:
            assert before.writer is not None
            unhealthy = _fresh_votes(scenario, before.writer, Health.UNHEALTHY)
            assert unhealthy >= scenario.policy.quorum


@PROPERTY
@given(scenarios())
def test_d_the_target_is_up_an_unfenced_subscriber_and_within_max_lag(scenario: Scenario) -> None:
    for service, promotion in _promotions(scenario.decide()).items():
        assert _fresh_votes(scenario, promotion.region, Health.HEALTHY) >= scenario.policy.quorum
        # The executor promotes only what its own probe reaches.
        assert any(o.observer == scenario.me and o.target == promotion.region
                   and o.health is Health.HEALTHY and _fresh(o) for o in scenario.observations)
        view = _view(scenario, promotion.region, service)
        assert view is not None and view.role is Role.SUBSCRIBER and not view.fenced
        assert promotion.region in scenario.policy.service[service].regions
        if not scenario.policy.service[service].force:
            assert view.lag_bytes is not None and view.lag_bytes <= MAX_LAG_BYTES
            assert view.lag_seconds is not None and view.lag_seconds <= MAX_LAG_SECONDS
            assert view.ready


@PROPERTY
@given(scenarios())
def test_e_no_second_failover_within_the_cooldown(scenario: Scenario) -> None:
    promotions = _promotions(scenario.decide())
    for state in scenario.state.services:
        cooldown = scenario.policy.service[state.service].cooldown
        if state.last_failover_at is not None and NOW - state.last_failover_at < cooldown:
            assert state.service not in promotions
        if state.paused:
            assert state.service not in promotions


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_f_input_order_does_not_change_the_decision(
    scenario: Scenario, rng: random.Random
) -> None:
    observations = list(scenario.observations)
    services = list(scenario.state.services)
    regions = list(scenario.policy.regions)
    service_policies = list(scenario.policy.services)
    for items in (observations, services, regions, service_policies):
        rng.shuffle(items)
    policy = replace(scenario.policy, regions=tuple(regions), services=tuple(service_policies))
    shuffled = decide(observations, ClusterState(tuple(services)), policy, NOW, scenario.me)
    assert shuffled == scenario.decide()


@PROPERTY
@given(scenarios(), st.data())
def test_g_stale_observations_never_count(scenario: Scenario, data: st.DataObject) -> None:
    names = sorted(scenario.policy.priority)
    stale = data.draw(st.lists(st.builds(
        Observation,
        observer=st.sampled_from(names), target=st.sampled_from(names),
        health=st.sampled_from(Health), consecutive=st.integers(1, 5),
        observed_at=st.floats(NOW - 1000, NOW - MAX_AGE - 0.001),
        services=st.just(()),
    ), max_size=8))
    base = scenario.decide()
    with_stale = decide([*scenario.observations, *stale], scenario.state, scenario.policy, NOW,
                        scenario.me)
    without_any_stale = decide([o for o in scenario.observations if _fresh(o)], scenario.state,
                               scenario.policy, NOW, scenario.me)

    def counts(decision: Decision) -> list[tuple[str, str, int, int]]:
        return [(v.region, v.verdict.value, v.healthy, v.unhealthy) for v in decision.verdicts]

    assert counts(with_stale) == counts(base) == counts(without_any_stale)
    assert with_stale.has_quorum is base.has_quorum is without_any_stale.has_quorum
    if base.has_quorum:
        # Stale peers only tell a cut-off controller how long it has been cut off.
        assert with_stale.plan == base.plan == without_any_stale.plan
        assert with_stale.executor == base.executor == without_any_stale.executor


@PROPERTY
@given(scenarios())
def test_h_epochs_strictly_increase(scenario: Scenario) -> None:
    decision = scenario.decide()
    before = scenario.state.by_service()
    promotions = _promotions(decision)
    for action in decision.plan.actions:
        if action.service in before:
            assert action.epoch >= before[action.service].epoch
    for service, promotion in promotions.items():
        assert promotion.epoch == before[service].epoch + 1
        assert all(a.epoch == promotion.epoch for a in decision.plan.actions
                   if a.service == service)
    confirmed = {a.service for a in decision.plan.actions if isinstance(a, ConfirmWriter)}
    after = apply_plan(scenario.state, decision.plan).by_service()
    for service, state in before.items():
        grew = after[service].epoch > state.epoch
        assert grew is (service in promotions or service in confirmed)


def _stale_primaries(scenario: Scenario) -> set[tuple[str, str]]:
    """(service, region) pairs whose freshest view is an unfenced primary in a region other
    than the recorded writer: the oracle for convergence."""
    found = set()
    for state in scenario.state.services:
        if state.writer is None:
            continue
        for region in scenario.policy.service[state.service].regions:
            view = _view(scenario, region, state.service)
            if view is None or view.role is not Role.PRIMARY or view.fenced:
                continue
            if region != state.writer:
                found.add((state.service, region))
    return found


@PROPERTY
@given(scenarios())
def test_i_every_stale_primary_is_fenced_by_its_own_controller_or_the_executor(
        scenario: Scenario) -> None:
    decision = scenario.decide()
    states = scenario.state.by_service()
    local = {(a.service, a.region) for a in decision.local}
    planned = {(a.service, a.region) for a in decision.plan.actions if isinstance(a, FenceRegion)}
    for service, region in _stale_primaries(scenario):
        if region == scenario.me:
            # At once, with or without a quorum, whoever executes the plan.
            assert (service, region) in local
        elif decision.has_quorum and not states[service].paused:
            assert (service, region) in planned
    # Local fences touch only this controller's own region, and only stale primaries.
    assert all(region == scenario.me for _, region in local)
    assert local <= _stale_primaries(scenario)


@PROPERTY
@given(scenarios())
def test_j_the_recorded_writer_is_fenced_only_when_the_plan_replaces_it(
        scenario: Scenario) -> None:
    decision = scenario.decide()
    promotions = _promotions(decision)
    for action in (*decision.plan.actions, *decision.local):
        if not isinstance(action, FenceRegion):
            continue
        writer = scenario.state.by_service()[action.service].writer
        if action.region == writer:
            # Either a failover replaces it, or it fences itself while cut off.
            assert action.service in promotions or (
                not decision.has_quorum and action.region == scenario.me)


def _confirmation_due(scenario: Scenario, state: ServiceState) -> bool:
    """The oracle: the recorded writer is UP by a quorum and its freshest view is a primary
    at an epoch below the state's (a higher one was claimed and never became a writer)."""
    if state.writer is None or state.paused:
        return False
    view = _view(scenario, state.writer, state.service)
    return (_fresh_votes(scenario, state.writer, Health.HEALTHY) >= scenario.policy.quorum
            and view is not None and view.role is Role.PRIMARY and view.epoch is not None
            and view.epoch < state.epoch)


@PROPERTY
@given(scenarios())
def test_k_a_writer_left_below_a_stalled_claim_is_confirmed_at_the_next_epoch(
        scenario: Scenario) -> None:
    decision = scenario.decide()
    promotions = _promotions(decision)
    confirmations = [a for a in decision.plan.actions if isinstance(a, ConfirmWriter)]
    for state in scenario.state.services:
        mine = [a for a in confirmations if a.service == state.service]
        if decision.has_quorum and _confirmation_due(scenario, state):
            assert [(a.region, a.epoch) for a in mine] == [(state.writer, state.epoch + 1)]
        else:
            assert mine == []
        # One claim a plan: never a confirmation beside a promotion of the same service.
        assert not (mine and state.service in promotions)


@PROPERTY
@given(scenarios())
def test_l_only_fenced_former_writers_are_rejoined_and_only_when_asked(scenario: Scenario) -> None:
    decision = scenario.decide()
    promotions = _promotions(decision)
    states = scenario.state.by_service()
    for action in decision.plan.actions:
        if not isinstance(action, RejoinRegion):
            continue
        state = states[action.service]
        view = _view(scenario, action.region, action.service)
        assert scenario.policy.service[action.service].auto_rejoin
        assert action.region != state.writer and action.service not in promotions
        assert view is not None and view.role is Role.PRIMARY and view.fenced
        assert _fresh_votes(scenario, action.region, Health.HEALTHY) >= scenario.policy.quorum
        assert state.writer is not None
        assert _fresh_votes(scenario, state.writer, Health.HEALTHY) >= scenario.policy.quorum


def _up(scenario: Scenario, region: str) -> bool:
    return _fresh_votes(scenario, region, Health.HEALTHY) >= scenario.policy.quorum


def _down(scenario: Scenario, region: str) -> bool:
    return _fresh_votes(scenario, region, Health.UNHEALTHY) >= scenario.policy.quorum


def _healthy_subscribers(scenario: Scenario, service: str, writer: str) -> set[str]:
    """UP, unfenced, ready subscribers whose subscription is not disabled."""
    found = set()
    for region in scenario.policy.service[service].regions - {writer}:
        view = _view(scenario, region, service)
        if (_up(scenario, region) and view is not None and view.role is Role.SUBSCRIBER
                and not view.fenced and view.ready and view.subscription_enabled is not False):
            found.add(region)
    return found


def _last_waited_for(scenario: Scenario, service: str, writer: str) -> SyncStandbys:
    """The writer's newest report of its standbys as a primary, of any age (observer name
    breaks ties); never reported: every other region at sync_count."""
    reports = [(o.observed_at, o.observer, r.sync_standbys) for o in scenario.observations
               if o.target == writer for r in o.services
               if r.service == service and r.role is Role.PRIMARY and r.sync_standbys is not None]
    if reports:
        return max(reports, key=lambda report: (report[0], report[1]))[2]
    policy = scenario.policy.service[service]
    return SyncStandbys(tuple(sorted(_standby(service, r) for r in policy.regions - {writer})),
                        policy.sync_count)


@PROPERTY
@given(scenarios())
def test_m_a_sync_promotion_holds_every_acknowledged_commit(scenario: Scenario) -> None:
    """With ANY k of n standbys, any n - k + 1 of them include one that confirmed each
    acknowledged commit: the target has applied at least as far as n - k + 1 fresh ones."""
    states = scenario.state.by_service()
    for service, promotion in _promotions(scenario.decide()).items():
        policy = scenario.policy.service[service]
        if not policy.sync_count:
            assert promotion.sync_standbys is None
            continue
        writer = states[service].writer
        assert writer is not None
        waited = _last_waited_for(scenario, service, writer)
        assert promotion.sync_standbys == waited
        if policy.force or not waited.names:
            continue
        by_name = {_standby(service, r): r for r in policy.regions}
        read = [view.applied_lsn for name in waited.names if name in by_name
                if (view := _view(scenario, by_name[name], service)) is not None
                and view.applied_lsn is not None]
        assert len(read) >= max(1, len(waited.names) - waited.count + 1)
        target = _view(scenario, promotion.region, service)
        assert target is not None and target.applied_lsn is not None
        assert target.applied_lsn >= max(read)


@PROPERTY
@given(scenarios())
def test_n_the_sync_set_never_names_the_writer_or_a_down_or_fenced_region(
        scenario: Scenario) -> None:
    decision = scenario.decide()
    states = scenario.state.by_service()
    for action in decision.plan.actions:
        if not isinstance(action, SetSyncStandbys):
            continue
        state = states[action.service]
        policy = scenario.policy.service[action.service]
        assert decision.has_quorum and not state.paused
        assert action.service not in _promotions(decision)
        by_name = {_standby(action.service, r): r for r in policy.regions}
        if action.region != state.writer:  # a subscriber stops waiting, nothing else
            view = _view(scenario, action.region, action.service)
            assert view is not None and view.role is Role.SUBSCRIBER
            assert action.standbys == SyncStandbys()
            continue
        assert _up(scenario, action.region)
        for name in action.standbys.names:
            region = by_name[name]
            view = _view(scenario, region, action.service)
            assert region != state.writer and not _down(scenario, region)
            assert view is not None and view.role is Role.SUBSCRIBER and not view.fenced
        if action.standbys.names:
            assert action.standbys.quorum and action.standbys.count == policy.sync_count


@PROPERTY
@given(scenarios())
def test_o_a_sync_writer_degrades_only_when_not_strict_and_short_of_healthy_subscribers(
        scenario: Scenario) -> None:
    decision = scenario.decide()
    states = scenario.state.by_service()
    for action in decision.plan.actions:
        if not isinstance(action, SetSyncStandbys) or action.region != states[action.service].writer:
            continue
        policy = scenario.policy.service[action.service]
        healthy = _healthy_subscribers(scenario, action.service, action.region)
        named = {name.removeprefix(f"failover_{action.service}_")
                 for name in action.standbys.names}
        if not policy.sync_count:
            assert not named  # an async service only ever stops waiting
        elif not action.standbys.names:
            assert not policy.sync_strict and len(healthy) < policy.sync_count
        elif len(healthy) >= policy.sync_count or not policy.sync_strict:
            assert named == healthy and len(healthy) >= policy.sync_count


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_p_a_service_is_planned_after_a_plan_only_from_views_read_after_it_ended(
        scenario: Scenario, rng: random.Random) -> None:
    """A plan this controller ran changes databases the fleet has not read since: until it
    has, the service's plan is to wait (a single NoOp); once it has, the plan is the one
    the engine makes without knowing of the earlier plan. Local fences never wait."""
    dated = tuple(replace(o, services=tuple(
        replace(r, seen_at=rng.choice([None, o.observed_at, o.observed_at - 2.0]))
        for r in o.services)) for o in scenario.observations)
    scenario = replace(scenario, observations=dated)
    names = sorted(scenario.policy.priority)
    after_plans = {
        s.name: AfterPlan(NOW - rng.choice([0.5, 3.0, 30.0]),
                          frozenset(rng.sample(names, rng.randint(1, len(names)))))
        for s in scenario.policy.services if rng.random() < 0.7}
    unaware = scenario.decide()
    decision = decide(scenario.observations, scenario.state, scenario.policy, NOW, scenario.me,
                      after_plans=after_plans)
    assert decision.local == unaware.local
    if not decision.has_quorum:
        assert decision.plan == unaware.plan
        return
    states = scenario.state.by_service()
    for service in scenario.policy.service:
        planned = [a for a in decision.plan.actions if a.service == service]
        expected = [a for a in unaware.plan.actions if a.service == service]
        after = after_plans.get(service)
        predating = after is not None and any(
            (view := _view(scenario, region, service)) is not None
            and view.seen_at is not None and view.seen_at < after.ended_at
            for region in after.regions)
        if predating and service in states and states[service].writer in \
                scenario.policy.service[service].regions and not states[service].paused:
            assert len(planned) == 1 and isinstance(planned[0], NoOp), planned
        else:
            assert planned == expected
