"""The `failover` command: one Typer app, one sub-module per group of verbs.

Every verb raises `UserError` for input a user can fix; `main` turns that into
exit 2 with one line per problem, and never shows a traceback for it.
"""

from __future__ import annotations

import sys

import typer

from failover.cli.common import console_err
from failover.errors import FailoverError, UserError

app = typer.Typer(
    name="failover",
    help="Multi-region failover controller for PostgreSQL logical-replication services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported here so that each group registers its verbs on `app`.
    from failover.cli import (  # noqa: F401
        check,
        db,
        dns,
        fleet,
        lab,
        operate,
        plan,
        terraform,
        topology,
    )


def main() -> None:
    _register()
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
