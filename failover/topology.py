"""The fleet as configured: a folder with `fleet.toml` and one `<region>.toml` per region.

`load_topology` reads and validates the whole folder and reports every problem
at once, each naming the file, the field and what to do, so an operator fixes
a topology in one pass. Which region holds a service's primary is deliberately
absent: that is state, discovered from the databases and DNS.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from failover.durations import Duration
from failover.errors import UserError

FLEET_FILE = "fleet.toml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_from(env: str | None, file: Path | None, *, what: str, where: str) -> SecretStr | None:
    """Read a secret from an env var or a file; the error names where it was configured."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise UserError(f"{where}: {what} comes from the environment variable {env}, which is not set")
        return SecretStr(value)
    if file is not None:
        try:
            return SecretStr(file.read_text().strip())
        except OSError as exc:
            raise UserError(f"{where}: cannot read {what} from {file}: {exc.strerror}") from exc
    return None


# ---------------------------------------------------------------- checks


class _CheckBase(_Model):
    name: str = Field(min_length=1)
    interval: Duration = 5.0
    timeout: Duration = 2.0
    healthy_threshold: int = Field(default=2, ge=1)
    unhealthy_threshold: int = Field(default=3, ge=1)
    # Liveness says the region is alive; readiness says it could take the
    # writer role now; info is shown but never drives a verdict. Only
    # liveness checks make a region DOWN.
    purpose: Literal["liveness", "readiness", "info"] = "liveness"

    @model_validator(mode="after")
    def _timeout_shorter_than_interval(self) -> _CheckBase:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g} s) must be shorter than interval ({self.interval:g} s), "
                "or probes would overlap"
            )
        return self

    @property
    def detection_time(self) -> float:
        """Time for this check alone to turn a dead target unhealthy."""
        return self.interval * self.unhealthy_threshold


class HttpCheck(_CheckBase):
    kind: Literal["http"]
    url: str
    expect_status: list[int] | None = None  # None: any 2xx or 3xx
    body_contains: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        return value


class TcpCheck(_CheckBase):
    kind: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class PostgresCheck(_CheckBase):
    kind: Literal["postgres"]
    service: str


class DnsCheck(_CheckBase):
    kind: Literal["dns"]
    query: str = Field(min_length=1, description="the name to resolve")
    record_type: str = "A"
    expect: list[str] | None = None
    server: str | None = None  # None: the system resolver
    port: int = Field(default=53, ge=1, le=65535)


class CommandCheck(_CheckBase):
    kind: Literal["command"]
    argv: list[str] = Field(min_length=1)


Check = Annotated[
    HttpCheck | TcpCheck | PostgresCheck | DnsCheck | CommandCheck, Field(discriminator="kind")
]
CHECK_KINDS = ("http", "tcp", "postgres", "dns", "command")

# ---------------------------------------------------------------- regions


class PostgresEndpoint(_Model):
    host: str = Field(min_length=1)
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = Field(min_length=1)
    user: str = Field(min_length=1)
    password_env: str | None = None
    password_file: Path | None = None
    connect_timeout: Duration = 3.0
    # Filled by the loader: where this endpoint was configured, for messages.
    source: str = Field(default="", exclude=True)

    def password(self) -> SecretStr | None:
        return _secret_from(self.password_env, self.password_file,
                            what="the PostgreSQL password", where=self.source)

    def conninfo(self, **overrides: str | int) -> str:
        """A libpq keyword/value string, password included; never log it."""
        from psycopg.conninfo import make_conninfo  # psycopg is heavy: import on use

        params: dict[str, Any] = {
            "host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": "failover",
        }
        secret = self.password()
        if secret is not None:
            params["password"] = secret.get_secret_value()
        params.update(overrides)
        return make_conninfo(**params)

    def describe(self) -> str:
        """host:port/dbname as user: safe to print."""
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


class Region(_Model):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    priority: int = 0
    controller_url: str
    address: str
    postgres: dict[str, PostgresEndpoint] = Field(default_factory=dict)
    checks: list[Check] = Field(default_factory=list)

    @field_validator("controller_url")
    @classmethod
    def _controller_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(
                f"expected the IPv4 or IPv6 address published in DNS for this region, got {value!r}"
            ) from None

    @property
    def liveness_checks(self) -> list[_CheckBase]:
        return [check for check in self.checks if check.purpose == "liveness"]


# ---------------------------------------------------------------- fleet


class Service(_Model):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    database: str = Field(min_length=1)
    writer_record: str
    reader_record: str | None = None
    ttl: int = Field(default=30, ge=1, le=86400)
    max_lag_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    max_lag_seconds: Duration = 30.0
    cooldown: Duration = 300.0
    regions: list[str] | None = None  # None: every region
    app_roles: list[str] = Field(default_factory=list)
    pre_promote: list[str] | None = None
    post_failover: list[str] | None = None

    @field_validator("writer_record", "reader_record")
    @classmethod
    def _absolute_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith("."):
            value += "."
        return value.lower()


class EtcdSettings(_Model):
    endpoints: list[str] = Field(min_length=1)
    prefix: str = "/failover"
    lease_ttl: Duration = 5.0
    # How often the others' observations are read between exchanges: the delay news waits.
    poll_interval: Duration = Field(default=0.1, gt=0)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    user: str | None = None
    password_env: str | None = None


class CoordinationSettings(_Model):
    backend: Literal["peers", "etcd"] = "peers"
    key_env: str | None = "FAILOVER_FLEET_KEY"
    key_file: Path | None = None
    exchange_interval: Duration = 1.0
    request_window: Duration = 30.0  # signed requests older or newer than this are replays
    etcd: EtcdSettings | None = None

    @model_validator(mode="after")
    def _etcd_needs_settings(self) -> CoordinationSettings:
        if self.backend == "etcd" and self.etcd is None:
            raise ValueError("backend = \"etcd\" needs a [coordination.etcd] table with endpoints")
        return self

    def fleet_key(self, where: str) -> SecretStr | None:
        return _secret_from(self.key_env if self.key_file is None else None, self.key_file,
                            what="the fleet key", where=where)


class Rfc2136Settings(_Model):
    server: str
    port: int = Field(default=53, ge=1, le=65535)
    key_file: Path | None = None
    key_name: str | None = None
    key_secret_env: str | None = None
    algorithm: str = "hmac-sha256"
    # "host:port" of every server clients ask; empty: the zone's NS records, on `port`.
    authoritative: list[str] = Field(default_factory=list)
    timeout: Duration = 2.0


class Route53Settings(_Model):
    hosted_zone_id: str = Field(min_length=1)
    endpoint_url: str | None = None
    region_name: str = "us-east-1"
    requests_per_second: float = Field(default=5.0, gt=0)
    timeout: Duration = 5.0


class DnsSettings(_Model):
    provider: Literal["rfc2136", "route53", "none"] = "none"
    zone: str | None = None
    rfc2136: Rfc2136Settings | None = None
    route53: Route53Settings | None = None

    @field_validator("zone")
    @classmethod
    def _absolute_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return value.lower() if value.endswith(".") else value.lower() + "."

    @model_validator(mode="after")
    def _provider_settings(self) -> DnsSettings:
        if self.provider != "none" and self.zone is None:
            raise ValueError(f"provider = \"{self.provider}\" needs zone = \"example.com.\"")
        if self.provider == "rfc2136" and self.rfc2136 is None:
            raise ValueError("provider = \"rfc2136\" needs a [dns.rfc2136] table (server, key_file)")
        if self.provider == "route53" and self.route53 is None:
            raise ValueError("provider = \"route53\" needs a [dns.route53] table (hosted_zone_id)")
        return self


class Fleet(_Model):
    name: str = Field(min_length=1)
    quorum: int | None = Field(default=None, ge=1)
    observation_max_age: Duration = 10.0
    self_fence_after: Duration = 5.0
    self_fence_duration: Duration = 1.0  # how long fencing one's own database may take
    coordination: CoordinationSettings = Field(default_factory=CoordinationSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    services: list[Service] = Field(default_factory=list)


# ---------------------------------------------------------------- the whole


@dataclass(frozen=True)
class Topology:
    path: Path
    fleet: Fleet
    regions: dict[str, Region]
    region_files: dict[str, Path]
    services: dict[str, Service] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", {s.name: s for s in self.fleet.services})

    @property
    def quorum(self) -> int:
        """Observers needed for a verdict: configured, or a strict majority."""
        return self.fleet.quorum or len(self.regions) // 2 + 1

    def region(self, name: str, *, flag: str = "--region") -> Region:
        """The region called `name`, or a UserError listing the known ones."""
        try:
            return self.regions[name]
        except KeyError:
            known = ", ".join(self.regions) or "none"
            raise UserError(f"{flag}: no region {name!r} in {self.path} (known: {known})") from None

    def service(self, name: str, *, flag: str = "SERVICE") -> Service:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(self.services) or "none"
            raise UserError(
                f"{flag}: no service {name!r} in {self.path / FLEET_FILE} (known: {known})"
            ) from None

    def service_regions(self, service: Service) -> list[Region]:
        """Regions that hold a copy of the service's database, in configured order."""
        names = service.regions if service.regions is not None else list(self.regions)
        return [self.regions[name] for name in names]

    def endpoint(self, region: str, service: str) -> PostgresEndpoint:
        try:
            return self.regions[region].postgres[service]
        except KeyError:
            raise UserError(
                f"{self.region_files.get(region, self.path)}: postgres.{service}: region {region!r} "
                f"has no PostgreSQL endpoint for service {service!r}"
            ) from None

    def region_by_address(self, address: str) -> Region | None:
        for region in self.regions.values():
            if region.address == address:
                return region
        return None

    def fleet_key(self) -> SecretStr | None:
        return self.fleet.coordination.fleet_key(f"{self.path / FLEET_FILE}: coordination")


# ---------------------------------------------------------------- loading


def _read_toml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: malformed TOML: {exc}")
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
    return None


def _field_path(loc: Iterable[int | str]) -> str:
    out = ""
    parts = list(loc)
    for index, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in CHECK_KINDS and index > 0 and isinstance(parts[index - 1], int):
            continue  # the discriminated union's tag: the user never wrote it
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _validation_problems(path: Path, exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see regions/example/ for the fields)"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown check kind; expected one of {', '.join(CHECK_KINDS)}"
        elif error["type"] == "union_tag_not_found":
            message = f"missing kind; expected one of {', '.join(CHECK_KINDS)}"
        problems.append(f"{path}: {_field_path(error['loc'])}: {message}")
    return problems


def _cross_checks(fleet_path: Path, fleet: Fleet, regions: dict[str, Region],
                  files: dict[str, Path], *, all_regions_loaded: bool) -> list[str]:
    """Problems between files; region membership is judged only when every region file
    loaded, so that one broken file does not echo as a cascade of false problems."""
    problems: list[str] = []
    n = len(regions)
    if fleet.quorum is not None:
        if fleet.quorum > n:
            problems.append(f"{fleet_path}: quorum: {fleet.quorum} is larger than the fleet "
                            f"({n} regions); use at most {n}")
        elif fleet.quorum <= n // 2:
            problems.append(f"{fleet_path}: quorum: {fleet.quorum} of {n} is not a strict majority, "
                            f"so two halves could both act; use at least {n // 2 + 1}")
    seen: set[str] = set()
    for index, service in enumerate(fleet.services):
        where = f"{fleet_path}: services[{index}]"
        if service.name in seen:
            problems.append(f"{where}.name: service {service.name!r} is defined twice")
        seen.add(service.name)
        members = service.regions if service.regions is not None else list(regions)
        for name in members if all_regions_loaded else []:
            if name not in regions:
                problems.append(f"{where}.regions: unknown region {name!r} "
                                f"(known: {', '.join(regions) or 'none'})")
            elif service.name not in regions[name].postgres:
                problems.append(f"{files[name]}: postgres.{service.name}: missing; region {name!r} "
                                f"takes part in service {service.name!r} and needs its endpoint")
        if len(members) < 2 and all_regions_loaded:
            problems.append(f"{where}.regions: a service needs at least two regions to fail over")
        zone = fleet.dns.zone
        if zone is not None:
            for attr in ("writer_record", "reader_record"):
                record = getattr(service, attr)
                if record is not None and not (record == zone or record.endswith("." + zone)):
                    problems.append(f"{where}.{attr}: {record} is outside the zone {zone}")
    for name, region in regions.items():
        for service_name in region.postgres:
            if service_name not in seen:
                problems.append(f"{files[name]}: postgres.{service_name}: no service "
                                f"{service_name!r} in {fleet_path}")
        for index, check in enumerate(region.checks):
            if isinstance(check, PostgresCheck) and check.service not in region.postgres:
                problems.append(f"{files[name]}: checks[{index}].service: region {name!r} has no "
                                f"postgres.{check.service} endpoint to check")
    detection = [check.detection_time for region in regions.values()
                 for check in region.liveness_checks]
    if detection and fleet.self_fence_after >= min(detection):
        problems.append(
            f"{fleet_path}: self_fence_after: {fleet.self_fence_after:g} s must be shorter than the "
            f"{min(detection):g} s the fleet needs to declare a region DOWN (interval x "
            "unhealthy_threshold of the fastest liveness check), or the old primary could still "
            "take writes when the new one starts"
        )
    if not regions and all_regions_loaded:
        problems.append(f"{fleet_path.parent}: no <region>.toml files; a fleet needs regions")
    return problems


def load_topology(path: Path, *, flag: str = "--topology") -> Topology:
    """Read and validate a topology folder; UserError lists every problem found."""
    path = Path(path)
    if not path.is_dir():
        hint = " (pass the folder, not the file)" if path.name == FLEET_FILE else ""
        raise UserError(f"{flag}: {path} is not a folder{hint}")
    fleet_path = path / FLEET_FILE
    if not fleet_path.exists():
        raise UserError(f"{fleet_path}: missing; a topology folder needs fleet.toml")
    problems: list[str] = []
    fleet: Fleet | None = None
    raw = _read_toml(fleet_path, problems)
    if raw is not None:
        try:
            fleet = Fleet.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_validation_problems(fleet_path, exc))

    regions: dict[str, Region] = {}
    files: dict[str, Path] = {}
    problems_before_regions = len(problems)
    for region_path in sorted(path.glob("*.toml")):
        if region_path.name == FLEET_FILE:
            continue
        raw = _read_toml(region_path, problems)
        if raw is None:
            continue
        try:
            region = Region.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_validation_problems(region_path, exc))
            continue
        if region.name in regions:
            problems.append(f"{region_path}: name: region {region.name!r} is already defined "
                            f"in {files[region.name]}; region names must be unique")
            continue
        endpoints = {svc: ep.model_copy(update={"source": f"{region_path}: postgres.{svc}"})
                     for svc, ep in region.postgres.items()}
        regions[region.name] = region.model_copy(update={"postgres": endpoints})
        files[region.name] = region_path

    if fleet is not None:
        all_loaded = len(problems) == problems_before_regions
        problems.extend(_cross_checks(fleet_path, fleet, regions, files,
                                      all_regions_loaded=all_loaded))
    if problems or fleet is None:
        raise UserError(f"{path}: the topology has {len(problems)} problem(s)", problems)
    return Topology(path=path, fleet=_anchor_files(fleet, path),
                    regions={name: _anchor_region(region, path) for name, region in regions.items()},
                    region_files=files)


def _anchored(file: Path | None, folder: Path) -> Path | None:
    """A relative path in a topology file means relative to the topology folder."""
    return None if file is None or file.is_absolute() else folder / file


def _anchor_files(fleet: Fleet, folder: Path) -> Fleet:
    coordination = fleet.coordination
    if (key := _anchored(coordination.key_file, folder)) is not None:
        coordination = coordination.model_copy(update={"key_file": key})
    if coordination.etcd is not None:
        updates = {name: anchored for name in ("ca_file", "cert_file", "key_file")
                   if (anchored := _anchored(getattr(coordination.etcd, name), folder))}
        coordination = coordination.model_copy(
            update={"etcd": coordination.etcd.model_copy(update=updates)})
    dns = fleet.dns
    if dns.rfc2136 is not None and (key := _anchored(dns.rfc2136.key_file, folder)):
        dns = dns.model_copy(update={"rfc2136": dns.rfc2136.model_copy(update={"key_file": key})})
    return fleet.model_copy(update={"coordination": coordination, "dns": dns})


def _anchor_region(region: Region, folder: Path) -> Region:
    endpoints = {service: endpoint.model_copy(update={"password_file": password})
                 if (password := _anchored(endpoint.password_file, folder)) else endpoint
                 for service, endpoint in region.postgres.items()}
    return region.model_copy(update={"postgres": endpoints})
