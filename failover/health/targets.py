"""Every check of every region in a topology, each with the probe that runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from failover.errors import UserError
from failover.health.command import CommandProbe
from failover.health.dns import DnsProbe
from failover.health.http import HttpProbe
from failover.health.postgres import PostgresProbe
from failover.health.probe import Probe
from failover.health.tcp import TcpProbe
from failover.health.thresholds import Thresholds
from failover.topology import (
    Check,
    CommandCheck,
    DnsCheck,
    HttpCheck,
    PostgresCheck,
    TcpCheck,
    Topology,
)

TargetKey = tuple[str, str]  # (region, check name)


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    region: str
    check: Check
    probe: Probe

    @property
    def key(self) -> TargetKey:
        return (self.region, self.check.name)

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.check.healthy_threshold, self.check.unhealthy_threshold)


def make_probe(topo: Topology, region: str, check: Check) -> Probe:
    match check:
        case HttpCheck():
            index = topo.regions[region].checks.index(check)
            return HttpProbe(check, where=f"{topo.region_files.get(region, topo.path)}: "
                                          f"checks[{index}]")
        case TcpCheck():
            return TcpProbe(check)
        case PostgresCheck():
            return PostgresProbe(check, topo.endpoint(region, check.service),
                                 topo.service(check.service, flag=f"{region}: checks.service"))
        case DnsCheck():
            return DnsProbe(check)
        case CommandCheck():
            return CommandProbe(check)


def _duplicate_names(topo: Topology) -> list[str]:
    problems = []
    for name, region in topo.regions.items():
        seen: set[str] = set()
        for index, check in enumerate(region.checks):
            if check.name in seen:
                problems.append(f"{topo.region_files.get(name, topo.path)}: checks[{index}].name: "
                                f"{check.name!r} is used twice in region {name!r}; "
                                "check names must be unique within a region")
            seen.add(check.name)
    return problems


@asynccontextmanager
async def open_probes(topo: Topology) -> AsyncIterator[list[ProbeTarget]]:
    """Probes for every check of every region, closed (connections and all) on exit."""
    problems = _duplicate_names(topo)
    if problems:
        raise UserError(f"{topo.path}: checks cannot be told apart", problems)
    targets: list[ProbeTarget] = []
    try:
        for name, region in topo.regions.items():
            for check in region.checks:
                targets.append(ProbeTarget(name, check, make_probe(topo, name, check)))
        yield targets
    finally:
        for target in targets:
            await target.probe.close()
