"""`failover promote | switchover | fence | unfence | rejoin`: act on a service's databases.

Each verb plans a list of named steps from the current state, shows them with
`--dry-run` (the SQL each would say), asks before acting unless `--yes`, then
runs them one by one with their outcome as it goes. Every step is idempotent:
after a failure, rerunning the same command (with the same `--epoch`) finishes
the job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from failover.cli import app
from failover.cli.common import (
    DryRunOption,
    JsonOption,
    TopologyOption,
    YesOption,
    confirm_or_abort,
    console,
    console_err,
    print_json,
)
from failover.durations import parse_duration
from failover.errors import UserError
from failover.postgres.connection import ServiceDatabases
from failover.postgres.fence import fence_steps, unfence_steps
from failover.postgres.promote import DEFAULT_SEQUENCE_GAP, promotion_steps
from failover.postgres.rejoin import rejoin_steps
from failover.postgres.steps import SqlStep, StepResult, run_steps
from failover.postgres.switchover import DEFAULT_TIMEOUT, switchover_steps
from failover.topology import Topology, load_topology

ServiceArg = Annotated[str, typer.Argument(help="The service, as named in fleet.toml.")]
DirectOption = Annotated[bool, typer.Option(
    "--direct", help="Act on the databases from here instead of through the acting controller "
    "(bootstrap, or when no controller runs); the epoch is taken here.")]
ForceOption = Annotated[bool, typer.Option(
    "--force", help="With --direct: act even though controllers answer (they may be wrong, "
    "or about to act themselves).")]
RegionArg = Annotated[str, typer.Argument(help="The region to act on.")]
EpochOption = Annotated[int | None, typer.Option(
    "--epoch", min=1, help="Fencing token; default: one above the highest recorded. "
    "Pass the same value to finish an interrupted run.")]


def execute_steps(steps: Sequence[SqlStep], *, summary: dict[str, Any], question: str,
                  dry_run: bool, json_out: bool, yes: bool) -> None:
    """Show, confirm and run a plan; shared by every verb that changes the world."""
    if dry_run:
        if json_out:
            print_json({**summary, "dry_run": True, "steps": [
                {"name": s.name, "region": s.region, "sql": list(s.sql)} for s in steps]})
            return
        for number, step in enumerate(steps, 1):
            console.print(f"[bold]{number}. {step.name}[/bold] [dim]on {step.region}[/dim]")
            for statement in step.sql:
                console.print(f"     {statement}", markup=False, highlight=False,
                              soft_wrap=True)  # SQL stays copy-pasteable: never wrapped
        return
    confirm_or_abort(question, yes=yes)
    # With --json stdout carries one document: progress goes to stderr.
    out = console_err if json_out else console

    def show(step: SqlStep, result: StepResult | None) -> None:
        if result is None:
            out.print(f"[dim]…[/dim] {step.name} [dim]on {step.region}[/dim]")
        else:
            out.print(f"[green]✓[/green] {step.name} [dim]on {step.region}, "
                      f"{result.seconds * 1000:.0f} ms[/dim]: {result.detail}", highlight=False)

    results = run_steps(steps, on_event=show)
    if json_out:
        print_json({**summary, "dry_run": False, "steps": [
            {"name": r.name, "region": r.region, "detail": r.detail, "seconds": r.seconds}
            for r in results]})


def via_fleet(topology: Path, verb: str, body: dict[str, Any], *, question: str,
              json_out: bool, yes: bool) -> None:
    """Have the acting controller run `verb` (journaled, under the fleet's epochs)."""
    from failover.cli.fleet import send_operator

    topo = load_topology(topology)
    confirm_or_abort(question, yes=yes)
    result = send_operator(topo, verb, body, without_controllers="with none running, act on "
                           "the databases directly with --direct")
    if json_out:
        print_json(result)
        return
    for step in result.get("steps", []):
        mark = "[green]✓[/green]" if step.get("outcome") in ("ok", "skipped") else "[red]✗[/red]"
        console.print(f"{mark} {step.get('name')} [dim]{step.get('duration', 0) * 1000:.0f} ms"
                      "[/dim]", highlight=False)
    console.print(f"{verb} of {body.get('service')} done by the controller of {result['via']}"
                  f" at epoch {result.get('epoch')} (plan {result.get('plan_id')})")


def refuse_direct_while_controllers_run(topo: Topology, *, force: bool) -> None:
    """A direct change races running controllers (two promotions, a fence lifted under
    them): refuse while any answers, unless --force. The epoch a direct promotion takes is
    recorded in the databases, and the controllers adopt it when they come back."""
    if force:
        return
    from failover.controller.client import fleet_statuses

    statuses = fleet_statuses({name: r.controller_url for name, r in topo.regions.items()},
                              timeout=1.0, tls=topo.api_client_tls())
    answering = sorted(region for region, status in statuses.items() if isinstance(status, dict))
    if answering:
        raise UserError(f"--direct: the controllers of {', '.join(answering)} are running: a "
                        "change made here would race them. Drop --direct to go through the "
                        "fleet, or add --force if they are wrong.")


def _act_on_service(topology: Path, service: str, verb: str, request: dict[str, Any], *,
                    question: str, direct: bool, force: bool, dry_run: bool, json_out: bool,
                    yes: bool, act: Callable[[ServiceDatabases], None]) -> None:
    """Through the acting controller, or with `act` on the service's databases from here:
    with --direct, and with --dry-run, whose SQL only the databases can tell."""
    if not direct and not dry_run:
        via_fleet(topology, verb, {"service": service, **request}, question=question,
                  json_out=json_out, yes=yes)
        return
    topo = load_topology(topology)
    if not dry_run:
        refuse_direct_while_controllers_run(topo, force=force)
    db = ServiceDatabases.from_topology(topo, service)
    with db.opened():
        act(db)


@app.command()
def promote(
    service: ServiceArg,
    region: RegionArg,
    *,
    topology: TopologyOption,
    epoch: EpochOption = None,
    allow_data_loss: Annotated[bool, typer.Option(
        "--allow-data-loss", help="Promote even if the region lags more than the service's "
        "max_lag_seconds / max_lag_bytes.")] = False,
    sequence_gap: Annotated[int, typer.Option(
        "--sequence-gap", min=0, help="Move sequences this far past the highest known value, "
        "for ids the dead primary handed out that never arrived.")] = DEFAULT_SEQUENCE_GAP,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    yes: YesOption = False,
    direct: DirectOption = False,
    force: ForceOption = False,
) -> None:
    """Unplanned failover: make REGION's subscriber the primary of SERVICE."""

    def act(db: ServiceDatabases) -> None:
        plan = promotion_steps(db, region, epoch=epoch, allow_data_loss=allow_data_loss,
                              sequence_gap=sequence_gap)
        execute_steps(plan.steps, dry_run=dry_run, json_out=json_out, yes=yes,
                      summary={"action": "promote", "service": service, "target": region,
                               "old_primary": plan.old_primary, "epoch": plan.epoch},
                      question=f"Promote {region} to primary of {service} at epoch {plan.epoch} "
                               f"(old primary: {plan.old_primary or 'unknown'})?")
    _act_on_service(topology, service, "promote",
                    {"region": region, "allow_data_loss": allow_data_loss},
                    question=f"Promote {region} to primary of {service}?", act=act,
                    direct=direct, force=force, dry_run=dry_run, json_out=json_out, yes=yes)


@app.command()
def switchover(
    service: ServiceArg,
    region: RegionArg,
    *,
    topology: TopologyOption,
    epoch: EpochOption = None,
    timeout: Annotated[float, typer.Option(
        "--timeout", parser=parse_duration, metavar="DURATION",
        show_default=f"{DEFAULT_TIMEOUT:g}s",
        help="How long the target may take to catch up, e.g. 30s or 2m; after that the old "
             "primary is unfenced and nothing else changes.")] = DEFAULT_TIMEOUT,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    yes: YesOption = False,
    direct: DirectOption = False,
    force: ForceOption = False,
) -> None:
    """Planned, zero-loss move of SERVICE's primary to REGION."""

    def act(db: ServiceDatabases) -> None:
        plan = switchover_steps(db, region, epoch=epoch, timeout=timeout)
        execute_steps(plan.steps, dry_run=dry_run, json_out=json_out, yes=yes,
                      summary={"action": "switchover", "service": service, "target": region,
                               "old_primary": plan.old_primary, "epoch": plan.epoch},
                      question=f"Switch {service} over from {plan.old_primary} to {region} "
                               f"(writes pause until it is done)?")
    _act_on_service(topology, service, "switchover", {"region": region, "timeout": timeout},
                    question=f"Switch {service} over to {region} (writes pause until it is done)?",
                    act=act, direct=direct, force=force, dry_run=dry_run, json_out=json_out,
                    yes=yes)


ServicesOption = Annotated[list[str] | None, typer.Option(
    "--service", "-s", help="Only this service (repeatable); default: every service in REGION.")]


def _fence_command(verb: str, plan: Callable[[ServiceDatabases, str], list[SqlStep]],
                   help_text: str) -> None:
    """Register `verb`: fence and unfence take the same options and differ only in their steps."""
    @app.command(verb, help=help_text)
    def command(
        region: RegionArg,
        *,
        topology: TopologyOption,
        service: ServicesOption = None,
        dry_run: DryRunOption = False,
        json_out: JsonOption = False,
        yes: YesOption = False,
        direct: DirectOption = False,
        force: ForceOption = False,
    ) -> None:
        topo = load_topology(topology)
        topo.region(region, flag="REGION")
        chosen = service or [name for name in topo.services
                             if name in topo.regions[region].postgres]
        if not chosen:
            raise UserError(f"REGION: region {region!r} holds no service database to {verb}")
        if not direct and not dry_run:
            for name in chosen:
                via_fleet(topology, verb, {"service": name, "region": region},
                          question=f"{verb.capitalize()} {region} for {name}?",
                          json_out=json_out, yes=yes)
            return
        if not dry_run:
            refuse_direct_while_controllers_run(topo, force=force)
        databases = [ServiceDatabases.from_topology(topo, name) for name in chosen]
        try:
            steps = [step for db in databases for step in plan(db, region)]
            execute_steps(steps, dry_run=dry_run, json_out=json_out, yes=yes,
                          summary={"action": verb, "region": region, "services": chosen},
                          question=f"{verb.capitalize()} {region} for {', '.join(chosen)}?")
        finally:
            for db in databases:
                db.close()


_fence_command("fence", fence_steps,
               "Make REGION's databases refuse application writes (clients cannot undo it).")
_fence_command("unfence", unfence_steps,
               "Undo a fence; only a primary becomes writable again, a subscriber stays read-only.")


@app.command()
def rejoin(
    service: ServiceArg,
    region: RegionArg,
    *,
    topology: TopologyOption,
    lost_file: Annotated[Path | None, typer.Option(
        "--lost-file", help="Where to write the transactions the new primary never received; "
        "default: lost-<service>-<region>.json here.")] = None,
    dry_run: DryRunOption = False,
    json_out: JsonOption = False,
    yes: YesOption = False,
    direct: DirectOption = False,
    force: ForceOption = False,
) -> None:
    """Bring a returning old primary back as a (still fenced) subscriber of the primary."""
    path = lost_file or Path(f"lost-{service}-{region}.json")

    def act(db: ServiceDatabases) -> None:
        plan = rejoin_steps(db, region, lost_file=path)
        execute_steps(plan.steps, dry_run=dry_run, json_out=json_out, yes=yes,
                      summary={"action": "rejoin", "service": service, "region": region,
                               "primary": plan.primary, "epoch": plan.epoch,
                               "lost_file": str(path)},
                      question=f"Rejoin {region} to {plan.primary} for {service}: its tables "
                               f"are emptied and re-copied (lost transactions go to {path})?")
        if not dry_run and not json_out:
            console.print(f"{region} stays fenced: run `failover unfence {region} "
                          f"--service {service}` once its copy has finished.")
    # Through the controller, the lost-transactions file goes to its state folder.
    _act_on_service(topology, service, "rejoin", {"region": region},
                    question=f"Rejoin {region} for {service}: its tables are emptied and re-copied?",
                    act=act, direct=direct, force=force, dry_run=dry_run, json_out=json_out,
                    yes=yes)
