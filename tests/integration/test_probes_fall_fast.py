"""Fall fast, rise slow, against real servers: after a failure a check re-probes at its
`fast_interval` until it settles; a blip shorter than (unhealthy_threshold - 1) x
fast_interval never turns it unhealthy; a postgres check whose server closes the kept
session probes again at once instead of at its next interval."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from failover.health.postgres import PostgresProbe
from failover.health.probe import ProbeResult
from failover.health.scheduler import ProbeScheduler, Transition
from failover.health.targets import ProbeTarget
from failover.health.tcp import TcpProbe
from failover.health.thresholds import HealthState
from failover.topology import PostgresCheck, TcpCheck
from tests.support.loopback import allocate_block
from tests.support.pg import SERVICE, ServiceDb

pytestmark = pytest.mark.integration

PATIENCE = 30.0


async def until(condition: object, what: str, patience: float = PATIENCE) -> None:
    assert callable(condition)
    deadline = time.monotonic() + patience
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Seen:
    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self.results: list[tuple[float, bool]] = []

    def result(self, target: ProbeTarget, result: ProbeResult) -> None:
        self.results.append((time.monotonic(), result.ok))

    def state(self) -> HealthState | None:
        return self.transitions[-1].current if self.transitions else None


class Port:
    """A real TCP server on (host, port) that can go away and come back."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.server = await asyncio.start_server(accept, self.host, self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@contextlib.asynccontextmanager
async def checked_port(check: TcpCheck, seen: Seen) -> AsyncIterator[Port]:
    """The port open and its check's scheduler running, healthy before the body starts."""
    port = Port(check.host, check.port)
    await port.open()
    scheduler = ProbeScheduler([ProbeTarget("alpha", check, TcpProbe(check))],
                               seen.transitions.append, on_result=seen.result)
    scheduler.start()
    try:
        await until(lambda: seen.state() is HealthState.HEALTHY, "healthy")
        yield port
    finally:
        await scheduler.stop()
        await port.close()


def test_after_a_failure_the_check_reprobes_fast_then_rises_at_its_interval() -> None:
    check = TcpCheck(kind="tcp", name="port", host=allocate_block().address(1), port=6433,
                     interval=2.0, timeout=0.1, fast_interval=0.1, healthy_threshold=2,
                     unhealthy_threshold=3)
    seen = Seen()

    async def scenario() -> None:
        async with checked_port(check, seen) as port:
            await port.close()
            await until(lambda: seen.state() is HealthState.UNHEALTHY, "unhealthy")
            failing = [at for at, ok in seen.results if not ok]
            # Three failures in a row at the fast cadence, not at the 2 s interval.
            assert len(failing) == 3 and failing[-1] - failing[0] < 1.0, failing
            await port.open()
            back_at = time.monotonic()
            await until(lambda: seen.state() is HealthState.HEALTHY, "healthy again")
            rising = [at for at, ok in seen.results if ok and at >= back_at]
            # Rise slow: the second success a whole interval after the first.
            assert len(rising) == 2 and rising[1] - rising[0] > 1.5, rising

    asyncio.run(scenario())


def test_blips_shorter_than_the_fast_run_never_turn_the_check_unhealthy() -> None:
    # (3 - 1) x 0.4 s: an outage must last 0.8 s to be seen three times in a row.
    check = TcpCheck(kind="tcp", name="port", host=allocate_block().address(1), port=6434,
                     interval=0.5, timeout=0.1, fast_interval=0.4, min_outage=0.8,
                     healthy_threshold=1, unhealthy_threshold=3)
    seen = Seen()

    async def scenario() -> None:
        async with checked_port(check, seen) as port:
            for _ in range(8):
                await port.close()
                await asyncio.sleep(0.2)  # the blip
                await port.open()
                await asyncio.sleep(0.9)

    asyncio.run(scenario())
    assert any(not ok for _, ok in seen.results), "no probe ever met a blip: the test proves nothing"
    assert [t.current for t in seen.transitions] == [HealthState.HEALTHY]


def test_a_killed_server_is_probed_again_at_once_not_at_the_next_interval(
        service_db: ServiceDb) -> None:
    server = service_db.server("alpha")
    check = PostgresCheck(kind="postgres", name="db", service=SERVICE, interval=8.0,
                          timeout=1.0, fast_interval=0.2, healthy_threshold=1,
                          unhealthy_threshold=2)
    probe = PostgresProbe(check, service_db.db.endpoints["alpha"], service_db.service)
    seen = Seen()

    async def scenario() -> float:
        scheduler = ProbeScheduler([ProbeTarget("alpha", check, probe)],
                                   seen.transitions.append, on_result=seen.result)
        scheduler.start()
        try:
            await until(lambda: seen.state() is HealthState.HEALTHY, "healthy", 20.0)
            killed_at = time.monotonic()
            server.kill()
            await until(lambda: seen.state() is HealthState.UNHEALTHY, "unhealthy", 20.0)
            return time.monotonic() - killed_at
        finally:
            await scheduler.stop()
            await probe.close()

    try:
        took = asyncio.run(scenario())
    finally:
        server.start()
    # The next scheduled probe was up to 8 s away; the closed session started the run.
    assert took < 3.0, f"unhealthy {took:.2f} s after the kill"
