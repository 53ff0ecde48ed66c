"""PostgreSQL over TLS: servers with `ssl = on` and certificates from a throwaway CA.

The controller's and the CLI's connections (`PostgresEndpoint.conninfo`) verify the server
with `sslmode = verify-full` and present a client certificate; a CA that did not sign the
server's certificate is refused with libpq's reason. The subscriptions `db replicate` makes
carry the writer's sslmode and the subscriber's own files (paths on the subscriber's server),
and replicate over TLS: the writer's walsenders show each subscriber's client certificate in
`pg_stat_ssl`. The liveness ping answers for a TLS server without making it log.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from failover.errors import FailoverError
from failover.health.postgres import PostgresProbe
from failover.lab.pki import Authority
from failover.postgres.connection import Unreachable, postmaster_answers
from failover.postgres.names import standby_name
from failover.postgres.replicate import replication_steps
from failover.postgres.replication import subscription_conninfo
from failover.postgres.steps import run_steps
from failover.topology import PostgresCheck, PostgresEndpoint
from tests.support.pg import (
    SERVICE,
    Cluster,
    ServiceDb,
    fresh_service_db,
    replicate_from_alpha,
    running_cluster,
    tls_bindir,
    wait_until,
    write_rows,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TlsLab:
    cluster: Cluster
    ca: Authority  # signed the servers' certificates and every client certificate
    stranger: Authority  # signed nothing the servers hold
    client: tuple[Path, Path]  # the controller's certificate (CN postgres) and key
    # Each region's subscription certificate and key, owned by the servers' user.
    subscriber: dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def lab() -> Iterator[TlsLab]:
    bindir = tls_bindir("PostgreSQL over TLS (verify-full connections and subscriptions)")
    # The servers read the CA and their subscriptions' files: a folder they can reach.
    folder = Path(tempfile.mkdtemp(prefix="failover-pki-"))
    folder.chmod(0o755)
    try:
        ca = Authority(folder)
        with running_cluster(bindir, tls=ca) as cluster:
            subscriber = {}
            for name, server in cluster.servers.items():
                files = ca.issue(f"subscriber-{name}", common_name=f"{name} subscriber")
                for path in files:
                    server.run_as.chown(path)
                subscriber[name] = files
            yield TlsLab(cluster, ca, Authority(folder / "stranger", "stranger"),
                         ca.issue("controller", common_name="postgres"), subscriber)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def sdb(lab: TlsLab) -> Iterator[ServiceDb]:
    with fresh_service_db(lab.cluster) as service_db:
        yield service_db


def use_tls(sdb: ServiceDb, lab: TlsLab, *, ca: Authority | None = None,
            subscription_ca: dict[str, Authority] | None = None) -> None:
    """Every endpoint asks verify-full against `ca` (the servers' by default) with the
    controller's client certificate, and subscribes with its own server's files."""
    def endpoint(region: str, current: PostgresEndpoint) -> PostgresEndpoint:
        cert, key = lab.client
        sub_cert, sub_key = lab.subscriber[region]
        fields: dict[str, Any] = {
            **current.model_dump(), "sslmode": "verify-full",
            "sslrootcert": (ca or lab.ca).cert_file, "sslcert": cert, "sslkey": key,
            "subscription_sslrootcert": (subscription_ca or {}).get(region, lab.ca).cert_file,
            "subscription_sslcert": sub_cert, "subscription_sslkey": sub_key}
        return PostgresEndpoint.model_validate(fields)

    sdb.db.close()
    sdb.db.endpoints = {region: endpoint(region, current)
                        for region, current in sdb.db.endpoints.items()}


def own_tls(conn: Any) -> tuple[object, ...]:
    row = conn.execute("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                       ).fetchone()
    assert row is not None
    return tuple(row)


def walsenders(sdb: ServiceDb, writer: str) -> dict[str, tuple[object, ...]]:
    """The writer's walsenders of this database by application_name: (ssl, client_dn)."""
    with sdb.admin(writer) as conn:
        rows = conn.execute(
            "SELECT a.application_name, s.ssl, s.client_dn FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) WHERE a.backend_type = 'walsender' "
            "AND a.datname = current_database()").fetchall()
    return {str(name): (ssl, dn) for name, ssl, dn in rows}


def probe_once(sdb: ServiceDb, region: str) -> tuple[bool, str]:
    check = PostgresCheck(name="db", kind="postgres", service=SERVICE, timeout=4, interval=5)
    probe = PostgresProbe(check, sdb.db.endpoint(region), sdb.service)

    async def run() -> tuple[bool, str]:
        try:
            result = await probe.run()
            return result.ok, result.reason
        finally:
            await probe.close()

    return asyncio.run(run())


def test_verify_full_connects_over_tls_with_the_client_certificate(
        lab: TlsLab, sdb: ServiceDb) -> None:
    use_tls(sdb, lab)
    assert conninfo_to_dict(sdb.db.endpoint("alpha").conninfo())["sslmode"] == "verify-full"
    assert own_tls(sdb.db.conn("alpha")) == (True, "/CN=postgres")  # the CLI's, the executor's
    assert probe_once(sdb, "bravo")[0]  # the health check's


def test_a_ca_that_did_not_sign_the_server_is_refused_with_the_reason(
        lab: TlsLab, sdb: ServiceDb) -> None:
    use_tls(sdb, lab, ca=lab.stranger)
    with pytest.raises(Unreachable, match="certificate verify failed"):
        sdb.db.conn("alpha")
    ok, reason = probe_once(sdb, "bravo")
    assert not ok
    assert reason.startswith("cannot connect: ") and "certificate verify failed" in reason


def test_subscriptions_replicate_over_verified_tls_with_the_subscribers_files(
        lab: TlsLab, sdb: ServiceDb) -> None:
    use_tls(sdb, lab)
    replicate_from_alpha(sdb)  # `db replicate`'s steps, over the endpoints above
    write_rows(sdb, "alpha", 3, "tls")
    for region in ("bravo", "charlie"):
        sdb.wait_same("alpha", region)
        with sdb.admin(region) as conn:
            stored = conninfo_to_dict(subscription_conninfo(conn, SERVICE) or "")
        sub_cert, sub_key = lab.subscriber[region]
        assert (stored["sslmode"], stored["sslrootcert"], stored["sslcert"], stored["sslkey"]) \
            == ("verify-full", str(lab.ca.cert_file), str(sub_cert), str(sub_key))
        # The writer's walsender for this subscriber speaks TLS, and was shown the
        # subscriber's own certificate (not the controller's): the subscriber's server
        # opened the connection with the files named for it.
        assert walsenders(sdb, "alpha")[standby_name(SERVICE, region)] == (
            True, f"/CN={region} subscriber")


def test_a_subscriber_that_does_not_trust_the_writer_is_refused_at_creation(
        lab: TlsLab, sdb: ServiceDb) -> None:
    use_tls(sdb, lab, subscription_ca={"charlie": lab.stranger})
    with pytest.raises(FailoverError, match=r"subscribe charlie.*certificate verify failed"):
        run_steps(replication_steps(sdb.db, "alpha").steps)


def test_db_replicate_brings_an_existing_subscription_to_the_tls_settings(
        lab: TlsLab, sdb: ServiceDb) -> None:
    replicate_from_alpha(sdb)  # libpq's default sslmode (prefer): TLS, no client certificate
    standby = standby_name(SERVICE, "bravo")
    assert walsenders(sdb, "alpha")[standby] == (True, None)
    use_tls(sdb, lab)
    results = run_steps(replication_steps(sdb.db, "alpha").steps)
    detail = next(r.detail for r in results if r.region == "bravo")
    assert "now with sslmode verify-full and sslrootcert" in detail
    # The apply worker restarts with the new connection string: the subscriber's certificate.
    wait_until(lambda: walsenders(sdb, "alpha").get(standby) == (True, "/CN=bravo subscriber"),
               what="bravo's walsender to come back with its client certificate")
    write_rows(sdb, "alpha", 2, "after")
    sdb.wait_same("alpha", "bravo")


def test_the_liveness_ping_answers_for_a_tls_server_without_a_line_in_its_log(
        lab: TlsLab) -> None:
    server = lab.cluster.servers["alpha"]
    noise = "could not accept SSL connection"

    def lines() -> int:
        return server.logfile.read_text(errors="replace").count(noise)

    # What the ping used to do: ask for TLS and leave. The server logs it, so this test
    # would see the ping's noise if there were any.
    before = lines()
    with socket.create_connection((server.host, server.port), timeout=2) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) == b"S"
    wait_until(lambda: lines() > before, timeout=10, what="the server to log a TLS request left "
               "unanswered")
    before = lines()
    assert all(postmaster_answers(server.host, server.port, timeout=2) for _ in range(5))
    # A marker after the pings: once it is in the log, any line the pings caused is too.
    with server.connect() as conn:
        conn.execute("DO $$ BEGIN RAISE LOG 'pings done'; END $$")
    wait_until(lambda: "pings done" in server.logfile.read_text(errors="replace"), timeout=10,
               what="the marker in the server's log")
    assert lines() == before
