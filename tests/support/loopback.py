"""Hand out loopback /24 blocks so that concurrent test sessions never collide.

Each block is held by an flock on a file for as long as this process lives;
the kernel drops the lock when the process dies, so a crashed session leaks
nothing. Servers of one test cluster then use `block.address(1)`, `.address(2)`...
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import IO

_LOCK_DIR = "/tmp/failover-loopback"
_held: list[IO[str]] = []


@dataclass(frozen=True)
class LoopbackBlock:
    prefix: str  # "127.A.B"

    def address(self, host: int) -> str:
        return f"{self.prefix}.{host}"


def allocate_block() -> LoopbackBlock:
    os.makedirs(_LOCK_DIR, exist_ok=True)
    for a in range(100, 200):
        for b in range(1, 251):
            handle = open(f"{_LOCK_DIR}/127.{a}.{b}.lock", "a")  # noqa: SIM115 - held for life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _held.append(handle)
            return LoopbackBlock(prefix=f"127.{a}.{b}")
    raise RuntimeError("no free loopback block under 127.100-199.x")
