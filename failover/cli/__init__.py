"""The `failover` command: one Typer app, one sub-module per group of verbs.

Every verb raises `UserError` for input a user can fix; `main` turns that into
exit 2 with one line per problem, and never shows a traceback for it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer

from failover import installed_version
from failover.cli.common import console_err
from failover.errors import FailoverError, UserError

app = typer.Typer(
    name="failover",
    help="Multi-region failover controller for PostgreSQL logical-replication services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"failover {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the installed version and exit.")] = False,
) -> None:
    """Multi-region failover controller for PostgreSQL logical-replication services."""
    # A callback keeps `failover VERB` a group even when only VERB's module is loaded
    # (Typer would otherwise run a lone command without its name).


# Which modules define each verb: a command imports only what it needs, so that the
# CLI starts fast (the HTTP client, boto3 and the probes take seconds to import on a
# busy host, and an operator at 3 a.m. should not wait for them).
VERB_MODULES = {
    "topology": ("topology", "terraform"), "plan": ("plan",), "dns": ("dns",),
    "check": ("check",), "controller": ("fleet",), "status": ("fleet",),
    "history": ("fleet",), "pause": ("fleet",), "resume": ("fleet",), "lab": ("lab",),
    "db": ("db",), "promote": ("operate",), "switchover": ("operate",),
    "fence": ("operate",), "unfence": ("operate",), "rejoin": ("operate",),
}


def _register(argv: list[str]) -> None:
    verb = next((arg for arg in argv if not arg.startswith("-")), None)
    if verb is None and "--version" in argv:
        return  # answered by the root callback: no verb's module is needed
    every = sorted({name for names in VERB_MODULES.values() for name in names})
    for name in VERB_MODULES.get(verb or "", every):
        importlib.import_module(f"failover.cli.{name}")


def main() -> None:
    _register(sys.argv[1:])
    try:
        # Standalone mode handles bad flags (exit 2), --help and typer.Exit itself.
        app()
    except UserError as exc:
        for line in exc.problems:
            console_err.print(f"error: {line}", markup=False, highlight=False)
        sys.exit(2)
    except FailoverError as exc:
        console_err.print(f"failed: {exc}", markup=False, highlight=False)
        sys.exit(1)
