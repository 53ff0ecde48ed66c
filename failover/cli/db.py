"""`failover db install | replicate`: prepare each region's database for failover."""

from __future__ import annotations

from typing import Annotated

import typer

from failover.cli import app
from failover.cli.common import DryRunOption, JsonOption, TopologyOption, YesOption
from failover.cli.operate import ServiceArg, execute_steps
from failover.errors import UserError
from failover.postgres.connection import ServiceDatabases
from failover.postgres.replicate import recorded_writer, replication_steps
from failover.postgres.schema import install, install_statements
from failover.postgres.steps import SqlStep
from failover.topology import load_topology

db_app = typer.Typer(help="Install the failover schema and set up replication.",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


def _install_step(db: ServiceDatabases, region: str) -> SqlStep:
    def run() -> str:
        applied = install(db.conn(region), db.service.name, region)
        return f"applied {', '.join(applied)}" if applied else "already up to date"

    return SqlStep(f"install the failover schema for {db.service.name}", region,
                tuple(install_statements(db.service.name, region)), run)


@db_app.command("install")
def install_command(
    *,
    topology: TopologyOption,
    service: Annotated[list[str] | None, typer.Option(
        "--service", "-s", help="Only this service (repeatable); default: every service.")] = None,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    yes: YesOption = False,
) -> None:
    """Install or upgrade the `failover` schema in every region's database (safe to rerun)."""
    topo = load_topology(topology)
    names = service or list(topo.services)
    for name in names:
        topo.service(name, flag="--service")
    databases = [ServiceDatabases.from_topology(topo, name) for name in names]
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
