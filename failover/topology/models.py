"""What a topology is: pydantic models of `fleet.toml` and the region files.

Every field is validated where it is read, so that `loader` can report every
problem at once with the file and the field.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
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


def _http_url_with_host(value: str) -> str:
    """Every URL the fleet dials (a probe target, a controller) is http(s) and names a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    return value


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
        return _http_url_with_host(value)


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
        return _http_url_with_host(value).rstrip("/")

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
    # "auto": a former writer that comes back is rejoined by the fleet (its divergent
    # transactions listed in a reconciliation file, re-copied from the writer, then serving
    # reads again); "manual": it stays fenced until an operator runs `failover rejoin`.
    rejoin: Literal["auto", "manual"] = "manual"
    durability: Literal["async", "sync"] = Field(
        default="async",
        description='"async": the writer acknowledges a commit once it is durable locally, so a '
                    "failover may lose what the subscribers had not applied yet (up to "
                    'max_lag_bytes / max_lag_seconds). "sync": the writer acknowledges a commit '
                    "only once sync_count of its healthy subscribers have it (PostgreSQL's "
                    "synchronous_standby_names = ANY k (...), which failover keeps up to date), and "
                    "a failover promotes only a subscriber proven to hold every acknowledged commit.")
    sync_count: int = Field(
        default=1, ge=1,
        description="With durability = \"sync\": how many subscribers must have a commit before the "
                    "writer acknowledges it (k in ANY k). At most the number of the service's other "
                    "regions. Read only in sync mode.")
    sync_strict: bool = Field(
        default=False,
        description="With durability = \"sync\", when fewer than sync_count subscribers are healthy: "
                    "false (default), the writer degrades to asynchronous commits (the status, the "
                    "journal and failover_service_durability say so) and goes back to synchronous "
                    "once enough are healthy again; true, it keeps waiting for the standbys it names, "
                    "so writes block rather than lose the guarantee.")

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
