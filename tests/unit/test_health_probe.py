"""The time bound every probe kind shares, and how failures become reasons."""

from __future__ import annotations

import asyncio
import time

from failover.health.probe import TIMEOUT_REASON, BoundedProbe, Outcome, describe_error


class Attempt(BoundedProbe):
    def __init__(self, timeout: float, *, block: float = 0.0, wait: float = 0.0,
                 error: Exception | None = None) -> None:
        super().__init__(timeout)
        self.block, self.wait, self.error = block, wait, error

    async def attempt(self) -> Outcome:
        if self.block:
            time.sleep(self.block)  # holds the event loop, as an overloaded process would
        if self.wait:
            await asyncio.sleep(self.wait)
        if self.error is not None:
            raise self.error
        return Outcome(True, "fine", {"answer": 42})


def test_a_successful_attempt_is_timed_and_keeps_its_details() -> None:
    result = asyncio.run(Attempt(1.0).run())
    assert result.ok and result.reason == "fine" and result.details == {"answer": 42}
    assert result.conclusive and result.latency_s >= 0


def test_an_attempt_that_overruns_is_a_timeout_failure() -> None:
    result = asyncio.run(Attempt(0.05, wait=30).run())
    assert not result.ok
    assert result.reason.startswith(TIMEOUT_REASON)
    assert result.latency_s >= 0.05


def test_a_timeout_that_fires_late_is_inconclusive() -> None:
    # The loop is held for 300 ms, so the 50 ms timeout fires 250 ms late:
    # an answer could have been waiting unread, so the target is not to blame.
    result = asyncio.run(Attempt(0.05, block=0.3, wait=30).run())
    assert not result.ok and not result.conclusive
    assert result.reason.startswith(f"{TIMEOUT_REASON}, inconclusive: this process ran ")
    assert result.reason.endswith(" ms late (overloaded)")


def test_an_exception_is_a_failure_with_the_error_as_reason() -> None:
    result = asyncio.run(Attempt(1.0, error=ValueError("bad answer\nsecond line")).run())
    assert not result.ok and result.conclusive
    assert result.reason == "ValueError: bad answer"


def test_socket_errors_are_described_by_their_cause() -> None:
    wrapper = RuntimeError("Connect call failed ('10.0.0.1', 80)")
    wrapper.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert describe_error(wrapper) == "connection refused"
    assert describe_error(OSError(113, "No route to host")) == "no route to host"
