"""The lab for chaos tests: one at a time on this machine (it owns fixed loopback addresses).

An flock serialises lab sessions across xdist workers and concurrent runs; the
kernel drops it if the holder dies. FAILOVER_CHAOS_TLS=1 brings every chaos lab up with
`--tls` (the suite's run with TLS: PostgreSQL and the controllers' API verified everywhere).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from failover.lab.build import down, up
from tests.support.skipping import skip_loudly

LOCK = Path("/tmp/failover-lab.lock")
TLS_ENV = "FAILOVER_CHAOS_TLS"


def chaos_tls() -> bool:
    """Whether the chaos labs come up with --tls (FAILOVER_CHAOS_TLS=1)."""
    return os.environ.get(TLS_ENV, "0") == "1"


def say(message: str) -> None:
    print(f"chaos: {message}", flush=True)


@contextlib.contextmanager
def running_lab(directory: Path, coordination: str, regions: int = 3,
                **service: Any) -> Iterator[Path]:
    """`service`: the service's mode as `lab up` takes it (durability, sync_count, ...), and
    `tls` (default: FAILOVER_CHAOS_TLS)."""
    if os.geteuid() != 0:
        skip_loudly("CHAOS SUITE", "the lab needs root (one user per region, iptables for "
                    "isolation); run the tests as root")
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (directory / "lab.json").exists():
            down(directory, purge=True, progress=say)
        service.setdefault("tls", chaos_tls())
        if service["tls"]:
            say(f"the lab comes up with --tls ({TLS_ENV}=1)")
        up(directory, coordination=coordination, regions=regions, progress=say, **service)
        try:
            yield directory
        finally:
            down(directory, purge=True, progress=say)
