"""Fuzz the topology loader: whatever the files hold, the answer is a Topology or a UserError."""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failover.errors import UserError
from failover.topology import Topology, load_topology

EXAMPLE = Path(__file__).resolve().parents[2] / "regions" / "example"
FILES = sorted(p.name for p in EXAMPLE.glob("*.toml"))

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["5s", "500ms", "0", "-1s", "1h", "http://x", "127.0.0.1", "::1", "rfc2136",
                     "route53", "etcd", "postgres", "tcp", "app", "us-east-1"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def paths_of(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += paths_of(value, (*prefix, index))
    return out


def mutate(doc: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> None:
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif isinstance(parent, dict):
        parent[f"{last}_extra"] = value


def assert_no_traceback(folder: Path) -> None:
    try:
        result = load_topology(folder)
    except UserError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
    else:
        assert isinstance(result, Topology)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_structured_mutations_never_raise_anything_but_user_error(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(EXAMPLE, folder, dirs_exist_ok=True)
        for _ in range(data.draw(st.integers(1, 4))):
            name = data.draw(st.sampled_from(FILES))
            doc = tomllib.loads((folder / name).read_text())
            path = data.draw(st.sampled_from(paths_of(doc)))
            action = data.draw(st.sampled_from(["delete", "replace", "add"]))
            mutate(doc, path, action, data.draw(values))
            try:
                text = tomli_w.dumps(doc)
            except (TypeError, ValueError):
                continue  # a value TOML cannot hold: not a document a user could write
            (folder / name).write_text(text)
        assert_no_traceback(folder)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(FILES), garbage=st.text(max_size=200), keep=st.integers(0, 400))
def test_arbitrary_text_never_raises_anything_but_user_error(name: str, garbage: str, keep: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(EXAMPLE, folder, dirs_exist_ok=True)
        original = (folder / name).read_text()
        (folder / name).write_text(original[:keep] + garbage)
        assert_no_traceback(folder)
