"""What every probe kind shares: the result, the Protocol, and the time bound.

A probe answers one question about one target ("does it answer, and how?").
The bound is enforced here, around the whole attempt, so that a kind cannot
forget it: a probe that overruns its `timeout` is a failure with the reason
`timeout`, whatever it was doing (resolving, connecting, reading).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

TIMEOUT_REASON = "timeout"

# How late our own timeout may fire before the timeout says more about this
# process (a starved event loop) than about the target.
LATE_TIMER_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a kind decides about one attempt, before timing is added."""

    ok: bool
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    latency_s: float
    reason: str
    # Kind-specific facts worth keeping, e.g. the replication positions a
    # postgres probe read; JSON-serialisable.
    details: Mapping[str, Any] = field(default_factory=dict)
    # False when the failure may be ours: the probe timed out while this
    # process's event loop ran late, so an answer may have been waiting
    # unread. Such a result must not count against the target.
    conclusive: bool = True


class Probe(Protocol):
    async def run(self) -> ProbeResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class SessionProbe(Protocol):
    """A probe that keeps a session to its target between runs and can say when the target
    closed it: an event worth probing again for at once."""

    def on_close(self, callback: Callable[[], None]) -> None: ...


def describe_error(exc: BaseException) -> str:
    """A one-line reason for an unexpected failure, readable at 3 a.m."""
    # Client libraries wrap the socket error (aiohttp: "Connect call failed
    # (host, port)"); the underlying errno says more.
    while isinstance(exc.__cause__, OSError):
        exc = exc.__cause__
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class BoundedProbe(ABC):
    """A probe whose `attempt` is timed and cut off at `timeout`.

    Subclasses implement `attempt`; an exception it raises is a failure whose
    reason is the error, so a kind only maps the errors it can explain better.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    @abstractmethod
    async def attempt(self) -> Outcome: ...

    async def close(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release what the probe keeps between runs; nothing by default."""

    async def run(self) -> ProbeResult:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        bound = asyncio.timeout(self.timeout)
        try:
            async with bound:
                outcome = await self.attempt()
        except TimeoutError:
            deadline = bound.when()
            late = loop.time() - deadline if deadline is not None else 0.0
            if late > LATE_TIMER_TOLERANCE:
                return ProbeResult(False, time.perf_counter() - started,
                                   f"{TIMEOUT_REASON}, inconclusive: this process ran "
                                   f"{late * 1000:.0f} ms late (overloaded)", conclusive=False)
            outcome = Outcome(False, TIMEOUT_REASON)
        except Exception as exc:  # a probe reports failures, it never raises them
            outcome = Outcome(False, describe_error(exc))
        return ProbeResult(outcome.ok, time.perf_counter() - started, outcome.reason,
                           outcome.details)
