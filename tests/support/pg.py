"""PostgreSQL fixtures: one 3-server cluster per version per test session, a fresh database per test.

Import the fixtures into a test module with
`from tests.support.pg import pg_cluster, service_db, replicated  # noqa: F401`;
scripts (benchmarks) use `running_cluster` and `fresh_service_db` directly.

CREATE DATABASE on the shared servers is much cheaper than initdb, so every
test gets its own database (and its own replication objects) and may kill
servers: the teardown restarts them and drops what the test left behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from failover.errors import FailoverError
from failover.lab.pki import Authority
from failover.lab.postgres import (
    PgServer,
    ServerTls,
    built_with_tls,
    pg_bindir,
    start_servers,
    stop_servers,
)
from failover.postgres.connection import ServiceDatabases
from failover.postgres.heartbeat import HeartbeatThread
from failover.postgres.inspect import inspect_node
from failover.postgres.lease import renew_lease
from failover.postgres.replicate import recorded_writer, replication_steps
from failover.postgres.schema import install
from failover.postgres.state import recorded_epoch
from failover.postgres.steps import run_steps
from failover.topology import PostgresEndpoint, Service
from tests.support.loopback import allocate_block
from tests.support.skipping import skip_loudly

REGIONS = ("alpha", "bravo", "charlie")
APP_ROLE = "app"
SERVICE = "shop"

# Three kinds of default ids: bigserial, identity, and a table with two sequences.
APP_SCHEMA = """
CREATE TABLE items (id bigserial PRIMARY KEY, note text NOT NULL);
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, ref bigserial UNIQUE, note text NOT NULL);
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;
"""
APP_TABLES = ("items", "events", "orders")


def available_bindirs() -> list[tuple[str, Path]]:
    """(id, bindir) for every PostgreSQL on this machine the tests should run against."""
    found = []
    embedded = pg_bindir() if not os.environ.get("FAILOVER_PG_BINDIR") else None
    if embedded is not None:
        found.append(("pg-embedded", embedded))
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin")):
        if (bindir / "postgres").exists():
            found.append((f"pg{bindir.parent.name}", bindir))
    if os.environ.get("FAILOVER_PG_BINDIR"):
        found.append(("pg-configured", Path(os.environ["FAILOVER_PG_BINDIR"])))
    return found


_BINDIRS = available_bindirs()


def tls_bindir(untried: str) -> Path:
    """A PostgreSQL built with TLS (the embedded one is not), or a loud skip saying that
    `untried` was not tried."""
    for _, bindir in available_bindirs():
        if built_with_tls(bindir):
            return bindir
    skip_loudly("PostgreSQL over TLS", f"no PostgreSQL built with TLS on this machine: "
                f"{untried} were NOT tried (scripts/setup.sh installs Debian's PostgreSQL 15)")


@dataclass
class Cluster:
    servers: dict[str, PgServer]

    @property
    def version(self) -> int:
        return next(iter(self.servers.values())).version

    def restart_dead(self) -> None:
        for server in self.servers.values():
            if not server.is_running():
                server.start()


def wait_until(predicate: Callable[[], object], *, timeout: float = 30.0,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _server_tls(root: Path, authority: Authority) -> Callable[[str, str], ServerTls]:
    """As `lab up --tls` has it (TCP over TLS only): each server's certificate, from
    `authority`, names its address; `ssl_ca_file` is the authority's, so a client
    certificate it issued is verified and shows in `pg_stat_ssl.client_dn`."""
    def files(name: str, host: str) -> ServerTls:
        tls = root / name / "tls"  # init_server hands root/name to the servers' user
        tls.mkdir(parents=True)
        cert, key = authority.issue("server", addresses=[host], folder=tls)
        return ServerTls(cert, key, authority.cert_file)

    return files


@contextmanager
def running_cluster(bindir: Path, *, durable: bool = False,
                    tls: Authority | None = None) -> Iterator[Cluster]:
    """Three servers on a fresh loopback block, with the application role; stopped on exit.
    Not `durable` (the tests): fsync off, which a benchmark of commit latency may want on.
    `tls`: the servers speak TLS with certificates from that authority, whose folder the
    servers' user must be able to read."""
    block = allocate_block()
    root = Path(tempfile.mkdtemp(prefix="failover-pg-"))
    hosts = {name: block.address(i + 1) for i, name in enumerate(REGIONS)}
    servers = start_servers(root, hosts, bindir=bindir, durable=durable,
                            tls=_server_tls(root, tls) if tls is not None else None)
    try:
        for server in servers:
            with server.connect() as conn:
                conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
        yield Cluster({server.name: server for server in servers})
    finally:
        stop_servers(servers)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", params=[b for _, b in _BINDIRS], ids=[i for i, _ in _BINDIRS])
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with running_cluster(request.param) as cluster:
        yield cluster


class LeaseKeeper:
    """What the controllers do for the lease every tick, without their quorum: renew it on
    the recorded writer (the region recording itself primary at the highest epoch) at that
    epoch. A subscriber, a fenced primary or a primary another one superseded gets none."""

    def __init__(self, service: Service, endpoints: dict[str, PostgresEndpoint], *,
                 interval: float = 0.25, ttl: float = 5.0) -> None:
        self._service, self._endpoints = service, endpoints
        self._interval, self._ttl = interval, ttl
        self._stopping = threading.Event()
        self._renewed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)
        self._thread.start()

    def wait_renewed(self, timeout: float = 30.0) -> None:
        """Until the first renewal: the lease a promotion or `db replicate` grants is a 1 s
        bridge, which a loaded machine can outlast before this thread's first tick."""
        if not self._renewed.wait(timeout):
            raise AssertionError(f"the lease keeper renewed nothing within {timeout:g} s")

    def _tick(self) -> None:
        # New sessions each tick: a server that was down may be back.
        with ServiceDatabases(service=self._service, endpoints=self._endpoints,
                              statement_timeout=2.0).opened() as db:
            writer = recorded_writer(db)
            if writer is not None:
                conn = db.conn(writer)
                renew_lease(conn, self._service.name, writer,
                            recorded_epoch(conn, self._service.name), self._ttl)
                self._renewed.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            # A server went away or the writer moved mid-tick: the next tick sees.
            with contextlib.suppress(psycopg.Error, FailoverError):
                self._tick()
            self._stopping.wait(self._interval)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)


@dataclass
class ServiceDb:
    """A fresh database on every server of the cluster, schema installed, not yet replicated."""

    cluster: Cluster
    dbname: str
    service: Service
    db: ServiceDatabases
    heartbeats: list[HeartbeatThread] = field(default_factory=list)
    lease_keeper: LeaseKeeper | None = None

    def server(self, region: str) -> PgServer:
        return self.cluster.servers[region]

    def admin(self, region: str) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser session that writes as the controller and the apply workers do: as a
        replica session, which the lease guard does not bind."""
        return psycopg.connect(self.server(region).conninfo(
            self.dbname, options="-c statement_timeout=30s -c session_replication_role=replica"),
            autocommit=True)

    def app_conninfo(self, region: str) -> str:
        return self.server(region).conninfo(self.dbname, user=APP_ROLE)

    def start_heartbeat(self, region: str) -> HeartbeatThread:
        """Beat on `region` as its controller would, and keep the recorded writer's lease."""
        thread = HeartbeatThread(self.server(region).conninfo(self.dbname), SERVICE,
                                 interval=0.2).start()
        self.heartbeats.append(thread)
        if self.lease_keeper is None:
            self.lease_keeper = LeaseKeeper(self.service, self.db.endpoints)
        self.lease_keeper.wait_renewed()
        return thread

    def stop_background_writes(self, writer: str, *, lease_ttl: float = 300.0) -> None:
        """No heartbeat or lease renewal commits from here (on a writer that waits for
        synchronous standbys each would wait too); one long lease lets the application write
        on `writer` meanwhile."""
        for thread in self.heartbeats:
            thread.stop()
        if self.lease_keeper is not None:
            self.lease_keeper.stop()
        with self.admin(writer) as conn:
            renew_lease(conn, SERVICE, writer, recorded_epoch(conn, SERVICE), lease_ttl)

    def rows(self, region: str, table: str) -> list[tuple[object, ...]]:
        with self.admin(region) as conn:
            return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()

    def wait_synced(self, region: str, timeout: float = 60.0) -> None:
        """Until every table of `region`'s subscription finished its initial copy."""
        def ready() -> bool:
            with self.admin(region) as conn:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE srsubstate <> 'r'), count(*) "
                    "FROM pg_subscription_rel").fetchone()
                return row is not None and row[0] == 0 and row[1] > 0
        wait_until(ready, timeout=timeout, what=f"{region} to finish its initial copy")

    def wait_heartbeat(self, region: str, source: str, timeout: float = 30.0) -> None:
        """Until `region` applied a heartbeat written by `source`."""
        def applied() -> bool:
            with self.admin(region) as conn:
                row = conn.execute("SELECT region FROM failover.heartbeat").fetchone()
            return row is not None and row[0] == source
        wait_until(applied, timeout=timeout, what=f"{region} to apply a heartbeat from {source}")

    def wait_same(self, source: str, region: str, tables: tuple[str, ...] = APP_TABLES,
                  timeout: float = 30.0) -> None:
        def same() -> bool:
            return all(self.rows(source, t) == self.rows(region, t) for t in tables)
        wait_until(same, timeout=timeout, what=f"{region} to hold what {source} holds")


def write_rows(sdb: ServiceDb, region: str, count: int, tag: str) -> None:
    """Default-id inserts as the application role, into every table."""
    with psycopg.connect(sdb.app_conninfo(region), autocommit=True) as conn:
        for i in range(count):
            conn.execute("INSERT INTO items (note) VALUES (%s)", [f"{tag}{i}"])
            conn.execute("INSERT INTO events (note) VALUES (%s)", [f"{tag}{i}"])
            conn.execute("INSERT INTO orders (note) VALUES (%s)", [f"{tag}{i}"])


def probe(sdb: ServiceDb, *regions: str) -> None:
    """What the controller's health probe does every interval: inspect (and remember)."""
    for region in regions:
        with sdb.admin(region) as conn:
            inspect_node(conn, SERVICE)


def write_topology(sdb: ServiceDb, folder: Path) -> Path:
    folder.mkdir()
    (folder / "fleet.toml").write_text(f"""
name = "test"
[dns]
provider = "none"
[[services]]
name = "{SERVICE}"
database = "{sdb.dbname}"
writer_record = "shop.lab.test."
app_roles = ["app"]
max_lag_seconds = "5s"
""")
    for index, (region, server) in enumerate(sdb.cluster.servers.items()):
        (folder / f"{region}.toml").write_text(f"""
name = "{region}"
priority = {index}
controller_url = "http://{server.host}:8700"
address = "{server.host}"
[postgres.{SERVICE}]
host = "{server.host}"
port = {server.port}
dbname = "{sdb.dbname}"
user = "postgres"
""")
    return folder


def _drop_subscriptions(server: PgServer, dbname: str) -> None:
    with server.connect(dbname) as conn:
        conn.execute("SET default_transaction_read_only = off")
        subs = conn.execute("SELECT subname FROM pg_subscription s JOIN pg_database d "
                            "ON d.oid = s.subdbid WHERE d.datname = current_database()").fetchall()
        for (sub,) in subs:
            conn.execute(f'ALTER SUBSCRIPTION "{sub}" DISABLE')
            conn.execute(f'ALTER SUBSCRIPTION "{sub}" SET (slot_name = NONE)')
            conn.execute(f'DROP SUBSCRIPTION "{sub}"')


def _drop_database(server: PgServer, dbname: str) -> None:
    with server.connect() as conn:
        for slot, pid in conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots "
                                      "WHERE database = %s", [dbname]).fetchall():
            if pid is not None:
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
            conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        conn.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
        conn.execute(f"ALTER ROLE {APP_ROLE} LOGIN")


@contextmanager
def fresh_service_db(cluster: Cluster) -> Iterator[ServiceDb]:
    """A new database on every server, app schema and failover schema installed; dropped
    (with every subscription and slot the user made) on exit, dead servers restarted."""
    cluster.restart_dead()
    dbname = f"t_{uuid.uuid4().hex[:10]}"
    service = Service(name=SERVICE, database=dbname, writer_record="shop.lab.test.",
                      app_roles=[APP_ROLE], max_lag_seconds=5.0, max_lag_bytes=16 * 1024 * 1024)
    endpoints = {name: PostgresEndpoint(host=server.host, port=server.port, dbname=dbname,
                                        user="postgres", connect_timeout=2.0)
                 for name, server in cluster.servers.items()}
    for region, server in cluster.servers.items():
        with server.connect() as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        with server.connect(dbname) as conn:
            conn.execute(APP_SCHEMA)
            install(conn, SERVICE, region)
    db = ServiceDatabases(service=service, endpoints=endpoints)
    sdb = ServiceDb(cluster=cluster, dbname=dbname, service=service, db=db)
    try:
        yield sdb
    finally:
        for thread in sdb.heartbeats:
            thread.stop()
        if sdb.lease_keeper is not None:
            sdb.lease_keeper.stop()
        db.close()
        cluster.restart_dead()
        # Subscriptions first everywhere, or their workers would take the slots back.
        for server in cluster.servers.values():
            _drop_subscriptions(server, dbname)
        for server in cluster.servers.values():
            _drop_database(server, dbname)


def replicate_from_alpha(sdb: ServiceDb) -> None:
    """alpha publishes, bravo and charlie subscribe (initial copy done), alpha beats."""
    run_steps(replication_steps(sdb.db, "alpha").steps)
    for region in ("bravo", "charlie"):
        sdb.wait_synced(region)
    sdb.start_heartbeat("alpha")
    for region in ("bravo", "charlie"):
        sdb.wait_heartbeat(region, "alpha")


@pytest.fixture
def service_db(pg_cluster: Cluster) -> Iterator[ServiceDb]:
    with fresh_service_db(pg_cluster) as sdb:
        yield sdb


@pytest.fixture
def replicated(service_db: ServiceDb) -> ServiceDb:
    replicate_from_alpha(service_db)
    return service_db
