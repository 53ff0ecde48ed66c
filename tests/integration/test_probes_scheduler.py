"""The probe scheduler against a real TCP server that goes away and comes back."""

from __future__ import annotations

import asyncio

import pytest

from failover.health.scheduler import ProbeScheduler, Transition
from failover.health.targets import ProbeTarget
from failover.health.tcp import TcpProbe
from failover.health.thresholds import HealthState
from failover.topology import TcpCheck
from tests.support.loopback import allocate_block

pytestmark = pytest.mark.integration

PATIENCE = 30.0


async def wait_for_transitions(seen: list[Transition], count: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while len(seen) < count:
        assert loop.time() < deadline, f"only {len(seen)} of {count} transitions: {seen}"
        await asyncio.sleep(0.05)


def test_a_server_going_away_turns_unhealthy_and_back() -> None:
    host, port = allocate_block().address(1), 6432
    check = TcpCheck(kind="tcp", name="pgbouncer", host=host, port=port, interval=0.2,
                     timeout=0.1, healthy_threshold=2, unhealthy_threshold=3)
    seen: list[Transition] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(accept, host, port)
        scheduler = ProbeScheduler([ProbeTarget("alpha", check, TcpProbe(check))], seen.append)
        scheduler.start()
        try:
            await wait_for_transitions(seen, 1)
            server.close()
            await server.wait_closed()
            await wait_for_transitions(seen, 2)
            server = await asyncio.start_server(accept, host, port)
            await wait_for_transitions(seen, 3)
        finally:
            await scheduler.stop()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
    assert [(t.previous, t.current) for t in seen] == [
        (HealthState.UNKNOWN, HealthState.HEALTHY),
        (HealthState.HEALTHY, HealthState.UNHEALTHY),
        (HealthState.UNHEALTHY, HealthState.HEALTHY)]
    assert seen[1].result.reason == "connection refused"
    assert seen[1].consecutive == 3
