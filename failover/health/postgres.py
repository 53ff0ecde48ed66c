"""`postgres` checks: the service's database answers, and what it says about replication.

One query per probe, `failover.node_status` (sql/), returns the node's role,
epoch, fencing, subscription state and the replication positions; the probe
keeps its session between runs, because connecting costs far more than the
query, and reconnects after any failure.

What makes a probe succeed depends on the check's purpose:
- liveness and info: the database answered (a database without the failover
  schema still answers; the reason says to install it);
- readiness (could this region take the writer role now): also not fenced,
  and either a primary, or a subscriber whose lag is within the service's
  `max_lag_seconds` and `max_lag_bytes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import DictRow, dict_row

from failover.engine.lsn import parse_lsn
from failover.health.probe import BoundedProbe, Outcome
from failover.postgres.connection import OWN_COMMITS
from failover.postgres.names import subscription_name
from failover.topology import PostgresCheck, PostgresEndpoint, Service

AsyncConnection = psycopg.AsyncConnection[DictRow]

# Beside the node's status: a primary's current WAL position, the writer's side of every
# subscriber's lag, which the fleet remembers after the writer dies; and what the server's
# commits wait for (server-wide, so a subscriber's too: it may still name standbys).
NODE_STATUS_QUERY = ("SELECT s.*, CASE WHEN s.role = 'primary' THEN pg_current_wal_lsn() END "
                     "AS wal_lsn, current_setting('synchronous_standby_names') "
                     "AS synchronous_standby_names "
                     "FROM failover.node_status(%(service)s, %(subscription)s) s")
# A database where `failover db install` has not run yet: alive, but says little.
ALIVE_QUERY = "SELECT 1 AS alive"
SCHEMA_MISSING_REASON = "alive, but the failover schema is not installed (run failover db install)"

# SQLSTATEs that mean "no failover schema / service here", not "unhealthy".
_SCHEMA_MISSING = (pgerrors.UndefinedFunction, pgerrors.InvalidSchemaName)
_SERVICE_MISSING_SQLSTATE = "FO002"

# Columns of node_status that hold a WAL position; each is reported as text and as an int.
_LSN_COLUMNS = ("remote_lsn", "publisher_lsn", "handover_lsn", "wal_lsn")
# Never reported: the subscription's conninfo may carry the publisher's password.
_SECRET_COLUMNS = ("publisher_conninfo",)


def parse_node_status(row: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready facts from one `failover.node_status` row.

    WAL positions appear twice: `remote_lsn` as the text PostgreSQL prints and
    `remote_lsn_bytes` as an int that compares across subscribers (all of them
    are in the publisher's LSN space). Times are ISO 8601 strings.
    """
    facts: dict[str, Any] = {}
    for column, value in row.items():
        if column in _SECRET_COLUMNS:
            continue
        if column in _LSN_COLUMNS:
            text = None if value is None else str(value)
            facts[column] = text
            facts[f"{column}_bytes"] = parse_lsn(text)
        elif isinstance(value, Decimal):
            facts[column] = int(value)
        elif isinstance(value, dt.datetime):
            facts[column] = value.isoformat()
        elif isinstance(value, uuid.UUID):
            facts[column] = str(value)
        else:
            facts[column] = value
    facts["worker_running"] = facts.get("worker_pid") is not None
    return facts


def summarise(facts: Mapping[str, Any]) -> str:
    """One line an operator reads in the check table: role, then what matters for it."""
    role = facts.get("role") or "unknown"
    parts = [f"{role} (epoch {facts.get('epoch')})"]
    if facts.get("fenced"):
        parts.append("fenced")
    if facts.get("database_read_only"):
        parts.append("read-only")
    if facts.get("synchronous_standby_names"):
        parts.append(f"commits wait for {facts['synchronous_standby_names']}")
    if facts.get("subscription_present"):
        if not facts.get("subscription_enabled"):
            parts.append("subscription disabled")
        elif not facts.get("worker_running"):
            parts.append("apply worker not running")
        lag_s, lag_b = facts.get("lag_seconds"), facts.get("lag_bytes")
        parts.append(f"lag {lag_s:.1f} s" if lag_s is not None else "lag unknown")
        if lag_b is not None:
            parts.append(f"{lag_b} bytes")
    return ", ".join(parts)


def readiness_problem(facts: Mapping[str, Any], service: Service) -> str | None:
    """Why this node could not take the writer role now, or None if it could."""
    if facts.get("fenced"):
        return "fenced"
    role = facts.get("role")
    if role == "primary":
        return None
    if role != "subscriber":
        return f"role is {role or 'unknown'}, neither primary nor subscriber"
    lag_s, lag_b = facts.get("lag_seconds"), facts.get("lag_bytes")
    if lag_s is None:
        return "lag unknown (no replicated heartbeat yet)"
    if lag_s > service.max_lag_seconds:
        return f"lag {lag_s:.1f} s exceeds max_lag_seconds {service.max_lag_seconds:g} s"
    if lag_b is not None and lag_b > service.max_lag_bytes:
        return f"lag {lag_b} bytes exceeds max_lag_bytes {service.max_lag_bytes}"
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _connection_problem(exc: psycopg.OperationalError) -> str:
    """libpq's 'connection to server at "h", port p failed: FATAL:  why', as 'cannot connect: why'."""
    line = _first_line(exc)
    if "failed: " not in line:
        return line
    why = line.rsplit("failed: ", 1)[1].removeprefix("FATAL:").strip()
    return f"cannot connect: {why}"


class PostgresProbe(BoundedProbe):
    def __init__(self, check: PostgresCheck, endpoint: PostgresEndpoint, service: Service) -> None:
        super().__init__(check.timeout)
        self.check = check
        self.endpoint = endpoint
        self.service = service
        self.params = {"service": service.name, "subscription": subscription_name(service.name)}
        # The server gives up a little before we do, so a slow query ends with
        # its own error and the session stays usable.
        statement_ms = max(1, int(check.timeout * 800))
        # Read here, not per probe: a missing password is a configuration
        # error the operator must see at start, not a flapping check.
        self.conninfo = endpoint.conninfo(options=(
            f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms} "
            # node_status remembers publisher positions in a table, and a
            # subscriber's database is read-only by default; that commit must not wait
            # for standbys the server still names (a former writer).
            f"-c default_transaction_read_only=off {OWN_COMMITS}"))
        self._conn: AsyncConnection | None = None
        self._on_close: Callable[[], None] | None = None
        self._watched: int | None = None  # the kept session's socket, while idle

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close = callback

    async def attempt(self) -> Outcome:
        self._unwatch()
        outcome = await self._attempt()
        self._watch()
        return outcome

    def _watch(self) -> None:
        """While the kept session is idle, anything the server sends on it is its goodbye
        (a crash or kill closes the socket, a shutdown or termination sends a FATAL first)."""
        if self._on_close is None or self._conn is None or self._conn.closed:
            return
        self._watched = self._conn.pgconn.socket
        asyncio.get_running_loop().add_reader(self._watched, self._closed_by_server)

    def _unwatch(self) -> None:
        if self._watched is not None:
            asyncio.get_running_loop().remove_reader(self._watched)
            self._watched = None

    def _closed_by_server(self) -> None:
        self._unwatch()
        if self._on_close is not None:
            self._on_close()

    async def _attempt(self) -> Outcome:
        kept = self._conn is not None
        try:
            return await self._query()
        except psycopg.OperationalError as exc:
            await self._discard()
            if not kept:
                return self._unreachable(exc)
        # The kept session died, maybe with a server restart that is already
        # over: a fresh session decides.
        try:
            return await self._query()
        except psycopg.OperationalError as exc:
            await self._discard()
            return self._unreachable(exc)

    def _unreachable(self, exc: psycopg.OperationalError) -> Outcome:
        return Outcome(False, _connection_problem(exc), {"endpoint": self.endpoint.describe()})

    async def _query(self) -> Outcome:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, row_factory=dict_row)
        conn = self._conn
        # psycopg answers a cancellation by asking the server to cancel the
        # query and waiting up to 10 s for it, which would break the probe's
        # time bound when the server hangs. So the query runs in its own task;
        # when the probe is cancelled (timeout), the socket is shut down and
        # that task fails at once.
        task = asyncio.ensure_future(self._fetch(conn))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            _hang_up(conn)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
            self._conn = None
            raise
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            # The server answered, with an error: alive, but the query failed.
            return Outcome(False, f"query failed: {_first_line(exc)}",
                           {"endpoint": self.endpoint.describe(), "sqlstate": exc.sqlstate})

    async def _fetch(self, conn: AsyncConnection) -> Outcome:
        details: dict[str, Any] = {"endpoint": self.endpoint.describe()}
        try:
            cursor = await conn.execute(NODE_STATUS_QUERY, self.params)
        except _SCHEMA_MISSING:
            return await self._alive_without_schema(conn, details)
        except psycopg.Error as exc:
            if exc.sqlstate != _SERVICE_MISSING_SQLSTATE:
                raise
            return await self._alive_without_schema(conn, details)
        row = await cursor.fetchone()
        if row is None:
            return Outcome(False, "failover.node_status returned no row", details)
        facts = parse_node_status(row)
        details.update(facts)
        if self.check.purpose == "readiness":
            problem = readiness_problem(facts, self.service)
            if problem is not None:
                return Outcome(False, f"not ready: {problem}", details)
        return Outcome(True, summarise(facts), details)

    async def _alive_without_schema(self, conn: AsyncConnection,
                                    details: dict[str, Any]) -> Outcome:
        await conn.execute(ALIVE_QUERY)
        details["schema_installed"] = False
        if self.check.purpose == "readiness":
            return Outcome(False, f"not ready: {SCHEMA_MISSING_REASON}", details)
        return Outcome(True, SCHEMA_MISSING_REASON, details)

    async def _discard(self) -> None:
        self._unwatch()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        await self._discard()


def _hang_up(conn: AsyncConnection) -> None:
    """Shut the session's socket down so that anything waiting on it fails now.

    shutdown() on a duplicate of the descriptor ends the connection for the
    original too, without closing the descriptor under psycopg's feet.
    """
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
