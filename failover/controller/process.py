"""The long-running controller of one region.

Every check of every region runs on the probe scheduler; every exchange
interval the controller shares its observations with the fleet, asks the
engine for a decision, journals what changed, and, when the engine names it
the executor, runs the plan through the journaled executor. It also writes
the lease and the heartbeat of every service whose writer is its own region
and, as the executor, of writers whose own controller has gone silent.

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
import signal
import time
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from failover.controller.acting import PlanRunner
from failover.controller.api import build_app
from failover.controller.gate import LocalFacts, MoveKind, next_move
from failover.controller.journal import OPERATOR, Journal
from failover.controller.local import WriterLeases
from failover.controller.metrics import Metrics
from failover.controller.observing import observe_region
from failover.controller.operator import (
    RECORD_VERBS,
    OperatorRequest,
    operator_actions,
    operator_answer,
    parse_request,
    refusal,
)
from failover.controller.records import planning_state, with_discovered
from failover.controller.reporting import DecisionReport
from failover.controller.status import Coordination, ServiceRuntime, local_role, status_view
from failover.controller.steps import StepFactory
from failover.coordination.base import (
    Coordinator,
    ServiceRecord,
)
from failover.coordination.peers import PeerCoordinator
from failover.coordination.signing import Verifier
from failover.dns.factory import provider_from_topology
from failover.dns.provider import DnsProvider
from failover.engine import (
    Action,
    Decision,
    Observation,
    RejoinRegion,
    decide,
)
from failover.engine.policy import policy_from_topology
from failover.errors import ConflictError, SafetyRefusal, UserError
from failover.health.probe import ProbeResult
from failover.health.scheduler import ProbeScheduler, Transition
from failover.health.targets import ProbeTarget, open_probes
from failover.postgres.connection import ServiceDatabases
from failover.topology import Topology

log = logging.getLogger("failover.controller")


class Controller:
    def __init__(self, topo: Topology, region: str, *, state_dir: Path, key: bytes,
                 coordinator: Coordinator | None = None, dns: DnsProvider | None = None) -> None:
        self.topo = topo
        self.region = topo.region(region).name
        self.me = topo.regions[self.region]
        self.policy = policy_from_topology(topo)
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(state_dir / "journal.db", source=self.region)
        self.metrics = Metrics(self.region)
        settings = topo.fleet.coordination
        self.verifier = Verifier(key, settings.request_window)
        # Read now: a certificate that cannot be read stops the start (exit 2), not a request.
        self._api_tls = topo.api_server_tls(self.region)
        if coordinator is None and settings.backend == "etcd" and settings.etcd is not None:
            from failover.coordination.etcd import EtcdCoordinator

            coordinator = EtcdCoordinator(self.region, settings.etcd,
                                          where=str(topo.path / "fleet.toml"),
                                          on_news=self.request_tick,
                                          observers=list(topo.regions), quorum=topo.quorum)
        self.coordinator: Coordinator = coordinator or PeerCoordinator(
            self.region, {name: r.controller_url for name, r in topo.regions.items()}, key,
            state_dir, quorum=topo.quorum, observation_max_age=topo.fleet.observation_max_age,
            timeout=max(0.2, settings.exchange_interval * 0.8), tls=topo.api_client_tls(),
            on_exchange_error=self._exchange_failed, on_news=self.request_tick,
        )
        if dns is None and topo.fleet.dns.provider != "none":
            dns = provider_from_topology(topo)
        self.runtime = {name: ServiceRuntime() for name in topo.services}
        self.steps = StepFactory(topo, dns, reconciliation_dir=state_dir / "reconciliation")
        self.plans = PlanRunner(self.journal, self.metrics, self.coordinator, self.steps,
                                self.runtime, quorum=topo.quorum,
                                lease_ttl=self.policy.lease_ttl)
        self.last_decision: Decision | None = None
        self.report = DecisionReport(self.journal, self.metrics, topo, self.runtime)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probes: ProbeScheduler | None = None
        self.leases = WriterLeases(topo, self.coordinator, self.region,
                                   lease_ttl=self.policy.lease_ttl)
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
        self.report.threshold(change)
        self.request_tick()

    def my_observations(self, now: float) -> list[Observation]:
        assert self._probes is not None
        status = self._probes.status()
        return [observe_region(self.region, name,
                               [(check, status[(name, check.name)]) for check in region.checks],
                               now, self.topo.services, topology=self.topo.fingerprint)
                for name, region in self.topo.regions.items()]

    # ------------------------------------------------------------ deciding

    async def _records_with_defaults(self) -> dict[str, ServiceRecord]:
        """The fleet's records, with writers adopted from the databases (see `records`),
        shared from then on."""
        members = {name: [r.name for r in self.topo.service_regions(service)]
                   for name, service in self.topo.services.items()}
        records, adopted = with_discovered(self.coordinator.records(),
                                           self.coordinator.observations(), members)
        for record in adopted:
            log.info("adopting %s as writer of %s at epoch %d from the databases",
                     record.writer, record.service, record.epoch)
            with contextlib.suppress(ConflictError):
                await self.coordinator.put_record(record)
        return records

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
        now = time.time()
        if self.last_decision is not None and now - self.last_decision.now > self._startup_grace:
            # This process did not run for a while (SIGSTOP, a paused VM): it has not heard
            # the fleet since, which is not isolation yet. Its lease lapsed on its own.
            self._started_at = now
        claimed = {name: self.coordinator.highest_claimed(name) for name in self.topo.services}
        decision = decide(self.coordinator.observations(), planning_state(records, claimed),
                          self.policy, now, self.region,
                          known_positions=self.last_decision.positions if self.last_decision
                          else None, after_plans=self.plans.after_plans)
        self.last_decision = decision
        self.report.decision(decision, records, self.coordinator.observations(),
                             self.coordinator.problem())
        if decision.executes and decision.has_quorum and self.coordinator.problem() is None:
            await self.plans.check_dns_records(
                records, {name: region.address for name, region in self.topo.regions.items()})
        move = next_move(decision, LocalFacts(
            stopping=self._stopping, coordination_problem=self.coordinator.problem(),
            unfinished_plans=len(self.journal.unfinished_plans()) if decision.executes else 0,
            # Only when a retry is due: between retries a plan the engine wants goes ahead.
            dns_pending=any(r.dns_due(now) for r in self.runtime.values()),
            up_for=now - self._started_at, startup_grace=self._startup_grace))
        if move.kind is MoveKind.FENCE_LOCAL:
            await self.plans.fence_local(decision.local, now)
            return
        if not move.needs_leadership:
            return
        async with self.plans.leading(decision) as granted:
            if not granted:
                return
            if move.kind is MoveKind.RESUME:
                await self.plans.resume_unfinished()
            elif move.kind is MoveKind.RETRY_DNS:
                await self.plans.retry_dns()
            else:
                await self.plans.execute(decision.plan, records)

    async def _stand_in(self) -> None:
        """The executor renews the lease of writers whose own controller is silent."""
        decision = self.last_decision
        if decision is not None and decision.executes and decision.has_quorum:
            await self.leases.stand_in()

    # ------------------------------------------------------------ API view

    def status(self) -> dict[str, Any]:
        return status_view(
            self.region, time.time(), self.last_decision, records=self.coordinator.records(),
            services=self.topo.services, observations=self.coordinator.observations(),
            runtime=self.runtime,
            coordination=Coordination(self.coordinator.backend, self.coordinator.problem()),
            lease_ttl=self.policy.lease_ttl, topology=self.topo.fingerprint)

    def exchange_payload(self) -> dict[str, Any]:
        if not isinstance(self.coordinator, PeerCoordinator):
            return {}
        return self.coordinator.payload()

    def promise(self, payload: Any) -> dict[str, Any]:
        if not isinstance(self.coordinator, PeerCoordinator):
            raise ValueError("this controller does not use the peer exchange")
        if not isinstance(payload, dict):
            raise ValueError("a claim is an object")
        service, epoch = payload.get("service"), payload.get("epoch")
        claimant, target = payload.get("claimant"), payload.get("target")
        if (service not in self.topo.services or not isinstance(epoch, int)
                or claimant not in self.topo.regions or target not in self.topo.regions):
            raise ValueError("a claim names a service, an integer epoch, a claimant and the "
                             "target, all of this fleet")
        return self.coordinator.promise(service, epoch, claimant, target)

    def ingest_peer(self, payload: Any) -> None:
        if not isinstance(self.coordinator, PeerCoordinator):
            raise ValueError("this controller does not use the peer exchange")
        if self.coordinator.ingest(payload):
            self.request_tick()

    def local_role(self, service: str) -> str | None:
        return local_role(self.coordinator.observations(), self.region, service)

    async def operator(self, verb: str, args: dict[str, Any]) -> dict[str, Any]:
        """An operator's command, run here so that the fleet's epochs and journal apply and
        the automatic decisions (which wait on the same lock) never race it."""
        request = parse_request(self.topo, verb, args)
        if request.verb in RECORD_VERBS:
            return await self._set_paused(request.service, request.verb == "pause", request.by)
        async with self._busy:
            refused = refusal(self.last_decision, self.coordinator.problem())
            if refused is not None:
                raise SafetyRefusal(f"{request.verb} of {request.service} refused: {refused}")
            self.journal.append(OPERATOR, verb=request.verb, service=request.service,
                                region=request.region, by=request.by)
            held = self.coordinator.records().get(request.service)
            if request.pauses(held):
                assert held is not None
                await self.coordinator.put_record(held.bumped(paused=True))
            actions, summary = await asyncio.to_thread(self._operator_actions, request)
            now = time.time()
            plan_id = f"{request.service}-{request.verb}-{request.region}-e" \
                      f"{max(a.epoch for a in actions)}-{int(now)}"
            outcome = await self.plans.run_actions(request.service, actions, now, plan_id=plan_id)
            return operator_answer(request, actions, outcome, summary)

    def _operator_actions(self, request: OperatorRequest) -> tuple[list[Action], dict[str, Any]]:
        db = ServiceDatabases.from_topology(self.topo, request.service)
        try:
            actions, summary = operator_actions(request, db)
        finally:
            db.close()
        for action in actions:
            if isinstance(action, RejoinRegion):
                summary["lost_file"] = str(self.steps.lost_file(action))
        return actions, summary

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
        self.plans.start(self._loop)
        async with open_probes(self.topo) as targets:
            self._probes = ProbeScheduler(targets, on_transition=self._on_transition,
                                          on_result=self._on_result)
            await self.coordinator.start()
            runner = web.AppRunner(build_app(self, self.verifier), access_log=None)
            await runner.setup()
            url = self.me.controller_url
            host, port = self.me.listen_address
            site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=self._api_tls)
            await site.start()
            self._probes.start()
            jobs = AsyncIOScheduler(event_loop=self._loop)
            interval = self.topo.fleet.coordination.exchange_interval
            jobs.add_job(self.exchange, "interval", seconds=interval, max_instances=1,
                         coalesce=True, misfire_grace_time=1, id="exchange")
            jobs.add_job(self.decide_and_act, "interval", seconds=interval, max_instances=1,
                         coalesce=True, misfire_grace_time=1, id="decide")
            # Not under the decision lock: a long plan must not let the writer's lease lapse.
            jobs.add_job(self.leases.keep_own, "interval", seconds=interval, max_instances=1,
                         coalesce=True, misfire_grace_time=1, id="lease")
            jobs.add_job(self._stand_in, "interval", seconds=interval, max_instances=1,
                         coalesce=True, misfire_grace_time=1, id="lease-stand-in")
            jobs.start()
            self._started_at = time.time()
            # Everything allocated so far lives as long as the process: keep the garbage
            # collector from walking it again (full collections paused probes ~100 ms).
            gc.freeze()
            log.info("controller of %s listening on %s:%d for %s", self.region, host, port, url)
            try:
                await stop.wait()
            finally:
                self._stopping = True
                self.plans.request_stop()
                jobs.shutdown(wait=False)
                async with self._busy:  # the step in flight finishes first
                    pass
                await self._probes.stop()
                await runner.cleanup()
                await self.coordinator.close()
                self.leases.close()
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
