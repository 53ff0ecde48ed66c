"""From the engine's actions to the executor's steps: the one place that knows both.

A plan's steps run in an order chosen for RTO without giving up safety: the
old writer is fenced (best effort) and the target promoted before the writer
record moves; re-pointing the other subscribers comes after DNS, because
clients are waiting for the record while the other subscribers only catch up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Protocol

from failover.controller.executor import Step
from failover.controller.hooks import HookStep, hook_env, hook_input
from failover.coordination.base import Claim
from failover.dns.provider import DnsProvider
from failover.dns.records import RecordKey, RecordSet, rtype_for_address
from failover.engine import (
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
    SetSyncStandbys,
    UnfenceWriter,
    WriterClaim,
)
from failover.errors import ConflictError, FailoverError, SafetyRefusal
from failover.postgres.connection import ServiceDatabases
from failover.postgres.fence import fence_steps, unfence_steps
from failover.postgres.lease import lease_state
from failover.postgres.promote import promotion_steps, repoint_step, take_writer_role_step
from failover.postgres.rejoin import DECODE_TIMEOUT_SECONDS, RejoinSteps, rejoin_steps
from failover.postgres.steps import WriterChange
from failover.postgres.switchover import switchover_steps
from failover.postgres.sync import sync_standbys_step
from failover.topology import Topology


class StepKind(StrEnum):
    """What a step does, without the regions, records and epochs its name holds: the
    label of the step duration metric, whose values must stay few."""

    FENCE = "fence"
    UNFENCE = "unfence"
    PROMOTE = "promote"  # the SQL of an unplanned promotion
    SWITCHOVER = "switchover"  # the SQL of a planned one
    CONFIRM = "confirm"  # raise the recorded writer's epoch above a stalled claim
    CLAIM = "claim"  # claim the epoch, wait for the old writer's lease to end
    RECORD_WRITER = "record_writer"
    DNS_WRITER = "dns_writer"
    DNS_READER = "dns_reader"
    REPOINT = "repoint"
    REJOIN = "rejoin"
    SYNC_STANDBYS = "sync_standbys"  # what a writer's commits wait for
    HOOK = "hook"


KindedSteps = list[tuple[StepKind, Step]]


def of_kind(kind: StepKind, steps: Iterable[Step]) -> KindedSteps:
    return [(kind, step) for step in steps]


@dataclass(frozen=True)
class CallStep:
    """A step made of a name and a function: the executor's Step for anything but SQL."""

    name: str
    call: Callable[[], str]

    def run(self) -> str:
        return self.call()


@dataclass(frozen=True)
class BestEffort:
    """A step whose failure is recorded but does not stop the plan (fencing a dead region)."""

    inner: Step

    @property
    def name(self) -> str:
        return f"{self.inner.name} (best effort)"

    def run(self) -> str:
        try:
            return self.inner.run() or "done"
        except Exception as exc:  # best effort: the reason is journaled, the plan goes on
            lines = str(exc).strip().splitlines()
            return f"skipped: {type(exc).__name__}: {lines[0] if lines else ''}"


class PlanHooks(Protocol):
    """What the controller does at two points of a plan."""

    def promoted(self, action: WriterClaim, decided_at: float) -> str:
        """The new writer is writable: record it with the fleet at once (heartbeats, status)."""
        ...

    def dns_deferred(self, action: SetDnsWriter, error: str) -> None:
        """The writer record could not be moved now: keep retrying it after the plan."""
        ...

    def claim(self, action: WriterClaim) -> Claim:
        """Claim the promotion's epoch on a majority (SafetyRefusal when it is not granted)."""
        ...

    def first_lease(self, action: WriterClaim) -> float:
        """How far the quorum vouches for the new writer now: its first lease ends there."""
        ...


def claim_step(action: WriterClaim, db: ServiceDatabases, hooks: PlanHooks) -> Step:
    """Right before the target becomes writable: claim the epoch (again, for a resumed plan:
    the same claimant is granted it again) and wait until the old writer takes no writes,
    which its database confirms when reachable, or its lease's end proves."""
    old = action.previous_writer

    def run() -> str:
        claim = hooks.claim(action)
        left = claim.old_lease_ends_by - time.time()
        if left <= 0:
            return f"{claim.reason}; {old}'s lease has ended"
        conn = db.try_conn(old)
        if conn is not None:
            state = lease_state(conn, action.service)
            if not state.writer and state.epoch >= action.epoch:
                return f"{claim.reason}; {old} confirms it takes no writes at epoch {state.epoch}"
        left = claim.old_lease_ends_by - time.time()
        if math.isinf(left):
            raise SafetyRefusal(f"{claim.reason}, but when {old}'s lease ends is unknown")
        time.sleep(max(0.0, left))
        return f"{claim.reason}; waited {max(0.0, left):.2f}s for {old}'s lease to end"

    waited = ("any region a stalled claim named" if isinstance(action, ConfirmWriter)
              else old)
    return CallStep(f"claim epoch {action.epoch} and wait until {waited} takes no writes", run)


@dataclass(frozen=True)
class Deferred:
    """A DNS step whose failure must not hold back the rest of a failover: the database is
    promoted already, so re-pointing subscribers goes on and DNS is retried later."""

    inner: Step
    action: SetDnsWriter
    hooks: PlanHooks

    @property
    def name(self) -> str:
        return self.inner.name

    def run(self) -> str:
        try:
            return self.inner.run() or "done"
        except Exception as exc:  # the reason is journaled and the change retried
            error = f"{type(exc).__name__}: {exc}"
            self.hooks.dns_deferred(self.action, error)
            return f"deferred, retried after the plan: {error}"


UNFENCE_LEASE = 0.1  # seconds: a lifted fence's first lease, until the renewal takes over


@dataclass(frozen=True)
class Bounded:
    """A step that may not overrun `deadline`: past it, every database session of the plan
    is hung up, so that a query stuck on a server that hangs fails now and can be retried.
    Every step of a built plan is one, carrying its kind."""

    inner: Step
    kind: StepKind
    deadline: float
    hang_up: Callable[[], None]

    @property
    def name(self) -> str:
        return self.inner.name

    def run(self) -> str | None:
        watchdog = threading.Timer(self.deadline, self.hang_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self.inner.run()
        finally:
            watchdog.cancel()


@dataclass
class BuiltPlan:
    """The steps of one plan and the database sessions they share, closed after the plan."""

    steps: list[Bounded]
    databases: dict[str, ServiceDatabases] = field(default_factory=dict)

    def hang_up(self) -> None:
        for db in self.databases.values():
            db.hang_up_all()

    def close(self) -> None:
        for db in self.databases.values():
            db.close()


class StepFactory:
    """Builds the steps of one service's actions against the real databases and DNS."""

    def __init__(self, topo: Topology, dns: DnsProvider | None, hooks: PlanHooks | None = None,
                 *, dns_visible_timeout: float = 10.0, allow_data_loss: bool = False,
                 step_deadline: float = 15.0, reconciliation_dir: Path | None = None) -> None:
        self.topo = topo
        self.dns = dns
        self.hooks = hooks
        self.dns_visible_timeout = dns_visible_timeout
        self.allow_data_loss = allow_data_loss
        self.step_deadline = step_deadline
        self.reconciliation_dir = reconciliation_dir

    def build(self, actions: Sequence[Action], decided_at: float = 0.0) -> BuiltPlan:
        """Fresh sessions for every plan: one left from an earlier plan may point at a server
        that has hung since, and a query on it would block."""
        built = BuiltPlan([])

        def databases(service: str) -> ServiceDatabases:
            if service not in built.databases:
                built.databases[service] = ServiceDatabases.from_topology(self.topo, service)
            return built.databases[service]

        promoted = {a.service for a in actions if isinstance(a, PromoteSubscriber)}
        late: KindedSteps = []
        out: KindedSteps = []
        last: KindedSteps = []
        # Steps that wait by design get that long on top of the deadline: a switchover's
        # drain its timeout, a rejoin's decoding of an orphaned slot its own bound.
        waits: dict[StepKind, float] = {StepKind.REJOIN: DECODE_TIMEOUT_SECONDS}
        try:
            for action in actions:
                match action:
                    case NoOp():
                        continue
                    case FenceRegion() if action.service in promoted:
                        continue  # the promotion fences the old writer itself, first
                    case FenceRegion():
                        fence = fence_steps(databases(action.service), action.region,
                                            epoch=action.epoch)
                        out += of_kind(StepKind.FENCE, [BestEffort(s) for s in fence]
                                       if action.best_effort else fence)
                    case UnfenceWriter():
                        # The region's controller renews the lease as far as the quorum
                        # vouches at its next tick; a longer first lease would outlast that.
                        out += of_kind(StepKind.UNFENCE, unfence_steps(
                            databases(action.service), action.region, epoch=action.epoch,
                            lease_ttl=UNFENCE_LEASE))
                    case PromoteSubscriber():
                        before, after = self.hook_steps(action, hook_input(actions, decided_at))
                        out += of_kind(StepKind.HOOK, before)
                        last += of_kind(StepKind.HOOK, after)
                        kind = (StepKind.PROMOTE if action.switchover_timeout is None
                                else StepKind.SWITCHOVER)
                        if action.switchover_timeout is not None:
                            waits[kind] = max(waits.get(kind, 0.0), action.switchover_timeout)
                        db = databases(action.service)
                        if not action.old_writer_answered:
                            db.assume_unreachable(action.previous_writer)
                        first_lease = (partial(self.hooks.first_lease, action)
                                       if self.hooks is not None else None)
                        change: WriterChange = (
                            switchover_steps(db, action.region, epoch=action.epoch,
                                             timeout=action.switchover_timeout,
                                             lease_ttl=UNFENCE_LEASE, lease_until=first_lease)
                            if action.switchover_timeout is not None else
                            promotion_steps(
                                db, action.region, epoch=action.epoch,
                                allow_data_loss=self.allow_data_loss or action.allow_data_loss,
                                repoint=False, after_writable=True, lease_until=first_lease,
                                sync_standbys=action.sync_standbys))
                        out += of_kind(kind, change.prepare)
                        if self.hooks is not None:
                            out.append((StepKind.CLAIM, claim_step(action, db, self.hooks)))
                        out.append((kind, change.become_writable))
                        if self.hooks is not None:
                            out.append((StepKind.RECORD_WRITER,
                                        self._record_step(action, decided_at, self.hooks)))
                        late += of_kind(kind, change.after)
                    case ConfirmWriter():
                        if self.hooks is None:
                            raise FailoverError("confirming the writer at a new epoch needs "
                                                "the fleet's claim: only a controller does it")
                        db = databases(action.service)
                        out += [(StepKind.CLAIM, claim_step(action, db, self.hooks)),
                                (StepKind.CONFIRM, take_writer_role_step(
                                    db, action.region, action.epoch, lease_ttl=UNFENCE_LEASE,
                                    lease_until=partial(self.hooks.first_lease, action))),
                                (StepKind.RECORD_WRITER,
                                 self._record_step(action, decided_at, self.hooks))]
                    case RejoinRegion():
                        db = databases(action.service)
                        rejoin = self._rejoin(db, action)
                        out += of_kind(StepKind.REJOIN, rejoin.steps)
                        if action.serve_after:  # at the epoch the rejoin's fence raised it to
                            out += of_kind(StepKind.UNFENCE, unfence_steps(
                                db, action.region, epoch=rejoin.epoch))
                    case RepointSubscribers():
                        db = databases(action.service)
                        late += of_kind(StepKind.REPOINT, [
                            repoint_step(db, region, action.publisher, None, action.epoch)
                            for region in action.subscribers])
                    case SetSyncStandbys():
                        out.append((StepKind.SYNC_STANDBYS, sync_standbys_step(
                            databases(action.service), action.region, action.epoch,
                            action.standbys)))
                    case SetDnsWriter() if self.hooks is not None and action.service in promoted:
                        out.append((StepKind.DNS_WRITER,
                                    Deferred(self.dns_writer_step(action), action, self.hooks)))
                    case SetDnsWriter():
                        out.append((StepKind.DNS_WRITER, self.dns_writer_step(action)))
                    case AddReader() | RemoveReader():
                        late.append((StepKind.DNS_READER, self._dns_reader_step(action)))
        except BaseException:
            built.close()
            raise
        built.steps = [Bounded(step, kind, self.step_deadline + waits.get(kind, 0.0),
                               built.hang_up)
                       for kind, step in out + late + last]
        return built

    def hook_steps(self, action: PromoteSubscriber, plan: str) -> tuple[list[Step], list[Step]]:
        """The service's pre_promote hook (first: it may refuse) and post_failover hook (last,
        best effort) around a promotion; `plan` is the JSON they read on stdin."""
        service = self.topo.services[action.service]
        before: list[Step] = []
        after: list[Step] = []
        if service.pre_promote:
            before.append(HookStep("pre_promote hook", tuple(service.pre_promote),
                                   hook_env(action), plan))
        if service.post_failover:
            after.append(BestEffort(HookStep("post_failover hook", tuple(service.post_failover),
                                             hook_env(action), plan)))
        return before, after

    def lost_file(self, action: RejoinRegion) -> Path:
        """Where a rejoin lists the lost transactions: named by the epoch, so that a rejoin
        resumed after a crash finds the file its first run wrote."""
        if self.reconciliation_dir is None:
            raise ConflictError("this controller keeps no reconciliation files (no state dir)")
        return self.reconciliation_dir / f"{action.service}-{action.region}-e{action.epoch}.json"

    def _rejoin(self, db: ServiceDatabases, action: RejoinRegion) -> RejoinSteps:
        lost_file = self.lost_file(action)
        lost_file.parent.mkdir(parents=True, exist_ok=True)
        return rejoin_steps(db, action.region, lost_file=lost_file)

    @staticmethod
    def _record_step(action: WriterClaim, decided_at: float, hooks: PlanHooks) -> Step:
        return CallStep(f"record {action.region} as the writer of {action.service}",
                        lambda: hooks.promoted(action, decided_at))

    def _provider(self) -> DnsProvider:
        if self.dns is None:
            raise ConflictError("the topology has no DNS provider (dns.provider = \"none\")")
        return self.dns

    def writer_record(self, service: str) -> frozenset[str] | None:
        """What the writer record of `service` holds now (None: absent); ConflictError when the
        topology has no DNS provider."""
        found = self._address_sets(self.topo.services[service].writer_record)
        return found[-1].values if found else None

    def reader_record(self, service: str) -> frozenset[str] | None:
        """The addresses the reader record of `service` holds now (empty: absent); None when
        the service has no reader record."""
        record = self.topo.services[service].reader_record
        if record is None:
            return None
        return frozenset().union(*(found.values for found in self._address_sets(record)))

    def _address_sets(self, record: str) -> list[RecordSet]:
        """The record's A and then AAAA record sets, those that exist."""
        return [found for rtype in ("A", "AAAA")
                if (found := self._provider().read(RecordKey(record, rtype))) is not None]

    def dns_writer_step(self, action: SetDnsWriter) -> Step:
        service = self.topo.services[action.service]
        old = self.topo.regions[action.from_region].address
        new = self.topo.regions[action.to_region].address
        key = RecordKey(service.writer_record, rtype_for_address(new))

        def move() -> str:
            provider = self._provider()
            current = provider.read(key)
            if current is not None and current.values == frozenset({new}):
                return f"{key} already points at {action.to_region}"
            expected = RecordSet(key, current.ttl if current else service.ttl, frozenset({old}))
            change = provider.compare_and_set(
                current if current is not None and current.values == frozenset({old}) else expected,
                RecordSet(key, service.ttl, frozenset({new})))
            provider.wait_visible(change, self.dns_visible_timeout)
            return f"{key}: {old} -> {new}, visible"

        return CallStep(f"point {service.writer_record} at {action.to_region}", move)

    def _dns_reader_step(self, action: AddReader | RemoveReader) -> Step:
        service = self.topo.services[action.service]
        record = service.reader_record
        address = self.topo.regions[action.region].address
        verb = "add" if isinstance(action, AddReader) else "remove"

        def change_reader() -> str:
            if record is None:
                return "no reader record configured"
            provider = self._provider()
            key = RecordKey(record, rtype_for_address(address))
            change = (provider.add_value(key, address, service.ttl) if verb == "add"
                      else provider.remove_value(key, address))
            provider.wait_visible(change, self.dns_visible_timeout)
            return f"{key}: {verb} {address}"

        return CallStep(f"{verb} {action.region} in {record}", change_reader)
