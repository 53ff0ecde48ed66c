"""One region of `lab up --tls`, without the lab: its PostgreSQL server made as `lab up`
makes it (`issue_tls`, then `init_server` with the region's files, the binaries of
`tls_bindir`), on a loopback block of its own, never the lab's addresses.

The lab's clients (`LabState.pg_tls()`: the pinned writers, the checker, the drill) reach
it with verify-full against the lab's CA, and a connection without TLS is refused. The
controllers' connections and the subscriptions use the topology `lab up --tls` writes:
the server's own user reads the CA to verify the writer, as a subscriber's server does.
The region's certificate also serves the controller's API, which the lab's clients verify
with `LabState.api_tls()`. The whole lab runs in the chaos suite (FAILOVER_CHAOS_TLS=1).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from failover.controller.client import fleet_statuses
from failover.errors import UserError
from failover.lab import build
from failover.lab import state as lab
from failover.lab.pki import Authority
from failover.lab.postgres import PgServer, init_server, tls_bindir
from failover.lab.unprivileged import server_user
from failover.lab.writers import Session
from failover.topology import Topology, load_topology
from tests.support.cli import StatusOnly
from tests.support.loopback import allocate_block
from tests.support.pg import wait_until
from tests.support.skipping import skip_loudly

pytestmark = pytest.mark.integration

REGION = "us-east-1"  # the region whose server runs; the topology names the lab's three


@dataclass(frozen=True)
class Region:
    server: PgServer
    state: lab.LabState  # what the lab's clients read: its folder, and tls
    topo: Topology  # what `lab up --tls` writes, with this block's addresses


@pytest.fixture(scope="module")
def region() -> Iterator[Region]:
    try:
        bindir = tls_bindir()
    except UserError as exc:
        skip_loudly("a lab-style PostgreSQL over TLS", str(exc))
    block = allocate_block()
    addresses = {name: block.address(i) for i, name in enumerate(lab.REGIONS, start=1)}
    # The lab's folder: its servers' users pass through it to their files and the CA.
    lab_dir = Path(tempfile.mkdtemp(prefix="failover-lab-tls-"))
    lab_dir.chmod(0o755)
    user = server_user()
    try:
        files = build.issue_tls(lab_dir, addresses, dict.fromkeys(addresses, user))
        server = init_server(lab_dir / "pg", REGION, addresses[REGION], port=lab.PG_PORT,
                             bindir=bindir, run_as=user, tls=files[REGION])
        server.start()
        try:
            (lab_dir / "fleet.key").write_text("00" * 32 + "\n")
            (lab_dir / "tsig.key").write_text(
                'key "lab-key" { algorithm hmac-sha256; secret "AAAA"; };\n')
            topo = load_topology(build._write_topology(
                lab_dir, addresses, key_file=lab_dir / "fleet.key",
                tsig_file=lab_dir / "tsig.key", tsig_name="lab-key",
                coordination={"backend": "peers"}, rejoin="auto", durability="async",
                sync_count=1, sync_strict=False, tls=True))
            state = lab.LabState.model_construct(dir=str(lab_dir), tls=True)
            yield Region(server, state, topo)
        finally:
            server.stop()
    finally:
        shutil.rmtree(lab_dir, ignore_errors=True)


def _connect(region: Region, dbname: str = "postgres",
             **params: Any) -> psycopg.Connection[tuple[Any, ...]]:
    """A superuser session as the checker and the drill open one."""
    return psycopg.connect(host=region.server.host, port=lab.PG_PORT, dbname=dbname,
                           user=lab.SUPERUSER, connect_timeout=3, autocommit=True,
                           **{**region.state.pg_tls(), **params})


def _own_tls(conn: psycopg.Connection[tuple[Any, ...]]) -> object:
    row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None
    return row[0]


def test_the_lab_clients_connect_over_tls_verified_with_the_lab_ca(region: Region) -> None:
    assert region.state.pg_tls()["sslmode"] == "verify-full"
    with _connect(region) as conn:
        assert _own_tls(conn) is True

    # The pinned writers' and the drill's session, with what they pass it.
    session = Session("postgres", lab.SUPERUSER, timeout=5, application_name="test",
                      tls=region.state.pg_tls())

    async def ssl_in_use() -> object:
        async def ask(conn: psycopg.AsyncConnection[Any]) -> object:
            cursor = await conn.execute(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            row = await cursor.fetchone()
            return None if row is None else row[0]
        try:
            return await session.run(region.server.host, ask)
        finally:
            await session.close()

    assert asyncio.run(ssl_in_use()) is True


def test_a_connection_without_tls_is_refused(region: Region) -> None:
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        _connect(region, sslmode="disable").close()


def test_a_ca_that_did_not_sign_the_server_is_refused(region: Region, tmp_path: Path) -> None:
    stranger = Authority(tmp_path / "stranger", "stranger")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(region, sslrootcert=str(stranger.cert_file)).close()


def test_a_subscription_verifies_the_writer_with_the_ca_the_lab_topology_names(
        region: Region) -> None:
    """The topology's endpoint, as the controllers connect with it and as a subscriber's
    server does: here the server subscribes to a database of its own, so its user reads the
    CA (`subscription_sslrootcert`) and its libpq checks the certificate names the address."""
    endpoint = region.topo.regions[REGION].postgres[lab.SERVICE]
    with _connect(region) as conn:
        conn.execute(f'CREATE DATABASE "{lab.SERVICE}"')
        conn.execute("CREATE DATABASE copy")
    with psycopg.connect(endpoint.conninfo(), autocommit=True) as writer:  # the controllers'
        assert _own_tls(writer) is True
        writer.execute("CREATE TABLE t (id int PRIMARY KEY)")
        writer.execute("CREATE PUBLICATION p FOR TABLE t")
        # Within one server the slot cannot be made by CREATE SUBSCRIPTION itself.
        writer.execute("SELECT pg_create_logical_replication_slot('copy', 'pgoutput')")
        writer.execute("INSERT INTO t VALUES (1)")
    conninfo = endpoint.conninfo_for_subscriber(endpoint)
    assert "sslmode=verify-full" in conninfo
    with _connect(region, "copy") as subscriber:
        subscriber.execute("CREATE TABLE t (id int PRIMARY KEY)")
        subscriber.execute(sql.SQL("CREATE SUBSCRIPTION copy CONNECTION {} PUBLICATION p "
                                   "WITH (create_slot = false, slot_name = 'copy')")
                           .format(sql.Literal(conninfo)))
        try:
            wait_until(lambda: subscriber.execute("SELECT count(*) FROM t").fetchone() == (1,),
                       what="the subscription's initial copy over TLS")
            with _connect(region) as conn:
                walsenders = conn.execute(
                    "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                    "WHERE a.backend_type = 'walsender'").fetchall()
            assert walsenders and all(row[0] is True for row in walsenders)
        finally:
            subscriber.execute("ALTER SUBSCRIPTION copy DISABLE")
            subscriber.execute("ALTER SUBSCRIPTION copy SET (slot_name = NONE)")
            subscriber.execute("DROP SUBSCRIPTION copy")


def test_the_region_certificate_serves_the_api_to_the_lab_clients(region: Region) -> None:
    """What the region's controller serves with (`api_server_tls`), and what `wait_healthy`,
    `service_view`, the audit and the drill verify it with (`LabState.api_tls()`)."""
    context = region.topo.api_server_tls(REGION)
    assert context is not None
    handler = type("StatusOfTheRegion", (StatusOnly,), {"region": REGION})
    httpd = ThreadingHTTPServer((region.server.host, 0), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://{region.server.host}:{httpd.server_address[1]}"
        answer = fleet_statuses({REGION: url}, tls=region.state.api_tls())[REGION]
        assert isinstance(answer, dict) and answer["region"] == REGION
        # Not with the system's CAs: the lab's CA is its own.
        refused = fleet_statuses({REGION: url}, timeout=2)[REGION]
        assert isinstance(refused, str) and "certificate verify failed" in refused
    finally:
        httpd.shutdown()
        httpd.server_close()
