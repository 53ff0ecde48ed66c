"""What a controller does to its own region's databases, which it can reach when nobody
else can: the heartbeat of every service it is the recorded writer of."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from failover.coordination.base import ServiceRecord
from failover.postgres.connection import ServiceDatabases
from failover.postgres.heartbeat import beat
from failover.topology import Topology

log = logging.getLogger("failover.controller")


class LocalDatabases:
    """One kept session per service to this region's database (runs in a worker thread)."""

    def __init__(self, topo: Topology, region: str) -> None:
        self.topo = topo
        self.region = region
        self._dbs: dict[str, ServiceDatabases] = {}

    def _db(self, service: str) -> ServiceDatabases:
        db = self._dbs.get(service)
        if db is None:
            db = self._dbs[service] = ServiceDatabases.from_topology(self.topo, service)
        return db

    def beat(self, records: Mapping[str, ServiceRecord]) -> None:
        for name in self.topo.services:
            record = records.get(name)
            if record is None or record.writer != self.region:
                continue
            db = self._db(name)
            try:
                beat(db.conn(self.region), name)
            except Exception as exc:
                db.forget(self.region)
                log.debug("heartbeat of %s failed: %s", name, exc)

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
