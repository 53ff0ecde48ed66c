"""The primary's heartbeat: one `failover.beat()` call per second.

The controller calls `beat` from its scheduler; tests and the lab use
`HeartbeatThread`, which keeps beating across reconnects (a fence terminates
its session) until stopped.
"""

from __future__ import annotations

import threading

import psycopg

from failover.postgres.connection import Connection, connect


def beat(conn: Connection, service: str) -> bool:
    """One heartbeat; False when this node is not an unfenced primary (nothing written)."""
    row = conn.execute("SELECT failover.beat(%s)", [service]).fetchone()
    return bool(row and row[0])


class HeartbeatThread:
    """Beat every `interval` seconds against `conninfo` until `stop()`."""

    def __init__(self, conninfo: str, service: str, *, interval: float = 1.0) -> None:
        self._conninfo = conninfo
        self._service = service
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{service}", daemon=True)

    def start(self) -> HeartbeatThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        conn: Connection | None = None
        while not self._stopping.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = connect(self._conninfo, statement_timeout=max(self._interval, 1.0))
                beat(conn, self._service)
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None  # the server is down or fenced us out: try again next beat
            self._stopping.wait(self._interval)
        if conn is not None:
            conn.close()
