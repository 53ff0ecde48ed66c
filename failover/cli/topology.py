"""`failover topology ...`: validate a topology folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from failover.cli import app
from failover.cli.common import JsonOption, console, print_json
from failover.topology import load_topology

topology_app = typer.Typer(help="Validate and generate topology folders.", no_args_is_help=True)
app.add_typer(topology_app, name="topology")


@topology_app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="The topology folder.")],
    json_out: JsonOption = False,
) -> None:
    """Check a topology folder; exit 2 with one line per problem."""
    topo = load_topology(path, flag="PATH")
    summary = {
        "topology": str(topo.path),
        "fleet": topo.fleet.name,
        "quorum": topo.quorum,
        "regions": {name: {"priority": r.priority, "address": r.address, "checks": len(r.checks)}
                    for name, r in topo.regions.items()},
        "services": sorted(topo.services),
        "dns_provider": topo.fleet.dns.provider,
        "coordination": topo.fleet.coordination.backend,
    }
    if json_out:
        print_json({"valid": True, **summary})
        return
    console.print(
        f"[green]valid[/green]: fleet {topo.fleet.name!r}, {len(topo.regions)} regions "
        f"({', '.join(topo.regions)}), quorum {topo.quorum}, services: "
        f"{', '.join(topo.services) or 'none'}, DNS {topo.fleet.dns.provider}, "
        f"coordination {topo.fleet.coordination.backend}"
    )
