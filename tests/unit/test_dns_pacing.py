"""The client-side token bucket and RFC 1982 serial arithmetic, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.dns.ratelimit import TokenBucket
from failover.dns.wire import serial_reached


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_spread_at_the_rate_after_the_saved_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=2, clock=clock)

    waits = [bucket.reserve() for _ in range(5)]

    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])


def test_an_idle_bucket_saves_no_more_than_its_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=1, clock=clock)
    bucket.reserve()
    clock.now = 60.0

    assert [bucket.reserve() for _ in range(2)] == [0.0, 0.1]


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=200),
       st.sampled_from([1.0, 5.0, 20.0]), st.sampled_from([1.0, 3.0]))
def test_no_one_second_window_gets_more_than_rate_plus_capacity(
        arrivals: list[float], rate: float, capacity: float) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=rate, capacity=capacity, clock=clock)
    sent = []
    for arrival in sorted(arrivals):
        clock.now = arrival
        sent.append(arrival + bucket.reserve())

    for start in sent:
        in_window = sum(start <= other < start + 1.0 for other in sent)
        assert in_window <= rate + capacity


def test_serials_compare_across_the_wrap_at_two_to_the_32() -> None:
    assert serial_reached(5, 5)
    assert serial_reached(6, 5)
    assert not serial_reached(4, 5)
    assert serial_reached(1, 2**32 - 1)  # wrapped past the target
    assert not serial_reached(2**32 - 1, 1)
