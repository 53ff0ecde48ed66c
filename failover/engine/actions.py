"""What the engine asks for: typed actions, each stamped with its service and epoch.

The epoch is the fencing token: the executor refuses an action whose epoch is
lower than the one already recorded for the service. Every action says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from failover.engine.model import SyncStandbys


@dataclass(frozen=True, slots=True)
class FenceRegion:
    """Make the service's database in `region` read-only and end its sessions."""

    service: str
    epoch: int
    region: str
    reason: str
    # The old writer is usually unreachable when it is fenced during a
    # failover: a failure must not stop the plan.
    best_effort: bool


@dataclass(frozen=True, slots=True)
class UnfenceWriter:
    """Lift the fence of the recorded writer: it fenced itself while cut off, and the
    fleet, hearing a quorum again, confirms it is still the writer at this epoch."""

    service: str
    epoch: int
    region: str
    reason: str


@dataclass(frozen=True, slots=True)
class PromoteSubscriber:
    """Detach `region`'s subscription and make it the writer with `epoch`.

    The engine plans unplanned promotions only. An operator's planned switchover
    sets `switchover_timeout`: the old writer is fenced and drained into `region`
    (zero loss) for up to that many seconds first. Both options travel with the
    action, so that a plan resumed from the journal after a crash is the same plan.
    """

    service: str
    epoch: int
    region: str
    previous_writer: str
    reason: str
    switchover_timeout: float | None = None
    allow_data_loss: bool = False
    # A sync service: the standbys the old writer's commits waited for, as the fleet last knew
    # them (or every other region, when it never saw them): the promotion re-checks against
    # the databases that the target holds every commit they acknowledged. None: not known here
    # (an operator's promotion), the step reads them or assumes every other region.
    sync_standbys: SyncStandbys | None = None
    # Whether the old writer's database answered the deciding controller's latest probe.
    # When it did not (hung, cut off), the plan does not try it: each try would wait out a
    # connection timeout on the way to the promotion, for a fence and a catch-up that its
    # lease and the lag gate make safe without it.
    old_writer_answered: bool = True


@dataclass(frozen=True, slots=True)
class ConfirmWriter:
    """Claim a new epoch for the writer the fleet records, which keeps its role.

    A higher epoch was claimed for a promotion that never finished (its executor died
    between the claim and the promotion, or the writer recovered first); the observers
    that promised that epoch no longer vouch for the writer's lease, so it would take no
    writes for good. Claimed and recorded at `epoch`, the writer is vouched for again."""

    service: str
    epoch: int
    region: str
    reason: str

    @property
    def previous_writer(self) -> str:
        """Whose lease the claim waits out: the writer itself (and any region the stalled
        claim named, which the acceptors report)."""
        return self.region


@dataclass(frozen=True, slots=True)
class RejoinRegion:
    """Make the fenced former writer `region` a subscriber of the current writer again,
    listing the transactions it took that the fleet never received. With `serve_after`
    its fence is lifted once it subscribes (an automatic rejoin); without, it stays fenced
    until an operator has reconciled them."""

    service: str
    epoch: int
    region: str
    reason: str
    serve_after: bool = False


@dataclass(frozen=True, slots=True)
class RepointSubscribers:
    """Subscribe `subscribers` to the new writer `publisher`."""

    service: str
    epoch: int
    publisher: str
    subscribers: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class SetDnsWriter:
    """Compare-and-set the writer record from `from_region` to `to_region`."""

    service: str
    epoch: int
    from_region: str
    to_region: str
    reason: str


@dataclass(frozen=True, slots=True)
class SetSyncStandbys:
    """Make the writer `region`'s commits wait for `standbys` (synchronous_standby_names), or
    for none (an empty set): its durability follows its healthy subscribers."""

    service: str
    epoch: int
    region: str
    standbys: SyncStandbys
    reason: str


@dataclass(frozen=True, slots=True)
class AddReader:
    service: str
    epoch: int
    region: str
    reason: str


@dataclass(frozen=True, slots=True)
class RemoveReader:
    service: str
    epoch: int
    region: str
    reason: str


@dataclass(frozen=True, slots=True)
class NoOp:
    service: str
    epoch: int
    reason: str


Action = (
    FenceRegion | UnfenceWriter | PromoteSubscriber | ConfirmWriter | RejoinRegion
    | RepointSubscribers | SetSyncStandbys
    | SetDnsWriter | AddReader | RemoveReader
    | NoOp
)

# The actions that claim an epoch for a writer on a majority before it takes writes at it.
WriterClaim = PromoteSubscriber | ConfirmWriter


@dataclass(frozen=True, slots=True)
class Plan:
    """Actions in execution order; `decided_at` is the `now` the plan was made for."""

    decided_at: float
    actions: tuple[Action, ...]

    def changes(self) -> tuple[Action, ...]:
        return tuple(action for action in self.actions if not isinstance(action, NoOp))


def changed_databases(actions: Iterable[Action]) -> frozenset[str]:
    """The regions whose databases `actions` change (DNS and reader actions change none)."""
    regions: set[str] = set()
    for action in actions:
        match action:
            case PromoteSubscriber():
                regions.update((action.region, action.previous_writer))
            case RepointSubscribers():
                regions.update(action.subscribers)
            case (FenceRegion() | UnfenceWriter() | ConfirmWriter() | RejoinRegion()
                  | SetSyncStandbys()):
                regions.add(action.region)
    return frozenset(regions)
