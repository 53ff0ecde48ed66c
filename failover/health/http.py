"""`http` checks: a GET that answers 2xx/3xx (or the listed statuses), optionally with a body match.

A controller runs about a thousand of these a second, so the probe is lean: each
check keeps one connection alive to its target (the scheduler never runs two
probes of one check at once, so the check owns it), writes a request encoded once,
and reads the answer with httptools (llhttp, the parser uvicorn uses). That costs
about a third of the CPU of a general-purpose client (aiohttp: ~330 µs a request
here, this: ~100 µs), which is what the controller's CPU budget needed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from urllib.parse import unquote, urlsplit

import httptools

from failover.health.probe import BoundedProbe, Outcome
from failover.tls import shared_client_context
from failover.topology import HttpCheck

# Enough to find a marker in a health page without reading a huge body; a longer
# body is not read to its end, and its connection is not reused.
BODY_LIMIT = 64 * 1024
_READ_SIZE = 64 * 1024
USER_AGENT = "failover-health/1"


class _Answer:
    """httptools callbacks: the status, the start of the body, and whether the message ended."""

    def __init__(self, keep_body: bool) -> None:
        self.keep_body = keep_body
        self.body = bytearray()
        self.body_seen = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.body_seen += len(data)
        if self.keep_body and len(self.body) < BODY_LIMIT:
            self.body += data[:BODY_LIMIT - len(self.body)]

    def on_message_complete(self) -> None:
        self.complete = True
        # Asked now: the parser forgets the message's connection header once it has ended.
        self.keep_alive = self.parser.should_keep_alive()


class _ClosedUnanswered(ConnectionResetError):
    """The server closed the connection before a byte of the answer."""


def _request(check: HttpCheck) -> bytes:
    parts = urlsplit(check.url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal goes back into brackets
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}",
             "Accept: */*"]
    if parts.username is not None:
        user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(user_password.encode()).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class HttpProbe(BoundedProbe):
    def __init__(self, check: HttpCheck, *, where: str = "checks") -> None:
        """`where`: the file and field of the check, for a TLS file that cannot be read."""
        super().__init__(check.timeout)
        self.check = check
        parts = urlsplit(check.url)
        https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if https else 80)
        # Built here, not per probe: a CA or key that cannot be read is the operator's to fix
        # at start (exit 2), not a flapping check. Checks naming the same files share one.
        self._tls = (shared_client_context(check.ca_file, check.cert_file, check.key_file,
                                           where=where) if https else None)
        self._trusted = (f"the CAs of {check.ca_file}" if check.ca_file is not None
                         else "the system's CA store")
        self._request = _request(check)
        self._connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    def _status_ok(self, status: int) -> bool:
        if self.check.expect_status is not None:
            return status in self.check.expect_status
        return 200 <= status < 400

    async def attempt(self) -> Outcome:
        reused = self._connection is not None
        try:
            try:
                status, body = await self._exchange()
            except _ClosedUnanswered:
                if not reused:
                    raise
                # The server dropped the idle kept-alive connection (its keep-alive
                # timeout): that says nothing about its health; ask again on a new one.
                self._drop()
                status, body = await self._exchange()
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            return Outcome(False, f"TLS: the server's certificate is not trusted "
                                  f"({exc.verify_message}), checked against {self._trusted}")
        except BaseException:
            # Timed out, cancelled or broken half-way: the connection's state is unknown.
            self._drop()
            raise
        details = {"status": status}
        if not self._status_ok(status):
            expected = (", ".join(map(str, self.check.expect_status))
                        if self.check.expect_status is not None else "2xx or 3xx")
            return Outcome(False, f"HTTP {status} (expected {expected})", details)
        marker = self.check.body_contains
        if marker is not None and marker.encode() not in body:
            return Outcome(False, f"HTTP {status} but the body does not contain {marker!r}",
                           details)
        return Outcome(True, f"HTTP {status}", details)

    async def _exchange(self) -> tuple[int, bytes]:
        """One request on the kept connection (a new one if there is none); redirects not followed."""
        if self._connection is None:
            self._connection = await asyncio.open_connection(
                self._host, self._port, ssl=self._tls,
                server_hostname=self._host if self._tls is not None else None)
        reader, writer = self._connection
        writer.write(self._request)
        answer = _Answer(keep_body=self.check.body_contains is not None)
        received = 0
        while not answer.complete:
            try:
                data = await reader.read(_READ_SIZE)
            except (ConnectionResetError, BrokenPipeError) as exc:
                if received == 0:
                    raise _ClosedUnanswered(str(exc)) from exc
                raise
            if not data:
                if received == 0:
                    raise _ClosedUnanswered("the server closed the connection without answering")
                if not answer.headers_done:
                    raise ConnectionResetError("the server closed the connection mid-answer")
                break  # a body delimited by the end of the connection
            received += len(data)
            answer.parser.feed_data(data)
            if answer.headers_done and answer.body_seen >= BODY_LIMIT:
                break  # enough of a large body: the rest is not read
        if not answer.keep_alive:
            self._drop()
        return answer.parser.get_status_code(), bytes(answer.body)

    def _drop(self) -> None:
        """Forget the connection; it closes in the background (nothing waits on a dead peer)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection[1].close()

    async def close(self) -> None:
        writer = self._connection[1] if self._connection is not None else None
        self._drop()
        if writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
