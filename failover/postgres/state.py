"""The node's own record in `failover.node_state`: role, epoch (the fencing token), fence."""

from __future__ import annotations

import psycopg

from failover.errors import SafetyRefusal, UserError
from failover.postgres.connection import Connection

_STALE_EPOCH = "FO001"
_NOT_INSTALLED = "FO002"
_EPOCH_NOT_YOURS = "FO004"
# The schema, or one of its functions, is missing: an older version is installed.
_MISSING = ("3F000", "42883")


def translate_epoch_error(exc: psycopg.Error, where: str, service: str) -> None:
    """Raise the failover error a server's epoch refusal means; return if it is another error."""
    message = exc.diag.message_primary or str(exc)
    if exc.sqlstate == _STALE_EPOCH:
        raise SafetyRefusal(f"{where}: {message}; a newer plan has acted since: "
                            "re-read the state") from exc
    if exc.sqlstate == _EPOCH_NOT_YOURS:
        raise SafetyRefusal(f"{where}: {message}") from exc
    if exc.sqlstate == _NOT_INSTALLED or exc.sqlstate in _MISSING:
        raise UserError(f"{where}: the failover schema is not installed (or is older than "
                        f"this version) for service {service!r}: run `failover db install`"
                        ) from exc


def check_epoch(conn: Connection, service: str, epoch: int, *, region: str) -> int:
    """The recorded epoch; SafetyRefusal if `epoch` is lower (another plan already acted)."""
    try:
        row = conn.execute("SELECT failover.check_epoch(%s, %s)", [service, epoch]).fetchone()
    except psycopg.Error as exc:
        translate_epoch_error(exc, f"region {region}", service)
        raise
    assert row is not None
    return int(row[0])


def check_claim(conn: Connection, service: str, epoch: int, claimant: str, *,
                region: str) -> int:
    """The recorded epoch, if `claimant` may become the writer at `epoch` on this node:
    above the recorded epoch, or at it when `claimant` took it (a rerun). SafetyRefusal
    otherwise: an epoch is claimed once."""
    try:
        row = conn.execute("SELECT failover.check_claim(%s, %s, %s)",
                           [service, epoch, claimant]).fetchone()
    except psycopg.Error as exc:
        translate_epoch_error(exc, f"region {region}", service)
        raise
    assert row is not None
    return int(row[0])


def recorded_epoch(conn: Connection, service: str) -> int:
    row = conn.execute("SELECT epoch FROM failover.node_state WHERE service = %s",
                       [service]).fetchone()
    return 0 if row is None else int(row[0])


def record_role(conn: Connection, service: str, role: str, epoch: int) -> None:
    """Set role and raise the epoch (never lower it)."""
    conn.execute("UPDATE failover.node_state SET role = %s, epoch = greatest(epoch, %s), "
                  "updated_at = clock_timestamp() WHERE service = %s", [role, epoch, service])


def record_fenced(conn: Connection, service: str, fenced: bool) -> None:
    conn.execute("UPDATE failover.node_state SET fenced = %s, updated_at = clock_timestamp() "
                 "WHERE service = %s", [fenced, service])


def record_handover(conn: Connection, service: str, *, lsn: str | None, source: str | None,
                    epoch: int) -> None:
    """Keep the applied position before the subscription (and its origin) is dropped."""
    conn.execute("UPDATE failover.node_state SET handover_lsn = %s::pg_lsn, handover_from = %s, "
                 "handover_epoch = %s, updated_at = clock_timestamp() WHERE service = %s",
                 [lsn, source, epoch, service])
