"""The snapshot file: one evaluation's inputs (now, me, cluster state, observations) as JSON.

`failover plan` replays a snapshot; docs/observations.md documents the
format. Field names are the engine dataclasses' own, so a controller can
write a snapshot with `dump_snapshot` and an operator can replay it. Parsing
is pure: the caller reads the file and passes its text.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from failover.engine.lsn import format_lsn
from failover.engine.model import (
    ClusterState,
    Health,
    Observation,
    Policy,
    Replication,
    Role,
    ServiceState,
    SyncStandbys,
)
from failover.errors import UserError

_LSN_TEXT = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def _lsn(value: Any) -> Any:
    """Accept PostgreSQL's text form ("16/B374D848") as well as the integer."""
    if isinstance(value, str):
        match = _LSN_TEXT.match(value)
        if match is None:
            raise ValueError(f"expected an LSN like \"0/3000060\" or an integer, got {value!r}")
        return (int(match.group(1), 16) << 32) | int(match.group(2), 16)
    return value


Lsn = Annotated[int, BeforeValidator(_lsn), Field(ge=0)]


class _Model(BaseModel):
    # JSON has no NaN or infinity, and a time or a lag that is one means nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _SyncStandbys(_Model):
    names: list[str] = Field(default_factory=list)
    count: int = Field(default=0, ge=0)
    quorum: bool = True


class _Replication(_Model):
    service: str
    role: Role
    fenced: bool = False
    epoch: int | None = Field(default=None, ge=0)
    applied_lsn: Lsn | None = None
    lag_bytes: int | None = Field(default=None, ge=0)
    lag_seconds: float | None = Field(default=None, ge=0)
    ready: bool = False
    wal_lsn: Lsn | None = None
    heartbeat_at: float | None = None
    subscription_enabled: bool | None = None
    sync_standbys: _SyncStandbys | None = None
    seen_at: float | None = None

    def replication(self) -> Replication:
        sync = self.sync_standbys
        return Replication(**{
            **self.model_dump(),
            "sync_standbys": None if sync is None else SyncStandbys(tuple(sync.names), sync.count,
                                                                    sync.quorum)})


class _Observation(_Model):
    observer: str
    target: str
    health: Health
    consecutive: int = Field(ge=0)
    observed_at: float
    services: list[_Replication] = Field(default_factory=list)
    last_ok_at: float | None = None


class _ServiceState(_Model):
    service: str
    writer: str | None
    epoch: int = Field(ge=0)
    last_failover_at: float | None = None
    paused: bool = False
    readers: list[str] = Field(default_factory=list)


class _ClusterState(_Model):
    services: list[_ServiceState]


class _Snapshot(_Model):
    now: float
    me: str
    state: _ClusterState
    observations: list[_Observation]


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: float
    me: str
    state: ClusterState
    observations: tuple[Observation, ...]


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _unknown_names(snapshot: _Snapshot, policy: Policy) -> list[str]:
    """Names the topology does not know, each with where it appears and what is known."""
    regions, services = policy.priority, policy.service
    known_regions = ", ".join(sorted(regions))
    known_services = ", ".join(sorted(services))
    problems = []

    def region(value: str | None, where: str, members: frozenset[str] | None = None) -> None:
        if value is None:
            return
        if value not in regions:
            problems.append(f"{where}: unknown region {value!r} (known: {known_regions})")
        elif members is not None and value not in members:
            problems.append(f"{where}: region {value!r} does not hold a copy of this service "
                            f"(its regions: {', '.join(sorted(members))})")

    def service(value: str, where: str) -> bool:
        if value not in services:
            problems.append(f"{where}: unknown service {value!r} (known: {known_services})")
            return False
        return True

    region(snapshot.me, "me")
    seen: set[str] = set()
    for i, state in enumerate(snapshot.state.services):
        where = f"state.services[{i}]"
        if not service(state.service, f"{where}.service"):
            continue
        if state.service in seen:
            problems.append(f"{where}.service: {state.service!r} appears twice")
        seen.add(state.service)
        members = services[state.service].regions
        region(state.writer, f"{where}.writer", members)
        for j, reader in enumerate(state.readers):
            region(reader, f"{where}.readers[{j}]")
    problems += [
        f"state.services: missing {name!r}; give the state of every service in the topology "
        "(writer, epoch, readers)"
        for name in sorted(services.keys() - seen)
    ]
    for i, observation in enumerate(snapshot.observations):
        where = f"observations[{i}]"
        region(observation.observer, f"{where}.observer")
        region(observation.target, f"{where}.target")
        for j, replication in enumerate(observation.services):
            service(replication.service, f"{where}.services[{j}].service")
    return problems


def parse_snapshot(text: str, source: str, policy: Policy) -> Snapshot:
    """A snapshot from JSON text; UserError naming `source` and the field for every problem."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}: line {exc.lineno}, column {exc.colno}: malformed JSON: "
                        f"{exc.msg}") from None
    try:
        parsed = _Snapshot.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{source}: {_where(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()]
        raise UserError(f"{source}: {len(problems)} problem(s)", problems) from None
    unknown = [f"{source}: {problem}" for problem in _unknown_names(parsed, policy)]
    if unknown:
        raise UserError(f"{source}: {len(unknown)} problem(s)", unknown)
    return Snapshot(
        now=parsed.now,
        me=parsed.me,
        state=ClusterState(tuple(
            ServiceState(s.service, s.writer, s.epoch, s.last_failover_at, s.paused,
                         frozenset(s.readers))
            for s in parsed.state.services
        )),
        observations=tuple(
            Observation(o.observer, o.target, o.health, o.consecutive, o.observed_at,
                        tuple(r.replication() for r in o.services), o.last_ok_at)
            for o in parsed.observations
        ),
    )


def dump_snapshot(snapshot: Snapshot) -> str:
    """The JSON text `parse_snapshot` reads back; LSNs in PostgreSQL's text form."""

    def replication(r: Replication) -> dict[str, Any]:
        data = asdict(r)
        data["applied_lsn"] = None if r.applied_lsn is None else format_lsn(r.applied_lsn)
        data["wal_lsn"] = None if r.wal_lsn is None else format_lsn(r.wal_lsn)
        return data

    document = {
        "now": snapshot.now,
        "me": snapshot.me,
        "state": {"services": [
            {**asdict(s), "readers": sorted(s.readers)}
            for s in sorted(snapshot.state.services, key=lambda s: s.service)
        ]},
        "observations": [
            {"observer": o.observer, "target": o.target, "health": o.health,
             "consecutive": o.consecutive, "observed_at": o.observed_at,
             "services": [replication(r) for r in o.services], "last_ok_at": o.last_ok_at}
            for o in snapshot.observations
        ],
    }
    return json.dumps(document, indent=2) + "\n"
