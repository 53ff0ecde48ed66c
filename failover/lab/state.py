"""The lab's fixed shape and its `lab.json`: a contract other tools rely on.

Regions us-east-1, us-west-2, eu-west-1 on 127.0.1.1, 127.0.2.1, 127.0.3.1
(PostgreSQL on 5432, controller API on 8700), BIND9 on 127.0.0.1:5300 serving
`lab.test.`, the service `app` with `app.lab.test.` (writer) and
`app-ro.lab.test.` (readers), TTL 1 s. `lab up --regions 5` adds ap-south-1 on
127.0.4.1 and sa-east-1 on 127.0.5.1, below the first three in priority.

`lab up --tls`: a throwaway CA in `DIR/tls/` (`ca.crt`, and `ca.key` for root only) and a
certificate per region for its address in `DIR/tls/REGION/` (`server.crt`, `server.key`),
owned by the region's user: its PostgreSQL server's and its controller's. The controller
URLs are then `https://`, and every lab client verifies what it connects to with the CA.
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from failover.errors import UserError
from failover.lab.unprivileged import folder_closed_to_others
from failover.tls import client_context

DEFAULT_DIR = Path(".failover-lab")
# Where the lab lives instead when its servers' users could not reach DEFAULT_DIR (a
# checkout under /root or in a `mktemp -d` folder): root's, and open for them to pass.
SHARED_DIR = Path("/var/lib/failover-lab")
REGIONS = {"us-east-1": "127.0.1.1", "us-west-2": "127.0.2.1", "eu-west-1": "127.0.3.1"}
# An odd count keeps a strict majority meaningful: 5 regions, quorum 3.
FIVE_REGIONS = {**REGIONS, "ap-south-1": "127.0.4.1", "sa-east-1": "127.0.5.1"}
SIZES = {3: REGIONS, 5: FIVE_REGIONS}
# One etcd member per region, beside it (with etcd, losing a region loses a member too).
ETCD_ADDRESSES = {"us-east-1": "127.0.1.2", "us-west-2": "127.0.2.2", "eu-west-1": "127.0.3.2",
                  "ap-south-1": "127.0.4.2", "sa-east-1": "127.0.5.2"}
PRIORITIES = {"us-east-1": 100, "us-west-2": 50, "eu-west-1": 10, "ap-south-1": 5, "sa-east-1": 1}
FIRST_WRITER = "us-east-1"
PG_PORT = 5432
CONTROLLER_PORT = 8700
DNS_ADDRESS, DNS_PORT = "127.0.0.1", 5300
ZONE = "lab.test."
SERVICE = "app"
WRITER_RECORD, READER_RECORD = "app.lab.test.", "app-ro.lab.test."
TTL = 1
APP_ROLE = "app"
SUPERUSER = "postgres"
TLS_DIR = "tls"  # under the lab's folder, with `lab up --tls`


def default_dir() -> Path:
    """The lab's folder when --dir is not given: DEFAULT_DIR in the current folder if the
    lab's servers can reach it there, else SHARED_DIR. Every lab verb decides alike, so
    `lab status` or `lab down` run where `lab up` ran find its lab."""
    return DEFAULT_DIR if folder_closed_to_others(Path.cwd()) is None else SHARED_DIR


def lab_ca_file(lab_dir: Path) -> Path:
    """The certificate of the lab's CA with `lab up --tls`: every region's user reads it
    (their servers' subscriptions verify the writer with it)."""
    return lab_dir / TLS_DIR / "ca.crt"


def region_tls_files(lab_dir: Path, region: str) -> tuple[Path, Path]:
    """A region's certificate and key with `lab up --tls`, its PostgreSQL server's and its
    controller's (both on the region's address); owned by the region's user."""
    folder = lab_dir / TLS_DIR / region
    return folder / "server.crt", folder / "server.key"


def lab_regions(count: int) -> dict[str, str]:
    """The lab's regions (name: address) for `lab up --regions COUNT`."""
    try:
        return SIZES[count]
    except KeyError:
        raise UserError(f"--regions: {count}; the lab has {' or '.join(map(str, SIZES))} "
                        "regions") from None


class RegionState(BaseModel):
    name: str
    address: str
    pg_port: int
    data_dir: str
    postmaster_pid: int | None
    controller_url: str
    controller_pid: int | None
    user: str


class DnsState(BaseModel):
    address: str
    port: int
    zone: str
    key_file: str
    pid: int | None


REJOIN_MODES = ("auto", "manual")
DURABILITY_MODES = ("async", "sync")


@dataclass(frozen=True)
class Timings:
    """How fast the lab's fleet notices and acts: its fleet settings and each region's
    postgres check (durations as the topology writes them)."""

    observation_max_age: str
    self_fence_after: str
    self_fence_duration: str
    exchange_interval: str
    check: dict[str, str | int]


TIMINGS = {
    # One probe a second, three failures: robust on a loaded machine (the chaos suite
    # runs beside the rest of the tests). The lease (2 s) outlasts a probe interval plus
    # an exchange interval, so that it never lapses between renewals.
    "default": Timings("1500ms", "1s", "1s", "500ms",
                       {"interval": "1s", "timeout": "500ms", "healthy_threshold": 2,
                        "unhealthy_threshold": 3}),
    # Fall fast: a server that closes its session or refuses is re-probed every 150 ms
    # (a crash is DOWN after 0.6 s, a refusing blip shorter than that never is); a server
    # that does not answer, every timeout, so that a blip of 800 ms that only times probes
    # out fails at most four of five. The lease (1 s) outlasts a probe interval plus two
    # exchange intervals.
    "fast": Timings("1s", "600ms", "400ms", "250ms",
                    {"interval": "500ms", "timeout": "250ms", "fast_interval": "150ms",
                     "min_outage": "600ms", "healthy_threshold": 2, "unhealthy_threshold": 5}),
}


class ServiceState(BaseModel):
    name: str
    database: str
    writer_record: str
    reader_record: str
    ttl: int
    app_role: str
    # What the service's `rejoin` says: "auto", the fleet rejoins a returning old writer;
    # "manual", the drill and the tests do, as an operator would.
    rejoin: str = "manual"
    # What the service's `durability`, `sync_count` and `sync_strict` say (the last two read
    # in sync mode only).
    durability: str = "async"
    sync_count: int = 1
    sync_strict: bool = False
    timings: str = "default"  # a key of TIMINGS (`lab up --timings`)


class EtcdMember(BaseModel):
    name: str
    region: str  # the region whose isolation cuts this member off too
    address: str
    client_url: str
    pid: int | None


class LabState(BaseModel):
    dir: str
    topology: str
    coordination: str
    pg_version: int
    regions: list[RegionState]
    dns: DnsState
    service: ServiceState
    etcd: list[EtcdMember] = []
    faults: dict[str, list[str]] = {}  # region -> the fault kinds in force, oldest first
    # `lab up --tls` (False in files from before it): the servers and controllers speak TLS
    # only, with certificates from the lab's CA (see the module's docstring).
    tls: bool = False
    # The PostgreSQL binaries the lab runs, which faults start its servers with again (None
    # in files from before it: they find them as `lab up` did, `pg_bindir()`).
    pg_bindir: str | None = None

    def controllers(self) -> dict[str, str]:
        """Each region's controller URL."""
        return {region.name: region.controller_url for region in self.regions}

    def ca_file(self) -> Path | None:
        """The lab's CA with TLS, else None."""
        return lab_ca_file(Path(self.dir)) if self.tls else None

    def api_tls(self) -> ssl.SSLContext | None:
        """What verifies the controllers' `https://` URLs for the lab's clients (the lab's
        CA, as the topology's `[api] ca_file`), or None without TLS. A new context each
        time: a lab brought up again in the same folder has a new CA."""
        ca = self.ca_file()
        return None if ca is None else client_context(ca, where=f"{lab_file(Path(self.dir))}: tls")

    def pg_tls(self) -> dict[str, Any]:
        """libpq keywords for the lab's own database sessions: with TLS, verify the server's
        certificate against the lab's CA and that it names the address connected to; none
        without (libpq's defaults, as before TLS)."""
        ca = self.ca_file()
        return {} if ca is None else {"sslmode": "verify-full", "sslrootcert": str(ca)}

    def region(self, name: str) -> RegionState:
        for region in self.regions:
            if region.name == name:
                return region
        raise UserError(f"REGION: no region {name!r} in the lab "
                        f"(regions: {', '.join(r.name for r in self.regions)})")


def lab_file(lab_dir: Path) -> Path:
    return lab_dir / "lab.json"


def load(lab_dir: Path) -> LabState:
    path = lab_file(lab_dir)
    try:
        return LabState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"--dir: no lab in {lab_dir} ({path} is missing); start one with "
                        "`failover lab up`") from None
    except ValidationError as exc:
        raise UserError(f"{path}: not a lab state file this version understands: "
                        f"{exc.errors()[0]['msg']}") from None


def save(state: LabState, lab_dir: Path) -> None:
    path = lab_file(lab_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.model_dump(mode="json"), indent=2) + "\n")
    os.replace(tmp, path)
