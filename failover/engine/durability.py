"""Pure: a service's durability. Which standbys the writer's commits wait for, and what a
failover must prove before it promotes a subscriber of a sync service.

PostgreSQL's `synchronous_standby_names = 'ANY k (s1, ..., sn)'` acknowledges a commit once
any k of the n named standbys have flushed it. Any n - k + 1 of them therefore include one
that holds it: a failover that knows the applied positions of at least n - k + 1 of the
standbys the writer last named, and promotes a subscriber at least as advanced as all of
them, loses no acknowledged commit. (FIRST k behaves the same way here: its k synchronous
standbys are k of the n names too.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from failover.engine.actions import Action, NoOp, SetSyncStandbys
from failover.engine.lsn import format_lsn
from failover.engine.model import (
    NO_STANDBYS,
    Replication,
    Role,
    ServicePolicy,
    ServiceState,
    SyncStandbys,
)

if TYPE_CHECKING:  # the planner imports this module; its Context is only annotated here
    from failover.engine.planner import Context


class Durability(StrEnum):
    """Where a service stands on waiting for its subscribers: one metric series each."""

    ASYNC = "async"  # durability "async": commits wait for no subscriber
    SYNC = "sync"  # commits wait for sync_count of the writer's healthy subscribers
    WAITING = "waiting"  # strict, too few healthy subscribers: commits wait until enough are back
    DEGRADED = "degraded"  # too few healthy subscribers: commits no longer wait for them
    UNKNOWN = "unknown"  # no writer UP to judge, or what it waits for is not known


@dataclass(frozen=True, slots=True)
class DurabilityState:
    durability: Durability
    reason: str


def isolation_loss_bound(durability: Durability, lease_ttl: float) -> float:
    """Seconds of acknowledged writes a writer cut off from every other region may take that
    no subscriber receives (on top of what the subscribers lagged at the cut).

    0 while each commit waits for a subscriber (sync, or strict and waiting: a cut-off
    writer's commits block). Otherwise its lease, `lease_ttl`: the quorum vouched for it at
    most at the cut, and its database refuses writes `lease_ttl` after the last vouch.
    """
    if durability in (Durability.SYNC, Durability.WAITING):
        return 0.0
    return lease_ttl


def unfenced_subscriber(replication: Replication | None) -> bool:
    return (replication is not None and replication.role is Role.SUBSCRIBER
            and not replication.fenced)


def _healthy_subscriber(region: str, replication: Replication | None, ctx: Context) -> bool:
    """A subscriber the writer may wait for: UP, unfenced, caught up (ready) and applying."""
    return (region in ctx.up and unfenced_subscriber(replication) and replication is not None
            and replication.ready and replication.subscription_enabled is not False)


def _named_by_failover(standbys: SyncStandbys, policy: ServicePolicy) -> bool:
    """Every name is one of the service's subscriptions: failover set it, and may change it.
    Anything else was set by hand (say, for physical standbys) and is left alone."""
    return all(name in policy.region_of_standby for name in standbys.names)


def _why_not_healthy(region: str, replication: Replication | None, ctx: Context) -> str:
    if region not in ctx.up:
        verdict = ctx.verdict_of.get(region)
        return f"{region} {verdict.name if verdict is not None else 'not judged'}"
    if replication is None or replication.role is not Role.SUBSCRIBER:
        return f"{region} not a subscriber"
    if replication.fenced:
        return f"{region} fenced"
    if replication.subscription_enabled is False:
        return f"{region} subscription disabled"
    return f"{region} not ready"


def plan_standbys(policy: ServicePolicy, state: ServiceState, ctx: Context, epoch: int
                  ) -> tuple[list[Action], DurabilityState]:
    """What the recorded writer's commits should wait for, as an action when its database
    says otherwise, and where the service stands. The writer waits for `sync_count` of its
    healthy subscribers; with fewer, it degrades to waiting for none, or (strict) keeps
    waiting for standbys that are not there, so that writes block."""
    service, writer = state.service, state.writer
    assert writer is not None
    own = ctx.views.of(writer, service)
    if own is None or own.role is not Role.PRIMARY or own.fenced or own.sync_standbys is None:
        return [], DurabilityState(Durability.UNKNOWN, f"what the writer {writer}'s commits "
                                                       "wait for is not known")
    current = own.sync_standbys
    if not policy.sync_count:
        status = DurabilityState(Durability.ASYNC, "durability async: commits wait for no "
                                                   "subscriber")
        if current.waits and _named_by_failover(current, policy):
            return [_change(state, ctx, epoch, NO_STANDBYS,
                            f"durability is async: {writer}'s commits stop waiting for "
                            f"{current.describe()}")], status
        return [], status
    k = policy.sync_count
    others = sorted(policy.regions - {writer})
    views = {region: ctx.views.of(region, service) for region in others}
    healthy = [r for r in others if _healthy_subscriber(r, views[r], ctx)]
    missing = ", ".join(_why_not_healthy(r, views[r], ctx) for r in others if r not in healthy)
    short = (f"only {len(healthy)} of the {k} subscribers needed are healthy"
             f"{f' ({missing})' if missing else ''}")
    desired: SyncStandbys | None
    if len(healthy) >= k:
        desired = _standbys(policy, healthy, k)
        status = DurabilityState(Durability.SYNC, f"commits on {writer} wait for {k} of "
                                                  f"{', '.join(healthy)}")
    elif policy.sync_strict:
        desired, status = _strict(policy, writer, current, views, ctx, short=short)
    else:
        desired = NO_STANDBYS
        status = DurabilityState(
            Durability.DEGRADED,
            f"DEGRADED to asynchronous commits: {short}; {writer} acknowledges commits no "
            "subscriber may have, which a failover now could lose (sync_strict = true would "
            f"block writes instead); synchronous again once {k} are healthy")
    if desired is not None and desired != current:
        return [_change(state, ctx, epoch, desired,
                        f"{status.reason} (was {current.describe()})")], status
    if status.durability is not Durability.SYNC:
        return [NoOp(service, state.epoch, status.reason)], status
    return [], status


def _strict(policy: ServicePolicy, writer: str, current: SyncStandbys,
            views: dict[str, Replication | None], ctx: Context, *, short: str
            ) -> tuple[SyncStandbys | None, DurabilityState]:
    """Too few healthy subscribers and sync_strict: keep waiting for the standbys the writer
    names already, or name those that may come back (not DOWN, unfenced subscribers), never
    the writer itself; writes wait until `sync_count` of them confirm."""
    k = policy.sync_count
    own_name = policy.standby_of[writer]
    if current.waits and _named_by_failover(current, policy) and own_name not in current.names:
        return current, DurabilityState(
            Durability.WAITING, f"strict: {short}; keeping {current.describe()}: writes wait "
                                "until enough of them confirm")
    waiting = [region for region, view in views.items()
               if region not in ctx.down and unfenced_subscriber(view)]
    if not waiting:
        return None, DurabilityState(
            Durability.DEGRADED, f"DEGRADED: strict, but {short} and no subscriber may come "
                                 f"back to wait for: {writer}'s commits wait for "
                                 f"{current.describe()}")
    return _standbys(policy, waiting, k), DurabilityState(
        Durability.WAITING, f"strict: {short}; writes wait until {k} of {', '.join(waiting)} "
                            "confirm")


def _standbys(policy: ServicePolicy, regions: list[str], count: int) -> SyncStandbys:
    return SyncStandbys(tuple(sorted(policy.standby_of[region] for region in regions)), count)


def _change(state: ServiceState, ctx: Context, epoch: int, standbys: SyncStandbys,
            reason: str) -> Action:
    """The change on the writer, by the executor, which must reach it: else only why not."""
    writer = state.writer
    assert writer is not None
    if writer not in ctx.reached:
        return NoOp(state.service, state.epoch, f"{reason}; {writer} is not reached from here, "
                                                "its standbys stay as they are")
    return SetSyncStandbys(state.service, epoch, writer, standbys, reason)


def clear_subscriber_standbys(policy: ServicePolicy, state: ServiceState, ctx: Context,
                              epoch: int) -> list[Action]:
    """Clear the standbys a subscriber still names from when it was the writer: its apply
    worker commits with synchronous_commit = on, so every change it applies would wait for
    standbys that never connect to it (replication stops there)."""
    actions: list[Action] = []
    for region in sorted(policy.regions - {state.writer}):
        replication = ctx.views.of(region, state.service)
        if (replication is not None and replication.role is Role.SUBSCRIBER
                and replication.sync_standbys is not None and replication.sync_standbys.waits
                and _named_by_failover(replication.sync_standbys, policy)
                and region in ctx.up and region in ctx.reached):
            actions.append(SetSyncStandbys(
                state.service, epoch, region, NO_STANDBYS,
                f"{region} is a subscriber that still waits for "
                f"{replication.sync_standbys.describe()}: the changes it applies would wait "
                "for standbys that never connect to it"))
    return actions


# ---------------------------------------------------------------- what a failover proves


@dataclass(frozen=True, slots=True)
class AcknowledgedProof:
    """What a failover of a sync service knows of the commits the old writer acknowledged."""

    standbys: SyncStandbys  # what its commits waited for, as last reported (or assumed)
    assumed: bool  # never reported: every other region, at sync_count
    read: tuple[tuple[str, int], ...]  # named regions whose fresh applied position is known
    needed: int  # n - k + 1

    @property
    def highest(self) -> int | None:
        return max((lsn for _, lsn in self.read), default=None)

    @property
    def enough(self) -> bool:
        return len(self.read) >= self.needed

    def describe(self) -> str:
        source = ("every other region (what it waited for was never seen)" if self.assumed
                  else self.standbys.describe())
        known = ", ".join(f"{region} {format_lsn(lsn)}" for region, lsn in self.read) or "none"
        return (f"its commits waited for {source}; proving which subscriber holds every "
                f"acknowledged commit needs the applied positions of {self.needed} of those "
                f"{len(self.standbys.names)} standbys, and {len(self.read)} are reachable "
                f"({known})")


def needed_reads(standbys: SyncStandbys) -> int:
    """How many of the named standbys' positions include one of every commit's k confirmers."""
    return max(1, len(standbys.names) - standbys.count + 1)


def acknowledged_proof(policy: ServicePolicy, writer: str, ctx: Context) -> AcknowledgedProof:
    """The old writer's standbys as last reported (kept like its WAL position after it died),
    or, never seen, every other region at sync_count, which needs at least as many reads;
    and the fresh applied positions of those standbys."""
    last = ctx.writer_position(writer, policy.name).sync
    assumed = last is None
    standbys = last if last is not None else _standbys(
        policy, sorted(policy.regions - {writer}), policy.sync_count)
    read = []
    for name in standbys.names:
        region = policy.region_of_standby.get(name)
        replication = ctx.views.of(region, policy.name) if region is not None else None
        if region is not None and replication is not None and replication.applied_lsn is not None:
            read.append((region, replication.applied_lsn))
    return AcknowledgedProof(standbys, assumed, tuple(sorted(read)), needed_reads(standbys))
