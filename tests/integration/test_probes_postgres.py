"""The postgres probe against real servers: facts, readiness, a kept session, restarts, hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import pytest

from failover.health.postgres import SCHEMA_MISSING_REASON, PostgresProbe
from failover.health.probe import TIMEOUT_REASON, ProbeResult
from failover.lab.postgres import PgServer
from failover.topology import PostgresCheck, PostgresEndpoint, Service
from tests.support.pg import SERVICE, Cluster, ServiceDb

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
SLACK = 3.0
BARE_SERVICE = Service(name=SERVICE, database="bare", writer_record="shop.lab.test.")


def make_probe(sdb: ServiceDb, region: str,
               purpose: Literal["liveness", "readiness", "info"] = "liveness") -> PostgresProbe:
    check = PostgresCheck(kind="postgres", name="db", service=SERVICE, interval=2,
                          timeout=TIMEOUT, purpose=purpose)
    return PostgresProbe(check, sdb.db.endpoints[region], sdb.service)


async def run_until_ok(probe: PostgresProbe, *, within: float = 30.0) -> ProbeResult:
    deadline = time.monotonic() + within
    while True:
        result = await probe.run()
        if result.ok or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


def backend_pid(probe: PostgresProbe) -> int | None:
    conn = probe._conn
    return None if conn is None or conn.closed else conn.info.backend_pid


@contextmanager
def hung(server: PgServer) -> Iterator[None]:
    """SIGSTOP the postmaster and every backend: sockets stay open, nothing answers."""
    assert server.pid is not None
    children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True,
                              check=False, timeout=10).stdout.split()
    victims = [server.pid, *map(int, children)]
    for pid in victims:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in victims:
            os.kill(pid, signal.SIGCONT)


def test_primary_and_subscriber_report_their_replication_facts(replicated: ServiceDb) -> None:
    async def scenario() -> tuple[ProbeResult, ProbeResult]:
        primary, subscriber = make_probe(replicated, "alpha"), make_probe(replicated, "bravo",
                                                                          "readiness")
        try:
            return await primary.run(), await run_until_ok(subscriber)
        finally:
            await primary.close()
            await subscriber.close()

    primary, subscriber = asyncio.run(scenario())
    assert primary.ok, primary.reason
    assert primary.reason.startswith("primary (epoch 1)")
    assert primary.details["role"] == "primary" and primary.details["fenced"] is False
    assert "publisher_conninfo" not in primary.details

    assert subscriber.ok, subscriber.reason
    assert subscriber.reason.startswith("subscriber (epoch 1), read-only, lag ")
    facts = subscriber.details
    assert facts["role"] == "subscriber" and facts["worker_running"] is True
    assert facts["subscription_enabled"] is True and facts["heartbeat_region"] == "alpha"
    assert isinstance(facts["remote_lsn_bytes"], int) and facts["remote_lsn"].count("/") == 1
    assert 0 <= facts["lag_seconds"] <= replicated.service.max_lag_seconds
    assert "publisher_conninfo" not in facts


def test_readiness_fails_on_a_fenced_node_and_on_an_unreplicated_one(service_db: ServiceDb) -> None:
    with service_db.admin("alpha") as conn:
        conn.execute("UPDATE failover.node_state SET fenced = true")

    async def scenario() -> tuple[ProbeResult, ProbeResult, ProbeResult]:
        probes = [make_probe(service_db, "alpha", "readiness"),
                  make_probe(service_db, "bravo", "readiness"),
                  make_probe(service_db, "bravo", "liveness")]
        try:
            fenced, unknown, alive = [await probe.run() for probe in probes]
            return fenced, unknown, alive
        finally:
            for probe in probes:
                await probe.close()

    fenced, unknown, alive = asyncio.run(scenario())
    assert not fenced.ok and fenced.reason == "not ready: fenced"
    assert not unknown.ok
    assert unknown.reason == "not ready: role is unknown, neither primary nor subscriber"
    assert alive.ok and alive.reason == "unknown (epoch 0)"


def test_a_database_without_the_schema_is_alive_but_not_ready(pg_cluster: Cluster) -> None:
    server = pg_cluster.servers["alpha"]
    dbname = f"bare_{uuid.uuid4().hex[:8]}"
    with server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    endpoint = PostgresEndpoint(host=server.host, port=server.port, dbname=dbname,
                                user="postgres")

    async def scenario() -> list[ProbeResult]:
        results = []
        for purpose in ("liveness", "readiness"):
            check = PostgresCheck(kind="postgres", name="db", service=SERVICE, interval=2,
                                  timeout=TIMEOUT, purpose=purpose)
            probe = PostgresProbe(check, endpoint, BARE_SERVICE)
            results.append(await probe.run())
            await probe.close()
        return results

    try:
        alive, ready = asyncio.run(scenario())
    finally:
        with server.connect() as conn:
            conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    assert alive.ok and alive.reason == SCHEMA_MISSING_REASON
    assert not ready.ok and ready.reason == f"not ready: {SCHEMA_MISSING_REASON}"


def test_the_session_is_kept_and_survives_a_server_restart(service_db: ServiceDb) -> None:
    server = service_db.server("alpha")

    async def scenario() -> None:
        probe = make_probe(service_db, "alpha")
        try:
            first = await probe.run()
            pid = backend_pid(probe)
            second = await probe.run()
            assert first.ok and second.ok, (first.reason, second.reason)
            assert backend_pid(probe) == pid, "the probe opened a new session for each run"

            server.stop()
            down = await probe.run()
            assert not down.ok
            assert down.reason == "cannot connect: Connection refused", down.reason

            server.start()
            back = await probe.run()
            assert back.ok, back.reason
            assert backend_pid(probe) not in (None, pid)

            # A restart between two probes: the dead kept session is replaced in the same run.
            server.stop()
            server.start()
            after_restart = await probe.run()
            assert after_restart.ok, after_restart.reason
        finally:
            await probe.close()

    asyncio.run(scenario())


def test_a_hung_server_is_a_timeout_within_the_bound_and_recovers(service_db: ServiceDb) -> None:
    server = service_db.server("alpha")

    async def scenario() -> None:
        probe = make_probe(service_db, "alpha")
        try:
            assert (await probe.run()).ok
            with hung(server):
                on_kept_session = await probe.run()
                on_new_session = await probe.run()
            for result in (on_kept_session, on_new_session):
                assert not result.ok
                assert result.reason.startswith(TIMEOUT_REASON)
                assert TIMEOUT <= result.latency_s < TIMEOUT + SLACK
            recovered = await run_until_ok(probe, within=10)
            assert recovered.ok, recovered.reason
        finally:
            await probe.close()

    asyncio.run(scenario())
