"""Fence and unfence a region's copy of a service.

`default_transaction_read_only` alone is no fence: any session can turn it
off. A fence therefore also refuses logins to the service's application roles
and terminates every client session, so that no session that could undo the
setting survives. Walsenders stay: a switchover still needs them to drain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString

from psycopg import sql

from failover.errors import UserError
from failover.postgres.connection import Connection, ServiceDatabases
from failover.postgres.state import check_epoch, record_fenced
from failover.postgres.steps import SqlStep
from failover.postgres.waiting import wait_for

CLIENT_SESSIONS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
_TERMINATE_TIMEOUT = 5.0


def _read_only(dbname: str, on: bool) -> sql.Composed:
    if on:
        return sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
            sql.Identifier(dbname))
    return sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(
        sql.Identifier(dbname))


def set_database_read_only(conn: Connection, dbname: str, on: bool) -> None:
    conn.execute(_read_only(dbname, on))


def _login(role: str, allowed: bool) -> sql.Composed:
    return sql.SQL("ALTER ROLE {} " + ("LOGIN" if allowed else "NOLOGIN")).format(
        sql.Identifier(role))


def set_app_logins(conn: Connection, roles: list[str], allowed: bool) -> str:
    missing = [role for role in roles if conn.execute(
        "SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None]
    if missing:
        raise UserError(f"services.app_roles: role(s) {', '.join(missing)} do not exist on "
                        f"{conn.info.host}:{conn.info.port}; fix the topology or create them")
    for role in roles:
        conn.execute(_login(role, allowed))
    verb = "may log in" if allowed else "refused logins"
    return f"{', '.join(roles)} {verb}" if roles else "no application roles configured"


def terminate_sessions(conn: Connection, query: LiteralString,
                       params: Sequence[object] = ()) -> int:
    """Terminate the sessions `query` selects (by pid) and wait until they are gone.

    pg_terminate_backend(pid, timeout) would wait too, but polls every 100 ms:
    too slow when writes are paused for it.
    """
    pids = [int(row[0]) for row in conn.execute(query, params).fetchall()]
    if pids:
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        wait_for(lambda: conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)",
                                      [pids]).fetchone() is None,
                 timeout=_TERMINATE_TIMEOUT, what="the terminated sessions to end",
                 interval=0.005)
    return len(pids)


def terminate_sql(query: str) -> str:
    return f"SELECT pg_terminate_backend(pid) FROM ({query}) s  -- then wait until they are gone"


def epoch_step(db: ServiceDatabases, region: str, epoch: int) -> SqlStep:
    service = db.service.name

    def run() -> str:
        recorded = check_epoch(db.conn(region), service, epoch, region=region)
        return f"epoch {epoch} >= recorded {recorded}"

    return SqlStep("check the epoch", region,
                (f"SELECT failover.check_epoch('{service}', {epoch})",), run)


def fence_steps(db: ServiceDatabases, region: str, *, epoch: int | None = None) -> list[SqlStep]:
    service = db.service.name
    dbname = db.endpoint(region).dbname
    roles = db.service.app_roles
    steps = [epoch_step(db, region, epoch)] if epoch is not None else []

    def record() -> str:
        record_fenced(db.conn(region), service, True)
        return "fenced = true (heartbeats stop)"

    def read_only() -> str:
        set_database_read_only(db.conn(region), dbname, True)
        return f"database {dbname} read-only for new sessions"

    return [
        *steps,
        SqlStep("record the fence", region,
             (f"UPDATE failover.node_state SET fenced = true WHERE service = '{service}'",), record),
        SqlStep("make the database read-only", region, (_read_only(dbname, True).as_string(),),
             read_only),
        SqlStep("refuse application logins", region,
             tuple(_login(role, False).as_string() for role in roles),
             lambda: set_app_logins(db.conn(region), roles, False)),
        SqlStep("terminate client sessions", region, (terminate_sql(CLIENT_SESSIONS),),
             lambda: f"terminated {terminate_sessions(db.conn(region), CLIENT_SESSIONS)} "
                     "client sessions"),
    ]


def unfence_steps(db: ServiceDatabases, region: str, *, epoch: int | None = None) -> list[SqlStep]:
    """Undo a fence; the database becomes writable only if this node is the primary."""
    service = db.service.name
    dbname = db.endpoint(region).dbname
    roles = db.service.app_roles
    steps = [epoch_step(db, region, epoch)] if epoch is not None else []

    def writable_if_primary() -> str:
        conn = db.conn(region)
        row = conn.execute("SELECT role FROM failover.node_state WHERE service = %s",
                           [service]).fetchone()
        if row is None or row[0] != "primary":
            return f"stays read-only (role {row[0] if row else 'unknown'})"
        set_database_read_only(conn, dbname, False)
        return f"database {dbname} writable (primary)"

    def record() -> str:
        record_fenced(db.conn(region), service, False)
        return "fenced = false"

    return [
        *steps,
        SqlStep("allow application logins", region,
             tuple(_login(role, True).as_string() for role in roles),
             lambda: set_app_logins(db.conn(region), roles, True)),
        SqlStep("make the database writable if primary", region,
             (f"{_read_only(dbname, False).as_string()}  -- only when role = 'primary'",),
             writable_if_primary),
        SqlStep("record the unfence", region,
             (f"UPDATE failover.node_state SET fenced = false WHERE service = '{service}'",),
             record),
    ]
