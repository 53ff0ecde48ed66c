"""The writer's lease against a new writer's wait: the old writer can never renew past the
moment the new writer waits for, whatever the delays, partitions and promise times."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from failover.engine import Health, Observation
from failover.engine.lease import lease_end, old_lease_ends_by, quorum_th_newest

TTL = 2.0


def seen(observer: str, last_ok_at: float | None, *, health: Health = Health.HEALTHY,
         target: str = "a") -> Observation:
    return Observation(observer, target, health, 1, 100.0, last_ok_at=last_ok_at)


def test_the_lease_runs_to_the_quorum_th_newest_vouching_plus_the_ttl() -> None:
    observations = [seen("a", 99.0), seen("b", 97.0), seen("c", 95.0)]
    assert lease_end(observations, "a", 2, TTL) == 97.0 + TTL
    assert lease_end(observations, "a", 3, TTL) == 95.0 + TTL


def test_unhealthy_or_promised_or_never_ok_observers_do_not_vouch() -> None:
    observations = [seen("a", 99.0), seen("b", 97.0, health=Health.UNHEALTHY),
                    seen("c", 95.0), seen("d", None), seen("b", 98.0, target="c")]
    assert lease_end(observations, "a", 2, TTL) == 95.0 + TTL
    assert lease_end(observations, "a", 2, TTL, void=frozenset({"c"})) == -math.inf
    assert lease_end(observations, "a", 3, TTL) == -math.inf


def test_the_new_writer_waits_for_the_quorum_th_newest_report_silence_counting_as_for_ever(
) -> None:
    observers = ["a", "b", "c"]
    assert old_lease_ends_by({"b": 90.0, "c": 91.0}, observers, 2, TTL) == 91.0 + TTL
    assert old_lease_ends_by({"a": 99.0, "b": 90.0, "c": 91.0}, observers, 2, TTL) == 91.0 + TTL
    assert old_lease_ends_by({"b": None, "c": None}, observers, 2, TTL) == -math.inf
    assert old_lease_ends_by({"b": 90.0}, observers, 2, TTL) == math.inf
    assert quorum_th_newest([], 1) == -math.inf


OBSERVERS = ("a", "b", "c", "d", "e")


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, dict[str, list[tuple[float, float | None, bool]]],
                                        dict[str, float], list[dict[str, int]]]:
    """Per observer a timeline of what it sends about the old writer `a`: (sent at, last_ok_at,
    healthy); when it promises the new epoch (never: absent); and the old writer's renewals,
    each a choice of which message of each observer it holds (delays and losses)."""
    n = draw(st.integers(3, 5))
    names = OBSERVERS[:n]
    quorum = draw(st.integers(n // 2 + 1, n))
    timelines: dict[str, list[tuple[float, float | None, bool]]] = {}
    for name in names:
        times = sorted(draw(st.lists(st.floats(0, 100), min_size=1, max_size=6)))
        last_ok: float | None = None
        line = []
        for at in times:
            healthy = draw(st.booleans())
            if healthy and draw(st.booleans()):
                last_ok = at  # a probe that succeeded just now moves it
            line.append((at, last_ok, healthy))
        timelines[name] = line
    promised = {name: draw(st.floats(0, 100)) for name in names if draw(st.booleans())}
    renewals = draw(st.lists(st.fixed_dictionaries(
        {name: st.integers(-1, 5) for name in names}), max_size=4))
    return quorum, timelines, promised, renewals


@settings(max_examples=400, deadline=None)
@given(histories())
def test_no_renewal_outlasts_the_wait_of_whoever_claimed_the_next_epoch(
        history: tuple[int, dict[str, list[tuple[float, float | None, bool]]],
                       dict[str, float], list[dict[str, int]]]) -> None:
    quorum, timelines, promised, renewals = history
    names = list(timelines)
    if len(promised) < quorum:
        return  # no majority promised: nobody may promote
    # Each promising observer reports how far it vouched at the moment it promised.
    reports: dict[str, float | None] = {}
    for name, at in promised.items():
        before = [ok for sent, ok, _ in timelines[name] if sent <= at]
        reports[name] = before[-1] if before else None
    waits_until = old_lease_ends_by(reports, names, quorum, TTL)
    for choice in renewals:
        held: list[Observation] = []
        void = set()
        for name in names:
            index = choice[name]
            if index < 0 or index >= len(timelines[name]):
                continue  # nothing from this observer reached the old writer
            sent, last_ok, healthy = timelines[name][index]
            if name in promised and sent > promised[name]:
                void.add(name)  # its messages after the promise say so
            held.append(Observation(name, "a", Health.HEALTHY if healthy else Health.UNHEALTHY,
                                    1, sent, last_ok_at=last_ok))
        assert lease_end(held, "a", quorum, TTL, void=frozenset(void)) <= waits_until
