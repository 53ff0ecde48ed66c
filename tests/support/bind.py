"""A real BIND9 primary and secondary for the DNS tests, started once per test session.

Use it from a test module with `pytest_plugins = ["tests.support.bind"]`;
the servers run as the unprivileged lab user on this session's own loopback block
and are stopped by PID when the session ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from failover.dns.rfc2136 import Rfc2136Provider
from failover.dns.tsig import TsigKey, generate_key
from failover.dns.wire import Endpoint
from failover.lab.bind import NamedServer, ensure_installed, free_port, start_primary, start_secondary
from tests.support.loopback import allocate_block

ZONE = "dns.test."


@dataclass
class BindPair:
    primary: NamedServer
    secondary: NamedServer
    key: TsigKey
    unauthorised_key: TsigKey  # known to the primary, but not allowed to update
    workdir: Path
    zone: str = ZONE

    @property
    def servers(self) -> tuple[Endpoint, Endpoint]:
        return self.primary.endpoint, self.secondary.endpoint

    def provider(self, key: TsigKey | None = None, *, timeout: float = 1.0) -> Rfc2136Provider:
        """A provider for the zone; both servers are found through the zone's NS records."""
        return Rfc2136Provider(self.zone, self.primary.endpoint, key or self.key, timeout=timeout)

    def topology(self, folder: Path, **rfc2136: str) -> Path:
        """A topology folder whose DNS is this pair; `rfc2136` overrides fields (TOML values)."""
        settings = {"server": f'"{self.primary.endpoint.host}"',
                    "port": str(self.primary.endpoint.port),
                    "key_file": f'"{self.primary.workdir / "tsig.key"}"',
                    "timeout": '"1s"', **rfc2136}
        table = "\n".join(f"{name} = {value}" for name, value in settings.items())
        return write_topology(folder, f'provider = "rfc2136"\n[dns.rfc2136]\n{table}\n',
                              zone=self.zone)


@pytest.fixture(scope="session")
def bind_pair() -> Iterator[BindPair]:
    ensure_installed()
    block = allocate_block()
    primary_at, secondary_at = block.address(53), block.address(54)
    port = free_port([primary_at, secondary_at])
    workdir = Path(tempfile.mkdtemp(prefix="failover-bind-"))
    key = generate_key("failover-test")
    unauthorised_key = generate_key("read-only")
    started: list[NamedServer] = []
    try:
        primary = start_primary(workdir / "primary", Endpoint(primary_at, port), ZONE, key,
                                nameservers=[primary_at, secondary_at],
                                notify=[Endpoint(secondary_at, port)],
                                other_keys=[unauthorised_key])
        started.append(primary)
        secondary = start_secondary(workdir / "secondary", Endpoint(secondary_at, port), ZONE,
                                    primary.endpoint, key)
        started.append(secondary)
        yield BindPair(primary=primary, secondary=secondary, key=key,
                       unauthorised_key=unauthorised_key, workdir=workdir)
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def write_topology(folder: Path, dns_table: str, *, zone: str = ZONE,
                   regions: dict[str, str] | None = None) -> Path:
    """A minimal topology folder: one service `orders` in the given regions (name -> address)
    and the `[dns]` table given as TOML (without the `[dns]` header and zone)."""
    regions = regions or {"east": "192.0.2.1", "west": "192.0.2.2"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fleet.toml").write_text(
        'name = "dnstest"\n\n'
        f'[dns]\nzone = "{zone}"\n{dns_table}\n\n'
        '[[services]]\nname = "orders"\ndatabase = "orders"\n'
        f'writer_record = "orders.{zone}"\nreader_record = "orders-ro.{zone}"\nttl = 15\n'
    )
    for name, address in regions.items():
        (folder / f"{name}.toml").write_text(
            f'name = "{name}"\ncontroller_url = "http://{address}:8700"\naddress = "{address}"\n\n'
            f'[postgres.orders]\nhost = "{address}"\ndbname = "orders"\nuser = "failover"\n'
        )
    return folder
