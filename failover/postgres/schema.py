"""Install the `failover` schema: versioned SQL files, each applied once, safe to rerun.

The SQL lives in the repository's top-level `sql/` folder (`NNN_name.sql`); an
installed package carries it as `failover/sql/` package data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from failover.errors import FailoverError, UserError
from failover.postgres.connection import Connection

_VERSION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant works; it only keeps two concurrent installs from interleaving.
_INSTALL_LOCK = 0x6661696C  # "fail"


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    name: str
    text: str


def _sql_folder() -> Path:
    packaged = resources.files("failover") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[2] / "sql"
    if repo.is_dir():
        return repo
    raise FailoverError("the failover SQL files are missing: expected failover/sql/ in the "
                        f"package or sql/ in the repository ({repo})")


def schema_versions() -> list[SchemaVersion]:
    found = []
    for path in sorted(_sql_folder().iterdir()):
        match = _VERSION_FILE.match(path.name)
        if match:
            found.append(SchemaVersion(int(match.group(1)), path.name, path.read_text()))
    return found


def installed_version(conn: Connection) -> int:
    row = conn.execute("SELECT to_regclass('failover.schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    version = conn.execute("SELECT coalesce(max(version), 0)::text FROM failover.schema_version"
                           ).fetchone()
    return int(str(version[0])) if version else 0


def install_statements(service: str, region: str) -> list[str]:
    """What `install` says, for --dry-run (the version files themselves are not echoed)."""
    return [f"-- apply each of {', '.join(v.name for v in schema_versions())} not yet in "
            "failover.schema_version, one transaction each",
            "INSERT INTO failover.node_state (service, region) VALUES "
            f"('{service}', '{region}') ON CONFLICT DO NOTHING"]


def install(conn: Connection, service: str, region: str) -> list[str]:
    """Apply the missing versions and register the service; returns the versions applied."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_INSTALL_LOCK])
        conn.execute("CREATE SCHEMA IF NOT EXISTS failover")
        conn.execute("CREATE TABLE IF NOT EXISTS failover.schema_version ("
                     "version integer PRIMARY KEY, name text NOT NULL, "
                     "installed_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        current = installed_version(conn)
        for version in schema_versions():
            if version.version <= current:
                continue
            try:
                conn.execute(version.text.encode())  # a whole file: bytes skip placeholder parsing
            except psycopg.errors.InsufficientPrivilege as exc:
                raise UserError(
                    f"{version.name} on {conn.info.host}:{conn.info.port}: "
                    f"{exc.diag.message_primary}; the failover schema installs as a superuser "
                    "(the lease guard's event trigger needs one): run `failover db install` "
                    "on the region's host as its local superuser (`sudo -u postgres failover "
                    "db install --region REGION --socket-dir /run/postgresql`), or set the "
                    "region's postgres user to a superuser") from exc
            conn.execute("INSERT INTO failover.schema_version (version, name) VALUES (%s, %s)",
                         [version.version, version.name])
            applied.append(version.name)
        # A table created where event triggers do not fire (a replica session, or
        # before version 2) gets its lease guard here: a rerun repairs.
        guards = conn.execute("SELECT to_regprocedure('failover.attach_guards()') IS NOT NULL"
                              ).fetchone()
        if guards is not None and guards[0]:
            conn.execute("SELECT failover.attach_guards()")
        row = conn.execute("SELECT service, region FROM failover.node_state").fetchone()
        if row is None:
            conn.execute("INSERT INTO failover.node_state (service, region) VALUES (%s, %s)",
                         [service, region])
        elif row[0] != service:
            raise FailoverError(
                f"database {conn.info.dbname} on {conn.info.host} already holds service "
                f"{row[0]!r}, not {service!r}: a database holds one service (its publication "
                "carries all of its tables)")
        elif row[1] != region:
            raise FailoverError(
                f"database {conn.info.dbname} on {conn.info.host} is registered as region "
                f"{row[1]!r} for service {service!r}, not {region!r}: the topology points two "
                "regions at the same database, or the region was renamed")
    return applied
