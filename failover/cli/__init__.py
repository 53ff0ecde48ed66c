"""The `failover` command: one Typer app, one sub-module per group of verbs.

Every verb raises `UserError` for input a user can fix; `main` turns that into
exit 2 with one line per problem, and never shows a traceback for it. With
`--json`, stdout carries one document whatever happens: the answer, or the error.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, NoReturn

import typer

from failover import installed_version
from failover.cli.common import console_err, print_json
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


def _fail(exit_code: int, message: str, problems: list[str], *, as_json: bool) -> NoReturn:
    """Exit after an error already told on stderr; with --json, tell it on stdout too."""
    if as_json:
        print_json({"error": {"exit_code": exit_code, "message": message, "problems": problems}})
    sys.exit(exit_code)


def main() -> None:
    args = sys.argv[1:]
    _register(args)
    as_json = "--json" in args
    try:
        # With --json, click must not print its own errors (a bad flag: exit 2) and exit
        # before they can become the JSON error below; without, it shows them as usual.
        result = app(args=args, standalone_mode=not as_json)
    except typer.TyperException as exc:  # only with --json: a bad flag or value, named
        console_err.print(f"error: {exc.format_message()}", markup=False, highlight=False)
        _fail(exc.exit_code, exc.format_message(), [exc.format_message()], as_json=as_json)
    except typer.Abort:  # only with --json: a question answered no
        console_err.print("Aborted!", markup=False, highlight=False)
        _fail(1, "aborted: nothing was changed", ["aborted: nothing was changed"],
              as_json=as_json)
    except UserError as exc:
        for line in exc.problems:
            console_err.print(f"error: {line}", markup=False, highlight=False)
        _fail(2, str(exc), exc.problems, as_json=as_json)
    except FailoverError as exc:
        console_err.print(f"failed: {exc}", markup=False, highlight=False)
        _fail(1, str(exc), [str(exc)], as_json=as_json)
    # Standalone mode exits by itself; with --json, --help and typer.Exit return a code.
    sys.exit(result if isinstance(result, int) else 0)
