"""`failover db install | replicate | lease`: prepare each region's database for failover,
and show which one takes application writes."""

from __future__ import annotations

import getpass
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from failover.cli import app
from failover.cli.common import (
    DryRunOption,
    JsonOption,
    TopologyOption,
    YesOption,
    console,
    print_json,
)
from failover.cli.operate import ServiceArg, execute_steps
from failover.errors import UserError
from failover.postgres.connection import ServiceDatabases
from failover.postgres.lease import LeaseState, lease_state
from failover.postgres.replicate import recorded_writer, replication_steps
from failover.postgres.schema import install, install_statements
from failover.postgres.steps import SqlStep
from failover.topology import Topology, load_topology

db_app = typer.Typer(help="Install the failover schema, set up replication, show the leases.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


def _install_step(db: ServiceDatabases, region: str) -> SqlStep:
    def run() -> str:
        applied = install(db.conn(region), db.service.name, region)
        return f"applied {', '.join(applied)}" if applied else "already up to date"

    return SqlStep(f"install the failover schema for {db.service.name}", region,
                tuple(install_statements(db.service.name, region)), run)


def _install_databases(topo: Topology, service: str, regions: list[str] | None,
                       socket_dir: Path | None) -> ServiceDatabases:
    """The service's databases in `regions` (default: all), reached through `socket_dir`
    as this operating-system user when given."""
    everywhere = ServiceDatabases.from_topology(topo, service)
    endpoints = {name: endpoint for name, endpoint in everywhere.endpoints.items()
                 if regions is None or name in regions}
    if socket_dir is not None:
        # Peer authentication: the server asks the kernel who connects, so no password.
        local = {"host": str(socket_dir), "user": getpass.getuser(), "password_env": None,
                 "password_file": None}
        endpoints = {name: endpoint.model_copy(update=local)
                     for name, endpoint in endpoints.items()}
    return ServiceDatabases(service=everywhere.service, endpoints=endpoints)


@db_app.command("install")
def install_command(
    *,
    topology: TopologyOption,
    service: Annotated[list[str] | None, typer.Option(
        "--service", "-s", help="Only this service (repeatable); default: every service.")] = None,
    regions: Annotated[list[str] | None, typer.Option(
        "--region", "-r", help="Only this region (repeatable); default: every region.")] = None,
    socket_dir: Annotated[Path | None, typer.Option(
        "--socket-dir", help="Connect through the PostgreSQL Unix socket in this folder, as the "
                             "operating-system user running the command (peer authentication), "
                             "instead of the topology's host, user and password; needs "
                             "--region. How a host installs the schema as its local superuser "
                             "when the controller's role is not one: `sudo -u postgres failover "
                             "db install --region R --socket-dir /run/postgresql`.")] = None,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    yes: YesOption = False,
) -> None:
    """Install or upgrade the `failover` schema in every region's database (safe to rerun)."""
    topo = load_topology(topology)
    names = service or list(topo.services)
    for name in names:
        topo.service(name, flag="--service")
    for name in regions or []:
        topo.region(name, flag="--region")
    if socket_dir is not None and len(regions or []) != 1:
        raise UserError("--socket-dir: a Unix socket reaches this host's server only; name its "
                        "one region with --region")
    databases = [_install_databases(topo, name, regions, socket_dir) for name in names]
    try:
        steps = [_install_step(db, region) for db in databases for region in db.regions]
        execute_steps(steps, dry_run=dry_run, json_out=json_out, yes=yes,
                      summary={"action": "db install", "services": names},
                      question=f"Install the failover schema for {', '.join(names)} "
                               f"in {len({s.region for s in steps})} regions?")
    finally:
        for db in databases:
            db.close()


@db_app.command("replicate")
def replicate_command(
    service: ServiceArg,
    *,
    topology: TopologyOption,
    writer: Annotated[str | None, typer.Option(
        "--writer", help="The region that holds the primary; default: the one that records "
                         "itself as primary.")] = None,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    yes: YesOption = False,
) -> None:
    """Publish SERVICE from the writer and subscribe every other region to it (idempotent)."""
    db = ServiceDatabases.from_topology(load_topology(topology), service)
    with db.opened():
        chosen = writer or recorded_writer(db)
        if chosen is None:
            raise UserError(f"--writer: no region records itself as primary of {service!r} "
                            "yet: name the writer region")
        plan = replication_steps(db, chosen)
        execute_steps(plan.steps, dry_run=dry_run, json_out=json_out, yes=yes,
                      summary={"action": "db replicate", "service": service, "writer": chosen,
                               "epoch": plan.epoch},
                      question=f"Publish {service} from {chosen} and subscribe "
                               f"{', '.join(r for r in db.regions if r != chosen)} to it?")


@db_app.command("lease")
def lease_command(
    service: ServiceArg,
    *,
    topology: TopologyOption,
    json_out: JsonOption = False,
) -> None:
    """Whether each region's copy of SERVICE takes application writes now (its lease), read
    from the databases themselves; changes nothing."""
    db = ServiceDatabases.from_topology(load_topology(topology), service)
    states: dict[str, LeaseState | None] = {}
    with db.opened():
        for region in db.regions:
            conn = db.try_conn(region)
            states[region] = None if conn is None else lease_state(conn, service)
    if json_out:
        print_json({"service": service, "regions": {
            region: {"reachable": False} if state is None else {"reachable": True, **asdict(state)}
            for region, state in states.items()}})
        return
    table = Table(title=f"write lease of service {service}")
    for column in ("region", "writes", "epoch", "lease left", "why not"):
        table.add_column(column)
    for region, state in states.items():
        if state is None:
            table.add_row(region, "unreachable", "-", "-", "-")
        else:
            table.add_row(region, "taken" if state.writer else "refused", str(state.epoch),
                          f"{state.seconds_left:.1f} s" if state.writer else "-",
                          state.refused or "")
    console.print(table)
