"""What a controller does to its own region's databases, which it can reach when nobody
else can: renew the write lease of every service it is the recorded writer of, as far
as a quorum vouches for it (`engine.lease`), and write that service's heartbeat."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from failover.coordination.base import ServiceRecord
from failover.engine import Observation
from failover.engine.lease import lease_end
from failover.postgres.connection import ServiceDatabases
from failover.postgres.heartbeat import beat
from failover.postgres.lease import renew_lease
from failover.topology import Topology

log = logging.getLogger("failover.controller")

# service -> the observations to count and the observers whose word is void, for the
# service's recorded epoch
Vouching = Mapping[str, tuple[list[Observation], frozenset[str]]]


class LocalDatabases:
    """One kept session per service to this region's database (runs in a worker thread)."""

    def __init__(self, topo: Topology, region: str, *, quorum: int, lease_ttl: float) -> None:
        self.topo = topo
        self.region = region
        self.quorum = quorum
        self.lease_ttl = lease_ttl
        self._dbs: dict[str, ServiceDatabases] = {}
        self.lease_left: dict[str, float] = {}  # service -> seconds granted at the last renewal

    def _db(self, service: str) -> ServiceDatabases:
        db = self._dbs.get(service)
        if db is None:
            db = self._dbs[service] = ServiceDatabases.from_topology(self.topo, service)
        return db

    def keep_writing(self, records: Mapping[str, ServiceRecord], vouching: Vouching) -> None:
        for name in self.topo.services:
            record = records.get(name)
            if record is None or record.writer != self.region:
                self.lease_left.pop(name, None)
                continue
            observations, void = vouching[name]
            until = lease_end(observations, self.region, self.quorum, self.lease_ttl, void=void)
            left = until - time.time()
            if left <= 0:
                # No quorum vouches for this region now: the lease runs out on its own.
                self.lease_left[name] = 0.0
                continue
            db = self._db(name)
            try:
                state = renew_lease(db.conn(self.region), name, self.region, record.epoch, left,
                                    not_after=until)
                self.lease_left[name] = state.seconds_left
                if state.writer:
                    beat(db.conn(self.region), name)
                else:
                    log.info("lease of %s not renewed: %s", name, state.refused)
            except Exception as exc:
                db.forget(self.region)
                log.debug("lease or heartbeat of %s failed: %s", name, exc)

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
