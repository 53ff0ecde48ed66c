"""The threshold state machine: seed semantics, example by example and as a property."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.health.thresholds import HealthState, TargetHealth, Thresholds, observe

H, U, UNKNOWN = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN


def replay(results: Iterable[bool], thresholds: Thresholds,
           start: TargetHealth | None = None) -> list[HealthState]:
    health = start or TargetHealth()
    states = []
    for ok in results:
        health = observe(health, ok, thresholds)
        states.append(health.state)
    return states


def test_an_unjudged_target_is_unknown() -> None:
    assert TargetHealth().state is UNKNOWN
    assert TargetHealth().consecutive == 0


def test_healthy_threshold_successes_make_an_unknown_target_healthy() -> None:
    assert replay([True, True], Thresholds(healthy=2, unhealthy=3)) == [UNKNOWN, H]


def test_unhealthy_threshold_failures_make_an_unknown_target_unhealthy() -> None:
    assert replay([False] * 3, Thresholds(healthy=2, unhealthy=3)) == [UNKNOWN, UNKNOWN, U]


def test_a_single_failure_does_not_condemn_a_healthy_target() -> None:
    states = replay([True, True, False, False, True, False, False, False],
                    Thresholds(healthy=2, unhealthy=3))
    assert states == [UNKNOWN, H, H, H, H, H, H, U]


def test_a_single_success_does_not_clear_an_unhealthy_target() -> None:
    states = replay([False, True, False, True, True], Thresholds(healthy=2, unhealthy=1))
    assert states == [U, U, U, U, H]


def test_thresholds_of_one_follow_every_result() -> None:
    results = [True, False, False, True, False, True, True]
    expected = [H if ok else U for ok in results]
    assert replay(results, Thresholds(healthy=1, unhealthy=1)) == expected


def test_consecutive_counts_the_current_run_only() -> None:
    health = TargetHealth()
    counts = []
    for ok in [True, True, True, False, False, True]:
        health = observe(health, ok, Thresholds(healthy=2, unhealthy=3))
        counts.append(health.consecutive)
    assert counts == [1, 2, 3, 1, 2, 1]


@pytest.mark.parametrize("healthy, unhealthy", [(0, 1), (1, 0), (-1, 3)])
def test_thresholds_below_one_are_refused(healthy: int, unhealthy: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Thresholds(healthy, unhealthy)


def test_every_short_sequence_against_the_reference() -> None:
    # Exhaustive for sequences up to length 8 and thresholds 1..4.
    for healthy, unhealthy in itertools.product(range(1, 5), repeat=2):
        thresholds = Thresholds(healthy, unhealthy)
        for length in range(9):
            for results in itertools.product([True, False], repeat=length):
                got = replay(results, thresholds)
                want = [reference_state(results[: i + 1], thresholds) for i in range(length)]
                assert got == want, (results, thresholds)


def reference_state(results: Iterable[bool], thresholds: Thresholds) -> HealthState:
    """The state the seed describes, computed from runs rather than step by step:
    the kind of the last run that reached its threshold, or unknown if none did."""
    state = UNKNOWN
    for ok, run in itertools.groupby(results):
        length = len(list(run))
        if length >= (thresholds.healthy if ok else thresholds.unhealthy):
            state = H if ok else U
    return state


@given(results=st.lists(st.booleans(), max_size=60),
       healthy=st.integers(1, 6), unhealthy=st.integers(1, 6))
def test_state_is_the_kind_of_the_last_run_that_reached_its_threshold(
        results: list[bool], healthy: int, unhealthy: int) -> None:
    thresholds = Thresholds(healthy, unhealthy)
    states = replay(results, thresholds)
    assert (states[-1] if states else UNKNOWN) == reference_state(results, thresholds)


@given(results=st.lists(st.booleans(), min_size=1, max_size=60),
       healthy=st.integers(1, 6), unhealthy=st.integers(1, 6))
def test_a_state_changes_only_when_a_run_reaches_exactly_its_threshold(
        results: list[bool], healthy: int, unhealthy: int) -> None:
    thresholds = Thresholds(healthy, unhealthy)
    health = TargetHealth()
    for ok in results:
        after = observe(health, ok, thresholds)
        if after.state != health.state:
            assert after.state == (H if ok else U)
            assert after.consecutive == (healthy if ok else unhealthy)
        health = after
