"""Keeping writers writable: renew the write lease of a service's recorded writer as far
as a quorum vouches for it (`engine.lease`), and write that service's heartbeat.

A controller does it for its own region's databases, which it can reach when nobody
else can. The executor also does it for a writer whose own controller has gone silent
(crashed, paused, restarting): the lease bound is the same whoever computes it (every
observer's promises travel with its observations), so the database keeps taking writes
instead of stopping until that controller is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from failover.coordination.base import Coordinator, ServiceRecord
from failover.engine import Observation
from failover.engine.lease import lease_end
from failover.postgres.connection import ServiceDatabases
from failover.postgres.heartbeat import beat
from failover.postgres.lease import renew_lease
from failover.topology import Topology

log = logging.getLogger("failover.controller")

# Exchange intervals without a word from a writer's controller before the executor renews
# that writer's lease itself: a missed exchange or two is no reason to double the calls.
STAND_IN_AFTER = 2

# service -> the observations to count and the observers whose word is void, for the
# service's recorded epoch
Vouching = Mapping[str, tuple[list[Observation], frozenset[str]]]


def silent_writers(records: Mapping[str, ServiceRecord], observations: Iterable[Observation],
                   now: float, silence: float, me: str) -> dict[str, str]:
    """service -> its recorded writer, for writers other than `me` whose controller sent
    no observation in the last `silence` seconds (or never)."""
    heard: dict[str, float] = {}
    for observation in observations:
        heard[observation.observer] = max(heard.get(observation.observer, float("-inf")),
                                          observation.observed_at)
    return {name: record.writer for name, record in records.items()
            if record.writer is not None and record.writer != me
            and now - heard.get(record.writer, float("-inf")) > silence}


class WriterLeases:
    """The two renewal jobs of a controller: its own region's writers, and (when it
    executes) writers whose controller is silent. Each has its own keeper, so that a
    writer that does not answer holds back no other. What vouches is read from the
    coordinator on the event loop that updates it; the calls run in a worker thread."""

    def __init__(self, topo: Topology, coordinator: Coordinator, me: str, *,
                 lease_ttl: float) -> None:
        self.coordinator = coordinator
        self.me = me
        self.silence = STAND_IN_AFTER * topo.fleet.coordination.exchange_interval
        self.own = LeaseKeeper(topo, quorum=topo.quorum, lease_ttl=lease_ttl)
        self.standing_in = LeaseKeeper(topo, quorum=topo.quorum, lease_ttl=lease_ttl)

    async def keep_own(self) -> None:
        records = self.coordinator.records()
        await self._keep(self.own, records, {name: self.me for name, record in records.items()
                                             if record.writer == self.me})

    async def stand_in(self) -> None:
        records = self.coordinator.records()
        await self._keep(self.standing_in, records, silent_writers(
            records, self.coordinator.observations(), time.time(), self.silence, self.me))

    async def _keep(self, keeper: LeaseKeeper, records: Mapping[str, ServiceRecord],
                    writers: Mapping[str, str]) -> None:
        if not writers:
            return
        vouching = {name: self.coordinator.vouching(name, records[name].epoch)
                    for name in writers}
        await asyncio.to_thread(keeper.keep_writing, records, writers, vouching)

    def close(self) -> None:
        self.own.close()
        self.standing_in.close()


class LeaseKeeper:
    """Renews writers' leases from a worker thread, keeping one set of sessions per
    service to the regions it renews for."""

    def __init__(self, topo: Topology, *, quorum: int, lease_ttl: float) -> None:
        self.topo = topo
        self.quorum = quorum
        self.lease_ttl = lease_ttl
        self._dbs: dict[str, ServiceDatabases] = {}

    def _db(self, service: str) -> ServiceDatabases:
        db = self._dbs.get(service)
        if db is None:
            db = self._dbs[service] = ServiceDatabases.from_topology(self.topo, service)
        return db

    def keep_writing(self, records: Mapping[str, ServiceRecord], writers: Mapping[str, str],
                     vouching: Vouching) -> None:
        """Renew the lease of `writers` (service -> the region recorded as its writer)."""
        for name in self.topo.services:
            record = records.get(name)
            region = writers.get(name)
            if record is None or region is None or record.writer != region:
                continue
            observations, void = vouching[name]
            until = lease_end(observations, region, self.quorum, self.lease_ttl, void=void)
            left = until - time.time()
            if left <= 0:
                continue  # no quorum vouches for the region now: the lease runs out on its own
            db = self._db(name)
            try:
                state = renew_lease(db.conn(region), name, region, record.epoch, left,
                                    not_after=until)
                if state.writer:
                    beat(db.conn(region), name)
                else:
                    log.info("lease of %s in %s not renewed: %s", name, region, state.refused)
            except Exception as exc:
                db.forget(region)
                log.debug("lease or heartbeat of %s in %s failed: %s", name, region, exc)

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
