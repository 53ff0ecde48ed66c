"""The controller's role the region module makes can do all the controller does, and holds
no more than controller-role.sql says: no superuser, no CREATEROLE, no CREATEDB.

Three real servers (PostgreSQL 16 or later: 15 needs a superuser, see
controller-role.sql) are set up as failover-region-setup sets up a host, with the SQL
files and the rules taken from the rendered user data: the role, its database, the
schema installed by `failover db install --socket-dir` as the superuser through the
Unix socket (peer authentication), the grants. Then, logged in as that role only:
`db replicate`, probes, a planned switchover, an unplanned promotion (fencing, slots,
a re-pointed subscriber), a rejoin with its full re-copy, a fence that ends
application sessions, and an unfence.

The embedded PostgreSQL is built without TLS, so the user data's `hostssl` rules are
used as `host` rules here; test_terraform_cloud_init.py proves them over TLS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from failover.lab.postgres import PgServer, server_version
from failover.postgres.connection import ServiceDatabases
from failover.postgres.fence import fence_steps, unfence_steps
from failover.postgres.heartbeat import HeartbeatThread
from failover.postgres.inspect import inspect_node
from failover.postgres.promote import promotion_steps
from failover.postgres.rejoin import rejoin_steps
from failover.postgres.replicate import replication_steps
from failover.postgres.steps import run_steps
from failover.postgres.switchover import switchover_steps
from failover.topology import PostgresEndpoint, Service
from tests.support.cloud_init import render_user_data, written_files
from tests.support.pg import (
    APP_ROLE,
    APP_SCHEMA,
    APP_TABLES,
    LeaseKeeper,
    available_bindirs,
    running_cluster,
    wait_until,
)
from tests.support.skipping import skip_loudly
from tests.support.terraform import require_terraform

pytestmark = [pytest.mark.integration, pytest.mark.terraform, pytest.mark.timeout(600)]

ROLE = "failover"
PASSWORD = "controller-role-test-password"  # throwaway test servers'
PASSWORD_ENV = "FAILOVER_PG_PASSWORD"
SERVICE = "shop"
DATABASE = "shop"


def least_privilege_bindir() -> Path:
    """A PostgreSQL of version 16 or later (where the role needs no superuser), or a loud skip."""
    for _, bindir in available_bindirs():
        if server_version(bindir) >= 16:
            return bindir
    skip_loudly("the controller's least-privilege role", "no PostgreSQL 16 or later on this "
                "machine: what the region module's controller role may do was NOT tried")


@dataclass
class Fleet:
    servers: dict[str, PgServer]
    db: ServiceDatabases
    topology: Path

    def superuser(self, region: str) -> psycopg.Connection[tuple[object, ...]]:
        """For looking only: the test reads what the controller's role did."""
        return self.servers[region].connect(DATABASE)

    def rows(self, region: str, table: str) -> list[tuple[object, ...]]:
        with self.superuser(region) as conn:
            return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()

    def wait_same(self, source: str, region: str) -> None:
        wait_until(lambda: all(self.rows(source, t) == self.rows(region, t) for t in APP_TABLES),
                   timeout=60, what=f"{region} to hold what {source} holds")

    def write(self, region: str, tag: str) -> None:
        """One row per table as the application, once the writer's lease lets it."""
        def written() -> bool:
            try:
                with psycopg.connect(self.servers[region].conninfo(DATABASE, APP_ROLE),
                                     autocommit=True) as conn:
                    for table in APP_TABLES:
                        conn.execute(f"INSERT INTO {table} (note) VALUES (%s)", [tag])
            except psycopg.errors.RaiseException:  # FO003: no lease yet
                return False
            return True
        wait_until(written, timeout=30, what=f"{region} to take the application's writes")


def psql(server: PgServer, sql_file: Path, *args: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [str(server.bindir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p",
         str(server.port), "-U", "postgres", "-v", f"role={ROLE}", *args, "-f", str(sql_file)],
        env={**os.environ, **(env or {})}, check=False, capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, f"psql -f {sql_file.name}: {done.stdout}{done.stderr}"


def write_topology(folder: Path, servers: dict[str, PgServer]) -> Path:
    folder.mkdir()
    (folder / "fleet.toml").write_text(f"""name = "role-test"
[dns]
provider = "none"
[[services]]
name = "{SERVICE}"
database = "{DATABASE}"
writer_record = "{SERVICE}.lab.test."
""")
    for index, (region, server) in enumerate(servers.items()):
        (folder / f"{region}.toml").write_text(f"""name = "{region}"
priority = {index}
controller_url = "http://{server.host}:8700"
address = "{server.host}"
[postgres.{SERVICE}]
host = "{server.host}"
port = {server.port}
dbname = "{DATABASE}"
user = "{ROLE}"
password_env = "{PASSWORD_ENV}"
""")
    return folder


def install_schema_as_local_superuser(server: PgServer, region: str, topology: Path) -> None:
    """`failover db install --socket-dir`, as failover-region-setup runs it as the
    operating-system user postgres. This machine's Python lives under /root, which postgres
    cannot reach, so root runs it here as USER=postgres, and pg_ident maps root to the
    superuser for the peer rule (see set_up_like_a_region_host)."""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "failover", "db", "install", "--topology", str(topology),
         "--region", region, "--socket-dir", str(server.socketdir), "--yes"],
        env={**os.environ, "USER": "postgres", "LOGNAME": "postgres", "PYTHONPATH": str(repo)},
        cwd="/", check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"db install --socket-dir: {done.stdout}{done.stderr}"


def set_up_like_a_region_host(server: PgServer, region: str, files: dict[str, str],
                              workdir: Path, topology: Path) -> None:
    role_sql, grants_sql = workdir / "controller-role.sql", workdir / "controller-grants.sql"
    role_sql.write_text(files["/etc/failover/postgres/controller-role.sql"])
    grants_sql.write_text(files["/etc/failover/postgres/controller-grants.sql"])
    psql(server, role_sql, env={"FAILOVER_ROLE_PASSWORD": PASSWORD})
    with server.connect() as conn:
        conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    with server.connect(DATABASE) as conn:  # the application's tables belong to the role
        conn.execute(f"SET ROLE {ROLE}")
        conn.execute(APP_SCHEMA)
    # The user data's rules, without TLS (this build has none) and with root peering as
    # postgres (install_schema_as_local_superuser), then the test's own way in for looking
    # (postgres) and for the application's writes; nothing else for the role.
    rules = (files["/etc/failover/pg_hba.conf"].replace("hostssl ", "host ")
             .replace("local all postgres peer", "local all postgres peer map=root"))
    assert "map=root" in rules
    (server.datadir / "pg_hba.conf").write_text(
        f"{rules}host all postgres 127.0.0.0/8 trust\nhost all {APP_ROLE} 127.0.0.0/8 trust\n")
    (server.datadir / "pg_ident.conf").write_text("root root postgres\n")
    with server.connect() as conn:
        conn.execute("SELECT pg_reload_conf()")
    install_schema_as_local_superuser(server, region, topology)
    psql(server, grants_sql, "-d", DATABASE)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    terraform = require_terraform(tmp_path_factory.mktemp("controller-role"))
    files = written_files(render_user_data(terraform, databases=[DATABASE]))
    bindir = least_privilege_bindir()
    # The postgres user reads the topology: not under pytest's folders, which are root's.
    workdir = Path(tempfile.mkdtemp(prefix="failover-controller-role-"))
    workdir.chmod(0o755)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    try:
        with running_cluster(bindir) as cluster:
            topology = write_topology(workdir / "topology", cluster.servers)
            for region, server in cluster.servers.items():
                set_up_like_a_region_host(server, region, files, workdir, topology)
            service = Service(name=SERVICE, database=DATABASE, writer_record=f"{SERVICE}.lab.test.")
            endpoints = {region: PostgresEndpoint(host=server.host, port=server.port,
                                                  dbname=DATABASE, user=ROLE,
                                                  password_env=PASSWORD_ENV, connect_timeout=2.0)
                         for region, server in cluster.servers.items()}
            db = ServiceDatabases(service=service, endpoints=endpoints)
            try:
                yield Fleet(servers=cluster.servers, db=db, topology=topology)
            finally:
                db.close()
    finally:
        monkeypatch.undo()
        shutil.rmtree(workdir)


def test_the_role_holds_no_more_than_it_needs(fleet: Fleet) -> None:
    with fleet.superuser("alpha") as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone()
        memberships = conn.execute(
            "SELECT array_agg(g.rolname ORDER BY g.rolname) FROM pg_auth_members m "
            "JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname = %s", [ROLE]).fetchone()
    assert attributes == (False, False, False, True, False)
    assert memberships == (["pg_create_subscription", "pg_read_all_stats", "pg_signal_backend"],)


def test_it_replicates_switches_over_promotes_rejoins_and_fences(fleet: Fleet,
                                                               tmp_path: Path) -> None:
    db = fleet.db
    run_steps(replication_steps(db, "alpha").steps)
    keeper = LeaseKeeper(db.service, db.endpoints)  # renews as the role, as controllers do
    heartbeat = HeartbeatThread(db.endpoints["alpha"].conninfo(), SERVICE, interval=0.2).start()
    try:
        fleet.write("alpha", "replicated")
        for region in ("bravo", "charlie"):
            fleet.wait_same("alpha", region)
        # What a probe reads, the subscription's publisher among it, as the role.
        for region in ("bravo", "charlie"):
            status = inspect_node(db.conn(region), SERVICE)
            assert (status.role, status.subscription_present) == ("subscriber", True)
            assert status.lag_bytes is not None
        heartbeat.stop()

        run_steps(switchover_steps(db, "bravo", timeout=20).steps)
        fleet.write("bravo", "switched")
        for region in ("alpha", "charlie"):
            fleet.wait_same("bravo", region)

        fleet.servers["bravo"].kill()
        run_steps(promotion_steps(db, "charlie").steps)  # within the lag limits: no loss allowed
        fleet.write("charlie", "promoted")
        fleet.wait_same("charlie", "alpha")

        fleet.servers["bravo"].start()
        run_steps(rejoin_steps(db, "bravo", lost_file=tmp_path / "lost.json").steps)
        fleet.wait_same("charlie", "bravo")
        assert inspect_node(db.conn("bravo"), SERVICE).role == "subscriber"

        with psycopg.connect(fleet.servers["charlie"].conninfo(DATABASE, APP_ROLE),
                             autocommit=True) as application:
            run_steps(fence_steps(db, "charlie"))
            with pytest.raises(psycopg.OperationalError):
                application.execute("SELECT 1")  # ended by the fence
        run_steps(unfence_steps(db, "charlie"))
        fleet.write("charlie", "unfenced")
        for region in ("alpha", "bravo"):
            fleet.wait_same("charlie", region)
    finally:
        heartbeat.stop()
        keeper.stop()
