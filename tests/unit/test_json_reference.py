"""docs/reference/json.md documents the keys the CLI's --json documents really have: the
command runs in this process against a topology of closed ports (tests/support/cli.py),
and each documented table's keys must be exactly the keys it printed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from failover.controller.status import Coordination, ServiceRuntime, status_view
from failover.coordination.base import ServiceRecord
from tests.support.cli import EAST_DOWN, SAMPLE_TOPOLOGY, controller_answering, invoke, quiet_topology

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference" / "json.md"


def documented(heading: str) -> set[str]:
    """The keys in the first column of the first table under the heading `heading`."""
    lines = REFERENCE.read_text().splitlines()
    assert heading in lines, f"json.md has no heading {heading!r}"
    keys: set[str] = set()
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("#"):
            break
        match = re.match(r"^\| `([^`]+)` \|", line)
        if match:
            keys.add(match.group(1))
        elif keys and not line.startswith("|"):
            break  # the table ended
    assert keys, f"no table of keys under {heading!r}"
    return keys


def document(out: str) -> dict[str, Any]:
    parsed = json.loads(out)
    assert isinstance(parsed, dict) and parsed["version"] == 1, parsed
    return parsed


@pytest.fixture
def topo(tmp_path: Path) -> Path:
    return quiet_topology(tmp_path / "topology")


def test_the_error_document_has_the_documented_keys(topo: Path) -> None:
    for args in (("status", "-t", str(topo), "--json"),  # exit 1: nobody answers
                 ("topology", "validate", str(topo / "missing"), "--json")):  # exit 2
        done = invoke(*args)
        assert done.code in (1, 2), done.output
        error = document(done.out)
        assert set(error) == documented("## The error document")
        assert set(error["error"]) == documented("### error: `error`")
        assert error["error"]["exit_code"] == done.code


def test_status_json_has_the_documented_keys(topo: Path) -> None:
    with controller_answering(topo, "west"):
        done = invoke("status", "-t", str(topo), "--json")
    assert done.code == 0, done.output
    status = document(done.out)
    assert set(status) == documented("## `failover status --json`")
    for entry in status["controllers"].values():
        assert set(entry) == documented("### status: `controllers.<region>`")


def test_a_controllers_status_view_has_the_documented_keys() -> None:
    record = ServiceRecord(service="orders", writer="east", epoch=3, last_failover_at=None,
                           paused=False, readers=("east", "west"), version=1)
    view = status_view("west", 1.0, None, records={"orders": record}, services=["orders"],
                       observations=[], runtime={"orders": ServiceRuntime()},
                       coordination=Coordination("peers", None), lease_ttl=2.0, topology="t")
    assert set(view) == documented("### status: `controllers.<region>.status`")
    assert set(view["services"]["orders"]) == documented(
        "### status: `controllers.<region>.status.services.<service>`")
    # No decision yet, so nothing known of what the writer waits for: the worst case, its lease.
    assert view["services"]["orders"]["isolation_loss_bound_s"] == 2.0


def test_plan_json_has_the_documented_keys() -> None:
    done = invoke("plan", "-t", str(SAMPLE_TOPOLOGY), "-o", str(EAST_DOWN), "--json")
    assert done.code == 0, done.output
    assert set(document(done.out)) == documented("## `failover plan --json`")


def test_check_json_has_the_documented_keys(topo: Path) -> None:
    done = invoke("check", "-t", str(topo), "--json")
    assert done.code == 3, done.output  # every check is on a closed port
    checked = document(done.out)
    assert set(checked) == documented("## `failover check --json`")
    for row in checked["checks"]:
        assert set(row) == documented("### check: `checks[]`")
