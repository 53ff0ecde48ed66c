"""Fence and unfence a region's copy of a service.

The fence is the writer's lease (`lease.py`): revoking it makes every
replicated table refuse application writes, whatever a session sets, and it
raises the node's recorded epoch to the fencing plan's, so that a stale
unfence or renewal is refused. The older layers stay as defence in depth: the
database becomes read-only for new sessions, application roles are refused
logins and client sessions are terminated, which also ends transactions that
began while the lease was valid. Walsenders stay: a switchover still needs
them to drain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import LiteralString

from psycopg import sql

from failover.errors import UserError
from failover.postgres.connection import Connection, ServiceDatabases
from failover.postgres.lease import DEFAULT_LEASE_TTL, lease_text, lift_fence, revoke_lease
from failover.postgres.state import check_epoch, recorded_epoch
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


def revoke_step(db: ServiceDatabases, region: str, epoch: int | None) -> SqlStep:
    """End the lease now and record the fence; `epoch` (if given) becomes the node's epoch."""
    service = db.service.name

    def run() -> str:
        state = revoke_lease(db.conn(region), service, epoch)
        return f"fenced = true, lease ended; recorded epoch {state.epoch}"

    shown = "NULL" if epoch is None else str(epoch)
    name = "revoke the lease" if epoch is None else f"revoke the lease at epoch {epoch}"
    return SqlStep(name, region, (f"SELECT failover.revoke_lease('{service}', {shown})",), run)


def fence_steps(db: ServiceDatabases, region: str, *, epoch: int | None = None) -> list[SqlStep]:
    """Fence `region`; with `epoch`, refused below the node's epoch and raising it to `epoch`."""
    dbname = db.endpoint(region).dbname
    roles = db.service.app_roles

    def read_only() -> str:
        set_database_read_only(db.conn(region), dbname, True)
        return f"database {dbname} read-only for new sessions"

    return [
        revoke_step(db, region, epoch),
        SqlStep("make the database read-only", region, (_read_only(dbname, True).as_string(),),
             read_only),
        SqlStep("refuse application logins", region,
             tuple(_login(role, False).as_string() for role in roles),
             lambda: set_app_logins(db.conn(region), roles, False)),
        SqlStep("terminate client sessions", region, (terminate_sql(CLIENT_SESSIONS),),
             lambda: f"terminated {terminate_sessions(db.conn(region), CLIENT_SESSIONS)} "
                     "client sessions"),
    ]


def unfence_steps(db: ServiceDatabases, region: str, *, epoch: int | None = None,
                  lease_ttl: float = DEFAULT_LEASE_TTL) -> list[SqlStep]:
    """Undo a fence, only at the node's current epoch: `epoch`, or the one it records now
    (read here, so that the steps refuse to run if a plan raises it in between). A primary
    gets a lease for `lease_ttl` seconds and a writable database; a subscriber stays
    read-only."""
    service = db.service.name
    dbname = db.endpoint(region).dbname
    roles = db.service.app_roles
    if epoch is None:
        epoch = recorded_epoch(db.conn(region), service)
    current = epoch

    def writable_if_primary() -> str:
        conn = db.conn(region)
        row = conn.execute("SELECT role FROM failover.node_state WHERE service = %s",
                           [service]).fetchone()
        if row is None or row[0] != "primary":
            return f"stays read-only (role {row[0] if row else 'unknown'})"
        set_database_read_only(conn, dbname, False)
        return f"database {dbname} writable (primary)"

    # Lifted first: it alone checks the epoch, and refuses before anything else changed.
    return [
        SqlStep(f"lift the fence at epoch {current}", region,
             (f"SELECT failover.lift_fence('{service}', {current}, {lease_ttl:g})  "
              "-- a primary also gets its lease",),
             lambda: lease_text(lift_fence(db.conn(region), service, current, lease_ttl))),
        SqlStep("allow application logins", region,
             tuple(_login(role, True).as_string() for role in roles),
             lambda: set_app_logins(db.conn(region), roles, True)),
        SqlStep("make the database writable if primary", region,
             (f"{_read_only(dbname, False).as_string()}  -- only when role = 'primary'",),
             writable_if_primary),
    ]
