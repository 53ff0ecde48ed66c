"""Fuzz the command line: whatever the flags and the topology files hold, the user sees an
answer or a message, never a traceback, and the exit code is 0, 1 or 2; with --json,
stdout is one JSON document with a version (NaN and infinity are not JSON).

Every address of the topology is a closed port (tests.support.cli.quiet_topology), so
whatever a drawn command gets to do, it can reach nothing.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.cli import EAST_DOWN, Outcome, invoke, quiet_topology

KEY = {"FAILOVER_FLEET_KEY": "test-fleet-key"}

# What a user might type for a duration, a time, a name or a number, and what they should not.
words = st.one_of(
    st.sampled_from(["0", "0s", "5", "2.5", "500ms", "30s", "2m", "1h", "-1", "-5s", "nan",
                     "inf", "-inf", "1e400", "9" * 400, "1d", "2 m", " 5s ", "10m", "info",
                     "LOUD", "DEBUG", "2025-01-31T12:00", "0001-01-01", "orders", "west",
                     "mars", "", "--json", "--", "-t", "\u00e9t\u00e9", "[bold]x[/bold]"]),
    st.text(max_size=12),
    st.integers().map(str),
    st.floats().map(str),
)


def commands(topology: str, state_dir: str) -> st.SearchStrategy[list[str]]:
    """Each verb with its flags drawn; none can change anything in a quiet topology."""
    t = ["-t", topology]
    json_flag = st.sampled_from([[], ["--json"]])
    return st.one_of(
        st.tuples(st.just(["topology", "validate", topology]),
                  st.sampled_from([[], ["--strict"]]), json_flag),
        st.tuples(st.just(["plan", *t, "-o", str(EAST_DOWN)]), json_flag),
        st.tuples(st.just(["status", *t]), json_flag),
        st.tuples(st.just(["history", *t, "--since"]), words.map(lambda w: [w]),
                  st.sampled_from([[], ["--limit", "10"], ["--limit", "0"]]), json_flag),
        st.tuples(st.just(["dns", "set-writer"]), words.map(lambda w: [w, *t, "--to"]),
                  words.map(lambda w: [w, "--timeout"]), words.map(lambda w: [w]), json_flag),
        st.tuples(st.just(["switchover", "orders"]), words.map(lambda w: [w, *t, "--timeout"]),
                  words.map(lambda w: [w]), json_flag),
        st.tuples(st.sampled_from([["pause"], ["resume"]]), words.map(lambda w: [w, *t]),
                  json_flag),
        # --region last and unknown: whatever the log level, no controller ever starts.
        st.tuples(st.just(["controller", "run", *t, "--state-dir", state_dir, "--log-level"]),
                  words.map(lambda w: [w, "--region", "nowhere"])),
    ).map(lambda parts: [arg for part in parts for arg in part])


def assert_told_not_crashed(args: list[str], done: Outcome) -> None:
    assert done.code in (0, 1, 2), (args, done)
    assert "Traceback" not in done.output, (args, done)
    if "--json" in args and not done.out.startswith(("Usage", " Usage")):  # --help, not JSON
        document = json.loads(done.out, parse_constant=lambda name: f"bad constant {name}")
        assert isinstance(document, dict) and document.get("version") == 1, (args, done)
        assert "bad constant" not in done.out, (args, done)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_flag_ever_shows_a_traceback(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        topology = quiet_topology(Path(tmp) / "topology")
        args = data.draw(commands(str(topology), str(Path(tmp) / "state")))
        assert_told_not_crashed(args, invoke(*args, env=KEY))
        assert not (Path(tmp) / "state").exists()


FILES = ["fleet.toml", "east.toml", "south.toml", "west.toml"]
values = st.one_of(
    words,
    st.floats(),  # NaN and infinities included: TOML has them
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.lists(words, max_size=2),
)


def field_paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    items = document.items() if isinstance(document, dict) else (
        enumerate(document) if isinstance(document, list) else [])
    for key, value in items:
        out += field_paths(value, (*prefix, key))
    return out


def mutate_a_field(folder: Path, data: st.DataObject) -> None:
    path = folder / data.draw(st.sampled_from(FILES))
    document = tomllib.loads(path.read_text())
    field = data.draw(st.sampled_from(field_paths(document)))
    parent: Any = document
    for step in field[:-1]:
        parent = parent[step]
    parent[field[-1]] = data.draw(values)
    # A value TOML cannot hold is not a file a user could write: the file stays as it was.
    with contextlib.suppress(TypeError, ValueError):
        path.write_text(tomli_w.dumps(document))


def mutate_bytes(folder: Path, data: st.DataObject) -> None:
    path = folder / data.draw(st.sampled_from(FILES))
    original = path.read_bytes()
    at = data.draw(st.integers(0, len(original)))
    path.write_bytes(original[:at] + data.draw(st.binary(max_size=16)) + original[at + 4:])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_topology_file_ever_shows_a_traceback(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        topology = quiet_topology(Path(tmp) / "topology")
        for _ in range(data.draw(st.integers(0, 3))):
            mutate_a_field(topology, data)
        if data.draw(st.booleans()):  # last: the file may not be TOML any more
            mutate_bytes(topology, data)
        for args in (["topology", "validate", str(topology), "--strict", "--json"],
                     ["plan", "-t", str(topology), "-o", str(EAST_DOWN), "--json"],
                     ["plan", "-t", str(topology), "-o", str(EAST_DOWN)]):
            assert_told_not_crashed(args, invoke(*args, env=KEY))
