"""The operator's documents stay true to the code: the worked topology loads, and every
`failover` command they show names a verb and options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from failover.cli import _register, app
from failover.topology import load_topology

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "operator-guide.md", ROOT / "docs" / "runbooks.md"]


def test_the_worked_topology_is_valid() -> None:
    topo = load_topology(ROOT / "docs" / "examples" / "three-regions")
    assert sorted(topo.regions) == ["eu-west-1", "us-east-1", "us-west-2"]
    assert list(topo.services) == ["app"]


def commands(path: Path) -> list[str]:
    """Every line of a ```sh block that runs `failover`, without its comment."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
        for written in block.splitlines():
            line = written.split("  #", 1)[0].strip()
            if line.startswith("failover "):
                found.append(line)
    return found


def _root() -> Any:
    """The command tree as click sees it (typer's own copy of click: duck-typed)."""
    _register([])  # every verb's module
    return typer.main.get_command(app)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_command_shown_exists_with_its_options(path: Path) -> None:
    root = _root()
    shown = commands(path)
    assert shown, f"no failover command found in {path.name}"
    wrong = []
    for line in shown:
        words = shlex.split(line)[1:]
        command = root
        for word in words:
            if word.startswith("-") or not hasattr(command, "list_commands"):
                break  # options, or the arguments of a verb
            sub = command.commands.get(word)
            if sub is None:
                wrong.append(f"{line}: no verb {word!r}")
                break
            command = sub
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        known |= {"--help"}
        wrong += [f"{line}: {command.name} has no option {word}" for word in words
                  if word.startswith("-") and word.split("=", 1)[0] not in known
                  and not re.fullmatch(r"-?\d+(\.\d+)?", word)]
    assert wrong == []


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


LINKED = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading(path: Path) -> None:
    broken = []
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(f"{target}: no such heading")
    assert broken == []
