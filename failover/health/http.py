"""`http` checks: a GET that answers 2xx/3xx (or the listed statuses), optionally with a body match."""

from __future__ import annotations

import aiohttp

from failover.health.probe import BoundedProbe, Outcome
from failover.topology import HttpCheck

# Enough to find a marker in a health page without reading a huge body.
BODY_LIMIT = 64 * 1024


class HttpProbe(BoundedProbe):
    """Shares one ClientSession (and its connection pool) with every other HTTP probe."""

    def __init__(self, check: HttpCheck, session: aiohttp.ClientSession) -> None:
        super().__init__(check.timeout)
        self.check = check
        self.session = session

    def _status_ok(self, status: int) -> bool:
        if self.check.expect_status is not None:
            return status in self.check.expect_status
        return 200 <= status < 400

    async def attempt(self) -> Outcome:
        # Redirects are not followed: a 3xx already says the server answers.
        async with self.session.get(self.check.url, allow_redirects=False) as response:
            status = response.status
            details = {"status": status}
            if not self._status_ok(status):
                expected = (", ".join(map(str, self.check.expect_status))
                            if self.check.expect_status is not None else "2xx or 3xx")
                return Outcome(False, f"HTTP {status} (expected {expected})", details)
            marker = self.check.body_contains
            if marker is not None:
                body = await response.content.read(BODY_LIMIT)
                if marker.encode() not in body:
                    return Outcome(False, f"HTTP {status} but the body does not contain "
                                          f"{marker!r}", details)
            return Outcome(True, f"HTTP {status}", details)


def new_session() -> aiohttp.ClientSession:
    """The session HTTP probes share; call inside the running event loop.

    Connections are kept alive between probes (a probe every second would
    otherwise pay a TCP handshake each time). The pool is unbounded because
    the scheduler runs at most one probe per check at a time, so it never
    holds more connections than there are HTTP checks. The probe's own
    timeout bounds every request, so the session sets none.
    """
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
    # No cookie jar: a cookie one probe received must not change the next
    # probe's request (and keeping none saves work on every request).
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                 headers={"User-Agent": "failover-health/1"},
                                 cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)
