"""`--direct` refuses while controllers answer, unless --force: a change made from the CLI
would race them (a second promotion, a fence lifted under them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import controller_answering, quiet_topology


@pytest.fixture
def topology_with_a_running_controller(tmp_path: Path) -> Iterator[Path]:
    """Only west's controller runs; the others' controllers and every database are closed
    ports, away from the lab's addresses, which a lab running beside the tests may answer on."""
    folder = quiet_topology(tmp_path / "topology")
    with controller_answering(folder, "west"):
        yield folder


def failover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "failover", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_direct_is_refused_while_a_controller_answers(
        topology_with_a_running_controller: Path) -> None:
    topo = str(topology_with_a_running_controller)
    refused = failover("fence", "east", "-t", topo, "--yes", "--direct")
    assert refused.returncode == 2, refused.stderr
    assert "--direct: the controllers of west are running" in refused.stderr
    assert "--force" in refused.stderr
    promote = failover("promote", "orders", "west", "-t", topo, "--yes", "--direct")
    assert promote.returncode == 2 and "controllers of west" in promote.stderr
    # --force goes past the check (and then fails on the databases, which do not run here).
    forced = failover("fence", "east", "-t", topo, "--yes", "--direct", "--force")
    assert "controllers of west" not in forced.stderr
