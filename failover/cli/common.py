"""What every verb shares: consoles, JSON output, confirmation, option types."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from failover.errors import UserError

console = Console()
console_err = Console(stderr=True, soft_wrap=True)  # error lines name files: never wrap them

TopologyOption = Annotated[
    Path,
    typer.Option("--topology", "-t", help="Topology folder (fleet.toml and one <region>.toml each).",
                 envvar="FAILOVER_TOPOLOGY"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


# The shape of every --json document (answers and errors alike): a reader checks it
# before it trusts a field. Raise it when a field changes meaning or goes away.
JSON_VERSION = 1


def print_json(data: dict[str, Any]) -> None:
    """One JSON document on stdout, with its `version`; datetimes and paths become strings."""
    document = {"version": JSON_VERSION, **data}
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")


def confirm_or_abort(question: str, *, yes: bool) -> None:
    """Ask before changing the world, unless --yes; refuse when nobody can answer."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{question} needs confirmation: pass --yes (stdin is not a terminal)")
    if not typer.confirm(question, default=False):
        raise typer.Abort()
