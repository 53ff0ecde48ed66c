"""`failover check`: one round of every check from this host.

Exit 0 when every check is healthy, 3 when any is not (2 stays for bad input).
A single round applies thresholds of 1 (see failover/health/round.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from failover.cli import app
from failover.cli.common import JsonOption, TopologyOption, console, print_json
from failover.health.round import RoundResult, run_round
from failover.health.targets import open_probes
from failover.health.thresholds import HealthState
from failover.topology import Topology, load_topology

EXIT_UNHEALTHY = 3

_STATE_STYLE = {HealthState.HEALTHY: "green", HealthState.UNHEALTHY: "red",
                HealthState.UNKNOWN: "yellow"}


async def _one_round(topo: Topology) -> list[RoundResult]:
    async with open_probes(topo) as targets:
        return await run_round(targets)


def _as_json(row: RoundResult) -> dict[str, Any]:
    check = row.target.check
    return {
        "region": row.target.region, "check": check.name, "kind": check.kind,
        "purpose": check.purpose, "state": row.state.value,
        "latency_ms": round(row.result.latency_s * 1000, 3), "reason": row.result.reason,
        "conclusive": row.result.conclusive,
        "details": dict(row.result.details),
    }


def _table(rows: list[RoundResult]) -> Table:
    table = Table(title="Checks (one round; thresholds not applied)")
    table.add_column("region", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=1)
    for row in rows:
        check = row.target.check
        # Liveness is the default; other purposes change what a failure means.
        name = check.name if check.purpose == "liveness" else f"{check.name} ({check.purpose})"
        style = _STATE_STYLE[row.state]
        table.add_row(escape(row.target.region), escape(name),
                      f"[{style}]{row.state.value}[/{style}]",
                      f"{row.result.latency_s * 1000:.1f} ms", escape(row.result.reason))
    return table


@app.command("check")
def check(topology: TopologyOption, json_out: JsonOption = False) -> None:
    """Run every check of every region once, from this host, and show the results.

    One round has no history, so thresholds are 1: a check that succeeds is
    healthy and one that fails is unhealthy (the controller applies the
    configured healthy/unhealthy thresholds over consecutive rounds). Exit 0
    when every check is healthy, 3 when any is not.
    """
    topo = load_topology(topology)
    rows = asyncio.run(_one_round(topo))
    if json_out:
        print_json({"topology": str(topo.path), "checks": [_as_json(row) for row in rows],
                    "healthy": all(row.state is HealthState.HEALTHY for row in rows)})
    else:
        console.print(_table(rows))
    if any(row.state is not HealthState.HEALTHY for row in rows):
        raise typer.Exit(EXIT_UNHEALTHY)
