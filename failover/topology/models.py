"""What a topology is: pydantic models of `fleet.toml` and the region files.

Every field is validated where it is read, so that `loader` can report every
problem at once with the file and the field.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
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

from failover.durations import Duration, DurationOrZero
from failover.errors import UserError
from failover.tls import client_context, server_context

FLEET_FILE = "fleet.toml"


class _Model(BaseModel):
    # NaN and infinity are valid TOML floats, but no field means anything by them.
    # Every field is documented by the docstring under it (or Field(description=...)):
    # scripts/topology_reference.py writes docs/reference/topology.md from them, and a
    # unit test fails while a field has none.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)


def _secret_from(env: str | None, file: Path | None, *, what: str, where: str,
                 fields: tuple[str, str]) -> SecretStr | None:
    """Read a secret from an env var or a file; the error names the file and the field
    (`fields`: the names of the env and the file fields) that configured it."""
    env_field, file_field = fields
    if env:
        value = os.environ.get(env)
        if value is None:
            raise UserError(f"{where}.{env_field}: {what} comes from the environment variable "
                            f"{env}, which is not set; set it or fix the name")
        return SecretStr(value)
    if file is not None:
        try:
            return SecretStr(file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise UserError(f"{where}.{file_field}: cannot read {what} from {file}: "
                            f"{exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise UserError(f"{where}.{file_field}: {file} is not UTF-8 text (byte {exc.start}); "
                            f"it must hold {what} as text") from exc
    return None


def _refuse_bad_port(url: str) -> None:
    """A URL's port must be 1..65535: urlsplit leaves that check to whoever reads `.port`,
    which would raise far from the file (a probe's traceback in `failover check`)."""
    try:
        port = urlsplit(url).port
    except ValueError:
        raise ValueError(f"the port of {url!r} is not a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"the port of {url!r} is 0; use a port from 1 to 65535")


def _http_url_with_host(value: str) -> str:
    """Every URL the fleet dials (a probe target, a controller) is http(s) and names a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
    _refuse_bad_port(value)
    return value


TLS_FILE_FIELDS = ("ca_file", "cert_file", "key_file")


def _files_together(model: BaseModel, cert: str = "cert_file", key: str = "key_file") -> None:
    """A certificate is nothing without its key, and the other way round."""
    if (getattr(model, cert) is None) != (getattr(model, key) is None):
        raise ValueError(f"{cert} and {key} go together: set both or neither")


# ---------------------------------------------------------------- checks


class _CheckBase(_Model):
    """What every check has, whatever its kind. Every controller runs every check of every
    region, so a check's target must be reachable from every region's controller host."""

    name: str = Field(min_length=1)
    """Shown by `failover check`, `status`, `history` and in metrics (label `check`)."""
    interval: Duration = 5.0
    """How often each controller runs the check."""
    timeout: Duration = 2.0
    """How long one probe may take before it counts as a failure; shorter than `interval`,
    or probes would overlap."""
    healthy_threshold: int = Field(default=2, ge=1)
    """Successes in a row that make the check healthy."""
    unhealthy_threshold: int = Field(default=3, ge=1)
    """Failures in a row that make the check unhealthy. `interval + (unhealthy_threshold -
    1) x (fast_interval, else interval)` of the fastest liveness check is the fleet's
    detection time, which bounds `self_fence_after` and `observation_max_age` (see the
    rules at the top)."""
    fast_interval: Duration | None = None
    """Fall fast, rise slow: after a failure, while the check is not unhealthy yet, the next
    probe starts this long after the last one started instead of `interval`; a success, or
    the check turning unhealthy, goes back to `interval`. A `postgres` check then also
    probes again at once when the server closes the session it keeps (a crash, a kill, a
    shutdown). Shorter than `interval`. Not set: every probe at `interval`."""
    min_outage: DurationOrZero = 0.0
    """The longest blip the check must ride out without turning unhealthy: the loader
    refuses `(unhealthy_threshold - 1) x (fast_interval, else interval)` shorter than this.
    0: no such promise."""
    purpose: Literal["liveness", "readiness", "info"] = "liveness"
    """`liveness`: the region is alive; any unhealthy liveness check makes this controller's
    observation of the region unhealthy, and only liveness checks make a region DOWN.
    `readiness`: the region could take the writer role now (a `postgres` readiness check
    also fails while the copy is fenced or lags beyond the service's limits). `info`: shown,
    never used in a verdict."""

    @model_validator(mode="after")
    def _timings(self) -> _CheckBase:
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g} s) must be shorter than interval ({self.interval:g} s), "
                "or probes would overlap"
            )
        if self.fast_interval is not None and self.fast_interval >= self.interval:
            raise ValueError(
                f"fast_interval ({self.fast_interval:g} s) must be shorter than interval "
                f"({self.interval:g} s): it is the cadence after a failure")
        ridden_out = (self.unhealthy_threshold - 1) * self.retry_interval
        if ridden_out < self.min_outage:
            field = "fast_interval" if self.fast_interval is not None else "interval"
            raise ValueError(
                f"min_outage ({self.min_outage:g} s): a blip that long would turn the check "
                f"unhealthy, since (unhealthy_threshold - 1) x {field} is {ridden_out:g} s; "
                f"raise {field} or unhealthy_threshold, or lower min_outage")
        return self

    @property
    def retry_interval(self) -> float:
        """Between probes after a failure, until the check turns unhealthy."""
        return self.fast_interval if self.fast_interval is not None else self.interval

    @property
    def detection_time(self) -> float:
        """Time for this check alone to turn a dead target unhealthy: the first failing
        probe within an interval, then the rest of the unhealthy run."""
        return self.interval + (self.unhealthy_threshold - 1) * self.retry_interval


class HttpCheck(_CheckBase):
    """An HTTP GET; redirects are not followed. `https` URLs verify the server's certificate
    and host name, against `ca_file` when it is set, else the system's CA store."""

    kind: Literal["http"]
    """The check's kind."""
    url: str
    """What to GET: an `http://` or `https://` URL with a host; the port, if given, 1 to 65535."""
    expect_status: list[int] | None = None
    """The status codes that count as a success; not set: any 2xx or 3xx."""
    body_contains: str | None = None
    """Text the body must contain, searched in its first 64 KiB."""
    ca_file: Path | None = None
    """CA certificates (PEM) that verify an `https` server, instead of the system's store;
    relative to the topology folder."""
    cert_file: Path | None = None
    """A client certificate (PEM) presented to an `https` server that asks for one, with
    `key_file`; relative to the topology folder."""
    key_file: Path | None = None
    """The private key of `cert_file` (PEM), with it; relative to the topology folder."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_url_with_host(value)

    @model_validator(mode="after")
    def _tls_files_need_https(self) -> HttpCheck:
        named = [name for name in TLS_FILE_FIELDS if getattr(self, name) is not None]
        if named and urlsplit(self.url).scheme != "https":
            raise ValueError(f"{' and '.join(named)} apply to https:// URLs only, and url is "
                             f"{self.url!r}")
        _files_together(self)
        return self


class TcpCheck(_CheckBase):
    """A TCP connection: healthy when the port accepts it."""

    kind: Literal["tcp"]
    """The check's kind."""
    host: str = Field(min_length=1)
    """The host name or address to connect to."""
    port: int = Field(ge=1, le=65535)
    """The port to connect to."""


class PostgresCheck(_CheckBase):
    """One query, `failover.node_status`, on the region's database of a service. It also
    reports the role, fence, epoch, applied position and lag that the engine plans with."""

    kind: Literal["postgres"]
    """The check's kind."""
    service: str
    """The service whose database to query, through this region's `postgres.<service>`
    endpoint (which must exist). A database without the failover schema still counts as
    alive for liveness and info checks."""


class DnsCheck(_CheckBase):
    """A DNS query, asked again on every probe (no cache)."""

    kind: Literal["dns"]
    """The check's kind."""
    query: str = Field(min_length=1, description="The name to resolve.")
    record_type: str = "A"
    """The record type to ask for."""
    expect: list[str] | None = None
    """The exact set of values the answer must hold; not set: any answer."""
    server: str | None = None
    """The server to ask; not set: the system's resolver (`/etc/resolv.conf`)."""
    port: int = Field(default=53, ge=1, le=65535)
    """The port of `server`."""


class CommandCheck(_CheckBase):
    """A program run by the controller: exit 0 is healthy. It runs in its own process
    group, which is killed when the probe times out."""

    kind: Literal["command"]
    """The check's kind."""
    argv: list[str] = Field(min_length=1)
    """The program and its arguments, run without a shell."""


Check = Annotated[
    HttpCheck | TcpCheck | PostgresCheck | DnsCheck | CommandCheck, Field(discriminator="kind")
]
CHECK_KINDS = ("http", "tcp", "postgres", "dns", "command")

# ---------------------------------------------------------------- regions

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
VERIFYING_SSLMODES = ("verify-ca", "verify-full")
SUBSCRIPTION_TLS_FIELDS = ("subscription_sslrootcert", "subscription_sslcert",
                           "subscription_sslkey")


class PostgresEndpoint(_Model):
    """How to reach this region's database of one service, as the controller's role. The
    same connection string, password included, is what the other regions' servers use to
    subscribe to this one when it is the writer: it is stored in their `pg_subscription`,
    with this endpoint's `sslmode` and the subscriber's own `subscription_ssl*` files."""

    host: str = Field(min_length=1)
    """Host name or address of the server, as libpq takes it. Every controller host and
    every other region's database server must reach it."""
    port: int = Field(default=5432, ge=1, le=65535)
    """The server's port."""
    dbname: str = Field(min_length=1)
    """The service's database on this server (one service per database)."""
    user: str = Field(min_length=1)
    """The controller's role; also the role the other regions' subscriptions log in as
    (see docs/operator-guide.md for its privileges)."""
    password_env: str | None = None
    """An environment variable holding the password. Wins over `password_file` when both
    are set; when it is set in the file but not in the environment, the controller refuses
    to start."""
    password_file: Path | None = None
    """A file holding the password (surrounding whitespace is dropped); relative to the
    topology folder. Neither set: no password is sent (libpq may still find one, e.g. in
    `~/.pgpass`)."""
    connect_timeout: Duration = 3.0
    """libpq's `connect_timeout`, rounded to whole seconds (at least 1)."""
    sslmode: SslMode | None = None
    """libpq's `sslmode` for every connection to this database: the controllers', the
    CLI's, and the subscriptions of the other regions' servers when this one is the writer.
    `verify-ca` checks the server's certificate against `sslrootcert`, `verify-full` also
    that it names `host`; `require` encrypts without checking who answers. Not set: libpq's
    default (`prefer`: TLS if the server offers it, unchecked)."""
    sslrootcert: Path | None = None
    """CA certificates (PEM) that verify this server's certificate, for the controllers and
    the CLI; relative to the topology folder. Required with `verify-ca` and `verify-full`."""
    sslcert: Path | None = None
    """A client certificate (PEM) the controllers and the CLI present to this server, with
    `sslkey`; relative to the topology folder. For `cert` authentication its common name is
    `user`."""
    sslkey: Path | None = None
    """The private key of `sslcert` (PEM), with it; relative to the topology folder. libpq
    refuses a key that its group or others may read (mode 0600, or 0640 owned by root)."""
    subscription_sslrootcert: Path | None = None
    """An absolute path **on this region's PostgreSQL server host**: the CA certificates its
    subscriptions verify the writer with. Written into the subscription's connection string,
    which this server (not the controller) opens. Required when another region of the
    service asks `verify-ca` or `verify-full`."""
    subscription_sslcert: Path | None = None
    """An absolute path on this region's PostgreSQL server host: the client certificate its
    subscriptions present to the writer, with `subscription_sslkey`."""
    subscription_sslkey: Path | None = None
    """An absolute path on this region's PostgreSQL server host: the key of
    `subscription_sslcert`, readable by the server's user only."""
    source: str = Field(default="", exclude=True)
    """Not for the file: the loader sets it to where the endpoint was configured, for
    messages, replacing any value written here."""

    @model_validator(mode="after")
    def _tls_files_fit_the_mode(self) -> PostgresEndpoint:
        if self.sslmode in VERIFYING_SSLMODES and self.sslrootcert is None:
            raise ValueError(f"sslmode = \"{self.sslmode}\" checks the server's certificate "
                             "against the CAs in sslrootcert: set sslrootcert")
        if self.sslmode == "disable" and (self.sslrootcert or self.sslcert):
            raise ValueError("sslmode = \"disable\" uses no TLS, so sslrootcert and sslcert "
                             "would be ignored: remove them or ask for TLS")
        for prefix in ("", "subscription_"):
            _files_together(self, f"{prefix}sslcert", f"{prefix}sslkey")
        for name in SUBSCRIPTION_TLS_FIELDS:
            path = getattr(self, name)
            if path is not None and not path.is_absolute():
                raise ValueError(f"{name}: {str(path)!r} is a path on this region's PostgreSQL "
                                 "server host, read by the server itself: write it absolute "
                                 "(a relative one would be read from its data folder)")
        return self

    def password(self) -> SecretStr | None:
        return _secret_from(self.password_env, self.password_file,
                            what="the PostgreSQL password", where=self.source,
                            fields=("password_env", "password_file"))

    def tls_files(self) -> dict[str, Path]:
        """The TLS files this host reads to connect (the libpq keyword and its path); each
        must be readable here, or a UserError names its field."""
        files = {name: path for name in ("sslrootcert", "sslcert", "sslkey")
                 if (path := getattr(self, name)) is not None}
        for name, path in files.items():
            try:
                path.open("rb").close()
            except OSError as exc:
                raise UserError(f"{self.source}.{name}: cannot read {path}: {exc.strerror}"
                                ) from None
        return files

    def _params(self, **overrides: str | int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "application_name": "failover",
        }
        if self.sslmode is not None:
            params["sslmode"] = self.sslmode
        secret = self.password()
        if secret is not None:
            params["password"] = secret.get_secret_value()
        params.update(overrides)
        return params

    def conninfo(self, **overrides: str | int) -> str:
        """A libpq keyword/value string for a connection from this host, password and TLS
        files included; never log it."""
        from psycopg.conninfo import make_conninfo  # psycopg is heavy: import on use

        files = {name: str(path) for name, path in self.tls_files().items()}
        return make_conninfo(**self._params(**files, **overrides))

    def conninfo_for_subscriber(self, subscriber: PostgresEndpoint,
                                **overrides: str | int) -> str:
        """The connection string a subscriber's server uses to reach this (the writer's)
        database: this endpoint's address, role, password and `sslmode`, and the
        subscriber's `subscription_ssl*` files, which live on the subscriber's server host."""
        from psycopg.conninfo import make_conninfo

        files = {name.removeprefix("subscription_"): str(path)
                 for name in SUBSCRIPTION_TLS_FIELDS
                 if (path := getattr(subscriber, name)) is not None}
        return make_conninfo(**self._params(**files, **overrides))

    def describe(self) -> str:
        """host:port/dbname as user: safe to print."""
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"


class ApiServer(_Model):
    """How this region's controller serves its API. Its files are read by this region's
    controller host only, when the controller starts (restart it after renewing them)."""

    listen: str | None = None
    """Where the controller listens, `address:port` or `[v6]:port` (e.g. `0.0.0.0:8700` when
    `controller_url` names an address the host does not hold, behind NAT). Not set: the host
    and port of `controller_url`."""
    cert_file: Path | None = None
    """The controller's certificate (PEM, followed by any intermediate certificates), served
    when `controller_url` is `https://`; it must name `controller_url`'s host (a DNS name or
    an IP address in its subject alternative names). Relative to the topology folder."""
    key_file: Path | None = None
    """The private key of `cert_file` (PEM), with it; relative to the topology folder."""

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(f"//{value}")
            valid = (bool(parts.hostname) and bool(parts.port) and parts.username is None
                     and not (parts.path or parts.query or parts.fragment))
        except ValueError:  # a malformed [v6] or a port beyond 65535
            valid = False
        if not valid:
            raise ValueError(f"expected address:port (or [v6]:port) with a port from 1 to "
                             f"65535, got {value!r}")
        return value

    @model_validator(mode="after")
    def _cert_with_key(self) -> ApiServer:
        _files_together(self)
        return self


class Region(_Model):
    """One region: a `<region>.toml` file in the topology folder (any name but
    `fleet.toml`)."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    """The region's name, unique in the fleet; `--region` and every verb use it."""
    priority: int = 0
    """Higher wins: the executor is the highest-priority controller that is heard and
    outside a DOWN region, and among equally good failover targets the higher priority is
    promoted."""
    controller_url: str
    """Where the other controllers and the CLI reach this region's controller: an `http://`
    or `https://` URL with a host (a trailing `/` is dropped), unique in the fleet. The
    controller listens on its host and port unless `api.listen` says otherwise. With
    `https://` it serves TLS with `api.cert_file` and `api.key_file`, and is verified with
    the CAs of `fleet.toml`'s `api.ca_file`."""
    address: str
    """The IPv4 or IPv6 address that DNS publishes for this region (an `A` or `AAAA`
    record): the writer record points at the writer region's address, the reader record
    holds the readers' addresses. Unique in the fleet."""
    postgres: dict[str, PostgresEndpoint] = Field(default_factory=dict)
    """One endpoint per service this region holds a copy of, keyed by service name."""
    checks: list[Check] = Field(default_factory=list)
    """The checks every controller runs against this region."""
    api: ApiServer = Field(default_factory=ApiServer)
    """How this region's controller serves its API (`[api]`)."""

    @property
    def serves_tls(self) -> bool:
        return urlsplit(self.controller_url).scheme == "https"

    @property
    def listen_address(self) -> tuple[str, int]:
        """Where this controller listens: `api.listen`, else the host and port of its URL
        (an IPv6 host without its brackets, the scheme's port when the URL names none)."""
        parts = urlsplit(f"//{self.api.listen}" if self.api.listen else self.controller_url)
        return parts.hostname or "", parts.port or (443 if self.serves_tls else 80)

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
    """A database replicated to several regions, with one writer at a time."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """The service's name, unique in the fleet. Publication, subscription and slot names
    derive from it (`failover_<name>`, `failover_<name>_<region>`)."""
    database: str = Field(min_length=1)
    """The database's name. Only `topology from-terraform` reads it: the controller
    connects to each region's `postgres.<service>.dbname`."""
    writer_record: str
    """The DNS name that points at the writer region's `address`; inside `dns.zone`. Made
    absolute (a trailing `.`) and lower-case."""
    reader_record: str | None = None
    """A DNS name that holds the address of every region serving reads (the writer and
    caught-up, unfenced subscribers); not set: no reader record is managed."""
    ttl: int = Field(default=30, ge=1, le=86400)
    """TTL in seconds of the records the controllers write. Clients may keep the old writer
    address this long after a failover."""
    max_lag_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    """The most WAL, in bytes, a subscriber may be behind and still be promoted or counted
    ready; beyond it an automatic failover is refused, and `failover promote` needs
    `--allow-data-loss`."""
    max_lag_seconds: DurationOrZero = 30.0
    """The same limit as an age: how old the newest heartbeat a subscriber applied may be.
    0: only a subscriber that is fully caught up."""
    catch_up_timeout: DurationOrZero = 5.0
    """When a failover finds the old writer's database still answering (say its region is
    DOWN by its other checks), the old writer is fenced and the target gets this long to
    apply everything the old writer acknowledged before it is promoted; past it, the target
    is promoted with what it has. 0: no wait."""
    cooldown: DurationOrZero = 300.0
    """No automatic failover within this long of the service's last one. 0: no wait."""
    regions: list[str] | None = None
    """The regions that hold a copy, at least two; each needs a `postgres.<service>`
    endpoint. Not set: every region."""
    app_roles: list[str] = Field(default_factory=list)
    """The application's login roles: a fence makes them `NOLOGIN`, a promotion and an
    unfence `LOGIN` again. They must exist on every server of the service, or the fence
    step fails."""
    pre_promote: list[str] | None = None
    """A command (program and arguments, no shell) that the controller running a promotion
    or switchover runs first. It reads the plan as JSON on stdin, gets `FAILOVER_SERVICE`,
    `FAILOVER_TARGET`, `FAILOVER_OLD_WRITER` and `FAILOVER_EPOCH`, and has 30 s: a non-zero
    exit or a timeout refuses the promotion before anything changed. `--direct` verbs run
    no hooks."""
    post_failover: list[str] | None = None
    """A command run as the last step of a promotion or switchover, with the same input as
    `pre_promote`; best effort: its failure does not fail the plan. `--direct` verbs run no
    hooks."""
    rejoin: Literal["auto", "manual"] = "manual"
    """`auto`: a fenced former writer that is UP again is rejoined by the fleet: the
    transactions it took that the writer never received are written to a reconciliation
    file in the executor's state folder, it is emptied, copied again from the writer and
    unfenced, and serves reads once caught up. `manual`: it stays fenced until an operator
    runs `failover rejoin` and then `failover unfence`."""
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
    """The etcd cluster that `backend = "etcd"` coordinates through (etcd 3.4 or later:
    its gRPC gateway's JSON API)."""

    endpoints: list[str] = Field(min_length=1)
    """The cluster's members as `http://` or `https://` URLs; a call moves on to the next
    when one does not answer in time."""
    prefix: str = "/failover"
    """Every key the fleet writes lives under it: one prefix per fleet."""
    lease_ttl: Duration = 5.0
    """The etcd lease of each controller, rounded up to whole seconds: a dead controller's
    observations and leader key vanish this long after its last renewal."""
    poll_interval: Duration = 0.1
    """How often the other controllers' observations are read between exchanges: how long
    news waits."""
    ca_file: Path | None = None
    """CA certificates (PEM) that verify the members of `https://` endpoints; relative to
    the topology folder. Not set: the CA bundle of Python's `requests` (certifi); the
    environment's `REQUESTS_CA_BUNDLE` is ignored."""
    cert_file: Path | None = None
    """Client certificate (PEM), with `key_file`; relative to the topology folder. It must
    carry no common name: etcd's gateway refuses one that does."""
    key_file: Path | None = None
    """The client certificate's private key (PEM), with `cert_file`; relative to the
    topology folder."""
    user: str | None = None
    """etcd user name, with `password_env`."""
    password_env: str | None = None
    """An environment variable holding the etcd user's password, with `user`."""

    @field_validator("endpoints")
    @classmethod
    def _endpoint_urls(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            _http_url_with_host(endpoint)
        return value


class CoordinationSettings(_Model):
    """How controllers share what they see and agree on who acts, and the fleet key."""

    backend: Literal["peers", "etcd"] = "peers"
    """`peers`: controllers exchange signed observations over HTTP and claim epochs from a
    majority of each other. `etcd`: through an etcd cluster (needs `[coordination.etcd]`);
    losing etcd's quorum stops automatic action."""
    key_env: str | None = "FAILOVER_FLEET_KEY"
    """An environment variable holding the fleet key: the HMAC-SHA256 key that signs every
    request between controllers and from the CLI. Used when `key_file` is not set."""
    key_file: Path | None = None
    """A file holding the fleet key (surrounding whitespace is dropped); relative to the
    topology folder. Wins over `key_env`."""
    exchange_interval: Duration = 1.0
    """How often each controller exchanges observations, decides, and renews its writers'
    leases."""
    request_window: Duration = 30.0
    """A signed request whose timestamp is further than this from the receiver's clock is
    refused as a replay (so are exact repeats within it): controller clocks must agree
    within it."""
    etcd: EtcdSettings | None = None
    """The etcd cluster; required with `backend = "etcd"`, ignored otherwise."""

    @model_validator(mode="after")
    def _etcd_needs_settings(self) -> CoordinationSettings:
        if self.backend == "etcd" and self.etcd is None:
            raise ValueError("backend = \"etcd\" needs a [coordination.etcd] table with endpoints")
        return self

    def fleet_key(self, where: str) -> SecretStr | None:
        return _secret_from(self.key_env if self.key_file is None else None, self.key_file,
                            what="the fleet key", where=where, fields=("key_env", "key_file"))


class Rfc2136Settings(_Model):
    """Dynamic DNS updates (RFC 2136) signed with TSIG, sent over TCP to the zone's primary
    server; each change is one compare-and-set UPDATE."""

    server: str
    """The address of the server that takes updates: `address`, `address:port` or
    `[v6]:port`."""
    port: int = Field(default=53, ge=1, le=65535)
    """The port of `server` (and of the authoritative servers found from the zone's NS
    records) when it names none."""
    key_file: Path | None = None
    """A BIND key file as `tsig-keygen` writes it; relative to the topology folder. Wins
    over `key_secret_env`."""
    key_name: str | None = None
    """The TSIG key's name: which key of `key_file` to use (needed when it holds several),
    or the name of the key in `key_secret_env`."""
    key_secret_env: str | None = None
    """An environment variable holding the key's base64 secret, with `key_name`; used when
    `key_file` is not set."""
    algorithm: str = "hmac-sha256"
    """`hmac-sha1`, `hmac-sha224`, `hmac-sha256`, `hmac-sha384` or `hmac-sha512`; must match
    the algorithm in `key_file`."""
    authoritative: list[str] = Field(default_factory=list)
    """`host:port` of every server clients ask; a change counts as done once each of them
    serves it. Empty: the servers of the zone's NS records, on `port`."""
    timeout: Duration = 2.0
    """The time limit of each DNS query and update."""


class Route53Settings(_Model):
    """Amazon Route 53, through boto3 with the standard AWS credential chain; each change is
    one all-or-nothing DELETE(old) + CREATE(new) batch, polled until `INSYNC`."""

    hosted_zone_id: str = Field(min_length=1)
    """The hosted zone's id (`Z...`; a leading `/hostedzone/` is dropped)."""
    endpoint_url: str | None = None
    """Another endpoint than AWS's (an emulator or a proxy). With it, the record is read
    first and then replaced in one UPSERT: not atomic, unlike the batch AWS checks itself."""
    region_name: str = "us-east-1"
    """The AWS region the client signs requests for."""
    requests_per_second: float = Field(default=5.0, gt=0)
    """The pace of this process's Route 53 requests, retries included (a client-side token
    bucket), to stay under the account's API rate."""
    timeout: Duration = 5.0
    """Connect and read timeout of each request."""


class DnsSettings(_Model):
    """The DNS zone that holds the services' writer and reader records."""

    provider: Literal["rfc2136", "route53", "none"] = "none"
    """Who serves the zone. `none`: failover changes no DNS record, and the `dns` verbs
    refuse to run."""
    zone: str | None = None
    """The zone, e.g. `example.com.` (made absolute and lower-case); required unless
    `provider = "none"`. Every service's records must be inside it."""
    rfc2136: Rfc2136Settings | None = None
    """Required with `provider = "rfc2136"`."""
    route53: Route53Settings | None = None
    """Required with `provider = "route53"`."""

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


class ApiTrust(_Model):
    """How the controllers and the CLI verify the controllers they call at `https://`
    controller URLs."""

    ca_file: Path | None = None
    """CA certificates (PEM) that verify every `https://` `controller_url`, for the
    controllers' exchanges and claims and for the CLI; relative to the topology folder.
    Required when any region's `controller_url` is `https://`, and the only CAs trusted for
    them: for certificates from a public CA, name the system's bundle (e.g.
    `/etc/ssl/certs/ca-certificates.crt`)."""


class Fleet(_Model):
    """`fleet.toml`: what every region shares."""

    name: str = Field(min_length=1)
    """The fleet's name, shown by `status`, `history` and `topology validate`."""
    quorum: int | None = Field(default=None, ge=1)
    """Controllers needed for a verdict and for acting. Not set: a strict majority of the
    regions. Must be a strict majority and at most the number of regions."""
    observation_max_age: Duration = 10.0
    """An observation older than this does not count. Longer than
    `coordination.exchange_interval`, and at most the fleet's detection time."""
    self_fence_after: Duration = 5.0
    """How long the writer's controller may hear no quorum before it fences its own
    database. Shorter than the fleet's detection time."""
    # 2 s lets the defaults (5 s checks, 1 s exchanges) renew the lease before it runs out.
    self_fence_duration: Duration = 2.0
    """How long fencing one's own database may take. `self_fence_after +
    self_fence_duration` is the writer's lease: how far past the last healthy probe a
    quorum reports the writer may keep taking writes, and what a promotion waits out. It
    must be longer than the slowest liveness check's interval plus
    `coordination.exchange_interval`."""
    coordination: CoordinationSettings = Field(default_factory=CoordinationSettings)
    """How controllers exchange observations and agree (`[coordination]`)."""
    dns: DnsSettings = Field(default_factory=DnsSettings)
    """The DNS provider and zone (`[dns]`)."""
    api: ApiTrust = Field(default_factory=ApiTrust)
    """How controllers and the CLI verify `https://` controller URLs (`[api]`)."""
    services: list[Service] = Field(default_factory=list)
    """The replicated services (`[[services]]`)."""


# ---------------------------------------------------------------- the whole


@dataclass(frozen=True)
class Topology:
    path: Path
    fleet: Fleet
    regions: dict[str, Region]
    region_files: dict[str, Path]
    # A hash of the files' bytes (fleet.toml and every region file, by name): controllers
    # report it with every observation, and status flags a fleet whose hosts differ.
    fingerprint: str = ""
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

    def api_client_tls(self) -> ssl.SSLContext | None:
        """What verifies `https://` controller URLs (`api.ca_file`), for the controllers and
        the CLI; None when no CA is configured (then no controller serves TLS)."""
        if self.fleet.api.ca_file is None:
            return None
        return client_context(self.fleet.api.ca_file, where=f"{self.path / FLEET_FILE}: api")

    def api_server_tls(self, region: str) -> ssl.SSLContext | None:
        """The TLS context the controller of `region` serves its API with, or None for an
        `http://` controller URL."""
        api = self.regions[region].api
        if not self.regions[region].serves_tls or api.cert_file is None or api.key_file is None:
            return None
        return server_context(api.cert_file, api.key_file,
                              where=f"{self.region_files.get(region, self.path)}: api")

    def signing_key(self) -> bytes:
        """The fleet key that signs requests between controllers and from the CLI."""
        secret = self.fleet_key()
        if secret is None:
            raise UserError(f"{self.path / FLEET_FILE}: coordination: no fleet key; set key_file "
                            "or key_env (and that variable) so that controllers can sign requests")
        return secret.get_secret_value().encode()
