"""What every chaos test shares: it starts from a healthy lab, whatever the test before left."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from failover.lab import processes
from failover.lab import state as lab
from failover.lab.build import start_controller, wait_healthy
from failover.lab.drill import rejoin_strays
from failover.lab.faults import heal
from failover.lab.unprivileged import region_user
from tests.support.lab import say


@pytest.fixture(autouse=True)
def healthy_between_tests(lab_dir: Path) -> Iterator[None]:
    """Each module names its lab in its own `lab_dir` fixture (peers or etcd)."""
    restore_lab(lab_dir)
    yield


def restore_lab(lab_dir: Path) -> None:
    """Undo what a failed test may have left: faults in force, a controller it killed, a
    region left out of replication."""
    state = lab.load(lab_dir)
    for region in list(state.faults):
        heal(lab_dir, region)
    state = lab.load(lab_dir)
    for region in state.regions:
        if not processes.alive(region.controller_pid):
            say(f"restarting the controller of {region.name} a previous test left dead")
            region.controller_pid = start_controller(lab_dir, Path(state.topology), region.name,
                                                     region_user(region.name))
    lab.save(state, lab_dir)
    wait_healthy(lab.load(lab_dir), 90.0, say)
    for region in rejoin_strays(lab_dir, say):
        say(f"rejoined {region}, which a previous test left out of replication")
