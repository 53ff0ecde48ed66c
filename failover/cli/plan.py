"""`failover plan`: replay a snapshot through the engine and show verdicts, votes and plan."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from failover.cli import app
from failover.cli.common import JsonOption, TopologyOption, console, print_json
from failover.engine import (
    Action,
    AddReader,
    ConfirmWriter,
    Decision,
    FenceRegion,
    PromoteSubscriber,
    RemoveReader,
    RepointSubscribers,
    SetDnsWriter,
    SetSyncStandbys,
    UnfenceWriter,
    Verdict,
    decide,
)
from failover.engine.policy import policy_from_topology
from failover.engine.serialize import decision_as_dict
from failover.engine.snapshot import parse_snapshot
from failover.errors import UserError
from failover.topology import load_topology

ObservationsOption = Annotated[
    Path,
    typer.Option("--observations", "-o",
                 help="Snapshot file (JSON: now, me, state, observations); see "
                      "docs/observations.md."),
]

_VERDICT_STYLE = {Verdict.UP: "green", Verdict.DOWN: "bold red", Verdict.SUSPECT: "yellow"}


@app.command("plan")
def plan(topology: TopologyOption, observations: ObservationsOption,
         json_out: JsonOption = False) -> None:
    """Show the verdicts and the plan the engine makes from a snapshot; changes nothing."""
    topo = load_topology(topology)
    try:
        text = observations.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--observations: cannot read {observations}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"--observations: {observations} is not UTF-8 text: {exc.reason} "
                        f"at byte {exc.start}") from None
    policy = policy_from_topology(topo)
    snapshot = parse_snapshot(text, str(observations), policy)
    decision = decide(snapshot.observations, snapshot.state, policy, snapshot.now, snapshot.me)
    if json_out:
        print_json(decision_as_dict(decision))
    else:
        _show(decision)


def _show(decision: Decision) -> None:
    at = datetime.fromtimestamp(decision.now, UTC).isoformat(timespec="seconds")
    quorum = "has a quorum" if decision.has_quorum else "has NO quorum"
    console.print(Text(f"{decision.me} at {at}: hears {len(decision.heard)} observer(s) "
                       f"({', '.join(decision.heard)}), quorum {decision.quorum}: {quorum}"))
    if not decision.has_quorum:
        cut_off = ("ever" if math.isinf(decision.isolated_for)
                   else f"{decision.isolated_for:.1f}s")
        console.print(Text(f"cut off from the quorum for {cut_off}"))
    executor = decision.executor or "nobody"
    runs = " (this controller runs the plan)" if decision.executes else ""
    console.print(Text(f"executor: {executor}{runs}: {decision.executor_reason}"))
    for note in decision.ignored:
        console.print(Text(f"ignored: {note}", style="yellow"))

    verdicts = Table(title="Verdicts", title_justify="left")
    for column in ("Region", "Verdict", "Healthy", "Unhealthy", "Votes", "Reason"):
        verdicts.add_column(column)
    for verdict in decision.verdicts:
        votes = Text()
        for vote in verdict.votes:
            line = f"{vote.observer}: {vote.health.value if vote.health else '-'}"
            if vote.counted and vote.observed_at is not None:
                line += f" {decision.now - vote.observed_at:.1f}s ago"
            if vote.note:
                line += f" ({vote.note})"
            votes.append(line + "\n", style=None if vote.counted else "dim")
        votes.rstrip()
        verdicts.add_row(
            verdict.region, Text(verdict.verdict.name, style=_VERDICT_STYLE[verdict.verdict]),
            str(verdict.healthy), str(verdict.unhealthy), votes, Text(verdict.reason),
        )
    console.print(verdicts)

    steps = Table(title="Plan", title_justify="left")
    for column in ("#", "Service", "Epoch", "Action", "Where", "Reason"):
        steps.add_column(column)
    for number, action in enumerate(decision.plan.actions, start=1):
        steps.add_row(str(number), action.service, str(action.epoch), type(action).__name__,
                      Text(_where(action)), Text(action.reason))
    console.print(steps)


def _where(action: Action) -> str:
    """The regions an action touches, in one short phrase."""
    if isinstance(action, FenceRegion):
        return action.region + (" (best effort)" if action.best_effort else "")
    if isinstance(action, PromoteSubscriber):
        return f"{action.region} (was {action.previous_writer})"
    if isinstance(action, RepointSubscribers):
        return f"{', '.join(action.subscribers)} -> {action.publisher}"
    if isinstance(action, SetDnsWriter):
        return f"{action.from_region} -> {action.to_region}"
    if isinstance(action, SetSyncStandbys):
        return f"{action.region}: {action.standbys.describe()}"
    if isinstance(action, AddReader | RemoveReader | UnfenceWriter | ConfirmWriter):
        return action.region
    return "-"
