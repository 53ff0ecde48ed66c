"""From verdicts to actions for one service: failover, reader record, self-fence, and
(through `durability`) what the writer's commits wait for.

Which database role a region holds comes from its freshest fresh observation
that knows the service's role (see `ReplicationViews`); the quorum decides
only liveness, because a region that is DOWN has no reliable role to vote on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from failover.engine.actions import (
    Action,
    AddReader,
    ConfirmWriter,
    FenceRegion,
    NoOp,
    PromoteSubscriber,
    RejoinRegion,
    RemoveReader,
    RepointSubscribers,
    SetDnsWriter,
    UnfenceWriter,
)
from failover.engine.durability import (
    AcknowledgedProof,
    Durability,
    DurabilityState,
    acknowledged_proof,
    clear_subscriber_standbys,
    plan_standbys,
    unfenced_subscriber,
)
from failover.engine.lsn import format_lsn
from failover.engine.model import (
    AfterPlan,
    Observation,
    Policy,
    Replication,
    Role,
    ServicePolicy,
    ServiceState,
    SyncStandbys,
)
from failover.engine.quorum import RegionVerdict, Verdict


class ReplicationViews:
    """The freshest known replication state of each (region, service).

    Per target, fresh observations are ranked newest first (observer name
    breaks ties); the first that reports a role other than unknown wins.
    """

    __slots__ = ("_ranked", "primaries")

    def __init__(self, observations: Iterable[Observation], cutoff: float) -> None:
        ranked: dict[str, list[Observation]] = {}
        # Regions some fresh observation saw as an unfenced primary of a service: the only
        # candidates for a stale-primary fence, so that the check costs nothing otherwise.
        primaries: set[tuple[str, str]] = set()
        for observation in observations:
            if observation.observed_at >= cutoff:
                ranked.setdefault(observation.target, []).append(observation)
                if observation.primary_of:
                    primaries.update((observation.target, s) for s in observation.primary_of)
        for candidates in ranked.values():
            candidates.sort(key=lambda o: (-o.observed_at, o.observer))
        self._ranked = ranked
        self.primaries = frozenset(primaries)

    def of(self, region: str, service: str) -> Replication | None:
        for observation in self._ranked.get(region, ()):
            replication = observation.by_service.get(service)
            if replication is not None and replication.role is not Role.UNKNOWN:
                return replication
        return None

    def predating(self, after: AfterPlan, service: str) -> list[str]:
        """The regions `after` changed whose view of `service` was read before it ended (a
        view without a date, from an older controller, is taken as it stands)."""
        return [region for region in sorted(after.regions)
                if (seen := self.of(region, service)) is not None
                and seen.seen_at is not None and seen.seen_at < after.ended_at]


@dataclass(frozen=True, slots=True)
class WriterPosition:
    wal_lsn: int | None = None
    heartbeat_at: float | None = None
    # What its commits waited for in the newest report (observed_at `sync_seen_at`): what a
    # failover of a sync service must prove against once the writer is gone.
    sync: SyncStandbys | None = None
    sync_seen_at: float | None = None


Positions = dict[tuple[str, str], WriterPosition]  # (region, service) -> newest seen


def writer_positions(observations: Iterable[Observation], writers: Iterable[tuple[str, str]],
                     known: Positions | None = None) -> Positions:
    """The newest position each recorded writer (region, service) was seen at as primary,
    by any observer and however long ago: what the fleet last knew of a writer that has
    since died. Observations keep only an observer's latest view, which says nothing once
    the writer is unreachable, so the controller passes back what earlier decisions knew
    (`Decision.positions`)."""
    wanted = set(writers)
    found: Positions = {key: position for key, position in (known or {}).items()
                        if key in wanted}
    by_target: dict[str, list[Observation]] = {}
    for observation in observations:
        by_target.setdefault(observation.target, []).append(observation)
    for region, service in wanted:
        held = found.get((region, service), WriterPosition())
        lsn, beat = held.wal_lsn, held.heartbeat_at
        sync, sync_at, sync_by = held.sync, held.sync_seen_at, ""
        for observation in by_target.get(region, ()):
            replication = observation.by_service.get(service)
            if replication is None or replication.role is not Role.PRIMARY:
                continue
            # Inline rather than a helper: this runs for every writer at every evaluation.
            if replication.wal_lsn is not None and (lsn is None or replication.wal_lsn > lsn):
                lsn = replication.wal_lsn
            seen = replication.heartbeat_at
            if seen is not None and (beat is None or seen > beat):
                beat = seen
            # The newest report wins (the setting changes both ways); equal times are ordered
            # by observer, so that the order of the observations does not matter.
            if replication.sync_standbys is not None and (
                    sync_at is None
                    or (observation.observed_at, observation.observer) > (sync_at, sync_by)):
                sync = replication.sync_standbys
                sync_at, sync_by = observation.observed_at, observation.observer
        if (lsn, beat, sync, sync_at) != (held.wal_lsn, held.heartbeat_at, held.sync,
                                         held.sync_seen_at):
            found[(region, service)] = WriterPosition(lsn, beat, sync, sync_at)
    return found


@dataclass(frozen=True, slots=True)
class Context:
    """Everything shared by the plans of all services in one evaluation.

    The UP and DOWN sets are precomputed so that each service's plan is a few
    set operations: the engine re-plans every service every evaluation.
    """

    now: float
    verdict_of: dict[str, Verdict]
    up: frozenset[str]
    down: frozenset[str]
    views: ReplicationViews
    priority: dict[str, int]
    positions: Positions
    # The regions the deciding controller's own latest fresh probe found healthy. Only it
    # runs a promotion it plans, and it must reach the target's database to do so: a region
    # UP by the quorum but cut off from it (a partial partition) is no target of its plans.
    reached: frozenset[str]
    # The deciding controller's own fresh observations, by target.
    mine: Mapping[str, Observation] = field(default_factory=dict)
    reader_changes: dict[tuple[frozenset[str], frozenset[str]], ReaderChanges] = field(
        default_factory=dict)
    # Where each planned service stands on durability, as its plan found it (the decision's).
    durability: dict[str, DurabilityState] = field(default_factory=dict)
    # The last plan the deciding controller ran to its end, by service.
    after_plans: Mapping[str, AfterPlan] = field(default_factory=dict)

    def answered(self, region: str, service: str) -> bool:
        """Whether `region`'s database of `service` answered the deciding controller's
        latest fresh probe (a role is known only from an answer)."""
        seen = self.mine.get(region)
        replication = seen.by_service.get(service) if seen is not None else None
        return replication is not None and replication.role is not Role.UNKNOWN

    def writer_position(self, region: str, service: str) -> WriterPosition:
        return self.positions.get((region, service), WriterPosition())

    @classmethod
    def build(cls, now: float, verdicts: dict[str, RegionVerdict], views: ReplicationViews,
              policy: Policy, positions: Positions, *, reached: frozenset[str],
              mine: Mapping[str, Observation],
              after_plans: Mapping[str, AfterPlan]) -> Context:
        verdict_of = {region: v.verdict for region, v in verdicts.items()}
        return cls(
            now, verdict_of,
            up=frozenset(r for r, v in verdict_of.items() if v is Verdict.UP),
            down=frozenset(r for r, v in verdict_of.items() if v is Verdict.DOWN),
            views=views, priority=policy.priority, positions=positions, reached=reached,
            mine=mine, after_plans=after_plans,
        )


_LABEL = {verdict: verdict.name for verdict in Verdict}


def _describe_lag(replication: Replication) -> str:
    applied = "unknown" if replication.applied_lsn is None else format_lsn(replication.applied_lsn)
    lag_bytes = "unknown" if replication.lag_bytes is None else f"{replication.lag_bytes} B"
    lag_seconds = "unknown" if replication.lag_seconds is None else f"{replication.lag_seconds:g} s"
    return f"applied {applied}, lag {lag_bytes} / {lag_seconds}"


def _behind(own: float | None, writer_side: float | None) -> float | None:
    """The larger of a subscriber's own lag and its distance to the writer's last known
    position: its own figure is only a lower bound once the publisher is gone (and, with
    its apply worker stopped for another reason, may be hours old)."""
    if own is None:
        return None
    return own if writer_side is None else max(own, writer_side)


def subscriber_lag(replication: Replication,
                   writer: WriterPosition) -> tuple[float | None, float | None]:
    """A subscriber's lag in bytes and in seconds (None: unknown), measured against the
    writer's last known position as well as by the subscriber itself: what a failover to
    it would lose, and what the controller reports."""
    lag_bytes = _behind(replication.lag_bytes, None if replication.applied_lsn is None
                        or writer.wal_lsn is None else writer.wal_lsn - replication.applied_lsn)
    lag_seconds = _behind(replication.lag_seconds, None if replication.heartbeat_at is None
                          or writer.heartbeat_at is None
                          else writer.heartbeat_at - replication.heartbeat_at)
    return lag_bytes, lag_seconds


def _lag_problems(replication: Replication, policy: ServicePolicy,
                  writer: WriterPosition) -> list[str]:
    # Unknown lag counts as too much: the promise to users is a known RPO.
    problems = []
    lag_bytes, lag_seconds = subscriber_lag(replication, writer)
    if lag_bytes is None:
        problems.append("lag in bytes unknown")
    elif lag_bytes > policy.max_lag_bytes:
        problems.append(f"lag {lag_bytes} B > max_lag_bytes {policy.max_lag_bytes}")
    if lag_seconds is None:
        problems.append("lag in seconds unknown")
    elif lag_seconds > policy.max_lag_seconds:
        problems.append(f"lag {lag_seconds:g} s > max_lag_seconds {policy.max_lag_seconds:g}")
    if replication.subscription_enabled is False:
        problems.append("its subscription is disabled")
    if not replication.ready:
        problems.append("not ready")
    return problems


def _unproven(proof: AcknowledgedProof, target: str, replication: Replication) -> list[str]:
    """Why promoting `target` of a sync service could lose an acknowledged commit (nothing
    to prove when the old writer waited for no standby: the lag limits decide alone)."""
    if not proof.standbys.waits:
        return []
    if not proof.enough:
        return [f"durability sync: {proof.describe()}"]
    highest = proof.highest
    applied = replication.applied_lsn
    if highest is not None and (applied is None or applied < highest):
        holder = min(region for region, lsn in proof.read if lsn == highest)
        return [f"durability sync: {holder} applied {format_lsn(highest)}, more than {target}, "
                "and is no region this controller can promote, so only it may hold the newest "
                "acknowledged commits"]
    return []


def _failover(
    policy: ServicePolicy, state: ServiceState, writer: str, ctx: Context
) -> tuple[list[Action], str]:
    """The failover actions and the writer after them (unchanged when refused)."""
    service, epoch = state.service, state.epoch
    if state.last_failover_at is not None:
        since = ctx.now - state.last_failover_at
        if since < policy.cooldown:
            return [NoOp(service, epoch,
                         f"writer {writer} is DOWN but the last failover was {since:.1f}s ago, "
                         f"within the cooldown of {policy.cooldown:g}s; not failing over again")
                    ], writer
    # One pass over the regions that are not DOWN: each unfenced subscriber
    # is re-pointed, and the UP one with the most applied data is promoted:
    # ranked by applied position, then the freshest heartbeat, then
    # priority, then name. The freshest heartbeat is the newest one applied
    # (heartbeat_at): two subscribers that applied the same data hold the same
    # one, which ties them for priority to decide. Not their lag in seconds,
    # which a dead writer's subscribers measure up to the last moment each
    # heard from it, a noise that would leave priority nothing to break; the
    # lag serves only when the heartbeat is not known.
    subscribers: list[str] = []
    out_of_reach: list[str] = []
    best: tuple[tuple[float, float, float, int, str], Replication] | None = None
    for region in sorted(policy.regions - ctx.down - {writer}):
        replication = ctx.views.of(region, service)
        if replication is None or not unfenced_subscriber(replication):
            continue
        subscribers.append(region)
        if region in ctx.up and region not in ctx.reached:
            out_of_reach.append(region)
        elif region in ctx.up:
            applied, beat = replication.applied_lsn, replication.heartbeat_at
            lag_seconds = replication.lag_seconds
            freshness = ((-beat, 0.0) if beat is not None
                         else (math.inf, lag_seconds if lag_seconds is not None else math.inf))
            rank = (-applied if applied is not None else math.inf, *freshness,
                    -ctx.priority[region], region)
            if best is None or rank < best[0]:
                best = (rank, replication)
    if best is None:
        unreached = (f" that this controller reaches ({', '.join(out_of_reach)} cannot be "
                     "reached from here)" if out_of_reach else "")
        return [NoOp(service, epoch,
                     f"writer {writer} is DOWN but no UP region holds an unfenced subscriber"
                     f"{unreached}; {writer} keeps the writer role")], writer
    target, replication = best[0][-1], best[1]
    proof = acknowledged_proof(policy, writer, ctx) if policy.sync_count else None
    problems = [*(_unproven(proof, target, replication) if proof is not None else ()),
                *_lag_problems(replication, policy, ctx.writer_position(writer, service))]
    figures = _describe_lag(replication)
    if problems and not policy.force:
        return [NoOp(service, epoch,
                     f"writer {writer} is DOWN; refusing to fail over to {target} "
                     f"({figures}): {'; '.join(problems)}. Force it with an operator failover "
                     "(`failover promote --allow-data-loss`)")], writer
    forced = f" (forced despite: {'; '.join(problems)})" if problems else ""
    proven = (f"; it holds every commit {writer} acknowledged: {proof.describe()}"
              if proof is not None and proof.standbys.waits and not problems else "")
    new_epoch = epoch + 1
    others = tuple(region for region in subscribers if region != target)
    actions: list[Action] = [
        FenceRegion(service, new_epoch, writer,
                    f"writer {writer} is DOWN: fence it in case it still takes writes "
                    "(best effort: it is likely unreachable)", best_effort=True),
        PromoteSubscriber(service, new_epoch, target, writer,
                          f"{target} is the UP subscriber with the most applied data "
                          f"({figures}){proven}{forced}; epoch {epoch} -> {new_epoch}",
                          sync_standbys=proof.standbys if proof is not None else None,
                          old_writer_answered=ctx.answered(writer, service)),
    ]
    if others:
        actions.append(RepointSubscribers(service, new_epoch, target, others,
                                          f"{', '.join(others)} subscribed to the old writer "
                                          f"{writer}; subscribe them to {target}"))
    actions.append(SetDnsWriter(service, new_epoch, writer, target,
                                f"point the writer record from {writer} to {target}"))
    return actions, target


def stale_primary(replication: Replication | None, region: str, state: ServiceState) -> bool:
    """A database that would take writes (an unfenced primary) in a region the fleet does
    not record as the writer: an old writer back from a crash, a restart or a partition.
    (The recorded writer's own database at a lower epoch is not fenced: its lease is
    renewed only at the recorded epoch, so it takes no writes either.)"""
    return (replication is not None and replication.role is Role.PRIMARY
            and not replication.fenced and state.writer is not None
            and region != state.writer)


def fence_stale(state: ServiceState, region: str, ctx: Context, *, epoch: int,
                best_effort: bool) -> FenceRegion | None:
    """Fence `region`'s copy of the service if it is a stale primary, at `epoch` (the
    recorded one, or the one a failover in the same plan claims): the fence raises the
    database's own epoch to it, so a stale renewal or unfence is refused there."""
    if (region, state.service) not in ctx.views.primaries:
        return None
    replication = ctx.views.of(region, state.service)
    if not stale_primary(replication, region, state):
        return None
    assert replication is not None
    return FenceRegion(state.service, epoch, region,
                       f"{region} is an unfenced primary at epoch {replication.epoch} but the "
                       f"fleet records {state.writer} as the writer at epoch {state.epoch}",
                       best_effort=best_effort)


ReaderChanges = tuple[tuple[tuple[str, bool], ...], tuple[str, ...]]


def _reader_changes(ctx: Context, readers: frozenset[str], members: frozenset[str]
                    ) -> ReaderChanges:
    """Regions to remove (flagged when not a member) and UP members missing from the record.

    These depend only on the two sets and the verdicts, and most services
    share them, so they are worked out once per evaluation.
    """
    key = (readers, members)
    changes = ctx.reader_changes.get(key)
    if changes is None:
        outsiders = readers - members
        changes = (
            tuple((region, region in outsiders) for region in sorted(outsiders | readers & ctx.down)),
            tuple(sorted(members & ctx.up - readers)),
        )
        ctx.reader_changes[key] = changes
    return changes


def _readers(
    policy: ServicePolicy, state: ServiceState, writer: str, epoch: int, ctx: Context
) -> list[Action]:
    """Make the reader record hold the UP regions that serve the data, never nothing.

    Only DOWN regions leave the record: a SUSPECT one may be fine, and
    flapping DNS hurts more than a short wait for a verdict.
    """
    leaving, missing = _reader_changes(ctx, state.readers, policy.regions)
    if not (leaving or missing):
        return []
    service = state.service
    actions: list[Action] = [
        RemoveReader(service, epoch, region, f"{region} does not hold a copy of {service}"
                     if outsider else f"{region} is DOWN")
        for region, outsider in leaving
    ]
    for region in missing:
        if region == writer:
            actions.append(AddReader(service, epoch, region, f"{region} is UP and the writer"))
        elif unfenced_subscriber(replication := ctx.views.of(region, service)) and (
                replication is not None and replication.ready):
            actions.append(AddReader(service, epoch, region,
                                     f"{region} is UP and an unfenced subscriber, caught up"))
    if leaving and len(actions) == len(leaving) == len(state.readers):
        gone = ", ".join(sorted(state.readers))
        return [NoOp(service, epoch, f"keeping {gone} in the reader record: removing them would "
                                     "leave it empty")]
    return actions


def _rejoins(policy: ServicePolicy, state: ServiceState, epoch: int, ctx: Context
             ) -> list[Action]:
    """Rejoin every fenced former writer that is UP again, while the writer is UP, when
    this controller reaches both (only the executor runs the plan, from where it is)."""
    writer = state.writer
    if writer is None or writer not in ctx.up or writer not in ctx.reached:
        return []
    actions: list[Action] = []
    for region in sorted(policy.regions - {writer}):
        replication = ctx.views.of(region, state.service)
        if (replication is not None and replication.role is Role.PRIMARY
                and replication.fenced and region in ctx.up and region in ctx.reached):
            actions.append(RejoinRegion(
                state.service, epoch, region,
                f"{region} is a fenced former writer and UP again: list what it took that "
                f"{writer} never received, re-copy it from {writer}, let it serve reads",
                serve_after=True))
    return actions


def plan_service(policy: ServicePolicy, state: ServiceState, ctx: Context) -> list[Action]:
    """The actions for one service when this controller hears a quorum."""
    service, epoch, writer = state.service, state.epoch, state.writer
    ctx.durability[service] = DurabilityState(Durability.UNKNOWN, "no writer UP to judge")
    if state.paused:
        return [NoOp(service, epoch, "paused: automatic changes are off for this service")]
    if writer is None:
        return [NoOp(service, epoch, "no writer recorded; an operator must promote one")]
    if writer not in policy.regions:
        return [NoOp(service, epoch, f"the recorded writer {writer!r} does not hold a copy of "
                                     f"{service} in the topology; an operator must fix it")]
    after = ctx.after_plans.get(service)
    if after is not None and (predating := ctx.views.predating(after, service)):
        # Seen before the plan's end, a confirmed writer still looks below the claimed epoch
        # and a rejoined region still looks fenced: planning now would run the plan again.
        return [NoOp(service, epoch, f"waiting for a view of {', '.join(predating)} read "
                                     "after the last plan for this service ended")]
    actions: list[Action] = []
    verdict = ctx.verdict_of[writer]
    if verdict is Verdict.DOWN:
        actions, writer = _failover(policy, state, writer, ctx)
    elif verdict is Verdict.UP:
        own = ctx.views.of(writer, service)
        if (own is not None and own.role is Role.PRIMARY and own.epoch is not None
                and own.epoch < epoch):
            # `epoch` is raised to the highest epoch claimed: a promotion claimed it and
            # never finished, and its acceptors no longer vouch for the writer at its own.
            actions.append(ConfirmWriter(
                service, epoch + 1, writer,
                f"writer {writer} is UP at epoch {own.epoch} but epoch {epoch} was claimed "
                "for a promotion that never finished: claim the next one for the writer, "
                "so that its lease is vouched for again"))
        elif (own is not None and own.role is Role.PRIMARY and own.fenced
                and own.epoch == epoch):
            actions.append(UnfenceWriter(
                service, epoch, writer,
                f"writer {writer} is UP and fenced at the recorded epoch {epoch}, no other writer "
                "was promoted: it fenced itself while cut off, and the fleet hears it again"))
    claims = writer != state.writer or any(isinstance(a, ConfirmWriter) for a in actions)
    plan_epoch = epoch + 1 if claims else epoch
    fenced = {a.region for a in actions if isinstance(a, FenceRegion)}
    # Level-triggered: whatever left another primary behind (a crash between steps, a
    # server restarted by its supervisor), it is fenced on the next evaluation. Its own
    # controller fences it too (`Decision.local`); this reaches it when that one cannot.
    for region in sorted(policy.regions - {state.writer} - fenced):
        stale = fence_stale(state, region, ctx, epoch=plan_epoch, best_effort=True)
        if stale is not None:
            actions.append(stale)
    if writer == state.writer and policy.auto_rejoin:
        actions += _rejoins(policy, state, plan_epoch, ctx)
    if writer == state.writer:
        # A failover's new writer gets its standbys by this same rule at the next evaluation.
        actions += clear_subscriber_standbys(policy, state, ctx, plan_epoch)
        if verdict is Verdict.UP:
            standbys, ctx.durability[service] = plan_standbys(policy, state, ctx, plan_epoch)
            actions += standbys
    actions += _readers(policy, state, writer, plan_epoch, ctx)
    if not actions:
        actions.append(NoOp(service, epoch,
                            f"no change: writer {writer} is {_LABEL[verdict]}; "
                            "the reader record is up to date"))
    return actions


def plan_isolated(
    state: ServiceState, *, me: str, isolated: float, self_fence_after: float, heard: str,
    ctx: Context,
) -> Action:
    """What a controller that hears no quorum does for a service: nothing, or fence itself.

    It fences the primary it sits with after `self_fence_after`, before the
    majority can promote another one. A paused service is left alone: the
    majority will not fail it over either.
    """
    service, epoch = state.service, state.epoch
    cut_off = f"{me} hears {heard}: no quorum, not acting"
    if state.writer != me or state.paused:
        return NoOp(service, epoch, cut_off)
    since = "ever" if math.isinf(isolated) else f"{isolated:.1f}s"
    if isolated < self_fence_after:
        return NoOp(service, epoch, f"{cut_off}; self-fence of the writer in "
                                    f"{self_fence_after - isolated:.1f}s (cut off for {since})")
    own = ctx.views.of(me, service)
    if own is not None and own.fenced:
        return NoOp(service, epoch, f"{cut_off}; the writer {me} is already fenced")
    return FenceRegion(service, epoch, me,
                       f"self-fence: {me} has been cut off from the quorum for {since} "
                       f">= self_fence_after {self_fence_after:g}s; the majority may promote "
                       "another writer", best_effort=False)
