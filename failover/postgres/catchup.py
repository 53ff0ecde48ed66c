"""Letting subscribers catch up with a fenced publisher before one of them takes over.

A marker row is written on the publisher (the controller's role may write there while the
application is fenced out); a subscriber that shows the marker has applied everything the
publisher acknowledged before it. For the subscriber about to be promoted, the publisher's
slot must also confirm it flushed past the marker: applied but not yet durable is not enough.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from psycopg import Connection

from failover.engine.lsn import parse_lsn
from failover.postgres.connection import ServiceDatabases
from failover.postgres.inspect import inspect_node
from failover.postgres.names import slot_name

MARKER_SQL = (
    "INSERT INTO failover.heartbeat (service, region, epoch, beat_at, token) "
    "SELECT service, region, epoch, clock_timestamp(), %(token)s FROM failover.node_state "
    "WHERE service = %(service)s ON CONFLICT (service) DO UPDATE "
    "SET beat_at = excluded.beat_at, token = excluded.token")


@dataclass(frozen=True)
class Marker:
    token: str
    lsn: int
    lsn_text: str  # as the publisher printed it


def write_marker(conn: Connection[tuple[object, ...]], service: str) -> Marker:
    token = str(uuid.uuid4())
    conn.execute(MARKER_SQL, {"token": token, "service": service})
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    lsn = parse_lsn(str(row[0]))
    assert lsn is not None
    return Marker(token, lsn, str(row[0]))


def shown_marker(db: ServiceDatabases, publisher: str, marker: Marker,
                 regions: tuple[str, ...], *, confirmed: str) -> set[str]:
    """The regions that applied `marker`; `confirmed` only once its slot on the publisher
    confirms it flushed past the marker too."""
    service = db.service.name
    done = set()
    for region in regions:
        conn = db.try_conn(region)
        if conn is not None and inspect_node(conn, service).heartbeat_token == marker.token:
            done.add(region)
    row = db.conn(publisher).execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        [slot_name(service, confirmed)]).fetchone()
    flushed = parse_lsn(row[0]) if row and row[0] else None
    if flushed is None or flushed < marker.lsn:
        done.discard(confirmed)
    return done


def wait_for_marker(db: ServiceDatabases, publisher: str, marker: Marker,
                    regions: tuple[str, ...], *, confirmed: str, timeout: float,
                    grace: float) -> set[str]:
    """Wait at most `timeout` until every one of `regions` applied `marker`; once `confirmed`
    has (see `shown_marker`), the others get at most `grace` more. Returns those that have."""
    deadline = time.monotonic() + timeout
    done: set[str] = set()
    while time.monotonic() < deadline:
        done = shown_marker(db, publisher, marker, regions, confirmed=confirmed)
        if done == set(regions):
            break
        if confirmed in done:
            deadline = min(deadline, time.monotonic() + grace)
        time.sleep(0.01)
    return done


def marker_wait_shown(service: str, target: str, bound: str, then: str = "") -> tuple[str, ...]:
    """The marker and the wait as `--dry-run` shows them; `then`: what a timeout does."""
    return (MARKER_SQL % {"token": "'<uuid>'", "service": f"'{service}'"},
            "SELECT pg_current_wal_lsn()  -- T",
            f"-- wait (at most {bound}) until {target} shows the token and slot "
            f"{slot_name(service, target)} has confirmed_flush_lsn >= T{then}")
