"""What a coordination backend does for the controller, whatever it is built on.

The engine and the executor only see this Protocol: the peer exchange (the
embedded default) and etcd differ in how observations travel, how the fleet's
record of each service is stored, and how one executor is chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from pydantic import TypeAdapter

from failover.engine import ClusterState, Decision, Observation, ServiceState


@dataclass(frozen=True)
class ServiceRecord:
    """The fleet's record of one service: who writes, under which epoch, paused or not.

    Copies held by different controllers merge by (epoch, version): a failover
    bumps the epoch, an operator's change (pause, resume) bumps the version.
    """

    service: str
    writer: str | None
    epoch: int
    last_failover_at: float | None = None
    paused: bool = False
    readers: tuple[str, ...] = ()
    version: int = 0

    def newer_than(self, other: ServiceRecord | None) -> bool:
        return other is None or (self.epoch, self.version) > (other.epoch, other.version)

    def to_state(self) -> ServiceState:
        return ServiceState(self.service, self.writer, self.epoch, self.last_failover_at,
                            self.paused, frozenset(self.readers))

    @classmethod
    def from_state(cls, state: ServiceState, version: int) -> ServiceRecord:
        return cls(state.service, state.writer, state.epoch, state.last_failover_at,
                   state.paused, tuple(sorted(state.readers)), version)

    def bumped(self, **changes: object) -> ServiceRecord:
        """This record changed by an operator: same epoch, next version."""
        return replace(self, version=self.version + 1, **changes)  # type: ignore[arg-type]


def cluster_state(records: Iterable[ServiceRecord]) -> ClusterState:
    return ClusterState(tuple(record.to_state() for record in sorted(records, key=lambda r: r.service)))


@dataclass(frozen=True)
class Leadership:
    """The right to execute one plan, and the fencing token that proves it."""

    holder: str
    token: int
    # A controller cut off from the fleet may still fence its own region; every
    # other plan must stop when its executor loses sight of the quorum.
    needs_quorum: bool = True


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a promotion's epoch on a majority: granted or not, and when
    the previous writer's lease has surely ended (see `failover.engine.lease`)."""

    service: str
    epoch: int
    claimant: str
    granted: bool
    old_lease_ends_by: float  # epoch seconds; inf when it cannot be bounded
    reason: str


OBSERVATIONS = TypeAdapter(list[Observation])
RECORDS = TypeAdapter(list[ServiceRecord])


class Coordinator(Protocol):
    @property
    def backend(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def exchange(self, mine: Sequence[Observation]) -> None:
        """Publish this controller's latest observations and collect everyone's."""
        ...

    def observations(self) -> list[Observation]:
        """The latest observation of every (observer, target), this controller's included."""
        ...

    def records(self) -> dict[str, ServiceRecord]: ...

    async def put_record(self, record: ServiceRecord) -> None:
        """Store a newer record; ConflictError when a newer one is already stored."""
        ...

    async def lead(self, decision: Decision) -> Leadership | None:
        """Leadership for executing `decision`'s plan, or None when another controller must."""
        ...

    async def still_leading(self, leadership: Leadership) -> bool:
        """Checked before every step: a deposed leader stops mid-plan."""
        ...

    async def resign(self) -> None:
        """The plan is over: let the next decision choose its executor afresh."""
        ...

    def problem(self) -> str | None:
        """Why automatic action is off right now (e.g. the store lost its quorum), or None."""
        ...

    async def claim(self, service: str, epoch: int, target: str, writer: str,
                    lease_ttl: float) -> Claim:
        """Claim `epoch` for this controller's promotion of `target` over `writer`, once:
        granted by a majority (or the store) to one claimant only, again to the same one (a
        resumed plan). The claim says when every region that may still hold a lease (the
        writer, and the target of any lower epoch claimed meanwhile) has surely lost it."""
        ...

    def highest_claimed(self, service: str) -> int:
        """The highest epoch this controller knows to be claimed: a promotion plans above it,
        since a claimant that stalled keeps its epoch."""
        ...

    def vouching(self, service: str, epoch: int) -> tuple[list[Observation], frozenset[str]]:
        """What a writer at `epoch` may extend its lease on: the observations to count, and
        the observers whose word no longer counts (they promised a higher epoch)."""
        ...


def merge_records(held: Mapping[str, ServiceRecord], incoming: Iterable[ServiceRecord]
                  ) -> tuple[dict[str, ServiceRecord], bool]:
    """Keep the newer copy of each record; report whether anything changed."""
    merged = dict(held)
    changed = False
    for record in incoming:
        if record.newer_than(merged.get(record.service)):
            merged[record.service] = record
            changed = True
    return merged, changed
