"""What a region's copy of a service is right now: role, fence, epoch, replication and lag.

`inspect_node` is what the health probe calls every interval on its own
persistent connection; promotion and switchover call it too. One round trip
(`failover.node_status`), which also remembers the publisher's last position
and contact time while they are known, because pg_stat_subscription shows
NULL for them once the publisher is gone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from failover.engine.lsn import format_lsn, parse_lsn
from failover.postgres.connection import Connection
from failover.postgres.names import subscription_name

DEFAULT_INSPECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class NodeStatus:
    service: str
    region: str
    role: str  # "primary", "subscriber" or "unknown" (installed, never replicated)
    fenced: bool
    epoch: int
    database_read_only: bool
    subscription_present: bool
    subscription_enabled: bool | None
    worker_running: bool
    publisher: str | None  # host:port/dbname the subscription reads from
    remote_lsn: int | None  # applied up to here, in the publisher's WAL
    publisher_lsn: int | None  # the publisher's WAL end, as last reported
    last_contact: datetime | None
    remembered: bool  # publisher_lsn and last_contact come from memory (worker gone)
    heartbeat_region: str | None
    heartbeat_at: datetime | None  # the newest heartbeat applied here
    heartbeat_token: str | None
    # None: unknown. Once the publisher is gone both are lower bounds: they are
    # measured against its last position and contact as of the last inspection,
    # so the probe must inspect continuously for them to be tight.
    lag_bytes: int | None
    lag_seconds: float | None
    handover_lsn: int | None
    handover_from: str | None
    handover_epoch: int | None
    server_time: datetime

    def lag_text(self) -> str:
        seconds = "unknown" if self.lag_seconds is None else f"{self.lag_seconds:.1f} s"
        size = "unknown" if self.lag_bytes is None else f"{self.lag_bytes} bytes"
        return f"{seconds} and {size} behind"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("remote_lsn", "publisher_lsn", "handover_lsn"):
            data[key] = format_lsn(data[key])
        return data


def _publisher(conninfo: str | None) -> str | None:
    if conninfo is None:
        return None
    params = conninfo_to_dict(conninfo)  # never keep the password
    return f"{params.get('host')}:{params.get('port', 5432)}/{params.get('dbname')}"


def inspect_node(conn: Connection, service: str, *,
                 timeout: float = DEFAULT_INSPECT_TIMEOUT) -> NodeStatus:
    """The node's status; `conn` is an autocommit psycopg connection to the service's database."""
    with conn.transaction():
        # Read-write even where the database default is read-only: the status
        # function keeps its memory of the publisher in a local table.
        conn.execute("SET TRANSACTION READ WRITE")
        conn.execute("SELECT set_config('statement_timeout', %s, true)",
                     [f"{int(timeout * 1000)}ms"])
        cur = conn.execute("SELECT * FROM failover.node_status(%s, %s)",
                           [service, subscription_name(service)])
        row = cur.fetchone()
        assert row is not None and cur.description is not None  # the function returns one row
        values = dict(zip([column.name for column in cur.description], row, strict=True))
    return NodeStatus(
        service=service,
        region=values["region"],
        role=values["role"],
        fenced=values["fenced"],
        epoch=int(values["epoch"]),
        database_read_only=values["database_read_only"],
        subscription_present=values["subscription_present"],
        subscription_enabled=values["subscription_enabled"],
        worker_running=values["worker_pid"] is not None,
        publisher=_publisher(values["publisher_conninfo"]),
        remote_lsn=parse_lsn(values["remote_lsn"]),
        publisher_lsn=parse_lsn(values["publisher_lsn"]),
        last_contact=values["last_contact"],
        remembered=bool(values["remembered"]),
        heartbeat_region=values["heartbeat_region"],
        heartbeat_at=values["heartbeat_at"],
        heartbeat_token=None if values["heartbeat_token"] is None else str(values["heartbeat_token"]),
        lag_bytes=None if values["lag_bytes"] is None else int(values["lag_bytes"]),
        lag_seconds=values["lag_seconds"],
        handover_lsn=parse_lsn(values["handover_lsn"]),
        handover_from=values["handover_from"],
        handover_epoch=values["handover_epoch"],
        server_time=values["server_time"],
    )
