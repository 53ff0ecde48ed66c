"""`tcp` checks: the port accepts a connection."""

from __future__ import annotations

import asyncio
import contextlib

from failover.health.probe import BoundedProbe, Outcome
from failover.topology import TcpCheck


class TcpProbe(BoundedProbe):
    def __init__(self, check: TcpCheck) -> None:
        super().__init__(check.timeout)
        self.check = check

    async def attempt(self) -> Outcome:
        _, writer = await asyncio.open_connection(self.check.host, self.check.port)
        writer.close()
        # The peer may reset a connection we never used: it did accept it.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Outcome(True, "connected")
