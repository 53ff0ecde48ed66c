"""Connections to a service's database in each region, opened on demand.

Every connection is autocommit (DROP SUBSCRIPTION and slot functions refuse to
run inside a transaction block), bounded by connect_timeout and
statement_timeout, and overrides `default_transaction_read_only`, because the
databases failover works on are read-only by design (subscribers, fenced
primaries) and its own sessions must still write their bookkeeping; and commits with
synchronous_commit = local, never waiting for a sync writer's standbys.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from failover.errors import FailoverError, UserError
from failover.postgres.hangup import hang_up
from failover.topology import PostgresEndpoint, Service, Topology

Connection = psycopg.Connection[TupleRow]

DEFAULT_STATEMENT_TIMEOUT = 10.0
_SSL_REQUEST_CODE = 80877103  # the protocol's SSLRequest: (1234 << 16) | 5679


class Unreachable(FailoverError):
    """A region's database could not be reached (down, refused, timed out)."""

    def __init__(self, region: str, detail: str) -> None:
        super().__init__(f"region {region}: database unreachable: {detail}")
        self.region = region


def postmaster_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """Whether a postmaster answers at all, within `timeout`.

    A live server answers an SSLRequest with one byte ('S' or 'N') at once; one
    that hangs (SIGSTOP, packets dropped) says nothing, and libpq's connect_timeout
    cannot tell that in less than 2 s.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack("!ii", 8, _SSL_REQUEST_CODE))
            answer = sock.recv(1)
            if answer == b"S":
                _end_tls_quietly(sock, deadline - time.monotonic())
            return len(answer) == 1
    except OSError:
        return False


@functools.cache
def _unverified_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # nothing is sent or believed over it
    return context


def _end_tls_quietly(sock: socket.socket, time_left: float) -> None:
    """A server with TLS on ('S') waits for a handshake, and logs every connection that
    leaves without one ("could not accept SSL connection: EOF detected"): that would be a
    line per ping. Finish the handshake and close it with a close_notify, which the server
    takes silently. Best effort, in what is left of the ping's time: its answer was already
    the sign of life, so this verifies nothing and any failure is ignored."""
    if time_left <= 0:
        return
    sock.settimeout(time_left)
    with contextlib.suppress(OSError), _unverified_tls().wrap_socket(sock) as tls:
        tls.setblocking(False)  # send our close_notify; do not wait for the server's
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()


# Failover's own commits (fences, leases, heartbeats, bookkeeping) never wait for a sync
# writer's standbys: a fence or a lease renewal must not block where the application's
# commits would, and statement_timeout does not end that wait (it stops before the commit).
OWN_COMMITS = "-c synchronous_commit=local"


def connect(conninfo: str, *, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT) -> Connection:
    """An autocommit session that may write even where the database default is read-only."""
    options = (f"-c statement_timeout={int(statement_timeout * 1000)} "
               f"-c lock_timeout={int(statement_timeout * 1000)} "
               f"-c default_transaction_read_only=off {OWN_COMMITS}")
    return psycopg.connect(conninfo, autocommit=True, options=options)


def same_server(conninfo: str, endpoint: PostgresEndpoint) -> bool:
    """Whether a subscription's conninfo points at `endpoint` (host, port and database)."""
    params = conninfo_to_dict(conninfo)
    return (str(params.get("host")) == endpoint.host
            and int(str(params.get("port", 5432))) == endpoint.port
            and str(params.get("dbname")) == endpoint.dbname)


@dataclass
class ServiceDatabases:
    """The service's database in each of its regions, with one cached session each."""

    service: Service
    endpoints: dict[str, PostgresEndpoint]
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    _sessions: dict[str, Connection] = field(default_factory=dict, repr=False)
    _unreachable: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        # A TLS file this host cannot read is a configuration error (a UserError naming the
        # field), whether or not the server answers: not "unreachable" when it happens to be
        # down, which hid it behind the reachability ping.
        for endpoint in self.endpoints.values():
            endpoint.tls_files()

    @classmethod
    def from_topology(cls, topo: Topology, service_name: str, *,
                      statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT) -> ServiceDatabases:
        service = topo.service(service_name)
        endpoints = {region.name: topo.endpoint(region.name, service.name)
                     for region in topo.service_regions(service)}
        return cls(service=service, endpoints=endpoints, statement_timeout=statement_timeout)

    @property
    def regions(self) -> list[str]:
        return list(self.endpoints)

    def endpoint(self, region: str, *, flag: str = "--region") -> PostgresEndpoint:
        try:
            return self.endpoints[region]
        except KeyError:
            raise UserError(f"{flag}: region {region!r} holds no copy of service "
                            f"{self.service.name!r} (its regions: {', '.join(self.endpoints)})"
                            ) from None

    def region_of(self, conninfo: str | None) -> str | None:
        """The region whose endpoint a subscription's conninfo points at, if any."""
        if conninfo is None:
            return None
        for region, endpoint in self.endpoints.items():
            if same_server(conninfo, endpoint):
                return region
        return None

    def conn(self, region: str) -> Connection:
        """The session to `region`, reconnecting if it was closed or broken."""
        session = self._sessions.get(region)
        if session is not None and not session.closed and not session.broken:
            return session
        try:
            session = connect(self.endpoint(region).conninfo(),
                              statement_timeout=self.statement_timeout)
        except psycopg.OperationalError as exc:
            raise Unreachable(region, str(exc).strip().splitlines()[0]) from exc
        self._sessions[region] = session
        return session

    def assume_unreachable(self, region: str) -> None:
        """Take `region` as unreachable for the life of these sessions (one plan), its
        session dropped: found silent here, or by the caller's own probe."""
        self._unreachable.add(region)
        self.forget(region)

    def try_conn(self, region: str) -> Connection | None:
        """The session to `region`, or None if it cannot be reached now.

        A cached session is pinged first: a server that died since its last
        use leaves a session that looks open until it is used.
        """
        endpoint = self.endpoint(region)
        if region in self._unreachable or not postmaster_answers(endpoint.host, endpoint.port):
            # Remembered for the life of these sessions (one plan): every later step
            # would otherwise wait the same connect timeout again. Its session, if any,
            # died with the server.
            self.assume_unreachable(region)
            return None
        session = self._sessions.get(region)
        if session is not None and not session.closed and not session.broken:
            try:
                session.execute("SELECT 1")
            except psycopg.OperationalError:
                self.forget(region)
        try:
            return self.conn(region)
        except Unreachable:
            return None

    def forget(self, region: str) -> None:
        """Drop the cached session (after the server was fenced or went away)."""
        session = self._sessions.pop(region, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        for region in list(self._sessions):
            self.forget(region)
        self._unreachable.clear()  # a long-lived owner (the controller) asks again next plan

    def hang_up_all(self) -> None:
        """End every session at once, from any thread: a query blocked on a server that hangs
        (SIGSTOP, dropped packets) fails now instead of waiting for TCP to give up."""
        for session in list(self._sessions.values()):
            hang_up(session)

    @contextmanager
    def opened(self) -> Iterator[ServiceDatabases]:
        try:
            yield self
        finally:
            self.close()
