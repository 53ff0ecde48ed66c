"""The controller's least privileges, as docs/operator-guide.md lists them: the guide's two
SQL blocks are run as written, then a role that is not a superuser does everything the
controller and the CLI do to a service's databases. On PostgreSQL 15 that role cannot
create a subscription: there the guide asks for a superuser."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from failover.errors import FailoverError
from failover.health.postgres import NODE_STATUS_QUERY
from failover.postgres.connection import ServiceDatabases
from failover.postgres.fence import fence_steps, unfence_steps
from failover.postgres.heartbeat import beat
from failover.postgres.lease import renew_lease
from failover.postgres.names import subscription_name
from failover.postgres.promote import promotion_steps
from failover.postgres.rejoin import rejoin_steps
from failover.postgres.replicate import replication_steps
from failover.postgres.steps import run_steps
from failover.postgres.switchover import switchover_steps
from failover.topology import PostgresEndpoint
from tests.support.pg import APP_TABLES, SERVICE, Cluster, ServiceDb, fresh_service_db, write_rows
from tests.support.skipping import skip_loudly

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"
ROLE = "failover"
PASSWORD = "least-privilege-test"
PASSWORD_ENV = "FAILOVER_TEST_LEAST_PRIVILEGE_PASSWORD"
# A login role that is neither the application's nor related to the controller's: a fence
# must end its sessions too.
BYSTANDER = "reporter"


def guide_block(name: str) -> list[str]:
    """The statements of the ```sql block after `<!-- least-privilege: NAME -->` in the
    guide, without psql's meta-commands (`\\password`: the test sets its own)."""
    text = GUIDE.read_text()
    match = re.search(rf"<!-- least-privilege: {name} -->\s*```sql\n(.*?)```", text, re.S)
    assert match is not None, f"docs/operator-guide.md has no least-privilege {name} block"
    return [line for line in match.group(1).splitlines()
            if line.strip() and not line.startswith("\\")]


def _prepare_servers(cluster: Cluster) -> None:
    """The guide's server block on every server, once per test session's cluster, and a
    password login for the role (PostgreSQL requires one for a non-superuser's
    subscription)."""
    for server in cluster.servers.values():
        with server.connect() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone():
                continue
            hba = server.datadir / "pg_hba.conf"
            hba.write_text(f"host all {ROLE} 127.0.0.0/8 scram-sha-256\n" + hba.read_text())
            for written in guide_block("server"):
                # The block is 18's: 15 has neither pg_create_subscription nor grant options.
                conn.execute(written if cluster.version >= 16 else written.replace(
                    "pg_create_subscription, ", "").replace(", INHERIT FALSE, SET FALSE", ""))
            conn.execute(f"ALTER ROLE {ROLE} PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE ROLE {BYSTANDER} LOGIN")
            conn.execute("SELECT pg_reload_conf()")


def _prepare_database(sdb: ServiceDb) -> None:
    """The guide's database block in the service's database everywhere, the application's
    tables owned by app_owner."""
    for server in sdb.cluster.servers.values():
        with server.connect(sdb.dbname) as conn:
            for table in APP_TABLES:
                conn.execute(f"ALTER TABLE {table} OWNER TO app_owner")
            for statement in guide_block("database"):
                conn.execute(statement.replace("ALTER DATABASE app ", f'ALTER DATABASE "{sdb.dbname}" '))


@pytest.fixture
def least(pg_cluster: Cluster) -> Iterator[tuple[ServiceDb, ServiceDatabases]]:
    _prepare_servers(pg_cluster)
    with fresh_service_db(pg_cluster) as sdb:
        _prepare_database(sdb)
        endpoints = {region: PostgresEndpoint(host=server.host, port=server.port,
                                              dbname=sdb.dbname, user=ROLE,
                                              password_env=PASSWORD_ENV, connect_timeout=2.0)
                     for region, server in pg_cluster.servers.items()}
        os.environ[PASSWORD_ENV] = PASSWORD
        db = ServiceDatabases(service=sdb.service, endpoints=endpoints)
        try:
            yield sdb, db
        finally:
            db.close()


@contextlib.contextmanager
def keeping_leases(db: ServiceDatabases) -> Iterator[None]:
    """As the writer's controller does every tick, as the role: renew the lease of the
    unfenced primary with the highest epoch and write its heartbeat."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(psycopg.Error, FailoverError), ServiceDatabases(
                    service=db.service, endpoints=db.endpoints,
                    statement_timeout=2.0).opened() as fresh:
                best: tuple[int, str] | None = None
                for region in fresh.regions:
                    conn = fresh.try_conn(region)
                    row = None if conn is None else conn.execute(
                        "SELECT role, fenced, epoch FROM failover.node_state").fetchone()
                    if row is not None and row[0] == "primary" and not row[1] and (
                            best is None or int(row[2]) > best[0]):
                        best = (int(row[2]), region)
                if best is not None:
                    conn = fresh.conn(best[1])
                    renew_lease(conn, SERVICE, best[1], best[0], 5.0)
                    beat(conn, SERVICE)
            stop.wait(0.25)

    thread = threading.Thread(target=loop, name="least-privilege-leases", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _sessions(sdb: ServiceDb, region: str) -> list[psycopg.Connection[tuple[object, ...]]]:
    """An application session and a bystander's, both open on `region`."""
    server = sdb.server(region)
    sessions = [psycopg.connect(sdb.app_conninfo(region), autocommit=True),
                psycopg.connect(server.conninfo(sdb.dbname, user=BYSTANDER), autocommit=True)]
    for session in sessions:
        session.execute("SELECT 1")
    return sessions


def _assert_ended(sessions: list[psycopg.Connection[tuple[object, ...]]]) -> None:
    for session in sessions:
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
        session.close()


def _write_soon(sdb: ServiceDb, region: str, tag: str) -> None:
    """Application writes on the new writer, once the lease keeper has renewed its lease."""
    deadline = time.monotonic() + 15
    while True:
        try:
            write_rows(sdb, region, 2, tag)
            return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_guides_grants_are_enough_for_every_database_task(
        least: tuple[ServiceDb, ServiceDatabases]) -> None:
    sdb, db = least
    if sdb.cluster.version < 16:
        skip_loudly("least-privilege grants on PostgreSQL 15", "not applicable: on 15 only a "
                    "superuser creates subscriptions, so the controller's role must be one "
                    "(test_on_15_a_role_that_is_not_a_superuser_cannot_subscribe shows it)")
    run_steps(replication_steps(db, "alpha").steps)  # db replicate
    for region in ("bravo", "charlie"):
        sdb.wait_synced(region)
    with keeping_leases(db):
        for region in db.regions:  # every check
            assert db.conn(region).execute(NODE_STATUS_QUERY, {
                "service": SERVICE, "subscription": subscription_name(SERVICE)}).fetchone()
        _write_soon(sdb, "alpha", "a")

        sessions = _sessions(sdb, "charlie")
        fenced = run_steps(fence_steps(db, "charlie"))
        ended = re.fullmatch(r"terminated (\d+) client sessions", fenced[-1].detail)
        assert ended is not None and int(ended.group(1)) >= 2, fenced[-1].detail  # + the keeper's
        _assert_ended(sessions)
        run_steps(unfence_steps(db, "charlie"))

        run_steps(switchover_steps(db, "bravo", timeout=60).steps)
        _write_soon(sdb, "bravo", "b")

        sessions = _sessions(sdb, "bravo")
        run_steps(promotion_steps(db, "charlie", allow_data_loss=True).steps)  # fences bravo
        _assert_ended(sessions)
        _write_soon(sdb, "charlie", "c")

        run_steps(rejoin_steps(db, "bravo", lost_file=sdb_lost_file(sdb)).steps)
        sdb.wait_synced("bravo")
        run_steps(unfence_steps(db, "bravo"))

        # A new table on every region, owned by app_owner, picked up by db replicate.
        for server in sdb.cluster.servers.values():
            with server.connect(sdb.dbname) as conn:
                conn.execute("SET default_transaction_read_only = off")
                conn.execute("CREATE TABLE extra (id int PRIMARY KEY)")
                conn.execute("ALTER TABLE extra OWNER TO app_owner")
        run_steps(replication_steps(db, "charlie").steps)
        with sdb.admin("alpha") as conn:
            assert conn.execute("SELECT count(*) FROM pg_subscription_rel "
                                "WHERE srrelid = 'extra'::regclass").fetchone() == (1,)


def sdb_lost_file(sdb: ServiceDb) -> Path:
    return sdb.server("bravo").datadir.parent / f"lost-{sdb.dbname}.json"


def test_on_15_a_role_that_is_not_a_superuser_cannot_subscribe(
        least: tuple[ServiceDb, ServiceDatabases]) -> None:
    sdb, db = least
    if sdb.cluster.version >= 16:
        skip_loudly(f"the superuser-only subscription check on PostgreSQL {sdb.cluster.version}",
                    "not applicable: from 16 on pg_create_subscription lets the role subscribe "
                    "(test_the_guides_grants_are_enough_for_every_database_task shows it)")
    with pytest.raises(FailoverError, match="must be superuser to create subscriptions"):
        run_steps(replication_steps(db, "alpha").steps)
