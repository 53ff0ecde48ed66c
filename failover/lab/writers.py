"""Application sessions for the lab: the bounded session every lab client uses, and the
pinned writers the safety checker (`failover.lab.checker`) judges.

A pinned writer is one client per region, connected to that region's PostgreSQL
address directly (never through DNS, so that it sees a second writer if there is
one) as the application role. It inserts rows numbered by itself (run, client,
seq: no sequence involved) at a steady rate, and each row carries the identity of
the server that took it (region, epoch, role), read in the same statement. Every
attempt is logged with its outcome: acked, failed (it certainly did not commit), or
indeterminate (sent, but the answer never came: it may have committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

from failover.errors import FailoverError
from failover.lab import state as lab
from failover.postgres.hangup import hang_up

T = TypeVar("T")

RATE = 20.0  # writes per second per region
WRITE_TIMEOUT = 0.5  # connect and write, like the drill's tuned client
PROBE_TIMEOUT = 3.0  # a probe asks whether a region accepts writes at all, not how fast
LIMIT = 600.0  # no workload outlives this, whatever its caller forgets
TABLE = "checker_writes"
_INSERT = (f"INSERT INTO {TABLE} (run, client, seq, region, epoch, role) "
           "SELECT %s, %s, %s, n.region, n.epoch, n.role FROM lab_node_identity(%s) n "
           "RETURNING region, epoch, role")

Outcome = Literal["acked", "failed", "indeterminate"]


class NotSent(Exception):
    """The session could not be opened: the statement never left this client."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def describe(exc: BaseException) -> tuple[str | None, str]:
    """SQLSTATE (if the server gave one) and a one-line message."""
    if isinstance(exc, NotSent):
        exc = exc.cause
    if isinstance(exc, TimeoutError):
        return None, "timeout"
    text = str(exc).strip()
    sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    return sqlstate, text.splitlines()[0] if text else type(exc).__name__


def classify(sent: bool, sqlstate: str | None) -> Outcome:
    """What a failed attempt says about the write.

    The server's own error for the statement means it did not commit. A lost
    connection (class 08), a terminated or shut-down backend (57P) or no answer
    at all can come after the commit, before the reply: unknown.
    """
    if not sent:
        return "failed"
    if sqlstate is None or sqlstate.startswith(("08", "57P")):
        return "indeterminate"
    return "failed"


class Session:
    """One application session to one address at a time; every connect and statement
    is bounded, and after any error the next use reconnects. `tls`: libpq's TLS keywords
    (`LabState.pg_tls()`: verify-full against the lab's CA when it has one)."""

    def __init__(self, dbname: str, user: str, *, timeout: float, application_name: str,
                 options: str | None = None, tls: Mapping[str, Any] | None = None) -> None:
        self.dbname, self.user, self.timeout = dbname, user, timeout
        self.application_name, self.options = application_name, options
        self.tls = dict(tls or {})
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._address: str | None = None

    async def run(self, address: str,
                  work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`work` on a session to `address`. Raises NotSent when no session could be
        opened, TimeoutError or psycopg.Error when `work` failed."""
        deadline = time.monotonic() + self.timeout
        conn = self._conn if self._address == address else None
        if conn is None:
            await self._drop()
            conninfo = make_conninfo(host=address, port=lab.PG_PORT, dbname=self.dbname,
                                     user=self.user, connect_timeout=2,
                                     application_name=self.application_name,
                                     options=self.options, **self.tls)
            try:
                fresh: psycopg.AsyncConnection[Any] = await asyncio.wait_for(
                    psycopg.AsyncConnection.connect(conninfo, autocommit=True), self.timeout)
            except (TimeoutError, psycopg.Error, OSError) as exc:
                raise NotSent(exc) from exc
            conn = self._conn = fresh
            self._address = address
        # psycopg answers a cancelled query by asking the server to cancel it and
        # waiting, forever if the server hangs: run the work apart, and on timeout
        # shut the socket so that it fails at once.
        task = asyncio.ensure_future(work(conn))
        try:
            return await asyncio.wait_for(asyncio.shield(task),
                                          max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            hang_up(conn)
            with contextlib.suppress(Exception):
                await task
            await self._drop()
            raise
        except BaseException:
            await self._drop()
            raise

    async def _drop(self) -> None:
        conn, self._conn, self._address = self._conn, None, None
        if conn is not None:
            hang_up(conn)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 0.2)

    async def close(self) -> None:
        await self._drop()


async def paced(write: Callable[[int], Awaitable[None]], first: int, rate: float,
                stop: asyncio.Event, *, limit: float = LIMIT) -> None:
    """`write(first)`, `write(first + 1)`, ... at `rate` a second until `stop` or `limit`
    seconds; after a slow write it catches up, as a queue-fed application would."""
    seq = first
    start = time.monotonic()
    while not stop.is_set() and time.monotonic() - start < limit:
        await write(seq)
        seq += 1
        delay = start + (seq - first) / rate - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


@dataclass
class Write:
    """One attempt of a pinned writer, as its client saw it."""

    run: int
    client: str  # the region the client is pinned to
    seq: int
    sent_at: float
    done_at: float  # when the ack or the error came (or the client gave up)
    outcome: Outcome
    server_region: str | None = None  # as the server reported it with the ack
    server_epoch: int | None = None
    server_role: str | None = None
    sqlstate: str | None = None
    error: str | None = None

    @property
    def id(self) -> tuple[int, str, int]:
        return (self.run, self.client, self.seq)


class PinnedWriter:
    def __init__(self, region: str, address: str, state: lab.LabState, run: int) -> None:
        self.region, self.address, self.run = region, address, run
        self.service = state.service.name
        # The server gives up before the client does: its error is definite, the
        # client's timeout is not. A commit waiting for synchronous standbys ignores
        # statement_timeout, though: the connection check ends the backend of a client
        # that gave up, or a writer whose standbys are gone piles one up per write.
        self.session = Session(state.service.database, state.service.app_role,
                               timeout=WRITE_TIMEOUT, application_name=f"checker-{region}",
                               options=f"-c statement_timeout={int(WRITE_TIMEOUT * 800)} "
                                       "-c client_connection_check_interval=200",
                               tls=state.pg_tls())

    async def write(self, seq: int, log: list[Write]) -> None:
        sent_at = time.time()
        sent = False

        async def insert(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            nonlocal sent
            sent = True
            cursor = await conn.execute(_INSERT, (self.run, self.region, seq, self.service))
            row: tuple[Any, ...] | None = await cursor.fetchone()
            return row

        try:
            row = await self.session.run(self.address, insert)
        except (NotSent, TimeoutError, psycopg.Error) as exc:
            sqlstate, message = describe(exc)
            log.append(Write(self.run, self.region, seq, sent_at, time.time(),
                             classify(sent, sqlstate), sqlstate=sqlstate, error=message))
            return
        if row is None:  # no node_state row: the SELECT fed the INSERT nothing
            log.append(Write(self.run, self.region, seq, sent_at, time.time(), "failed",
                             error="the server reported no identity: nothing inserted"))
            return
        log.append(Write(self.run, self.region, seq, sent_at, time.time(), "acked",
                         server_region=str(row[0]), server_epoch=int(row[1]),
                         server_role=str(row[2])))


class Writers:
    """A pinned writer for every region, in a thread of its own until `stop`."""

    def __init__(self, state: lab.LabState, run: int, *, rate: float = RATE,
                 limit: float = LIMIT) -> None:
        self.run, self.rate, self.limit = run, rate, limit
        self.writers = [PinnedWriter(r.name, r.address, state, run) for r in state.regions]
        self.log: list[Write] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name=f"pinned-writers-{run}", daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        stop = self._stop
        try:
            await asyncio.gather(*(
                paced(functools.partial(writer.write, log=self.log), 0, self.rate, stop,
                      limit=self.limit)
                for writer in self.writers))
        finally:
            for writer in self.writers:
                await writer.session.close()

    def start(self) -> Writers:
        self._thread.start()
        if not self._ready.wait(10):
            raise FailoverError("the pinned writers did not start within 10 s")
        return self

    def stop(self) -> list[Write]:
        """Stop writing (each writer finishes its attempt in flight) and return the log."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WRITE_TIMEOUT * 4 + 5)
        if self._thread.is_alive():
            raise FailoverError("the pinned writers did not stop within "
                                f"{WRITE_TIMEOUT * 4 + 5:g} s")
        return sorted(self.log, key=lambda w: w.sent_at)


async def _accepts_write(state: lab.LabState, address: str, run: int,
                         read_write: bool) -> str | None:
    """None if a fresh application session at `address` can insert a row (in a
    transaction rolled back), else why not. `read_write`: the session asks for a
    read-write transaction first, as pgJDBC's setReadOnly(false) does."""
    session = Session(state.service.database, state.service.app_role, timeout=PROBE_TIMEOUT,
                      application_name="checker-probe", tls=state.pg_tls())

    async def attempt(conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction(force_rollback=True):
            if read_write:
                await conn.execute("SET TRANSACTION READ WRITE")
            await conn.execute(_INSERT, (run, "probe", 0, state.service.name))

    try:
        await session.run(address, attempt)
    except (NotSent, TimeoutError, psycopg.Error) as exc:
        sqlstate, message = describe(exc)
        return f"{sqlstate}: {message}" if sqlstate else message
    finally:
        await session.close()
    return None


def probe_writable(state: lab.LabState, run: int, *,
                   read_write: bool = False) -> dict[str, str | None]:
    """For every region: None if it accepts an application write, else why not."""
    async def probe_all() -> list[str | None]:
        return await asyncio.gather(*(_accepts_write(state, r.address, run, read_write)
                                      for r in state.regions))

    return dict(zip([r.name for r in state.regions], asyncio.run(probe_all()), strict=True))
