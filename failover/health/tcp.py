"""`tcp` checks: the port accepts a connection.

A bare non-blocking socket rather than asyncio streams: a check opens and
closes a connection every interval and never reads, and streams (a reader, a
writer and a protocol per connection) cost more CPU than the connect itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from failover.health.probe import BoundedProbe, Outcome
from failover.topology import TcpCheck


class TcpProbe(BoundedProbe):
    def __init__(self, check: TcpCheck) -> None:
        super().__init__(check.timeout)
        self.check = check
        try:
            literal = ipaddress.ip_address(check.host)
        except ValueError:
            self._family: socket.AddressFamily | None = None  # a name: resolve on each probe
        else:
            self._family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET

    async def attempt(self) -> Outcome:
        loop = asyncio.get_running_loop()
        host, port = self.check.host, self.check.port
        addresses: list[tuple[socket.AddressFamily, tuple[Any, ...]]]
        if self._family is not None:
            addresses = [(self._family, (host, port))]
        else:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [(family, address) for family, _, _, _, address in infos]
        error: OSError | None = None
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
                return Outcome(True, "connected")
            except OSError as exc:
                error = exc
            finally:
                sock.close()
        raise error or OSError(f"{host} has no address")
