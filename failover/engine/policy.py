"""The one bridge from the topology's pydantic models to the engine's policy."""

from __future__ import annotations

from failover.engine.model import Policy, RegionPolicy, ServicePolicy
from failover.postgres.names import standby_name
from failover.topology import Topology


def policy_from_topology(topo: Topology, *, force: bool = False) -> Policy:
    """The engine's rules for `topo`; `force` lets failovers accept lag (operator use)."""
    return Policy(
        regions=tuple(RegionPolicy(r.name, r.priority) for r in topo.regions.values()),
        services=tuple(
            ServicePolicy(
                name=service.name,
                regions=frozenset(r.name for r in topo.service_regions(service)),
                max_lag_bytes=service.max_lag_bytes,
                max_lag_seconds=service.max_lag_seconds,
                cooldown=service.cooldown,
                force=force,
                auto_rejoin=service.rejoin == "auto",
                sync_count=service.sync_count if service.durability == "sync" else 0,
                sync_strict=service.sync_strict,
                standby_names=tuple((r.name, standby_name(service.name, r.name))
                                    for r in topo.service_regions(service)),
            )
            for service in topo.services.values()
        ),
        quorum=topo.quorum,
        observation_max_age=topo.fleet.observation_max_age,
        self_fence_after=topo.fleet.self_fence_after,
        self_fence_duration=topo.fleet.self_fence_duration,
    )
