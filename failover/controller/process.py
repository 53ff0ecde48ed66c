"""The long-running controller of one region.

Every check of every region runs on the probe scheduler; every exchange
interval the controller shares its observations with the fleet, asks the
engine for a decision, journals what changed, and, when the engine names it
the executor, runs the plan through the journaled executor. It also writes
the heartbeat of every service whose writer is its own region.

SIGTERM: the step in flight finishes, the plan stays unfinished in the
journal, scheduling stops, exit 0. SIGKILL at any instant is safe: a plan is
resumed from its journal by this controller when it leads again, and every
step is idempotent and fenced by the epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from failover.controller.api import build_app
from failover.controller.executor import Executor, PlanOutcome, PlanRun, Step
from failover.controller.journal import DECISION, OPERATOR, PLAN, THRESHOLD, VERDICT, Journal
from failover.controller.metrics import VERDICT_VALUES, Metrics
from failover.controller.observing import observe_region
from failover.controller.steps import StepFactory, hook_input
from failover.coordination.base import (
    Coordinator,
    Leadership,
    ServiceRecord,
    cluster_state,
)
from failover.coordination.peers import PeerCoordinator
from failover.coordination.signing import Verifier
from failover.dns.factory import provider_from_topology
from failover.dns.provider import DnsProvider
from failover.engine import (
    Action,
    Decision,
    NoOp,
    Observation,
    Plan,
    PromoteSubscriber,
    SetDnsWriter,
    apply_plan,
    decide,
)
from failover.engine.policy import policy_from_topology
from failover.engine.serialize import action_as_dict, action_from_dict, plan_as_dict, stable_plan_id
from failover.errors import ConflictError, FailoverError, UserError
from failover.health.probe import ProbeResult
from failover.health.scheduler import ProbeScheduler, Transition
from failover.health.targets import ProbeTarget, open_probes
from failover.logs import in_plan
from failover.postgres.connection import ServiceDatabases
from failover.postgres.fence import fence_steps, unfence_steps
from failover.postgres.heartbeat import beat
from failover.postgres.promote import find_old_primary, next_epoch, promotion_steps
from failover.postgres.rejoin import rejoin_steps
from failover.postgres.steps import SqlStep
from failover.postgres.switchover import DEFAULT_TIMEOUT as DEFAULT_SWITCHOVER_TIMEOUT
from failover.postgres.switchover import switchover_steps
from failover.topology import Topology

log = logging.getLogger("failover.controller")

OPERATOR_VERBS = ("switchover", "promote", "fence", "unfence", "rejoin")
DNS_RETRY_INTERVAL = 2.0  # seconds between retries of a writer record that did not move
FAILED_PLAN_BACKOFF = 5.0  # seconds before a plan that failed is tried again
# still_leading may ride out an etcd election (lease TTL plus a few requests):
# waiting less would depose a healthy leader.
LEADERSHIP_CHECK_TIMEOUT = 20.0  # seconds

@dataclass
class ServiceRuntime:
    """What the controller tracks per service beyond the fleet's record."""

    last_plan: dict[str, Any] | None = None
    degraded: str | None = None
    dns_pending: SetDnsWriter | None = None  # a writer record move that failed, retried
    dns_retry_at: float = 0.0


class Controller:
    def __init__(self, topo: Topology, region: str, *, state_dir: Path, key: bytes,
                 coordinator: Coordinator | None = None, dns: DnsProvider | None = None) -> None:
        self.topo = topo
        self.region = topo.region(region).name
        self.me = topo.regions[self.region]
        self.policy = policy_from_topology(topo)
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(state_dir / "journal.jsonl", source=self.region)
        self.metrics = Metrics(self.region)
        settings = topo.fleet.coordination
        self.verifier = Verifier(key, settings.request_window)
        if coordinator is None and settings.backend == "etcd" and settings.etcd is not None:
            from failover.coordination.etcd import EtcdCoordinator

            coordinator = EtcdCoordinator(self.region, settings.etcd,
                                          where=str(topo.path / "fleet.toml"),
                                          on_news=self.request_tick)
        self.coordinator: Coordinator = coordinator or PeerCoordinator(
            self.region, {name: r.controller_url for name, r in topo.regions.items()}, key,
            state_dir, quorum=topo.quorum, observation_max_age=topo.fleet.observation_max_age,
            timeout=max(0.2, settings.exchange_interval * 0.8),
            on_exchange_error=self._exchange_failed, on_news=self.request_tick,
        )
        if dns is None and topo.fleet.dns.provider != "none":
            dns = provider_from_topology(topo)
        self.steps = StepFactory(topo, dns, hooks=self)
        self.executor = Executor(self.journal, on_progress=self._step_progress,
                                 still_leading=self._still_leading_sync)
        # A writer record that could not be moved is retried on later ticks, one
        # attempt each, so that a DNS server that is down never holds decisions up.
        self._dns_executor = Executor(self.journal, attempts=1, on_progress=self._step_progress,
                                      still_leading=self._still_leading_sync)
        self.runtime = {name: ServiceRuntime() for name in topo.services}
        self.last_decision: Decision | None = None
        self._verdicts: dict[str, str] = {}
        self._idle_reasons: dict[str, str] = {}
        self._failed_at: dict[str, float] = {}  # base plan id -> when it last failed
        self._leadership: Leadership | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probes: ProbeScheduler | None = None
        self._heartbeat_dbs: dict[str, ServiceDatabases] = {}
        self._busy = asyncio.Lock()
        self._rerun = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick_requested = False
        self._started_at = time.time()
        # Time to hear the fleet after a start before silence counts as isolation.
        self._startup_grace = (topo.fleet.observation_max_age + topo.fleet.self_fence_after
                               + 3 * topo.fleet.coordination.exchange_interval)
        self._stopping = False

    # ------------------------------------------------------------ observing

    def _exchange_failed(self, peer: str, error: str) -> None:
        self.metrics.exchange_errors.labels(peer=peer).inc()
        log.debug("exchange with %s failed: %s", peer, error)

    def _on_result(self, target: ProbeTarget, result: ProbeResult) -> None:
        self.metrics.probe_done(target.region, target.check.name, result.ok, result.latency_s)

    def _on_transition(self, change: Transition) -> None:
        self.journal.append(THRESHOLD, target=change.region, check=change.check,
                            purpose=change.purpose, previous=change.previous.value,
                            current=change.current.value, consecutive=change.consecutive,
                            reason=change.result.reason, latency=change.result.latency_s)
        log.info("check %s/%s: %s -> %s (%s)", change.region, change.check,
                 change.previous.value, change.current.value, change.result.reason)
        self.metrics.probe_state.labels(target=change.region, check=change.check).set(
            {"healthy": 1, "unhealthy": 0}.get(change.current.value, -1))
        self.request_tick()

    def my_observations(self, now: float) -> list[Observation]:
        assert self._probes is not None
        status = self._probes.status()
        return [observe_region(self.region, name,
                               [(check, status[(name, check.name)]) for check in region.checks],
                               now, self.topo.services)
                for name, region in self.topo.regions.items()]

    # ------------------------------------------------------------ deciding

    async def _records_with_defaults(self) -> dict[str, ServiceRecord]:
        """The fleet's records; a service the fleet has no record of yet gets one from what
        the databases say (the unfenced primary with the highest epoch), shared from then on."""
        records = self.coordinator.records()
        for name in self.topo.services:
            discovered = self._discover_writer(name)
            held = records.get(name)
            if discovered is None or (held is not None and discovered.epoch <= held.epoch):
                continue
            # A database holds a higher epoch than the fleet's record: an operator
            # promoted or switched over directly (--direct). The epoch is the fencing
            # token, so the database is right: adopt its writer rather than undo it.
            if held is not None:
                discovered = replace(discovered, paused=held.paused, readers=held.readers,
                                     last_failover_at=held.last_failover_at)
                log.info("adopting %s as writer of %s at epoch %d from the databases",
                         discovered.writer, name, discovered.epoch)
            records[name] = discovered
            with contextlib.suppress(ConflictError):
                await self.coordinator.put_record(discovered)
        return records

    def _discover_writer(self, service: str) -> ServiceRecord | None:
        """The unfenced primary with the highest epoch that any observer saw, if any."""
        best: tuple[int, str] | None = None
        for observation in self.coordinator.observations():
            for replication in observation.services:
                if (replication.service == service and replication.role.value == "primary"
                        and not replication.fenced and replication.epoch is not None):
                    candidate = (replication.epoch, observation.target)
                    if best is None or candidate > best:
                        best = candidate
        if best is None:
            return None
        regions = [r.name for r in self.topo.service_regions(self.topo.services[service])]
        return ServiceRecord(service, best[1], best[0], readers=tuple(sorted(regions)))

    def request_tick(self) -> None:
        """Share and decide now rather than at the next interval: something changed (a check
        crossed a threshold here or at a peer). A decision in progress runs again when it ends."""
        if self._loop is None or self._stopping or self._tick_requested:
            return
        self._tick_requested = True
        task = self._loop.create_task(self._requested_tick())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _requested_tick(self) -> None:
        # One loop turn first: a burst of news (a thousand checks turning healthy at
        # start, a region's checks all failing at once) becomes one tick, not one each.
        await asyncio.sleep(0)
        self._tick_requested = False
        await self.tick()

    async def tick(self) -> None:
        await self.exchange()
        await self.decide_and_act()

    async def exchange(self) -> None:
        """Share this controller's observations. Never waits for a plan: a controller busy
        executing must stay heard, or the others would think it gone and act too."""
        await self.coordinator.exchange(self.my_observations(time.time()))

    async def decide_and_act(self) -> None:
        if self._busy.locked():
            self._rerun = True
            return
        try:
            async with self._busy:
                await self._decide_and_act()
        finally:
            if self._rerun and not self._stopping:
                self._rerun = False
                self.request_tick()

    async def _decide_and_act(self) -> None:
        records = await self._records_with_defaults()
        decision = decide(self.coordinator.observations(), cluster_state(records.values()),
                          self.policy, time.time(), self.region)
        self.last_decision = decision
        self._record_decision(decision, records)
        if self._stopping:
            return
        if decision.has_quorum and self.coordinator.problem() is not None:
            return  # the store lost its quorum: no automatic action (self-fencing still may)
        if not decision.has_quorum and time.time() - self._started_at < self._startup_grace:
            return  # not yet heard the fleet since start: do not mistake that for isolation
        unfinished = decision.executes and decision.has_quorum and self.journal.unfinished_plans()
        retry_dns = decision.has_quorum and any(r.dns_pending for r in self.runtime.values())
        if not (unfinished or retry_dns or (decision.executes and decision.plan.changes())):
            return
        leadership = await self.coordinator.lead(decision)
        if leadership is None:
            return
        self._leadership = leadership
        try:
            if unfinished:
                await self.resume_unfinished()
            elif retry_dns:
                await self._retry_dns()
            else:
                await self._execute(decision.plan, records)
        finally:
            self._leadership = None
            await self.coordinator.resign()

    def _record_decision(self, decision: Decision, records: dict[str, ServiceRecord]) -> None:
        self.metrics.has_quorum.set(1 if decision.has_quorum else 0)
        for verdict in decision.verdicts:
            value = verdict.verdict.value.upper()
            self.metrics.region_verdict.labels(target=verdict.region).set(VERDICT_VALUES[value])
            if self._verdicts.get(verdict.region) != value:
                self._verdicts[verdict.region] = value
                self.journal.append(VERDICT, target=verdict.region, verdict=value,
                                    votes=[asdict(v) for v in verdict.votes],
                                    reason=verdict.reason)
                log.info("region %s is %s (%s)", verdict.region, value, verdict.reason)
        # Only "why nothing happened" is kept, when it changes: plans have their own entries.
        idle: dict[str, list[str]] = {name: [] for name in self.topo.services}
        for action in decision.plan.actions:
            if isinstance(action, NoOp):
                idle.setdefault(action.service, []).append(action.reason)
        for service, reasons in idle.items():
            reason = "; ".join(reasons)
            if self._idle_reasons.get(service) != reason:
                self._idle_reasons[service] = reason
                if reason:
                    self.journal.append(DECISION, service=service, reason=reason)
                    log.info("%s: %s", service, reason)
        for record in records.values():
            self.metrics.epoch.labels(service=record.service).set(record.epoch)
            self.metrics.paused.labels(service=record.service).set(int(record.paused))
            for region in self.topo.regions:
                self.metrics.writer.labels(service=record.service, writer=region).set(
                    int(region == record.writer))

    # ------------------------------------------------------------ acting

    async def _execute(self, plan: Plan, records: dict[str, ServiceRecord]) -> None:
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
        plan_id = plan_id or self.journal.attempt_id(stable_plan_id(service, actions))
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
            log.info("plan %s", outcome.outcome)
        self.metrics.failovers.labels(service=service, outcome=outcome.outcome).inc()
        last_plan.update(outcome=outcome.outcome, ended_at=time.time(),
                         steps=[asdict(s) for s in outcome.steps])
        return outcome

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
        state = apply_plan(cluster_state([record]), done).services[0]
        await self._store(ServiceRecord.from_state(state, 0))

    async def _store(self, wanted: ServiceRecord) -> None:
        """Store `wanted` (its version ignored) unless the fleet already holds the same or newer."""
        held = self.coordinator.records().get(wanted.service)
        if held is not None and replace(held, version=0) == wanted:
            return
        if held is not None and held.epoch > wanted.epoch:
            return  # someone moved on past this plan
        version = held.version + 1 if held is not None and held.epoch == wanted.epoch else 0
        with contextlib.suppress(ConflictError):
            await self.coordinator.put_record(replace(wanted, version=version))

    # PlanHooks: called by steps from the executor's thread.

    def promoted(self, action: PromoteSubscriber, decided_at: float) -> str:
        assert self._loop is not None
        held = self.coordinator.records().get(action.service)
        readers = held.readers if held is not None else ()
        new = ServiceRecord(action.service, action.region, action.epoch, decided_at,
                            held.paused if held is not None else False, readers)
        asyncio.run_coroutine_threadsafe(self._store(new), self._loop).result(timeout=10)
        return f"the fleet records {action.region} as writer at epoch {action.epoch}"

    def dns_deferred(self, action: SetDnsWriter, error: str) -> None:
        runtime = self.runtime[action.service]
        runtime.dns_pending = action
        runtime.degraded = (f"database promoted in {action.to_region} but the writer record "
                            f"still points at {action.from_region}: {error}; retried every tick")

    async def _retry_dns(self) -> None:
        now = time.time()
        for service, runtime in self.runtime.items():
            action = runtime.dns_pending
            if action is None or now < runtime.dns_retry_at:
                continue
            runtime.dns_retry_at = now + DNS_RETRY_INTERVAL
            outcome = await self.run_actions(service, [action], now,
                                             plan_id=f"{service}-e{action.epoch}-dns-{int(now)}",
                                             executor=self._dns_executor)
            if outcome.ok:
                runtime.dns_pending = None
                runtime.degraded = None

    def _still_leading_sync(self) -> bool:
        leadership, loop = self._leadership, self._loop
        if leadership is None or loop is None:
            return True  # an operator's direct plan: nothing to lose
        future = asyncio.run_coroutine_threadsafe(self.coordinator.still_leading(leadership), loop)
        try:
            return future.result(timeout=LEADERSHIP_CHECK_TIMEOUT)
        except Exception:
            return False

    def _step_progress(self, event: str, index: int, name: str, fields: dict[str, Any]) -> None:
        if event in ("ok", "error"):
            self.metrics.step_duration.labels(step=name, outcome=event).observe(
                float(fields.get("duration", 0.0)))
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
            if any(isinstance(a, PromoteSubscriber) for a in actions) and held is not None \
                    and held.epoch >= epoch:
                # Another controller finished this failover while this one was down.
                self.journal.append(PLAN, event="end", plan_id=progress.plan_id, epoch=epoch,
                                    service=service, outcome="superseded",
                                    error=f"the fleet records epoch {held.epoch} already")
                continue
            log.info("resuming plan %s after a restart", progress.plan_id)
            await self.run_actions(service, actions, float(summary.get("decided_at", 0)),
                                   plan_id=progress.plan_id)

    # ------------------------------------------------------------ heartbeats

    def _beat_once(self) -> None:
        records = self.coordinator.records()
        for name in self.topo.services:
            record = records.get(name)
            if record is None or record.writer != self.region:
                continue
            db = self._heartbeat_dbs.get(name)
            if db is None:
                db = self._heartbeat_dbs[name] = ServiceDatabases.from_topology(self.topo, name)
            try:
                beat(db.conn(self.region), name)
            except Exception as exc:
                db.forget(self.region)
                log.debug("heartbeat of %s failed: %s", name, exc)

    async def heartbeat(self) -> None:
        await asyncio.to_thread(self._beat_once)

    # ------------------------------------------------------------ API view

    def status(self) -> dict[str, Any]:
        decision = self.last_decision
        records = self.coordinator.records()
        services = {}
        for name in self.topo.services:
            record = records.get(name)
            lag = {}
            for observation in self.coordinator.observations():
                if observation.observer != self.region:
                    continue
                for replication in observation.services:
                    if replication.service == name:
                        lag[observation.target] = {
                            "role": replication.role.value, "fenced": replication.fenced,
                            "epoch": replication.epoch, "lag_bytes": replication.lag_bytes,
                            "lag_seconds": replication.lag_seconds, "ready": replication.ready}
            services[name] = {
                "writer": record.writer if record else None,
                "epoch": record.epoch if record else None,
                "paused": record.paused if record else False,
                "last_failover_at": record.last_failover_at if record else None,
                "readers": list(record.readers) if record else [],
                "replication": lag,
                "last_plan": self.runtime[name].last_plan,
                "degraded": self.runtime[name].degraded,
            }
        return {
            "region": self.region,
            "time": time.time(),
            "coordination": self.coordinator.backend,
            "coordination_problem": self.coordinator.problem(),
            "has_quorum": decision.has_quorum if decision else False,
            "heard": list(decision.heard) if decision else [],
            "executor": decision.executor if decision else None,
            "executor_reason": decision.executor_reason if decision else None,
            "verdicts": {v.region: {"verdict": v.verdict.value.upper(), "reason": v.reason,
                                    "votes": [asdict(vote) for vote in v.votes]}
                         for v in (decision.verdicts if decision else ())},
            "plan": [action_as_dict(a) for a in decision.plan.actions] if decision else [],
            "services": services,
        }

    def journal_entries(self, since: float | None) -> list[dict[str, Any]]:
        return list(self.journal.entries(since))

    def exchange_payload(self) -> dict[str, Any]:
        if not isinstance(self.coordinator, PeerCoordinator):
            return {}
        return self.coordinator.payload()

    def ingest_peer(self, payload: Any) -> None:
        if not isinstance(self.coordinator, PeerCoordinator):
            raise ValueError("this controller does not use the peer exchange")
        if self.coordinator.ingest(payload):
            self.request_tick()

    def local_role(self, service: str) -> str | None:
        for observation in self.coordinator.observations():
            if observation.observer == self.region and observation.target == self.region:
                for replication in observation.services:
                    if replication.service == service and replication.role.value != "unknown":
                        return "fenced" if replication.fenced else replication.role.value
        return None

    async def operator(self, verb: str, args: dict[str, Any]) -> dict[str, Any]:
        """An operator's command, run here so that the fleet's epochs and journal apply and
        the automatic decisions (which wait on the same lock) never race it."""
        service = args.get("service")
        if not isinstance(service, str) or service not in self.topo.services:
            raise UserError(f"service: {service!r} is not a service of this fleet "
                            f"(known: {', '.join(self.topo.services)})")
        if verb in ("pause", "resume"):
            return await self._set_paused(service, verb == "pause", str(args.get("by", "?")))
        region = args.get("region")
        members = [r.name for r in self.topo.service_regions(self.topo.services[service])]
        if not isinstance(region, str) or region not in members:
            raise UserError(f"region: {region!r} holds no copy of {service} "
                            f"(its regions: {', '.join(members)})")
        if verb not in OPERATOR_VERBS:
            raise UserError(f"unknown operator verb {verb!r}; use pause, resume, "
                            + ", ".join(OPERATOR_VERBS))
        async with self._busy:
            self.journal.append(OPERATOR, verb=verb, service=service, region=region,
                                by=str(args.get("by", "?")))
            held = self.coordinator.records().get(service)
            if verb == "fence" and held is not None and held.writer == region and not held.paused:
                # Fencing the writer is the operator's call: keep the fleet from lifting it
                # (it lifts self-fences) or failing over meanwhile, until `failover resume`.
                await self.coordinator.put_record(held.bumped(paused=True))
            return await self._operate(verb, service, region, args)

    async def _operate(self, verb: str, service: str, region: str,
                       args: dict[str, Any]) -> dict[str, Any]:
        db = ServiceDatabases.from_topology(self.topo, service)
        try:
            steps, epoch, summary = await asyncio.to_thread(
                self._operator_steps, verb, db, service, region, args)
            plan_id = f"{service}-{verb}-{region}-e{epoch}-{int(time.time())}"
            run = PlanRun(plan_id, epoch, service, steps, {"operator": verb, **summary})
            with in_plan(plan_id, epoch, service):
                outcome = await asyncio.to_thread(self.executor.execute, run)
        finally:
            await asyncio.to_thread(db.close)
        failed = [s for s in outcome.steps if s.outcome == "failed"]
        if failed:
            raise FailoverError(f"{verb} of {service} stopped at {failed[0].name!r}: "
                                f"{failed[0].error} (plan {plan_id}; `failover history` "
                                "shows every step)")
        return {"service": service, "verb": verb, "region": region, "epoch": epoch,
                "plan_id": plan_id, "outcome": outcome.outcome, **summary,
                "steps": [asdict(s) for s in outcome.steps]}

    def _operator_steps(self, verb: str, db: ServiceDatabases, service: str, region: str,
                        args: dict[str, Any]) -> tuple[list[Step], int, dict[str, Any]]:
        """The steps of an operator's verb (in a worker thread: they read the databases)."""
        if verb in ("fence", "unfence"):
            epoch = next_epoch(db) - 1
            make = fence_steps if verb == "fence" else unfence_steps
            return list(make(db, region)), epoch, {}
        if verb == "rejoin":
            lost_file = self.state_dir / "reconciliation" / f"{service}-{region}-{int(time.time())}.json"
            lost_file.parent.mkdir(parents=True, exist_ok=True)
            rejoin = rejoin_steps(db, region, lost_file=lost_file)
            return list(rejoin.steps), rejoin.epoch, {"lost_file": str(lost_file)}
        epoch = next_epoch(db)
        old = find_old_primary(db, region)
        if old is None:
            raise UserError(f"region: no primary of {service} is known to move away from")
        action = PromoteSubscriber(service, epoch, region, old, f"operator {verb}")
        # The service's hooks apply to an operator's promotion as to the fleet's own.
        before, after = self.steps.hook_steps(action, hook_input([action], time.time()))
        when_writable = [
            SqlStep(f"record {region} as the writer of {service}", region, ("-- fleet record",),
                   lambda: self.promoted(action, time.time())),
        ]
        dns_step = self.steps.dns_writer_step(SetDnsWriter(service, epoch, old, region,
                                                           f"operator {verb}"))
        when_writable.append(SqlStep(dns_step.name, region, ("-- DNS writer record",),
                                    lambda: dns_step.run() or "done"))
        summary = {"old_primary": old, "target": region}
        if verb == "switchover":
            timeout = float(args.get("timeout") or DEFAULT_SWITCHOVER_TIMEOUT)
            switch = switchover_steps(db, region, epoch=epoch, timeout=timeout,
                                     when_writable=when_writable)
            return [*before, *switch.steps, *after], epoch, summary
        promotion = promotion_steps(db, region, epoch=epoch,
                                   allow_data_loss=bool(args.get("allow_data_loss")),
                                   after_writable=True, repoint=True)
        steps: list[Step] = list(promotion.steps)
        at = next(i for i, step in enumerate(promotion.steps) if step.name.startswith("bump"))
        steps[at + 1:at + 1] = when_writable
        return [*before, *steps, *after], epoch, summary

    async def _set_paused(self, service: str, paused: bool, by: str) -> dict[str, Any]:
        async with self._busy:
            records = await self._records_with_defaults()
            record = records.get(service)
            if record is None:
                raise UserError(f"service {service!r}: no writer known yet; wait for the first "
                                "observations or promote one")
            if record.paused != paused:
                record = record.bumped(paused=paused)
                await self.coordinator.put_record(record)
            self.journal.append(OPERATOR, verb="pause" if paused else "resume", service=service,
                                by=by)
            return {"service": service, "paused": record.paused, "epoch": record.epoch}

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        async with open_probes(self.topo) as targets:
            self._probes = ProbeScheduler(targets, on_transition=self._on_transition,
                                          on_result=self._on_result)
            await self.coordinator.start()
            runner = web.AppRunner(build_app(self, self.verifier), access_log=None)
            await runner.setup()
            url = self.me.controller_url
            host_port = url.split("://", 1)[1].split("/", 1)[0]
            host, _, port = host_port.rpartition(":")
            site = web.TCPSite(runner, host or host_port, int(port or 80), reuse_address=True)
            await site.start()
            self._probes.start()
            jobs = AsyncIOScheduler(event_loop=self._loop)
            interval = self.topo.fleet.coordination.exchange_interval
            jobs.add_job(self.exchange, "interval", seconds=interval, max_instances=1,
                         coalesce=True, misfire_grace_time=1, id="exchange")
            jobs.add_job(self.decide_and_act, "interval", seconds=interval, max_instances=1,
                         coalesce=True, misfire_grace_time=1, id="decide")
            jobs.add_job(self.heartbeat, "interval", seconds=1.0, max_instances=1, coalesce=True,
                         misfire_grace_time=1, id="heartbeat")
            jobs.start()
            self._started_at = time.time()
            # Everything allocated so far lives as long as the process: keep the garbage
            # collector from walking it again (full collections paused probes ~100 ms).
            gc.freeze()
            log.info("controller of %s listening on %s", self.region, url)
            try:
                await stop.wait()
            finally:
                self._stopping = True
                self.executor.request_stop()
                self._dns_executor.request_stop()
                jobs.shutdown(wait=False)
                async with self._busy:  # the step in flight finishes first
                    pass
                await self._probes.stop()
                await runner.cleanup()
                await self.coordinator.close()
                for db in self._heartbeat_dbs.values():
                    db.close()
                log.info("controller of %s stopped", self.region)


def run_forever(controller: Controller) -> None:
    """Run until SIGTERM or SIGINT, on uvloop: a thousand probes a second are mostly
    event-loop work (timers, tasks, socket writes), which uvloop does in C."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await controller.run(stop)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
