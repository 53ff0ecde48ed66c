"""The fleet's verbs: run a controller, see what the controllers see, pause and resume."""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from failover.cli import app
from failover.cli.common import JsonOption, TopologyOption, console, print_json
from failover.controller.client import (
    ControllerUnreachable,
    NoControllerAnswered,
    Statuses,
    acting_view,
    call,
    fleet_statuses,
    require_an_answer,
)
from failover.controller.client import send_operator as operator_request
from failover.durations import input_error, parse_duration
from failover.errors import FailoverError, UserError
from failover.logs import LOG_LEVELS
from failover.topology import Topology, load_topology

controller_app = typer.Typer(help="The per-region controller process.", no_args_is_help=True)
app.add_typer(controller_app, name="controller")


# Help is Rich markup: escaped, "[env FAILOVER_X; default]" is shown instead of swallowed.
@controller_app.command("run")
def run(
    topology: Annotated[Path | None, typer.Option(
        "--topology", "-t", help=escape("Topology folder [env FAILOVER_TOPOLOGY]"))] = None,
    region: Annotated[str | None, typer.Option(
        "--region", help=escape("The region this controller runs in [env FAILOVER_REGION]"))]
    = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir",
        help=escape("Journal and records [env FAILOVER_STATE_DIR; /var/lib/failover]"))] = None,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", help=escape(f"{', '.join(LOG_LEVELS)}, in any case "
                                   "[env FAILOVER_LOG_LEVEL; INFO]"))] = None,
) -> None:
    """Run the controller of a region until SIGTERM (JSON logs on stderr)."""
    from failover import logs
    from failover.controller.process import Controller, run_forever
    from failover.settings import controller_settings

    settings = controller_settings(topology=topology, region=region, state_dir=state_dir,
                                   log_level=log_level)
    if settings.topology is None:
        raise UserError("--topology: missing; pass it or set FAILOVER_TOPOLOGY")
    if settings.region is None:
        raise UserError("--region: missing; pass it or set FAILOVER_REGION")
    topo = load_topology(settings.topology)
    topo.region(settings.region)
    logs.configure(settings.region, settings.log_level)
    run_forever(Controller(topo, settings.region, state_dir=settings.state_dir,
                           key=topo.signing_key()))


def _controllers(topo: Topology) -> dict[str, str]:
    return {name: region.controller_url for name, region in topo.regions.items()}


def _statuses(topo: Topology) -> Statuses:
    return fleet_statuses(_controllers(topo), tls=topo.api_client_tls())


def _status_document(topo: Topology, statuses: Statuses) -> dict[str, Any]:
    """`status --json`: every controller in one shape, whether it answered or not."""
    return {"fleet": topo.fleet.name, "controllers": {
        name: {"answered": True, "status": status, "error": None} if isinstance(status, dict)
        else {"answered": False, "status": None, "error": status}
        for name, status in statuses.items()}}


def _status_table(topo: Topology, statuses: Statuses) -> Table:
    view = acting_view(statuses)
    table = Table(title=f"fleet {topo.fleet.name}" + (
        f" as seen by {view['region']}" if view else " (no controller answers)"))
    for column in ("region", "controller", "verdict", "votes"):
        table.add_column(column)
    for name in topo.regions:
        status = statuses[name]
        controller = ("up, quorum" if isinstance(status, dict) and status.get("has_quorum")
                      else "up, NO quorum" if isinstance(status, dict) else status)
        verdict = (view or {}).get("verdicts", {}).get(name, {})
        votes = ", ".join(f"{v['observer']}: {v['health'] or 'nothing'}"
                          + ("" if v.get("counted") else f" (not counted: {v.get('note')})")
                          for v in verdict.get("votes", []))
        table.add_row(name, controller, verdict.get("verdict", "?"), votes)
    if view:
        for service, info in view.get("services", {}).items():
            lags = "; ".join(
                f"{region}: {r['role']}{' fenced' if r['fenced'] else ''}"
                + (f" lag {r['lag_seconds']:.1f}s/{r['lag_bytes']}B"
                   if r.get("lag_seconds") is not None and r['role'] == "subscriber" else "")
                for region, r in sorted(info.get("replication", {}).items()))
            plan = info.get("last_plan") or {}
            table.caption = (table.caption or "") + (
                f"\n{service}: writer {info.get('writer')} epoch {info.get('epoch')}"
                f"{' PAUSED' if info.get('paused') else ''}"
                + (f" durability {info['durability']}"
                   if info.get("durability") not in (None, "async", "unknown") else "")
                + (f"; may lose up to {info['isolation_loss_bound_s']:g} s of writes on "
                   "isolation" if info.get("isolation_loss_bound_s") else "")
                + f"{' DEGRADED: ' + info['degraded'] if info.get('degraded') else ''}; {lags}"
                + (f"; last plan {plan.get('plan_id')} {plan.get('outcome')}" if plan else ""))
        if view.get("topology_differs"):
            table.caption = (table.caption or "") + (
                f"\nTOPOLOGY DIFFERS: {view['region']} runs topology {view.get('topology')}, "
                + ", ".join(f"{region} runs {fingerprint}"
                            for region, fingerprint in view["topology_differs"].items())
                + "; give every host the same topology files and restart its controller")
        if view.get("coordination_problem"):
            table.caption = (table.caption or "") + f"\nno automatic action: {view['coordination_problem']}"
    return table


@app.command("status")
def status(
    topology: TopologyOption,
    json_out: JsonOption = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every second until Ctrl-C.")]
    = False,
) -> None:
    """The fleet as the controllers see it: verdicts and votes, writers, epochs, lag, plans.

    Exit 1 when no controller answers (the table of --watch keeps waiting for one)."""
    topo = load_topology(topology)
    if json_out or not watch:
        statuses = _statuses(topo)
        require_an_answer(statuses)
        if json_out:
            print_json(_status_document(topo, statuses))
        else:
            console.print(_status_table(topo, statuses))
        return
    with Live(_status_table(topo, _statuses(topo)), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(1)
                live.update(_status_table(topo, _statuses(topo)), refresh=True)
        except KeyboardInterrupt:
            pass


def _since(value: str) -> float:
    """The flag parser of --since: epoch seconds, an ISO time, or a duration back from now."""
    try:
        epoch = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(epoch) and epoch >= 0:
            return epoch
        raise input_error(f"{value!r} is not a time: epoch seconds are a number from 0")
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError):
        pass
    try:
        return time.time() - parse_duration(value, allow_zero=True)
    except ValueError:
        raise input_error(f"{value!r} is neither a duration (\"10m\"), an ISO time "
                         "(2025-01-31T12:00) nor epoch seconds") from None


def _describe(entry: dict[str, Any]) -> str:
    kind = entry.get("kind")
    if kind == "threshold":
        return (f"check {entry.get('target')}/{entry.get('check')}: {entry.get('previous')} -> "
                f"{entry.get('current')} ({entry.get('reason')})")
    if kind == "verdict":
        votes = ", ".join(f"{v.get('observer')}={v.get('health')}" for v in entry.get("votes", []))
        return f"verdict {entry.get('target')} {entry.get('verdict')} [{votes}]"
    if kind == "plan":
        return (f"plan {entry.get('plan_id')} epoch {entry.get('epoch')} {entry.get('event')}"
                + (f" {entry.get('outcome')}" if entry.get("outcome") else "")
                + (f": {entry.get('error')}" if entry.get("error") else ""))
    if kind == "step":
        took = f" in {entry['duration'] * 1000:.0f} ms" if "duration" in entry else ""
        return (f"  step {entry.get('step')} {entry.get('event')}"
                + (f" {entry.get('outcome')}{took}" if entry.get("outcome") else "")
                + (f": {entry.get('error') or entry.get('detail') or ''}"
                   if entry.get("error") or entry.get("detail") else ""))
    if kind == "decision":
        return f"{entry.get('service')}: {entry.get('reason')}"
    if kind == "operator":
        return f"operator {entry.get('verb')} {entry.get('service')} by {entry.get('by')}"
    return str(kind)


@app.command("history")
def history(
    topology: TopologyOption,
    json_out: JsonOption = False,
    since: Annotated[float | None, typer.Option(
        "--since", parser=_since, metavar="WHEN",
        help="Only entries after this: a duration back from now (\"10m\"), an ISO time or "
             "epoch seconds.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=1, max=100_000, help="At most this many entries from each controller, "
        "the newest.")] = 5_000,
) -> None:
    """One timeline from the journals of every reachable controller: a postmortem view.

    Exit 1 when no controller's journal can be read."""
    topo = load_topology(topology)
    key = topo.signing_key()
    query = f"limit={limit}" + (f"&since={since}" if since is not None else "")
    tls = topo.api_client_tls()
    entries: list[dict[str, Any]] = []
    missing: dict[str, str] = {}
    clipped: list[str] = []
    for name, region in topo.regions.items():
        try:
            reply = call(region.controller_url, "GET", "/v1/journal", key=key, query=query,
                         timeout=5, tls=tls)
        except ControllerUnreachable as exc:
            missing[name] = str(exc)
            continue
        if reply.status != 200 or not isinstance(reply.body, dict):
            missing[name] = f"HTTP {reply.status}: {reply.body}"
            continue
        got = reply.body.get("entries", [])
        if len(got) >= limit:
            clipped.append(name)
        entries += got
    if len(missing) == len(topo.regions):
        raise FailoverError("no controller's journal could be read (" + "; ".join(
            f"{name}: {why}" for name, why in missing.items()) + ")")
    entries.sort(key=lambda e: (e.get("ts", 0), e.get("source", "")))
    if json_out:
        print_json({"entries": entries, "unreachable": missing, "limit_reached": clipped})
        return
    table = Table(title=f"history of fleet {topo.fleet.name}")
    for column in ("time (UTC)", "controller", "event"):
        table.add_column(column)
    for entry in entries:
        when = dt.datetime.fromtimestamp(entry.get("ts", 0), dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(when, str(entry.get("source")), _describe(entry))
    console.print(table)
    for name, why in missing.items():
        console.print(f"[yellow]{name}: journal not read: {why}[/yellow]")
    for name in clipped:
        console.print(f"[yellow]{name}: only its newest {limit} entries; narrow --since or "
                      f"raise --limit for older ones[/yellow]")


def send_operator(topo: Topology, verb: str, body: dict[str, Any], *,
                  without_controllers: str) -> dict[str, Any]:
    """An operator's verb, run by the acting controller (see controller.client);
    `without_controllers` says what the operator can do when none answers."""
    try:
        return operator_request(_controllers(topo), topo.signing_key, verb,
                                {"by": "cli", **body}, tls=topo.api_client_tls())
    except NoControllerAnswered as exc:
        raise FailoverError(f"{exc}; {without_controllers}") from None


ServiceArg = Annotated[str, typer.Argument(help="The service.")]


def _automation_command(verb: str, done: str, help_text: str) -> None:
    """Register `verb`: pause and resume are one operator request each, told apart by name."""

    @app.command(verb, help=help_text)
    def command(service: ServiceArg, topology: TopologyOption, json_out: JsonOption = False) -> None:
        topo = load_topology(topology)
        topo.service(service)
        result = send_operator(
            topo, verb, {"service": service},
            without_controllers=f"while none runs, nothing acts on {service} automatically: "
                                f"run `failover {verb} {service}` again once one does "
                                "(`failover controller run`)")
        print_json(result) if json_out else console.print(f"{service}: {done} (via {result['via']})")


_automation_command("pause", "paused", "No automatic action on SERVICE until `failover resume`.")
_automation_command("resume", "resumed", "Let the controllers act on SERVICE again.")
