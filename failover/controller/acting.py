"""Running plans: the journaled executor, the fleet record a plan leaves, DNS retries, and
the resumption of plans a crash interrupted. The controller decides; this runs what it decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from failover.controller.executor import Executor, PlanOutcome, PlanRun
from failover.controller.journal import PLAN, Journal
from failover.controller.metrics import Metrics
from failover.controller.records import (
    after_plan,
    promoted,
    reader_record_repairs,
    to_store,
    writer_record_repair,
)
from failover.controller.status import ServiceRuntime
from failover.controller.steps import StepFactory
from failover.coordination.base import Claim, Coordinator, Leadership, ServiceRecord
from failover.engine import (
    Action,
    AfterPlan,
    Decision,
    FenceRegion,
    Observation,
    Plan,
    SetDnsWriter,
    WriterClaim,
    changed_databases,
)
from failover.engine.lease import lease_end
from failover.engine.serialize import action_from_dict, plan_as_dict, stable_plan_id
from failover.errors import ConflictError, SafetyRefusal
from failover.logs import in_plan

log = logging.getLogger("failover.controller")

DNS_RETRY_INTERVAL = 2.0  # seconds between retries of a writer record that did not move
FAILED_PLAN_BACKOFF = 5.0  # seconds before a plan that failed is tried again
# still_leading may ride out an etcd election (lease TTL plus a few requests):
# waiting less would depose a healthy leader.
LEADERSHIP_CHECK_TIMEOUT = 20.0  # seconds
CLAIM_TIMEOUT = 20.0  # seconds; the same reason, for etcd


class PlanRunner:
    def __init__(self, journal: Journal, metrics: Metrics, coordinator: Coordinator,
                 steps: StepFactory, runtime: Mapping[str, ServiceRuntime], *,
                 quorum: int, lease_ttl: float) -> None:
        self.journal = journal
        self.metrics = metrics
        self.coordinator = coordinator
        self.steps = steps
        steps.hooks = self
        self.runtime = runtime
        self.quorum = quorum
        self.lease_ttl = lease_ttl
        self.executor = Executor(journal, on_progress=self._step_progress,
                                 still_leading=self._still_leading)
        # A writer record that could not be moved is retried on later ticks, one
        # attempt each, so that a DNS server that is down never holds decisions up.
        self._dns_executor = Executor(journal, attempts=1, on_progress=self._step_progress,
                                      still_leading=self._still_leading)
        self._failed_at: dict[str, float] = {}  # base plan id -> when it last failed
        # The engine plans a service again only from views read after these ended.
        self.after_plans: dict[str, AfterPlan] = {}
        self._dns_checked_at = 0.0
        self._leadership: Leadership | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def request_stop(self) -> None:
        self.executor.request_stop()
        self._dns_executor.request_stop()

    @contextlib.asynccontextmanager
    async def leading(self, decision: Decision) -> AsyncIterator[bool]:
        """Leadership for running `decision`'s plan, resigned at the end; yields whether it
        was granted (another controller may have to act instead)."""
        leadership = await self.coordinator.lead(decision)
        if leadership is None:
            yield False
            return
        self._leadership = leadership
        try:
            yield True
        finally:
            self._leadership = None
            await self.coordinator.resign()

    async def execute(self, plan: Plan, records: dict[str, ServiceRecord]) -> None:
        by_service: dict[str, list[Action]] = {}
        for action in plan.changes():
            by_service.setdefault(action.service, []).append(action)
        now = time.time()
        for service, actions in sorted(by_service.items()):
            base = stable_plan_id(service, actions)
            if self._failed_at.get(base, -math.inf) + FAILED_PLAN_BACKOFF > now:
                continue  # the same plan just failed: give what blocked it a moment
            outcome = await self.run_actions(service, actions, plan.decided_at)
            if not outcome.ok:
                self._failed_at[base] = time.time()
            done_plan = Plan(plan.decided_at, tuple(actions)) if outcome.ok else None
            await self._after_plan(service, actions, outcome, records, done_plan)

    async def run_actions(self, service: str, actions: Sequence[Action], decided_at: float,
                          *, plan_id: str | None = None,
                          executor: Executor | None = None) -> PlanOutcome:
        plan_id = plan_id or self._plan_id(service, actions, decided_at)
        epoch = max((a.epoch for a in actions), default=0)
        summary = plan_as_dict(actions, decided_at)
        try:
            built = await asyncio.to_thread(self.steps.build, actions, decided_at)
        except Exception as exc:  # the plan could not even be prepared: say so in the journal
            error = f"{type(exc).__name__}: {exc}"
            self.journal.append(PLAN, event="start", plan_id=plan_id, epoch=epoch,
                                service=service, steps=[], plan=summary)
            self.journal.append(PLAN, event="end", plan_id=plan_id, epoch=epoch,
                                service=service, outcome="failed", error=error)
            log.warning("plan %s could not be prepared: %s", plan_id, error)
            self.metrics.failovers.labels(service=service, outcome="failed").inc()
            return PlanOutcome(plan_id, "failed", ())
        run = PlanRun(plan_id, epoch, service, built.steps, summary)
        last_plan: dict[str, Any] = {"plan_id": plan_id, "epoch": epoch,
                                     "started_at": time.time(), "outcome": "running",
                                     "actions": summary["actions"]}
        self.runtime[service].last_plan = last_plan
        with in_plan(plan_id, epoch, service):
            log.info("executing plan: %s", "; ".join(getattr(a, "reason", "") for a in actions))
            try:
                outcome = await asyncio.to_thread((executor or self.executor).execute, run)
            finally:
                await asyncio.to_thread(built.close)
                if changed := changed_databases(actions):
                    self.after_plans[service] = AfterPlan(time.time(), changed)
            log.info("plan %s", outcome.outcome)
        self.metrics.failovers.labels(service=service, outcome=outcome.outcome).inc()
        for step in outcome.steps:
            if step.outcome != "skipped":  # skipped: it ended in an earlier run
                self.metrics.step_duration.labels(kind=built.steps[step.index].kind,
                                                  outcome=step.outcome).observe(step.duration)
        last_plan.update(outcome=outcome.outcome, ended_at=time.time(),
                         steps=[asdict(s) for s in outcome.steps])
        return outcome

    def _plan_id(self, service: str, actions: Sequence[Action], decided_at: float) -> str:
        """A promotion (or a writer's confirmation) keeps its stable id once it ended ok, so
        that the same failover, decided again before its record has spread, is seen done and
        never run twice. Any other plan
        (fences, unfences, reader and DNS repairs) converges the world back to the record and
        must run again when the world drifts again, though its actions look the same."""
        stable = stable_plan_id(service, actions)
        if any(isinstance(action, WriterClaim) for action in actions):
            return self.journal.attempt_id(stable)
        return f"{stable}-{int(decided_at * 1000)}"

    async def _after_plan(self, service: str, actions: Sequence[Action], outcome: PlanOutcome,
                          records: dict[str, ServiceRecord], done: Plan | None) -> None:
        record = records.get(service)
        if record is None:
            return
        if done is None:
            finished = [s.name for s in outcome.steps if s.outcome in ("ok", "skipped")]
            log.warning("plan for %s ended %s after %s", service, outcome.outcome,
                        ", ".join(finished) or "no step")
            return
        await self._store(after_plan(record, done))

    async def _store(self, wanted: ServiceRecord) -> None:
        """Store `wanted` unless the fleet already holds the same or newer."""
        record = to_store(self.coordinator.records().get(wanted.service), wanted)
        if record is not None:
            with contextlib.suppress(ConflictError):
                await self.coordinator.put_record(record)

    # PlanHooks: called by steps from the executor's thread.

    def promoted(self, action: WriterClaim, decided_at: float) -> str:
        """Record the new writer before DNS moves; a record that cannot be written stops the
        plan there, so that DNS never points at a writer the fleet does not record."""
        assert self._loop is not None
        held = self.coordinator.records().get(action.service)
        if held is not None and held.epoch > action.epoch:
            raise SafetyRefusal(f"the fleet records {held.writer} at epoch {held.epoch} already: "
                                f"this plan at epoch {action.epoch} is superseded")
        wanted = promoted(held, action, decided_at)
        if wanted is None:
            raise SafetyRefusal(f"the fleet records {held.writer if held else 'no writer'} now, "
                                f"not {action.region}: its confirmation is superseded")
        record = to_store(held, wanted)
        if record is not None:
            try:
                asyncio.run_coroutine_threadsafe(self.coordinator.put_record(record),
                                                 self._loop).result(timeout=CLAIM_TIMEOUT)
            except ConflictError as exc:
                raise SafetyRefusal(f"the writer record was not stored: {exc}") from exc
        return f"the fleet records {action.region} as writer at epoch {action.epoch}"

    async def fence_local(self, fences: Sequence[FenceRegion], now: float) -> None:
        """Fence this region's own stale primaries, each a plan of its own. The id carries
        the time: fencing again later (the server restarted, a fence was lifted) is a new plan."""
        for fence in fences:
            await self.run_actions(fence.service, [fence], now, plan_id=(
                f"{fence.service}-e{fence.epoch}-fence-{fence.region}-{int(now * 1000)}"))

    def claim(self, action: WriterClaim) -> Claim:
        assert self._loop is not None
        claim = asyncio.run_coroutine_threadsafe(
            self.coordinator.claim(action.service, action.epoch, action.region,
                                   action.previous_writer, self.lease_ttl),
            self._loop).result(timeout=CLAIM_TIMEOUT)
        if not claim.granted:
            raise SafetyRefusal(f"epoch {action.epoch} of {action.service} not claimed: "
                                f"{claim.reason}")
        return claim

    def first_lease(self, action: WriterClaim) -> float:
        assert self._loop is not None

        async def vouching() -> tuple[list[Observation], frozenset[str]]:
            return self.coordinator.vouching(action.service, action.epoch)  # on the loop

        observations, void = asyncio.run_coroutine_threadsafe(
            vouching(), self._loop).result(timeout=CLAIM_TIMEOUT)
        return lease_end(observations, action.region, self.quorum, self.lease_ttl, void=void)

    def dns_deferred(self, action: SetDnsWriter, error: str) -> None:
        runtime = self.runtime[action.service]
        runtime.dns_pending = action
        runtime.degraded = (f"database promoted in {action.to_region} but the writer record "
                            f"still points at {action.from_region}: {error}; retried every tick")

    async def check_dns_records(self, records: Mapping[str, ServiceRecord],
                                addresses: Mapping[str, str]) -> None:
        """Compare every writer and reader record with the fleet's record; a difference
        becomes a pending move, retried like one a plan could not make."""
        now = time.time()
        if now < self._dns_checked_at + DNS_RETRY_INTERVAL or self.steps.dns is None:
            return
        self._dns_checked_at = now
        for service, record in sorted(records.items()):
            runtime = self.runtime[service]
            if runtime.dns_moves():
                continue
            try:
                seen = await asyncio.to_thread(self.steps.writer_record, service)
                readers = await asyncio.to_thread(self.steps.reader_record, service)
            except Exception as exc:  # DNS down: reported, and checked again later
                log.info("cannot read the DNS records of %s: %s", service, exc)
                continue
            repair = writer_record_repair(record, seen, addresses)
            if repair is not None:
                log.warning("%s: %s", service, repair.reason)
                self.dns_deferred(repair, repair.reason)
            if readers is not None:  # None: the service has no reader record
                runtime.readers_pending = tuple(reader_record_repairs(record, readers,
                                                                      addresses))
                if runtime.readers_pending:
                    log.warning("%s: %s", service, runtime.readers_pending[0].reason)

    async def retry_dns(self) -> None:
        now = time.time()
        for service, runtime in self.runtime.items():
            if not runtime.dns_due(now):
                continue
            actions = runtime.dns_moves()
            runtime.dns_retry_at = now + DNS_RETRY_INTERVAL
            outcome = await self.run_actions(
                service, actions, now, plan_id=f"{service}-e{actions[0].epoch}-dns-{int(now)}",
                executor=self._dns_executor)
            if outcome.ok:
                runtime.dns_pending = None
                runtime.readers_pending = ()
                runtime.degraded = None

    def _still_leading(self) -> bool:
        leadership, loop = self._leadership, self._loop
        if leadership is None or loop is None:
            return True  # an operator's direct plan: nothing to lose
        future = asyncio.run_coroutine_threadsafe(self.coordinator.still_leading(leadership), loop)
        try:
            return future.result(timeout=LEADERSHIP_CHECK_TIMEOUT)
        except Exception:
            return False

    def _step_progress(self, event: str, index: int, name: str, fields: dict[str, Any]) -> None:
        log.info("step %d %s: %s", index, name, event, extra={"step": name, **fields})

    async def resume_unfinished(self) -> None:
        """Finish plans a crash interrupted, when this controller may act."""
        records = self.coordinator.records()
        for progress in self.journal.unfinished_plans():
            record = progress.record or {}
            summary = record.get("plan") or {}
            actions = [action_from_dict(a) for a in summary.get("actions", [])]
            service = record.get("service")
            if not actions or not isinstance(service, str):
                continue
            held = records.get(service)
            epoch = int(record.get("epoch") or 0)
            if any(isinstance(a, WriterClaim) for a in actions) and held is not None \
                    and held.epoch >= epoch:
                # Another controller finished this failover while this one was down.
                self.journal.append(PLAN, event="end", plan_id=progress.plan_id, epoch=epoch,
                                    service=service, outcome="superseded",
                                    error=f"the fleet records epoch {held.epoch} already")
                continue
            log.info("resuming plan %s after a restart", progress.plan_id)
            await self.run_actions(service, actions, float(summary.get("decided_at", 0)),
                                   plan_id=progress.plan_id)
