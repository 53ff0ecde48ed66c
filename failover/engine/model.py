"""What the engine reads: observations, the cluster state and the policy.

Plain frozen dataclasses (slots, for speed: the engine runs every second over
every service) that know nothing about files, pydantic or the network. The
CLI, the controller and the tests build them; `policy.py` bridges from the
topology.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Health(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class Role(StrEnum):
    PRIMARY = "primary"
    SUBSCRIBER = "subscriber"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SyncStandbys:
    """A server's synchronous_standby_names: a commit is acknowledged once `count` of the
    standbys called `names` confirm they flushed it. `quorum`: any `count` of them
    (PostgreSQL's ANY, names sorted); else the first `count` connected in list order (FIRST).
    No names: commits wait for no standby (asynchronous)."""

    names: tuple[str, ...] = ()
    count: int = 0
    quorum: bool = True

    @property
    def waits(self) -> bool:
        return bool(self.names)

    def describe(self) -> str:
        if not self.names:
            return "no synchronous standby"
        return f"{'ANY' if self.quorum else 'FIRST'} {self.count} ({', '.join(self.names)})"


NO_STANDBYS = SyncStandbys()  # commits wait for no standby


@dataclass(frozen=True, slots=True)
class Replication:
    """What one observer saw of one service's database in the target region."""

    service: str
    role: Role
    fenced: bool = False
    epoch: int | None = None  # the epoch recorded in the database (failover.state)
    # `remote_lsn` of the subscription's replication origin: all subscribers of
    # one publisher share its LSN space, so the highest value holds the most data.
    applied_lsn: int | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None  # from the replicated heartbeat
    ready: bool = False
    # The writer's side of the lag: a primary's current WAL position, and the newest
    # heartbeat the database holds (its own on a primary, the applied one on a
    # subscriber), epoch seconds. The fleet keeps the writer's last known values after it
    # dies, and a candidate is measured against them, not only against itself.
    wal_lsn: int | None = None
    heartbeat_at: float | None = None
    subscription_enabled: bool | None = None  # False: disabled, applies nothing
    # The server's synchronous_standby_names (None: not reported, or not a form it parses).
    sync_standbys: SyncStandbys | None = None
    # When the probe that read this started, epoch seconds on the observer's clock (None:
    # not reported). An observation is made every exchange; the database behind it is read
    # at the check's own interval, so this, not `observed_at`, dates what it says.
    seen_at: float | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One observer's latest view of one target region."""

    observer: str
    target: str
    health: Health
    consecutive: int
    observed_at: float  # epoch seconds, on the observer's clock
    services: tuple[Replication, ...] = ()
    # The newest moment at which every liveness check of the target last succeeded
    # (None: never). An observer vouches for a writer's lease only up to this moment.
    last_ok_at: float | None = None
    # The observer's topology fingerprint (None: not reported). The engine ignores it;
    # status compares the fleet's.
    topology: str | None = None
    # Built once here rather than on every evaluation: the planner looks up
    # services by name, and an observation outlives many evaluations.
    by_service: dict[str, Replication] = field(init=False, repr=False, compare=False)
    # The services the target was seen an unfenced primary of: convergence looks only there.
    primary_of: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_service", {r.service: r for r in self.services})
        object.__setattr__(self, "primary_of", frozenset(
            r.service for r in self.services if r.role is Role.PRIMARY and not r.fenced))


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Where a service stands now, as recorded by the coordination backend."""

    service: str
    writer: str | None
    epoch: int
    last_failover_at: float | None = None
    paused: bool = False
    readers: frozenset[str] = frozenset()  # regions in the reader DNS record


@dataclass(frozen=True, slots=True)
class AfterPlan:
    """A plan this controller ran to its end: the moment it ended and the regions whose
    databases it changed. Until a view of each taken after that moment arrives, what the
    fleet sees there predates the change, and planning from it would redo the plan."""

    ended_at: float
    regions: frozenset[str]


@dataclass(frozen=True, slots=True)
class ClusterState:
    services: tuple[ServiceState, ...]

    def by_service(self) -> dict[str, ServiceState]:
        return {state.service: state for state in self.services}


@dataclass(frozen=True, slots=True)
class RegionPolicy:
    name: str
    priority: int  # higher wins


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    name: str
    regions: frozenset[str]  # the regions that hold a copy of the database
    max_lag_bytes: int
    max_lag_seconds: float
    cooldown: float
    # Operator override: fail over even when the target lags or is not ready,
    # accepting the data loss. Never bypasses the quorum or the cooldown.
    force: bool = False
    # A fenced former writer that is UP again is rejoined without an operator.
    auto_rejoin: bool = False
    # Durability: the writer acknowledges a commit once `sync_count` of its healthy subscribers
    # have it (0: asynchronous); `sync_strict`: with fewer healthy, writes wait rather than
    # the writer degrading to asynchronous commits.
    sync_count: int = 0
    sync_strict: bool = False
    # (region, name) of every region: the name its subscription reports to the writer, which
    # synchronous_standby_names lists. Names are the PostgreSQL adapter's to make, so the
    # bridge from the topology passes them in.
    standby_names: tuple[tuple[str, str], ...] = ()
    standby_of: dict[str, str] = field(init=False, repr=False, compare=False)
    region_of_standby: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "standby_of", dict(self.standby_names))
        object.__setattr__(self, "region_of_standby",
                           {name: region for region, name in self.standby_names})
        if self.sync_count and not self.regions <= self.standby_of.keys():
            missing = ", ".join(sorted(self.regions - self.standby_of.keys()))
            raise ValueError(f"service {self.name} is sync but has no standby name for {missing}")


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules: every region runs one controller, so regions are also the observers."""

    regions: tuple[RegionPolicy, ...]
    services: tuple[ServicePolicy, ...]
    quorum: int
    observation_max_age: float
    self_fence_after: float
    # How long a controller's fencing of its own database may take; with
    # self_fence_after, how long the writer's lease lasts (`lease_ttl`).
    self_fence_duration: float = 1.0
    priority: dict[str, int] = field(init=False, repr=False, compare=False)
    service: dict[str, ServicePolicy] = field(init=False, repr=False, compare=False)
    by_name: tuple[ServicePolicy, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.regions)
        # Two disjoint groups could both reach a quorum that is not a strict
        # majority and fail over in opposite directions.
        if not n // 2 < self.quorum <= n:
            raise ValueError(f"quorum {self.quorum} is not a strict majority of {n} observers")
        object.__setattr__(self, "priority", {r.name: r.priority for r in self.regions})
        for service in self.services:
            if not service.regions <= self.priority.keys():
                unknown = ", ".join(sorted(service.regions - self.priority.keys()))
                raise ValueError(f"service {service.name} names unknown regions: {unknown}")
        object.__setattr__(self, "service", {s.name: s for s in self.services})
        object.__setattr__(self, "by_name", tuple(sorted(self.services, key=lambda s: s.name)))

    @property
    def lease_ttl(self) -> float:
        """How long one renewal of the writer's lease lasts past the moment the quorum last
        vouched for it (see `lease`): a writer cut off stops taking writes this long after."""
        return self.self_fence_after + self.self_fence_duration

    @property
    def observers(self) -> frozenset[str]:
        return frozenset(self.priority)


def majority(observers: int) -> int:
    """The default quorum: a strict majority."""
    return observers // 2 + 1
