"""The writer's lease: what lets a server take application writes at all.

Every replicated table carries a trigger (schema version 2) that refuses
INSERT, UPDATE, DELETE and TRUNCATE with SQLSTATE FO003 unless this server
holds a lease naming it the writer at its recorded epoch, still valid by its
own clock, and granted since its postmaster started. The controller calls
`renew_lease` every tick while its region is the recorded writer at that epoch
and it hears a quorum; the fence is `revoke_lease`. A server that loses its
controller, or restarts, stops taking writes by itself once the lease runs
out: the majority waits longer than the lease's TTL before it promotes another.

Every call here runs in its own short transaction with a local statement and
lock timeout, so that a stuck server cannot hold a controller tick for longer
than the lease lasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import LiteralString

import psycopg

from failover.postgres.connection import Connection
from failover.postgres.state import translate_epoch_error

# The first lease that a promotion, a switchover, an unfence or `db replicate` grants
# its new writer unless the caller says how long: only a bridge to the controller's
# next renewal. Short, because the majority's wait before promoting again must cover
# every lease ever granted: a controller passes its own TTL instead.
DEFAULT_LEASE_TTL = 1.0
DEFAULT_LEASE_TIMEOUT = 1.0
# The guard's refusal; FO001 (stale epoch), FO002 (not installed) and FO004
# (epoch not this caller's) come from the functions below.
WRITE_REFUSED = "FO003"


@dataclass(frozen=True)
class LeaseState:
    """Whether this server takes application writes now, and why not."""

    service: str
    region: str
    epoch: int  # the epoch this server records
    writer: bool
    refused: str | None  # why writes are refused; None when `writer`
    granted_at: datetime | None
    valid_until: datetime | None
    seconds_left: float  # 0 unless `writer`
    server_time: datetime


def _call(conn: Connection, service: str, query: LiteralString, params: list[object], *,
          timeout: float) -> LeaseState:
    """One lease function of `service`, returning failover.lease_status, within `timeout`."""
    milliseconds = str(max(1, int(timeout * 1000)))
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true), "
                         "set_config('lock_timeout', %s, true)", [milliseconds, milliseconds])
            row = conn.execute(query, [service, *params]).fetchone()
    except psycopg.Error as exc:
        translate_epoch_error(exc, f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}",
                              service)
        raise
    assert row is not None
    service, region, epoch, writer, refused, granted_at, valid_until, seconds_left, now = row
    return LeaseState(service=str(service), region=str(region), epoch=int(epoch),
                      writer=bool(writer), refused=None if refused is None else str(refused),
                      granted_at=granted_at, valid_until=valid_until,
                      seconds_left=float(seconds_left), server_time=now)


def renew_lease(conn: Connection, service: str, region: str, epoch: int, ttl_seconds: float, *,
                timeout: float = DEFAULT_LEASE_TIMEOUT, not_after: float | None = None
                ) -> LeaseState:
    """Grant or extend this server's lease until its clock reads now + `ttl_seconds`, and
    never past `not_after` (epoch seconds) when given.

    `not_after` is what the quorum vouched for: the server works out the time left when
    it runs the call, so a call that reaches a server that hung (SIGSTOP) after it was
    sent grants nothing stale (a deadline already past grants a lease of a millisecond).
    Granted only when the server records itself as `region`'s unfenced primary
    at exactly `epoch`; otherwise nothing changes and the state says why
    (`writer` False, `refused`). Raises SafetyRefusal when `epoch` is below the
    recorded one (a newer plan has acted) or not recorded here yet, or when the
    server holds another region's copy.
    """
    if not_after is None:
        return _call(conn, service, "SELECT * FROM failover.renew_lease(%s, %s, %s, %s)",
                     [region, epoch, ttl_seconds], timeout=timeout)
    return _call(conn, service, "SELECT * FROM failover.renew_lease(%s, %s, %s, greatest(0.001, "
                 "least(%s, extract(epoch FROM to_timestamp(%s) - clock_timestamp())::float8)))",
                 [region, epoch, ttl_seconds, not_after], timeout=timeout)


def revoke_lease(conn: Connection, service: str, epoch: int | None, *,
                 timeout: float = DEFAULT_LEASE_TIMEOUT) -> LeaseState:
    """The fence: the lease ends now, the node records the fence, and its epoch
    rises to `epoch` (None: stays), so that renewing or unfencing below it is
    refused. SafetyRefusal if `epoch` is below the recorded one."""
    return _call(conn, service, "SELECT * FROM failover.revoke_lease(%s, %s)", [epoch],
                 timeout=timeout)


def lift_fence(conn: Connection, service: str, epoch: int, ttl_seconds: float, *,
               timeout: float = DEFAULT_LEASE_TIMEOUT) -> LeaseState:
    """Undo a fence, only at the recorded epoch; a primary gets a lease for `ttl_seconds`."""
    return _call(conn, service, "SELECT * FROM failover.lift_fence(%s, %s, %s)",
                 [epoch, ttl_seconds], timeout=timeout)


def lease_state(conn: Connection, service: str, *,
                timeout: float = DEFAULT_LEASE_TIMEOUT) -> LeaseState:
    """Read-only: whether this server is the writer now, at which epoch, for how long."""
    return _call(conn, service, "SELECT * FROM failover.lease_state(%s)", [], timeout=timeout)


def lease_text(state: LeaseState) -> str:
    if state.writer:
        return f"writer at epoch {state.epoch}, {state.seconds_left:.1f} s of lease left"
    return f"takes no writes at epoch {state.epoch}: {state.refused}"
